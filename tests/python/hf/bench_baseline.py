"""Baseline decode speed of Hugging Face transformers on this machine (not a
test): SmolLM2-135M-Instruct loaded from the project's GGUF file (transformers
de-quantizes it to float32 or bfloat16), DynamicCache + sdpa attention.

For each dtype and context N it prefills the first N tokens of WikiText-2
(test split) in one forward (logits of the last position only), or with
`--fill synthetic` puts random K/V of the same shapes into the cache (decode
cost does not depend on the values; a 32k prefill takes 6 minutes), then times
`--steps` greedy single-token decode steps after one untimed step, calling the
model's forward directly (no generate(): no logits processors, no stopping
criteria). It prints one line per (dtype, N) and, with --json, writes them to
a file. Tokens/s = steps / their total time.

Run it on an idle machine: with other processes on the same cores, torch's
OpenMP threads wait for descheduled peers at each of the ~450 parallel regions
of a decode step and a step takes 10-40x longer (the load average is printed
on each line; the fastest step is printed next to the median).

    build/venv/bin/python tests/python/hf/bench_baseline.py \\
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--dtypes float32,bfloat16] \\
        [--contexts 2048,8192] [--steps 16] [--threads 2] [--fill prefill|synthetic] \\
        [--json out.json]

SmolLM2's max_position_embeddings is 8192; contexts past it run (RoPE is
computed for any position, nothing is clipped) but the model is out of its
trained range, so only the timing means anything there.
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

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def cache_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "data", "wikitext2", "test.raw.txt"))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--contexts", default="2048,8192")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fill", choices=["prefill", "synthetic"], default="prefill",
                    help="prefill: run the text through the model (default); synthetic: put random K/V of the "
                         "right shapes into the cache instead (decode timing only, no prefill cost)")
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    model_dir, gguf_file = os.path.split(os.path.abspath(args.model))
    contexts = [int(c) for c in args.contexts.split(",") if c]

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    need = max(contexts) + 1
    # Tokenize only as much text as needed (about 4 characters a token).
    ids = tok(text[: need * 8], return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] < max(contexts):
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] < max(contexts):
        sys.exit(f"the text has only {ids.shape[1]} tokens")
    print(f"# transformers {transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"CPU {cpu_model()}, tokenizer+text {time.perf_counter() - t0:.1f} s", flush=True)

    results = []
    for dtype_name in [d for d in args.dtypes.split(",") if d]:
        dtype = getattr(torch, dtype_name)
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, dtype=dtype,
                                                     attn_implementation="sdpa").eval()
        load_s = time.perf_counter() - t0
        cache_key = "cache" if "cache" in __import__("inspect").signature(model.forward).parameters else "past_key_values"
        print(f"# {dtype_name}: loaded in {load_s:.1f} s, max_position_embeddings "
              f"{model.config.max_position_embeddings}", flush=True)
        for n in contexts:
            cache = DynamicCache(config=model.config)
            prompt = ids[:, :n]
            with torch.inference_mode():
                if args.fill == "synthetic":
                    cfg = model.config
                    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
                    g = torch.Generator().manual_seed(0)
                    for layer_idx in range(cfg.num_hidden_layers):
                        k = torch.randn(1, cfg.num_key_value_heads, n, head_dim, generator=g).to(dtype)
                        cache.update(k, torch.randn_like(k), layer_idx)
                    prefill_s = float("nan")
                    nxt = prompt[:, -1:]
                else:
                    t0 = time.perf_counter()
                    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **{cache_key: cache})
                    prefill_s = time.perf_counter() - t0
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                step_s = []
                # One untimed step first: the first single-token forward of a
                # process pays one-time costs (about 1 s here).
                for step in range(args.steps + 1):
                    t0 = time.perf_counter()
                    out = model(input_ids=nxt, use_cache=True, **{cache_key: cache})
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    if step > 0:
                        step_s.append(time.perf_counter() - t0)
            row = dict(dtype=dtype_name, context=n, fill=args.fill, prefill_s=round(prefill_s, 3),
                       prefill_tps=round(n / prefill_s, 1),
                       decode_tps_mean=round(args.steps / sum(step_s), 2),
                       decode_ms_median=round(1000 * statistics.median(step_s), 2),
                       decode_ms_min=round(1000 * min(step_s), 2),
                       cache_tokens=cache.get_seq_length(), cache_bytes=cache_bytes(cache),
                       load_s=round(load_s, 1), loadavg_1m=os.getloadavg()[0])
            results.append(row)
            print(f"{dtype_name:9s} ctx {n:6d}: prefill {prefill_s:7.2f} s ({row['prefill_tps']:7.1f} tok/s) | "
                  f"decode {row['decode_tps_mean']:6.2f} tok/s (step median {row['decode_ms_median']:.1f} ms, "
                  f"min {row['decode_ms_min']:.1f} ms) | "
                  f"DynamicCache {row['cache_bytes'] / 2**20:7.1f} MiB for {row['cache_tokens']} tokens | "
                  f"load avg {row['loadavg_1m']:.2f}", flush=True)
            del cache
        del model
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cpu=cpu_model(), transformers=transformers.__version__, torch=torch.__version__,
                           threads=args.threads, steps=args.steps, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
