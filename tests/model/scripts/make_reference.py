#!/usr/bin/env python3
"""Independent reference for the model layer tests: token ids and logits.

Writes tests/model/fixtures/<name>.json for stories260K and SmolLM2-135M:
  tokenizer_cases: text -> ids from the HuggingFace `tokenizers` library, with
    a tokenizer built from the GGUF vocabulary (not from innerq's code):
      gpt2/smollm: BPE(vocab, merges), pre-tokenizer Digits(individual) +
        ByteLevel(GPT-2 regex), special tokens as added tokens;
      llama (SentencePiece): BPE with byte fallback whose merges are ordered by
        the merged token's score, normalizer prepend "▁" + spaces -> "▁" (the
        construction of HF's LlamaTokenizerFast / GGUF converter).
    (transformers' own GGUF loader needs torch, which is not installed here.)
  logit_cases: logits of a numpy float64 forward pass over weights read and
    dequantized by the `gguf` package (NORM, adjacent-pair RoPE).
  greedy: the reference's greedy continuation (stories260K only).

Usage (from the repository root; needs `pip install gguf numpy tokenizers`):
  python3 tests/model/scripts/make_reference.py stories260K ../shared/data/models/stories260K.gguf
  python3 tests/model/scripts/make_reference.py smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

TEXTS = [
    "Once upon a time",
    "Hello, world! How's it going?",
    "  two  spaces   three\t\ttabs\n\nnewlines ",
    "In 2024, 3.14159 and 1,000,000 people",
    "naïve café — 日本語 😀 Ünïcödé",
    "I'm, you're, they've, we'll, he'd, it's, don't",
    " leading space and trailing   ",
    "!!! ??? ... --- @@@ #hash $dollar",
    "Lily saw a big, red ball. She said, \"Wow!\"",
]
CHAT_USER = "What is the capital of France?"
CHAT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) > 1:  # array
        if f.types[1].name == "STRING":
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0].name == "STRING":
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def build_tokenizer(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    kind = field(reader, "tokenizer.ggml.model")
    vocab = {t: i for i, t in reversed(list(enumerate(tokens)))}
    if kind == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
        tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                for i, t in enumerate(types) if t in (3, 4)])
        return tok, False, None
    scores = field(reader, "tokenizer.ggml.scores")
    merges = []
    for piece, pid in vocab.items():
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in vocab and b in vocab:
                merges.append((scores[pid], -pid, a, b))
    merges.sort(key=lambda m: (-m[0], -m[1]))
    tok = Tokenizer(models.BPE(vocab, [(a, b) for _, _, a, b in merges], unk_token=tokens[0],
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok, True, field(reader, "tokenizer.ggml.bos_token_id")


def weights(reader):
    w = {}
    for t in reader.tensors:
        a = dequantize(t.data, t.tensor_type)
        w[t.name] = np.asarray(a, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
    return w


def forward(reader, w, tokens):
    n_layers = field(reader, "llama.block_count")
    n_embd = field(reader, "llama.embedding_length")
    n_heads = field(reader, "llama.attention.head_count")
    n_kv = field(reader, "llama.attention.head_count_kv") or n_heads
    eps = field(reader, "llama.attention.layer_norm_rms_epsilon")
    base = field(reader, "llama.rope.freq_base") or 10000.0
    hd = n_embd // n_heads
    n_rot = field(reader, "llama.rope.dimension_count") or hd
    n = len(tokens)

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    pos = np.arange(n, dtype=np.float64)[:, None]
    theta = pos * base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)  # [n, n_rot/2]
    cos, sin = np.cos(theta), np.sin(theta)

    def rope(x):  # [n, heads, hd], adjacent pairs of the first n_rot dims
        x = x.copy()
        a, b = x[:, :, 0:n_rot:2].copy(), x[:, :, 1:n_rot:2].copy()
        x[:, :, 0:n_rot:2] = a * cos[:, None, :] - b * sin[:, None, :]
        x[:, :, 1:n_rot:2] = a * sin[:, None, :] + b * cos[:, None, :]
        return x

    x = w["token_embd.weight"][tokens].astype(np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(n_layers):
        p = f"blk.{l}."
        xb = rms(x, w[p + "attn_norm.weight"])
        q = rope((xb @ w[p + "attn_q.weight"].T).reshape(n, n_heads, hd))
        k = rope((xb @ w[p + "attn_k.weight"].T).reshape(n, n_kv, hd))
        v = (xb @ w[p + "attn_v.weight"].T).reshape(n, n_kv, hd)
        out = np.zeros((n, n_heads, hd))
        for h in range(n_heads):
            g = h // (n_heads // n_kv)
            s = q[:, h, :] @ k[:, g, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, h, :] = s @ v[:, g, :]
        x = x + out.reshape(n, n_heads * hd) @ w[p + "attn_output.weight"].T
        xb = rms(x, w[p + "ffn_norm.weight"])
        gate = xb @ w[p + "ffn_gate.weight"].T
        up = xb @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = rms(x, w["output_norm.weight"])
    out_w = w.get("output.weight", w["token_embd.weight"])
    return x @ out_w.T  # [n, vocab]


def main():
    name, path = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    tok, spm, bos = build_tokenizer(reader)
    fixture = {"model": name, "tokenizer_cases": [], "logit_cases": []}

    def ids_of(text):
        ids = tok.encode(text, add_special_tokens=False).ids
        return ([bos] if spm else []) + ids

    for text in TEXTS:
        fixture["tokenizer_cases"].append({"text": text, "ids": ids_of(text)})
    if not spm:
        chat = (f"<|im_start|>system\n{CHAT_SYSTEM}<|im_end|>\n<|im_start|>user\n{CHAT_USER}"
                "<|im_end|>\n<|im_start|>assistant\n")
        fixture["tokenizer_cases"].append({"text": chat, "ids": ids_of(chat), "chat_user": CHAT_USER})

    w = weights(reader)
    prompts = ["Once upon a time", "Lily saw a big, red ball. She said, \"Wow!\""]
    if not spm:
        prompts.append(fixture["tokenizer_cases"][-1]["text"])
    vocab = len(field(reader, "tokenizer.ggml.tokens"))
    stride = 1 if vocab <= 1024 else 389  # which vocabulary entries to store
    for text in prompts:
        tokens = ids_of(text)
        logits = forward(reader, w, tokens)
        idx = list(range(0, vocab, stride))
        fixture["logit_cases"].append({
            "tokens": tokens,
            "indices": idx,
            "argmax": [int(a) for a in logits.argmax(axis=1)],
            "logits": [[float(f"{v:.7g}") for v in row[idx]] for row in logits],
        })

    if spm:
        tokens = ids_of("Once upon a time")
        prompt_len = len(tokens)
        for _ in range(48):
            tokens.append(int(forward(reader, w, tokens)[-1].argmax()))
        fixture["greedy"] = {"prompt_tokens": tokens[:prompt_len], "tokens": tokens[prompt_len:],
                             "text": tok.decode(tokens[prompt_len:])}
        print(fixture["greedy"]["text"], file=sys.stderr)

    with open(f"tests/model/fixtures/{name}.json", "w") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
