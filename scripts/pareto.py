#!/usr/bin/env python3
"""KLD against bits per value for every cache config: a Markdown table and an
SVG plot, from the JSON that `innerq perplexity --json` and `innerq info
--json` print (scripts/quality.sh runs them). Standard library only.

    python3 scripts/pareto.py --bytes info8k.json --ppl 1024:ppl1024.json \
        --ppl 4096:ppl4096.json --svg docs/img/pareto.svg

Bits per value are the cache's bytes at the `info` context (8192 tokens: the
high-precision windows included) over the f16 bytes, times 16. The plot has
one panel per perplexity run; the Pareto front (no config both smaller and
better) is drawn as a line.
"""
import argparse
import json
import math
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pareto(points):
    """Indices of points (bits, kld) that no other point beats on both."""
    front = []
    for i, (b, k) in enumerate(points):
        if not any((b2 <= b and k2 <= k) and (b2 < b or k2 < k) for j, (b2, k2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def family(kv):
    if kv.startswith("innerq-paper"):
        return "innerq-paper"
    for name in ("innerq", "kivi", "q4_0", "q8_0", "f16"):
        if kv.startswith(name):
            return name
    return "other"


COLORS = {"innerq": "#d62728", "innerq-paper": "#ff7f0e", "kivi": "#1f77b4",
          "q4_0": "#2ca02c", "q8_0": "#9467bd", "f16": "#555555", "other": "#8c564b"}


def panel(svg, x0, y0, w, h, title, rows):
    """One log-KLD vs bits panel at (x0, y0)."""
    pts = [(r["bits"], max(r["kld"], 1e-5)) for r in rows]
    lo = min(b for b, _ in pts)
    bx = (min(2.0, math.floor(lo)) if lo < 4 else math.floor(lo) - 0.5, max(6.0, max(b for b, _ in pts) + 1.0))
    ky = (math.log10(min(k for _, k in pts)) - 0.2, math.log10(max(k for _, k in pts)) + 0.2)
    X = lambda b: x0 + 50 + (b - bx[0]) / (bx[1] - bx[0]) * (w - 70)
    Y = lambda k: y0 + h - 40 - (math.log10(k) - ky[0]) / (ky[1] - ky[0]) * (h - 70)
    svg.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="white" stroke="#ccc"/>')
    svg.append(f'<text x="{x0 + w / 2}" y="{y0 + 18}" text-anchor="middle" font-size="14">{title}</text>')
    for b in range(int(math.ceil(bx[0])), int(bx[1]) + 1):
        svg.append(f'<line x1="{X(b)}" y1="{y0 + 30}" x2="{X(b)}" y2="{y0 + h - 40}" stroke="#eee"/>')
        svg.append(f'<text x="{X(b)}" y="{y0 + h - 24}" text-anchor="middle" font-size="11">{b}</text>')
    for e in range(int(math.floor(ky[0])), int(math.ceil(ky[1])) + 1):
        if ky[0] <= e <= ky[1]:
            svg.append(f'<line x1="{x0 + 50}" y1="{Y(10 ** e)}" x2="{x0 + w - 20}" y2="{Y(10 ** e)}" stroke="#eee"/>')
            svg.append(f'<text x="{x0 + 45}" y="{Y(10 ** e) + 4}" text-anchor="end" font-size="11">1e{e}</text>')
    svg.append(f'<text x="{x0 + w / 2}" y="{y0 + h - 6}" text-anchor="middle" font-size="12">bits per value at 8k tokens (windows included)</text>')
    svg.append(f'<text x="{x0 + 12}" y="{y0 + h / 2}" transform="rotate(-90 {x0 + 12} {y0 + h / 2})" text-anchor="middle" font-size="12">KL divergence from f16</text>')
    front = pareto(pts)
    svg.append('<polyline fill="none" stroke="#999" stroke-dasharray="4 3" points="' +
               " ".join(f"{X(pts[i][0]):.1f},{Y(pts[i][1]):.1f}" for i in front) + '"/>')
    for r, (b, k) in zip(rows, pts):
        c = COLORS[family(r["kv"])]
        svg.append(f'<circle cx="{X(b):.1f}" cy="{Y(k):.1f}" r="4" fill="{c}"><title>{r["kv"]}: {b:.2f} bits, KLD {r["kld"]:.4f}</title></circle>')
        svg.append(f'<text x="{X(b) + 6:.1f}" y="{Y(k) - 5:.1f}" font-size="9" fill="{c}">{r["label"]}</text>')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", required=True, help="innerq info --json output (sets bits per value)")
    ap.add_argument("--ppl", action="append", required=True, help="NAME:FILE of innerq perplexity --json")
    ap.add_argument("--svg", help="write the plot here")
    ap.add_argument("--labels", help="JSON object kv -> short label for the plot")
    ap.add_argument("--title", default="SmolLM2-135M", help="model name for the panel titles")
    args = ap.parse_args()

    info = load(args.bytes)
    bits = {c["kv"]: c["bits_per_value"] for c in info["caches"] if "bits_per_value" in c}
    labels = load(args.labels) if args.labels else {}
    runs = []
    for item in args.ppl:
        name, _, path = item.partition(":")
        rows = []
        for r in load(path):
            if r["kv"] not in bits:
                sys.exit(f"pareto: {r['kv']} is in {path} but not in {args.bytes}")
            short = r["kv"].split(":layers=")[0] + " tuned" if ":layers=" in r["kv"] else r["kv"]
            rows.append({**r, "bits": bits[r["kv"]], "label": labels.get(r["kv"], short)})
        runs.append((name, path, rows))

    # Markdown: one row per config, one KLD/PPL column pair per run.
    names = [r["kv"] for r in runs[0][2]]
    head = "| kv | bits/value @8k | " + " | ".join(f"KLD ctx {n} | PPL ctx {n} (Δ vs f16)" for n, _, _ in runs) + " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(runs)))
    for kv in names:
        cells = [f"`{kv}`", f"{bits[kv]:.2f}"]
        for _, _, rows in runs:
            r = next(x for x in rows if x["kv"] == kv)
            base = next(x for x in rows if x["kv"] == "f16")
            cells += [f"{r['kld']:.4f}", f"{r['ppl']:.3f} ({100 * (r['ppl'] / base['ppl'] - 1):+.1f} %)"]
        print("| " + " | ".join(cells) + " |")

    if args.svg:
        w, h = 520, 400
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(runs)}" height="{h}" font-family="sans-serif">']
        for i, (name, _, rows) in enumerate(runs):
            quantized = [r for r in rows if r["kv"] != "f16"]
            n_tokens = rows[0].get("tokens", 0)
            panel(svg, i * w, 0, w, h, f"{args.title}, WikiText-2, ctx {name} ({n_tokens} scored tokens)", quantized)
        svg.append("</svg>")
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write("\n".join(svg) + "\n")
        print(f"\nwrote {args.svg}", file=sys.stderr)


if __name__ == "__main__":
    main()
