#!/usr/bin/env python3
"""Independent reference for the real Gemma 3 270M (Q4_K_M): logits of the
float64 HuggingFace-style forward pass of make_arch_models.py over the
file's weights as dequantized by the `gguf` package.

The prompt is a sentence innerq's tokenizer split into the ids below,
repeated to 577 tokens so that the sliding-window layers (512 positions)
drop their oldest positions; the script checks that the ids spell the
sentence in the file's vocabulary. Stored: the logits of every 61st
vocabulary entry at a few positions, for the exact model (prefill) and for
the one whose windowed layers keep K/V in f16 (decode, as innerq's window
caches do).

CTest runs it at test time into the build tree (label `model`):
  python3 tests/model/scripts/make_gemma3_reference.py MODEL.gguf OUT.json
Without the model it writes {"missing": ...} and the test skips.
Needs `pip install gguf numpy`. The file's header is read here directly
(gguf.GGUFReader takes seconds to index the 262144-entry vocabulary).
"""
import json
import os
import struct
import sys

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_arch_models import hidden_states, output_head  # noqa: E402

TEXT = ("The capital of France is Paris. The capital of Germany is Berlin. The Eiffel Tower "
        "was finished in 1889, and the city around it has grown ever since.")
SENTENCE = [818, 5279, 529, 7001, 563, 9079, 236761, 669, 5279, 529, 9405, 563, 15687, 236761,
            669, 94648, 25822, 691, 8585, 528, 236743, 236770, 236828, 236828, 236819, 236764,
            532, 506, 3207, 2101, 625, 815, 12530, 3785, 2338, 236761]
BOS = 2
TOKENS = [BOS] + SENTENCE * 16  # 577 positions
PREFILL_POSITIONS = [35, 512, 576]
DECODE_FROM = 500
DECODE_POSITIONS = [500, 511, 512, 540, 576]
VOCAB_STRIDE = 61


class Gguf:
    """Metadata scalars, string arrays and the tensor table of a GGUF v3 file."""

    SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, path):
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        self.raw = memoryview(self.buf)
        self.pos = 0
        assert bytes(self.raw[:4]) == b"GGUF", "not a GGUF file"
        self.pos = 4
        self.u32()  # version
        n_tensors, n_kv = self.u64(), self.u64()
        self.meta = {}
        for _ in range(n_kv):
            key = self.string()
            self.meta[key] = self.value(self.u32())
        self.tensors = {}
        for _ in range(n_tensors):
            name = self.string()
            ne = [self.u64() for _ in range(self.u32())]
            self.tensors[name] = (ne, GGMLQuantizationType(self.u32()), self.u64())
        align = self.meta.get("general.alignment", 32)
        self.data = (self.pos + align - 1) // align * align

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.raw, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def u32(self):
        return self.unpack("<I")

    def u64(self):
        return self.unpack("<Q")

    def string(self):
        n = self.u64()
        s = bytes(self.raw[self.pos:self.pos + n]).decode("utf-8")
        self.pos += n
        return s

    def value(self, t):
        if t in self.SCALARS:
            return self.unpack(self.SCALARS[t])
        if t == 8:
            return self.string()
        assert t == 9, f"unknown metadata type {t}"
        et, n = self.u32(), self.u64()
        if et == 8:
            return [self.string() for _ in range(n)]
        size = struct.calcsize(self.SCALARS[et])
        self.pos += n * size  # numeric arrays are not needed here
        return None

    def rows(self, name, index=None):
        """A tensor's rows (all, or those of `index`) as float64 [rows, ne0]."""
        ne, qtype, offset = self.tensors[name]
        block_values, block_bytes = GGML_QUANT_SIZES[qtype]
        row_bytes = ne[0] // block_values * block_bytes
        n_rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
        start = self.data + offset
        data = np.asarray(self.buf[start:start + n_rows * row_bytes]).reshape(n_rows, row_bytes)
        if index is not None:
            data = data[index]
        if qtype == GGMLQuantizationType.F32:
            values = data.view(np.float32)
        else:
            values = dequantize(data, qtype)
        values = np.asarray(values, dtype=np.float64).reshape(len(data), ne[0])
        return values[0] if len(ne) == 1 else values


class Rows:
    """token_embd.weight looked up row by row (it is 262144 x 640)."""

    def __init__(self, f, name):
        self.f, self.name = f, name

    def __getitem__(self, tokens):
        return self.f.rows(self.name, np.asarray(tokens))


def main():
    model, out = sys.argv[1], sys.argv[2]
    if not os.path.exists(model):  # the test skips and says so
        with open(out, "w") as fo:
            json.dump({"missing": f"{model} (run scripts/fetch-model.sh gemma3-270m)"}, fo)
        return
    f = Gguf(model)
    pieces = f.meta["tokenizer.ggml.tokens"]
    spelled = "".join(pieces[t] for t in SENTENCE).replace("\u2581", " ")
    assert spelled == TEXT, f"the ids spell {spelled!r}"
    a = "gemma3."
    n_layers, n_embd = f.meta[a + "block_count"], f.meta[a + "embedding_length"]
    hd = f.meta[a + "attention.key_length"]
    window = f.meta[a + "attention.sliding_window"]
    base = f.meta[a + "rope.freq_base"]
    freqs = np.arange(0, hd, 2, dtype=np.float64) / hd
    cfg = dict(arch="gemma3", n_layers=n_layers, n_embd=n_embd,
               n_heads=f.meta[a + "attention.head_count"],
               n_kv=f.meta[a + "attention.head_count_kv"], head_dim=hd,
               eps=f.meta[a + "attention.layer_norm_rms_epsilon"],
               # transformers' Gemma3 layer_types and rope_local_base_freq
               windows=[window if (l + 1) % 6 else 0 for l in range(n_layers)],
               inv_freq=1.0 / base ** freqs, inv_freq_local=1.0 / 10000.0 ** freqs,
               pos_scale=1.0, attn_scale=1.0 / np.sqrt(hd), softcap=None)
    w = {name: f.rows(name) for name in f.tensors if name.startswith("blk.")}
    w["output_norm.weight"] = f.rows("output_norm.weight")
    w["token_embd.weight"] = Rows(f, "token_embd.weight")
    vocab = len(pieces)
    index = list(range(0, vocab, VOCAB_STRIDE))
    out_w = f.rows("token_embd.weight", np.asarray(index))

    def logits(f16_window_kv, positions):
        x = hidden_states(cfg, w, TOKENS, f16_window_kv)[positions]
        return [[float(f"{v:.9g}") for v in row] for row in output_head(cfg, out_w, x)]

    result = {"generator": "tests/model/scripts/make_gemma3_reference.py", "text": TEXT,
              "tokens": TOKENS, "indices": index,
              "prefill_positions": PREFILL_POSITIONS,
              "prefill_logits": logits(False, PREFILL_POSITIONS),
              "decode_from": DECODE_FROM, "decode_positions": DECODE_POSITIONS,
              "decode_logits": logits(True, DECODE_POSITIONS)}
    with open(out, "w") as fo:
        json.dump(result, fo)
        fo.write("\n")


if __name__ == "__main__":
    main()
