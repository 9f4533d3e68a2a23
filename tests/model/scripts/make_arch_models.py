#!/usr/bin/env python3
"""Independent references for innerq's architectures: tiny GGUF files with
random weights, and their logits from a float64 numpy forward pass written
from the HuggingFace modelling code of each architecture (not from innerq's).

For each case this writes OUT_DIR/<name>.gguf with the `gguf` package, the
way llama.cpp's converter lays a HuggingFace model out (tensor names, Q/K row
permutation for `llama`, norms stored as 1 + w for Gemma 3, Llama 3 RoPE
factors as rope_freqs.weight), and then computes the logits of a token
sequence from the same weights as dequantized by gguf.quants (which is not
innerq's code) in HuggingFace's conventions (half-split rotate_half RoPE on
un-permuted rows, Gemma's (1 + w) norms, its layer_types rule and sliding
window mask, Llama 3's rope_type "llama3" inverse frequencies).

Cases: llama3 (Llama 3 RoPE factors, GQA, untied output), mistral (llama
with key_length != n_embd / n_heads, linear RoPE scaling), qwen2 (Q/K/V
biases, tied), qwen3 (per-head q/k norm), gemma3 (head_dim 256, one KV
head, five windowed layers then a global one, window 20 over 40 tokens),
gemma3_pattern (a per-layer pattern array, the local RoPE base key, final
logit soft-capping). Weights in F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
Q2_K..Q6_K: Q*_0/Q*_1 quantized by gguf from random floats, K-quants as random
blocks (gguf has no K-quant quantizer) with scales chosen for unit-RMS rows.

Output OUT_DIR/arch_reference.json: {"cases": [{"name", "file", "tokens",
"logits" (every position, every vocabulary entry: the exact model),
"decode_from", "decode_logits" (positions decode_from.. with the K/V of
windowed layers rounded to f16, as innerq's window caches store them)}]}.

CTest runs it at test time into the build tree:
  python3 tests/model/scripts/make_arch_models.py OUT_DIR
Needs `pip install gguf numpy` (scripts/install-deps.sh installs them).
"""
import json
import math
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize
except ImportError as e:
    sys.exit(
        f"make_arch_models: cannot import the gguf reference ({e}).\n"
        "Install it with: pip install gguf numpy  (or run scripts/install-deps.sh)"
    )

N_VOCAB = 512

# fp16 scale fields (byte offsets in a block) of the K-quants, and the ratio
# dmin/d that centres their values on zero (Q4_K/Q5_K: d·sc·q − dmin·m with
# sc, m 6-bit and q up to 15 or 31; Q2_K: 4-bit sc, m and q up to 3).
K_FIELDS = {"Q2_K": (80, 82, 1.5), "Q3_K": (108, None, 0.0), "Q4_K": (0, 2, 7.5),
            "Q5_K": (0, 2, 15.5), "Q6_K": (208, None, 0.0)}


# ---------------------------------------------------------------------------
# Writing: tensors in a chosen ggml type; what gguf dequantizes them to
# ---------------------------------------------------------------------------

def random_kquant(rng, name, rows, cols):
    """Random K-quant blocks whose rows have an RMS near 1/sqrt(cols)."""
    qtype = T[name]
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_values, block_bytes), dtype=np.uint8)
    d_off, m_off, m_ratio = K_FIELDS[name]

    def set_scales(d):
        blocks[:, d_off:d_off + 2] = np.frombuffer(
            np.full(len(blocks), d, dtype=np.float16).tobytes(), np.uint8).reshape(-1, 2)
        if m_off is not None:
            blocks[:, m_off:m_off + 2] = np.frombuffer(
                np.full(len(blocks), d * m_ratio, dtype=np.float16).tobytes(),
                np.uint8).reshape(-1, 2)

    set_scales(1e-3)
    rms = np.sqrt(np.mean(dequantize(blocks.reshape(rows, -1), qtype) ** 2))
    set_scales(1e-3 / (rms * math.sqrt(cols)))
    return blocks.reshape(rows, -1)


