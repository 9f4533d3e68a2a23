#!/usr/bin/env python3
"""Independent reference for innerq's weight block kernels.

For every ggml weight format innerq reads (Q4_0 ... Q6_K, BF16) this writes
random blocks and their values as dequantized by the `gguf` package's numpy
code (gguf.quants.dequantize), which is not innerq's. The quantized codes are
random bytes; the fp16 scales are overwritten with finite values of either
sign from 2^-20 (subnormal in fp16) to 2, so every value is finite; BF16
values are random finite floats.

CTest runs it at test time and writes the fixture into the build tree:
  python3 tests/model/scripts/make_weight_blocks.py OUT.json
Output: {"generator": "...", "formats": [{"name", "n", "bytes" (hex),
"values" (the f32 bit patterns as unsigned integers)}]}.
Needs `pip install gguf numpy` (scripts/install-deps.sh installs them).
"""
import json
import os
import sys

try:
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize
except ImportError as e:
    sys.exit(
        f"make_weight_blocks: cannot import the gguf reference ({e}).\n"
        "Install it with: pip install gguf numpy  (or run scripts/install-deps.sh)"
    )

# Byte offsets of the fp16 fields in one block, from ggml's block structs:
# q4_0 {d, qs}, q4_1 {d, m, qs}, q5_0 {d, qh, qs}, q5_1 {d, m, qh, qs},
# q8_0 {d, qs}, q2_K {scales[16], qs[64], d, dmin}, q3_K {hmask[32], qs[64],
# scales[12], d}, q4_K {d, dmin, scales[12], qs}, q5_K {d, dmin, scales[12],
# qh, qs}, q6_K {ql[128], qh[64], scales[16], d}.
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
}
VALUES = 2048  # per format: 64 blocks of 32 or 8 super-blocks of 256


def finite_magnitudes(rng, count):
    signs = np.where(rng.integers(0, 2, count) == 1, 1.0, -1.0)
    return signs * np.exp2(rng.uniform(-20.0, 1.0, count))


def random_blocks(rng, name):
    qtype = GGMLQuantizationType[name]
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    n_blocks = VALUES // block_values
    if name == "BF16":
        f32 = finite_magnitudes(rng, VALUES).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    data = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for at in F16_FIELDS[name]:
        scales = finite_magnitudes(rng, n_blocks).astype(np.float16)
        data[:, at : at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(-1)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_weight_blocks.py OUT.json")
    out = sys.argv[1]
    rng = np.random.default_rng(20240611)
    formats = []
    for name in list(F16_FIELDS) + ["BF16"]:
        data = random_blocks(rng, name)
        values = dequantize(data.reshape(1, -1), GGMLQuantizationType[name]).reshape(-1)
        values = values.astype(np.float32)
        if values.size != VALUES or not np.all(np.isfinite(values)):
            sys.exit(f"make_weight_blocks: {name}: expected {VALUES} finite values")
        formats.append(
            {
                "name": name,
                "n": VALUES,
                "bytes": data.tobytes().hex(),
                "values": values.view(np.uint32).tolist(),
            }
        )
    try:
        from importlib.metadata import version

        generator = f"gguf {version('gguf')}, numpy {np.__version__}"
    except Exception:  # noqa: BLE001 - the version is informative only
        generator = f"gguf, numpy {np.__version__}"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"generator": generator, "formats": formats}, f)


if __name__ == "__main__":
    main()
