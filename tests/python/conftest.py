"""Shared fixtures of the torch-free Python tests (tests/python): the real
models and the innerq tool, found from the repository root. Locally a missing
model skips its tests; under CI (CI=true) it fails them, because
scripts/test.sh fetches the models and builds the tool first."""

import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = {
    "smollm2": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": ROOT / "models" / "gemma-3-270m-q4_k_m.gguf",
    "stories": ROOT.parent / "shared" / "data" / "models" / "stories260K.gguf",
}
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext2" / "test.raw.txt"


def require(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.exists():
        message = f"{what} is missing: {path} (scripts/test.sh provides it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def smollm2_file() -> pathlib.Path:
    return require(MODELS["smollm2"], "SmolLM2 (bash scripts/fetch-model.sh)")


@pytest.fixture(scope="session")
def smollm2(smollm2_file):
    import innerq

    return innerq.Model(smollm2_file)


@pytest.fixture(scope="session")
def stories():
    import innerq

    return innerq.Model(require(MODELS["stories"], "stories260K"))


@pytest.fixture(scope="session")
def innerq_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("INNERQ_BINARY", ROOT / "build" / "ci" / "innerq"))
    return require(path, "the innerq tool (cmake --build --preset ci)")


@pytest.fixture(scope="session")
def wikitext() -> pathlib.Path:
    return require(WIKITEXT, "WikiText-2")


EPS32 = float(np.finfo(np.float32).eps)


def f32_sum_tolerance(n: int, vd) -> float:
    """What float32 arithmetic can move an attention output over n rows:
    the sums of n weighted rows, the merge of chunks and a rotation back
    (log2 of the block, at most 8 steps), each at most eps·max|v| a term."""
    return (n + 64) * 8 * EPS32 * float(np.abs(vd).max())


def uniform_case(kd, vd, n_heads):
    """q = 0: every score is 0, so attention is the plain mean of each KV
    head's rows. The kernels' int8 query and uint8 weights are then exact (a
    uniform weight is its block's maximum), so the fused result differs from
    the float64 mean only by float32 sums. Returns q, want, tol."""
    H, n, D = kd.shape
    q = np.zeros((n_heads, D), np.float32)
    want = np.repeat(vd.astype(np.float64).mean(axis=1), n_heads // H, axis=0)
    return q, want, f32_sum_tolerance(n, vd)


def peaked_case(kd, vd, picks, scale, mu_norm=0.0, factor_ratio=1.0):
    """Query head h points along the key of one token of its KV head (the one
    in picks[h], a range of positions, whose score leads the others most),
    scaled so that the fused kernels must attend to that token alone: a
    wrong key layout, head mapping or token picks another row.

    Derived bound: the int8 query moves a score by at most
    F·scale·√D·|q|·(|k̂_t| + |μ|)/254 (per group max|q'|/254 times Σ|k'|;
    |Rq|∞ ≤ |q|, |Rk|₁ ≤ √D|k| under any rotation; F = max f / min f of key
    factors, μ the centering mean). q is scaled so that the lead of the
    picked score over every other, less twice that error, is 30: the other
    rows then weigh at most n·e^-30 in all. Returns q [n_heads, D], want
    (float64 softmax over kd, vd), tol [n_heads, 1]."""
    H, n, D = kd.shape
    n_heads = len(picks)
    group = n_heads // H
    q = np.zeros((n_heads, D))
    tol = np.zeros((n_heads, 1))
    want = np.zeros((n_heads, D))
    for h, positions in enumerate(picks):
        k = kd[h // group].astype(np.float64)
        v = vd[h // group].astype(np.float64)
        norms = np.linalg.norm(k, axis=1)
        best, best_gap = None, 0.0
        for j in positions:
            u = k[j] / norms[j]
            others = np.delete(k @ u, j)
            gap = norms[j] - others.max()
            if gap > best_gap:
                best, best_gap = j, gap
        assert best is not None, f"head {h}: no key in {positions} leads its own direction"
        # Score error per unit of |q|, and the lead per unit of |q|.
        err = factor_ratio * scale * np.sqrt(D) * (norms.max() + mu_norm) / 254
        lead = scale * best_gap
        assert lead > 2 * err * 1.25, f"head {h}: the int8 error bound leaves no lead"
        alpha = 30 / (lead - 2 * err)
        q[h] = alpha * k[best] / norms[best]
        s = k @ q[h] * scale
        p = np.exp(s - s.max())
        want[h] = p @ v / p.sum()
        tol[h] = 2 * n * np.exp(-30) * np.abs(v).max() + f32_sum_tolerance(n, vd)
    return q.astype(np.float32), want, tol


@pytest.fixture(scope="session")
def attention_cases():
    """(uniform_case, peaked_case): attention inputs whose fused result has a
    tight bound derived from the inputs."""
    return uniform_case, peaked_case
