"""Benchmarks of innerq from Python (numbers with the CPU they ran on).

    python -m innerq.bench hf        transformers decode: DynamicCache + SDPA
                                     against InnerQCache + innerq's fused attention
    python -m innerq.bench crosscheck  KLD of each spec against full precision through
                                     transformers (InnerQCache) and through innerq's own
                                     model, on the same WikiText-2 tokens
    python -m innerq.bench overhead  innerq's own engine per decode step, called
                                     from Python, next to the innerq tool's step

`hf` loads SmolLM2-135M-Instruct from its GGUF file into transformers (which
de-quantizes the weights to --dtype), prefills up to 2048 tokens of
WikiText-2, and for each context C builds both caches from those K/V (tiled
to C tokens: decode attention costs the same whatever the values), then
times --steps single-token forwards of the model through each cache, the two
in alternating rounds so that load lands on both alike. It prints tokens/s,
the ratio, and the cache bytes of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

# Relative to the repository root, where the README runs it.
DEFAULT_MODEL = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_TEXT = Path("../shared/data/wikitext2/test.raw.txt")
DEFAULT_TOOL = Path("build/ci/innerq")


def cpu_name() -> str:
    """The CPU's model name, family and model (the figures depend on it)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    flags = info.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} "
        f"model {info.get('model', '?')}, {simd}, {os.cpu_count()} CPUs)"
    )


def _median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