def write_matrix(rng, writer, name, rows, cols, qtype, weights, transform=None):
    """A [rows, cols] matrix in `qtype`; weights[name] gets its float64 values.

    transform (llama's Q/K permutation) maps HF rows to the file's rows; the
    values kept are the file's, mapped back (inverse) into HF order."""
    if qtype in K_FIELDS:
        data = random_kquant(rng, qtype, rows, cols)
        writer.add_tensor(name, data, raw_dtype=T[qtype])
        values = dequantize(data, T[qtype])
    else:
        x = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if transform is not None:
            x = transform[0](x)
        if qtype == "F32":
            writer.add_tensor(name, x)
            values = x
        elif qtype == "F16":
            writer.add_tensor(name, x.astype(np.float16))
            values = x.astype(np.float16)
        else:
            data = quantize(x, T[qtype])
            writer.add_tensor(name, data, raw_dtype=T[qtype])
            values = dequantize(data, T[qtype])
    values = np.asarray(values, dtype=np.float64).reshape(rows, cols)
    weights[name] = transform[1](values) if transform is not None else values


def write_vector(writer, name, values, weights):
    """An F32 vector; weights[name] keeps its values in float64."""
    v = np.asarray(values, dtype=np.float32)
    writer.add_tensor(name, v)
    weights[name] = v.astype(np.float64)


def permute(w, n_head):
    """llama.cpp's converter: HF's half-split Q/K rows to interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


# ---------------------------------------------------------------------------
# The HuggingFace forward pass, float64
# ---------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, pos, inv_freq):
    """x: [n, heads, hd]; HF's apply_rotary_pos_emb with rotate_half."""
    freqs = np.outer(pos, inv_freq)  # [n, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def llama3_inv_freq(base, hd, factor, low, high, old_ctx):
    """transformers' _compute_llama3_parameters."""
    inv_freq = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))


def forward(cfg, w, tokens, f16_window_kv=False):
    """Logits [n, vocab]. f16_window_kv rounds the K/V of windowed layers to
    float16 after RoPE (innerq's window caches)."""
    return output_head(cfg, w.get("output.weight", w["token_embd.weight"]),
                       hidden_states(cfg, w, tokens, f16_window_kv))


def output_head(cfg, out_w, x):
    """Logits [n, rows of out_w] of final hidden states x."""
    logits = x @ out_w.T
    if cfg.get("softcap"):
        logits = cfg["softcap"] * np.tanh(logits / cfg["softcap"])
    return logits


def hidden_states(cfg, w, tokens, f16_window_kv=False):
    """The final normalized hidden states [n, n_embd]."""
    n = len(tokens)
    hd, nh, nkv, eps = cfg["head_dim"], cfg["n_heads"], cfg["n_kv"], cfg["eps"]
    gemma = cfg["arch"] == "gemma3"
    pos = np.arange(n, dtype=np.float64)
    x = np.array(w["token_embd.weight"][tokens], dtype=np.float64)
    if gemma:
        x *= math.sqrt(cfg["n_embd"])
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        window = cfg["windows"][l]
        xb = rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = xb @ w[p + "attn_q.weight"].T
        k = xb @ w[p + "attn_k.weight"].T
        v = xb @ w[p + "attn_v.weight"].T
        if cfg["arch"] == "qwen2":
            q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
        q, k, v = q.reshape(n, nh, hd), k.reshape(n, nkv, hd), v.reshape(n, nkv, hd)
        if cfg["arch"] in ("qwen3", "gemma3"):
            q = rms_norm(q, w[p + "attn_q_norm.weight"], eps)
            k = rms_norm(k, w[p + "attn_k_norm.weight"], eps)
        inv_freq = cfg["inv_freq_local"] if window else cfg["inv_freq"]
        q, k = apply_rope(q, pos * cfg["pos_scale"], inv_freq), apply_rope(k, pos * cfg["pos_scale"], inv_freq)
        if f16_window_kv and window:
            k = k.astype(np.float32).astype(np.float16).astype(np.float64)
            v = v.astype(np.float32).astype(np.float16).astype(np.float64)
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        visible = (j <= i) & ((i - j < window) if window else True)
        out = np.zeros((n, nh, hd))
        for h in range(nh):
            g = h // (nh // nkv)
            s = q[:, h, :] @ k[:, g, :].T * cfg["attn_scale"]
            s = np.where(visible, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, h, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, g, :]
        a = out.reshape(n, nh * hd) @ w[p + "attn_output.weight"].T
        if gemma:
            a = rms_norm(a, w[p + "post_attention_norm.weight"], eps)
        x = x + a
        xb = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = xb @ w[p + "ffn_gate.weight"].T, xb @ w[p + "ffn_up.weight"].T
        act = gelu_tanh(gate) if gemma else gate / (1 + np.exp(-gate))
        f = (act * up) @ w[p + "ffn_down.weight"].T
        if gemma:
            f = rms_norm(f, w[p + "post_ffw_norm.weight"], eps)
        x = x + f
    return rms_norm(x, w["output_norm.weight"], eps)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

