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


def attention_tolerance(kd, vd, k_orig, q, centered, scale=None):
    """A bound on |fused − reference over the dequantized rows| per output
    element of q [n_heads, D] over kd, vd [kv_heads, n, D], from the inputs only (valid for every group size and rotation):
    the int8 query moves each score by at most |q|·|k − μ|/254 (|Rq|∞ ≤ |q|,
    |Rk|₁ ≤ √D|k|, the 1/√D cancels), μ the keys' mean (|μ| ≤ max |k|); a
    score error Δ moves softmax weights by a factor e^{±2Δ}; uint8 weights
    per token group add at most max p/254 · Σ|v| (√D more for rotated V).
    scale: the score is q·k·scale (default 1/√D; the bound scales with it)."""
    eps = np.finfo(np.float32).eps
    n_heads, D = q.shape
    group = n_heads // kd.shape[0]
    scale = 1 / np.sqrt(D) if scale is None else scale
    tol = np.empty((n_heads, D))
    mu = np.linalg.norm(np.asarray(k_orig, np.float64), axis=-1).max() if centered else 0.0
    for h in range(n_heads):
        g = h // group
        kh, vh = kd[g].astype(np.float64), vd[g].astype(np.float64)
        knorm = np.linalg.norm(kh, axis=1) + mu
        qn = np.linalg.norm(q[h])
        delta = (
            scale * np.sqrt(D) * qn * knorm / 254
            + 2 * D * eps * scale * (np.abs(kh @ q[h]) + qn * knorm * np.sqrt(D))
        ).max()
        s = kh @ q[h] * scale
        p = np.exp(s - s.max())
        p /= p.sum()
        vmax = np.abs(vh).max(axis=0)
        v8 = p.max() / 254 * np.sqrt(D) * np.linalg.norm(vh, axis=1).sum()
        tol[h] = (np.expm1(2 * delta) + 64 * eps) * vmax * 1.01 + v8 * 1.01 + 1e-6
    return tol


@pytest.fixture(scope="session")
def kernel_tolerance():
    """attention_tolerance(kd, vd, k_orig, q, centered) -> [n_heads, D] bounds."""
    return attention_tolerance