# ---------------------------------------------------------------------------
# hf
# ---------------------------------------------------------------------------
def _fill_kv(model, ids, chunk: int = 512):
    """Per layer (K, V) [1, kv_heads, n, head_dim] of a chunked prefill."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        for start in range(0, ids.shape[1], chunk):
            model(
                input_ids=ids[:, start : start + chunk],
                use_cache=True,
                past_key_values=cache,
                logits_to_keep=1,
            )
    return [(layer.keys, layer.values) for layer in cache.layers]


def _tile(t, n: int):
    import torch

    reps = -(-n // t.shape[2])
    return torch.cat([t] * reps, dim=2)[:, :, :n, :].contiguous()


def run_hf(args) -> list[dict]:
    # GOMP_SPINCOUNT must reach torch's OpenMP runtime too: import innerq first.
    import innerq

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from innerq.hf import InnerQCache

    torch.set_num_threads(args.threads)
    innerq.set_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model_path = Path(args.model)
    if not model_path.exists():
        sys.exit(f"innerq.bench: {model_path} is missing (bash scripts/fetch-model.sh smollm2)")
    tok = AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
    model = AutoModelForCausalLM.from_pretrained(model_path.parent, gguf_file=model_path.name, dtype=dtype)
    model.eval()
    text = Path(args.text).read_text(encoding="utf-8")
    ids = tok(text[: 40 * args.fill], return_tensors="pt").input_ids[:, : args.fill]
    print(f"innerq.bench hf: prefilling {ids.shape[1]} tokens ({args.dtype})...", file=sys.stderr)
    kv = _fill_kv(model, ids)
    rows = []
    for ctx in args.contexts:
        tiled = [(_tile(k, ctx), _tile(v, ctx)) for k, v in kv]
        dyn = DynamicCache(config=model.config)
        for layer, (k, v) in enumerate(tiled):
            dyn.update(k, v, layer)
        model.set_attn_implementation("innerq")
        iq = InnerQCache(model.config, args.spec, max_tokens=ctx + args.steps + 8)
        for layer, (k, v) in enumerate(tiled):
            iq.update(k, v, layer)
        del tiled
        token = ids[:, -1:]
        runs = {"dynamic": (dyn, "sdpa"), "innerq": (iq, "innerq")}
        times = {name: [] for name in runs}
        with torch.no_grad():
            for step in range(args.steps + 2):
                for name, (cache, attn) in runs.items():
                    model.set_attn_implementation(attn)
                    pos = torch.tensor([[cache.get_seq_length()]])
                    t0 = time.perf_counter()
                    model(input_ids=token, position_ids=pos, past_key_values=cache, use_cache=True)
                    if step >= 2:  # two warm-up steps
                        times[name].append(time.perf_counter() - t0)
        dyn_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in dyn.layers)
        m = iq.memory()
        row = {
            "context": ctx,
            "dtype": args.dtype,
            "spec": args.spec,
            "dynamic_ms": _median_ms(times["dynamic"]),
            "innerq_ms": _median_ms(times["innerq"]),
            "dynamic_bytes": dyn_bytes,
            "innerq_bytes": m["total"],
            "innerq_reserved": m["reserved"],
        }
        row["dynamic_tps"] = 1000 / row["dynamic_ms"]
        row["innerq_tps"] = 1000 / row["innerq_ms"]
        row["speedup"] = row["dynamic_ms"] / row["innerq_ms"]
        row["bytes_ratio"] = m["total"] / dyn_bytes
        rows.append(row)
        print(
            f"  {ctx:>6} tokens: DynamicCache+sdpa {row['dynamic_tps']:6.1f} tok/s, InnerQCache+innerq "
            f"{row['innerq_tps']:6.1f} tok/s ({row['speedup']:.2f}x); cache {dyn_bytes / 2**20:.1f} MiB vs "
            f"{m['total'] / 2**20:.1f} MiB ({row['bytes_ratio']:.3f}x)",
            file=sys.stderr,
        )
        del dyn, iq
    return rows


# ---------------------------------------------------------------------------
# crosscheck
# ---------------------------------------------------------------------------
def run_crosscheck(args) -> list[dict]:
    """KLD of each spec against the full-precision cache through two forward
    passes on the same tokens: transformers (DynamicCache vs InnerQCache,
    keys in transformers' channel order) and innerq's own model
    (innerq.Model.perplexity: f16 vs the spec, keys in the GGUF order)."""
    import numpy as np

    import innerq

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from innerq.hf import InnerQCache

    torch.set_num_threads(args.threads)
    innerq.set_threads(args.threads)
    path = Path(args.model)
    ours = innerq.Model(path)
    text = Path(args.text).read_text(encoding="utf-8")
    specs = [s for s in args.kv.split(",") if s]
    print(f"innerq.bench crosscheck: innerq's model on {len(specs)} specs...", file=sys.stderr)
    mine = ours.perplexity(text, kv=specs, ctx=args.ctx, prefix=args.prefix, chunks=args.chunks)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    tokens = ours.tokenize(text, add_bos=False)  # the same ids for both passes
    kl = {s: 0.0 for s in specs}
    n = 0
    for c in range(args.chunks):
        chunk = tokens[c * args.ctx : (c + 1) * args.ctx].tolist()
        if ours.adds_bos:
            chunk[0] = ours.bos
        ids = torch.tensor([chunk])

        def forced(cache, attn: str, ids=ids) -> np.ndarray:
            hf.set_attn_implementation(attn)
            rows = []
            with torch.no_grad():
                out = hf(input_ids=ids[:, : args.prefix], past_key_values=cache, use_cache=True)
                rows.append(out.logits[0, -1].double())
                for t in range(args.prefix, args.ctx - 1):
                    out = hf(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
                    rows.append(out.logits[0, -1].double())
            return torch.log_softmax(torch.stack(rows), -1).numpy()

        print(f"  chunk {c + 1}/{args.chunks}: transformers, DynamicCache", file=sys.stderr)
        base = forced(DynamicCache(config=hf.config), "sdpa")
        for s in specs:
            print(f"  chunk {c + 1}/{args.chunks}: transformers, InnerQCache {s}", file=sys.stderr)
            lp = forced(InnerQCache(hf.config, s, max_tokens=args.ctx), "innerq")
            kl[s] += float(np.maximum(0.0, (np.exp(base) * (base - lp)).sum(-1)).sum())
        n += base.shape[0]
    rows = []
    for s in specs:
        cli = next(r for r in mine if r.kv == s)
        rows.append({"kv": s, "kld_innerq_model": cli.kld, "kld_transformers": kl[s] / n, "tokens": n})
        print(
            f"  {s:>16}: KLD innerq's model {cli.kld:.5f} (GGUF key order), transformers "
            f"{kl[s] / n:.5f} (half-split key order)",
            file=sys.stderr,
        )
    return rows


# ---------------------------------------------------------------------------
# overhead
# ---------------------------------------------------------------------------
def run_overhead(args) -> list[dict]:
    import numpy as np

    import innerq

    innerq.set_threads(args.threads)
    model = innerq.Model(args.model)
    rows = []
    tool = Path(args.tool)
    for ctx in args.contexts:
        row = {"context": ctx, "spec": args.spec}
        # Python: innerq.Model.decode, one token, after a prefill of ctx tokens.
        seq = model.pool(args.spec, max_tokens=ctx + args.steps + 8).sequence()
        rng = np.random.default_rng(0)
        prompt = rng.integers(3, model.n_vocab, size=ctx).tolist()
        model.extend(seq, prompt)
        token = [int(prompt[-1])]
        for _ in range(2):
            model.decode([seq], token)
        t = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            model.decode([seq], token)
            t.append(time.perf_counter() - t0)
        row["python_ms"] = _median_ms(t)
        if tool.exists():
            out = subprocess.run(
                [
                    str(tool),
                    "bench",
                    "decode",
                    "-m",
                    args.model,
                    "-b",
                    "1",
                    "--ctx",
                    str(ctx),
                    "--kv",
                    args.spec,
                    "-n",
                    str(args.steps),
                    "-t",
                    str(args.threads),
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            for r in json.loads(out.stdout):
                if r.get("kv") == args.spec:
                    row["tool_ms"] = r.get("ms_per_step")
        rows.append(row)
        tool_ms = row.get("tool_ms")
        extra = f", innerq tool {tool_ms:.3f} ms" if tool_ms else " (innerq tool not found)"
        print(
            f"  {ctx:>6} tokens: innerq.Model.decode {row['python_ms']:.3f} ms/step{extra}", file=sys.stderr
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m innerq.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True)
    hf = sub.add_parser("hf", help="transformers decode: DynamicCache+SDPA vs InnerQCache+innerq attention")
    hf.add_argument("--model", default=str(DEFAULT_MODEL), help="SmolLM2 GGUF file")
    hf.add_argument("--text", default=str(DEFAULT_TEXT), help="text to prefill (WikiText-2)")
    hf.add_argument("--contexts", default="2048,8192,32768", help="comma-separated context lengths")
    hf.add_argument("--fill", type=int, default=2048, help="real tokens prefilled, tiled to each context")
    hf.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    hf.add_argument("--spec", default="innerq", help="innerq cache spec")
    cc = sub.add_parser("crosscheck", help="KLD per spec: transformers + InnerQCache vs innerq's own model")
    cc.add_argument("--model", default=str(DEFAULT_MODEL))
    cc.add_argument("--text", default=str(DEFAULT_TEXT))
    cc.add_argument("--kv", default="innerq,innerq-paper,q4_0,q4_0:rot=kv,kivi4")
    cc.add_argument("--ctx", type=int, default=1024)
    cc.add_argument("--prefix", type=int, default=512)
    cc.add_argument("--chunks", type=int, default=2)
    cc.add_argument("--contexts", default="0", help=argparse.SUPPRESS)
    ov = sub.add_parser("overhead", help="innerq.Model.decode from Python vs the innerq tool's step")
    ov.add_argument("--model", default=str(DEFAULT_MODEL))
    ov.add_argument("--tool", default=str(DEFAULT_TOOL), help="the innerq binary")
    ov.add_argument("--contexts", default="2048,8192")
    ov.add_argument("--spec", default="innerq")
    for p in (hf, cc, ov):
        p.add_argument("--steps", type=int, default=16, help="timed decode steps")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = ap.parse_args(argv)
    args.contexts = [int(c) for c in args.contexts.split(",")]
    if args.command != "crosscheck" and any(c < 1 for c in args.contexts):
        ap.error("--contexts must be positive token counts")
    if args.steps < 1 or args.threads < 1:
        ap.error("--steps and --threads must be positive")
    print(f"innerq.bench {args.command}: {cpu_name()}, {args.threads} threads", file=sys.stderr)
    run = {"hf": run_hf, "crosscheck": run_crosscheck, "overhead": run_overhead}[args.command]
    rows = run(args)
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
