#!/usr/bin/env python3
"""Writes the seed corpus of the GGUF fuzz target, tests/fuzz/corpus/gguf/.

The files come from the `gguf` package (llama.cpp's own writer, an encoder
independent of innerq's reader): tiny Llama models that load and run (F32,
F16, BF16, Q4_0, Q4_1, Q5_1, Q8_0; GPT-2 and SentencePiece vocabularies;
tied and untied output), files one field away from valid (blocks beyond block_count, NaN
metadata, NaN in a norm, a NaN block scale that only shows in the logits),
and a file holding every metadata type. Each is a few KB, so the fuzzer
mutates small inputs. The output is deterministic (fixed seeds).

    pip install gguf numpy
    python3 tests/fuzz/make_gguf_seeds.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")


def gpt2_vocab(n):
    return [chr(ord("a") + i) for i in range(n)], ["a b"]


def spm_vocab(extra):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + extra
    scores = [0.0] * 259 + [-float(i) for i in range(len(extra))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(extra)
    return tokens, scores, types


def write_model(name, n_embd=8, n_heads=2, n_kv_heads=1, n_ff=16, n_layers=1, wtype=Q.F32,
                tied=False, vocab="gpt2", block_count=None, rope_base=10000.0,
                eps=1e-5, edit=None):
    """A whole Llama model; `edit(arrays)` may change tensors before writing."""
    rng = np.random.RandomState(sum(map(ord, name)))
    path = os.path.join(OUT, name)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layers if block_count is None else block_count)
    w.add_embedding_length(n_embd)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_feed_forward_length(n_ff)
    w.add_context_length(64)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(eps)
    if vocab == "gpt2":
        tokens, merges = gpt2_vocab(8)
        w.add_tokenizer_model("gpt2")
        w.add_token_list(tokens)
        w.add_token_merges(merges)
    else:
        tokens, scores, types = spm_vocab(["\u2581a", "\u2581b", "ab"])
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
    n_vocab = len(tokens)
    head_dim = n_embd // n_heads

    arrays = {}  # name -> (f32 values [rows, cols] or [n], storage type)

    def matrix(tname, rows, cols):
        arrays[tname] = ((rng.rand(rows, cols).astype(np.float32) - 0.5), wtype)

    def norm(tname):
        arrays[tname] = (np.ones(n_embd, dtype=np.float32), Q.F32)

    matrix("token_embd.weight", n_vocab, n_embd)
    norm("output_norm.weight")
    if not tied:
        matrix("output.weight", n_vocab, n_embd)
    for l in range(n_layers):
        p = f"blk.{l}."
        norm(p + "attn_norm.weight")
        matrix(p + "attn_q.weight", n_heads * head_dim, n_embd)
        matrix(p + "attn_k.weight", n_kv_heads * head_dim, n_embd)
        matrix(p + "attn_v.weight", n_kv_heads * head_dim, n_embd)
        matrix(p + "attn_output.weight", n_embd, n_heads * head_dim)
        norm(p + "ffn_norm.weight")
        matrix(p + "ffn_gate.weight", n_ff, n_embd)
        matrix(p + "ffn_up.weight", n_ff, n_embd)
        matrix(p + "ffn_down.weight", n_embd, n_ff)

    encoded = {}
    for tname, (values, t) in arrays.items():
        if t == Q.F32:
            encoded[tname] = (values, None)
        elif t == Q.F16:
            encoded[tname] = (values.astype(np.float16), None)
        else:
            encoded[tname] = (gguf.quants.quantize(values, t), t)
    if edit is not None:
        edit(encoded)
    for tname, (data, raw) in encoded.items():
        w.add_tensor(tname, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def nan_norm(encoded):
    values, raw = encoded["output_norm.weight"]
    values = values.copy()
    values[3] = np.nan
    encoded["output_norm.weight"] = (values, raw)


def nan_q8_scale(encoded):
    data, raw = encoded["blk.0.ffn_down.weight"]
    data = data.copy()
    data[0, 0:2] = np.frombuffer(np.float16(np.nan).tobytes(), dtype=np.uint8)  # block 0's d
    encoded["blk.0.ffn_down.weight"] = (data, raw)


def every_metadata_type(name):
    path = os.path.join(OUT, name)
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -7)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo")
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 0.25)
    w.add_array("t.arr_i32", [1, 2, 3])
    w.add_array("t.arr_str", ["a", "bc", ""])
    w.add_array("t.arr_nested", [["a"], ["b", "c"]])
    w.add_tensor("t", np.arange(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    write_model("model_f32_gpt2.gguf")
    write_model("model_f16_spm.gguf", wtype=Q.F16, vocab="spm")
    write_model("model_q8_0_tied.gguf", n_embd=32, n_heads=4, n_kv_heads=2, n_ff=32,
                wtype=Q.Q8_0, tied=True)
    write_model("model_q4_1_spm_2layers.gguf", n_embd=32, n_heads=4, n_kv_heads=2, n_ff=32,
                n_layers=2, wtype=Q.Q4_1, vocab="spm")
    for t in (Q.Q4_0, Q.Q5_1, Q.BF16):
        write_model(f"model_{t.name.lower()}.gguf", n_embd=32, n_heads=4, n_kv_heads=2,
                    n_ff=32, wtype=t)
    write_model("bad_block_count.gguf", n_layers=2, block_count=1)
    write_model("bad_rope_base.gguf", rope_base=float("nan"))
    write_model("bad_eps.gguf", eps=-1.0)
    write_model("bad_nan_norm.gguf", edit=nan_norm)
    write_model("bad_nan_q8_0_scale.gguf", n_embd=32, n_heads=4, n_kv_heads=2, n_ff=32,
                wtype=Q.Q8_0, edit=nan_q8_scale)
    every_metadata_type("metadata_every_type.gguf")
    for f in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, f))
        if size >= 64 << 10:
            sys.exit(f"{f}: {size} bytes, seeds must stay under 64 KB")
        print(f"{f}: {size} bytes")


if __name__ == "__main__":
    main()