CASES = [
    dict(name="llama3", arch="llama", n_layers=2, n_embd=256, n_heads=4, n_kv=2, key_length=None,
         n_ff=512, tied=False, llama3_rope=dict(factor=8.0, low=1.0, high=4.0, old_ctx=32),
         types=dict(embd="Q8_0", q="Q4_K", k="Q6_K", v="Q8_0", o="Q4_K", gate="Q4_K", up="F16",
                    down="Q6_K", out="Q6_K"),
         n_tokens=24),
    dict(name="mistral", arch="llama", n_layers=2, n_embd=256, n_heads=4, n_kv=1, key_length=128,
         n_ff=256, tied=False, linear_scale=2.0,
         types=dict(embd="BF16", q="Q5_K", k="Q3_K", v="Q2_K", o="Q5_1", gate="Q4_0", up="Q5_K",
                    down="Q3_K", out="Q8_0"),
         n_tokens=16),
    dict(name="qwen2", arch="qwen2", n_layers=2, n_embd=256, n_heads=4, n_kv=2, key_length=None,
         n_ff=512, tied=True, base=1000000.0,
         types=dict(embd="Q8_0", q="Q5_0", k="Q5_0", v="Q8_0", o="Q4_1", gate="Q4_K", up="Q4_K",
                    down="Q6_K"),
         n_tokens=16),
    dict(name="qwen3", arch="qwen3", n_layers=2, n_embd=256, n_heads=2, n_kv=1, key_length=128,
         n_ff=512, tied=True, base=1000000.0,
         types=dict(embd="F16", q="Q4_K", k="Q4_K", v="Q6_K", o="BF16", gate="Q4_K", up="Q4_K",
                    down="Q6_K"),
         n_tokens=16),
    dict(name="gemma3", arch="gemma3", n_layers=7, n_embd=256, n_heads=2, n_kv=1, key_length=256,
         n_ff=512, tied=True, base=1000000.0, window=20,
         types=dict(embd="Q8_0", q="Q5_0", k="Q5_0", v="Q8_0", o="Q4_K", gate="Q5_0", up="Q5_0",
                    down="Q6_K"),
         n_tokens=40),
    dict(name="gemma3_pattern", arch="gemma3", n_layers=3, n_embd=256, n_heads=4, n_kv=1,
         key_length=256, n_ff=256, tied=True, base=1000000.0, window=6,
         pattern=[True, False, True], local_base=500.0, softcap=3.0,
         types=dict(embd="F16", q="Q8_0", k="Q4_K", v="F32", o="Q6_K", gate="Q8_0", up="Q4_0",
                    down="Q8_0"),
         n_tokens=20),
]


def build(case, out_dir, rng):
    arch = case["arch"]
    n_embd, nh, nkv = case["n_embd"], case["n_heads"], case["n_kv"]
    hd = case["key_length"] or n_embd // nh
    n_layers, n_ff, ty = case["n_layers"], case["n_ff"], case["types"]
    path = os.path.join(out_dir, case["name"] + ".gguf")
    wr = gguf.GGUFWriter(path, arch)
    wr.add_block_count(n_layers)
    wr.add_context_length(4096)
    wr.add_embedding_length(n_embd)
    wr.add_feed_forward_length(n_ff)
    wr.add_head_count(nh)
    wr.add_head_count_kv(nkv)
    if case["key_length"]:
        wr.add_key_length(hd)
        wr.add_value_length(hd)
    eps = 1e-6 if arch == "gemma3" else 1e-5
    wr.add_layer_norm_rms_eps(eps)
    base = case.get("base", 10000.0)
    wr.add_rope_freq_base(base)
    if case.get("linear_scale"):
        wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        wr.add_rope_scaling_factor(case["linear_scale"])
    windows = [0] * n_layers
    if arch == "gemma3":
        wr.add_sliding_window(case["window"])
        if "pattern" in case:
            wr.add_sliding_window_pattern(case["pattern"])
            windowed = case["pattern"]
        else:  # transformers' Gemma3 layer_types: every 6th layer is full attention
            windowed = [(l + 1) % 6 != 0 for l in range(n_layers)]
        windows = [case["window"] if s else 0 for s in windowed]
        if "local_base" in case:
            wr.add_rope_freq_base_swa(case["local_base"])
    if case.get("softcap"):
        wr.add_final_logit_softcapping(case["softcap"])
    wr.add_tokenizer_model("gpt2")
    wr.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    wr.add_token_merges(["t 0"])  # an empty array would not be written

    w = {}
    write_matrix(rng, wr, "token_embd.weight", N_VOCAB, n_embd, ty["embd"], w)
    gemma = arch == "gemma3"

    def norm(name, size):
        # Gemma's HF norms keep w and compute x̂·(1 + w); its converter stores
        # 1 + w, which is what is written here and multiplied in forward().
        write_vector(wr, name, 1.0 + 0.2 * rng.standard_normal(size), w)

    norm("output_norm.weight", n_embd)
    if not case["tied"]:
        write_matrix(rng, wr, "output.weight", N_VOCAB, n_embd, ty["out"], w)
    if case.get("llama3_rope"):
        r = case["llama3_rope"]
        # llama.cpp's converter: factor_i = inv_freq_i / inv_freq_llama3_i, from
        # the same rope_scaling parameters.
        inv = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        factors = inv / llama3_inv_freq(base, hd, r["factor"], r["low"], r["high"], r["old_ctx"])
        wr.add_tensor("rope_freqs.weight", factors.astype(np.float32))
    for l in range(n_layers):
        p = f"blk.{l}."
        qt = kt = None
        if arch == "llama":  # HF rows -> the file's interleaved rows, and back
            qt = (lambda x: permute(x, nh), lambda x: unpermute(x, nh))
            kt = (lambda x: permute(x, nkv), lambda x: unpermute(x, nkv))
        norm(p + "attn_norm.weight", n_embd)
        write_matrix(rng, wr, p + "attn_q.weight", nh * hd, n_embd, ty["q"], w, qt)
        write_matrix(rng, wr, p + "attn_k.weight", nkv * hd, n_embd, ty["k"], w, kt)
        write_matrix(rng, wr, p + "attn_v.weight", nkv * hd, n_embd, ty["v"], w)
        write_matrix(rng, wr, p + "attn_output.weight", n_embd, nh * hd, ty["o"], w)
        if arch == "qwen2":
            for t, size in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                write_vector(wr, p + f"attn_{t}.bias", 0.5 * rng.standard_normal(size), w)
        if arch in ("qwen3", "gemma3"):
            norm(p + "attn_q_norm.weight", hd)
            norm(p + "attn_k_norm.weight", hd)
        norm(p + "ffn_norm.weight", n_embd)
        write_matrix(rng, wr, p + "ffn_gate.weight", n_ff, n_embd, ty["gate"], w)
        write_matrix(rng, wr, p + "ffn_up.weight", n_ff, n_embd, ty["up"], w)
        write_matrix(rng, wr, p + "ffn_down.weight", n_embd, n_ff, ty["down"], w)
        if gemma:
            norm(p + "post_attention_norm.weight", n_embd)
            norm(p + "post_ffw_norm.weight", n_embd)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()

    # The HF-side configuration of the same model.
    inv_freq = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    if case.get("llama3_rope"):
        r = case["llama3_rope"]
        inv_freq = llama3_inv_freq(base, hd, r["factor"], r["low"], r["high"], r["old_ctx"])
    local_base = case.get("local_base", 10000.0)  # transformers: rope_local_base_freq
    cfg = dict(arch=arch, n_layers=n_layers, n_embd=n_embd, n_heads=nh, n_kv=nkv, head_dim=hd,
               eps=eps, windows=windows, inv_freq=inv_freq,
               inv_freq_local=1.0 / local_base ** (np.arange(0, hd, 2, dtype=np.float64) / hd),
               pos_scale=1.0 / case.get("linear_scale", 1.0),
               # Gemma 3: query_pre_attn_scalar = head_dim for these shapes
               attn_scale=1.0 / math.sqrt(hd), softcap=case.get("softcap"))
    return path, cfg, w


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20250611)
    cases = []
    for case in CASES:
        path, cfg, w = build(case, out_dir, rng)
        tokens = [int(t) for t in rng.integers(0, N_VOCAB, case["n_tokens"])]
        logits = forward(cfg, w, tokens)
        decode_from = 3
        decode = forward(cfg, w, tokens, f16_window_kv=True)[decode_from:]
        cases.append({"name": case["name"], "file": path, "tokens": tokens,
                      "logits": [[float(f"{v:.9g}") for v in row] for row in logits],
                      "decode_from": decode_from,
                      "decode_logits": [[float(f"{v:.9g}") for v in row] for row in decode]})
    with open(os.path.join(out_dir, "arch_reference.json"), "w") as f:
        json.dump({"generator": "tests/model/scripts/make_arch_models.py", "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
