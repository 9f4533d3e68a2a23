"""innerq.hf in transformers, on tiny random-init llama, qwen2, qwen3 and
gemma3 models (head_dim 64, 128, 128, 256; gemma3 with sliding layers):
InnerQCache against DynamicCache, the fused attention against
dequantize-then-SDPA, batches, beams, crop, memory against innerq's plan."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
innerq_hf = pytest.importorskip("innerq.hf")

from innerq.hf import InnerQCache
from tiny_models import build_model, cache_kwarg, greedy_decode

import innerq

pytestmark = pytest.mark.hf

STEPS = 32
TOL = 1e-4
# A prompt long enough that the default spec quantizes: past the sink (32)
# and the recent window (96) of every full layer.
LONG = 300


@pytest.fixture(scope="module")
def fused_model(hf, arch):
    """The same weights as tiny_model, attention by innerq."""
    return build_model(arch, attn_implementation="innerq")


def reference_cache(config):
    """DynamicCache, but its sliding-window layers keep K/V rounded to f16,
    as innerq keeps a sliding layer's window whatever the spec (the prefill
    still attends to the incoming states unrounded, as InnerQCache's does)."""

    class F16SlidingLayer(transformers.cache_utils.DynamicSlidingWindowLayer):
        def update(self, k, v, *args, **kwargs):
            if self.get_seq_length() == 0:
                out = super().update(k, v, *args, **kwargs)
                self.keys, self.values = self.keys.half().float(), self.values.half().float()
                return out
            return super().update(k.half().float(), v.half().float(), *args, **kwargs)

    cache = transformers.DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if getattr(layer, "is_sliding", False):
            cache.layers[i] = F16SlidingLayer(sliding_window=layer.sliding_window)
    return cache


def forced(model, cache, ids, tokens):
    """Teacher-forced decode: prefill ids, then feed tokens[:, :-1] one at a
    time; logits [batch, steps, vocab] that predict tokens."""
    key = cache_kwarg(model)
    out_logits = []
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **{key: cache})
        for i in range(tokens.shape[1]):
            out_logits.append(out.logits[:, -1, :].float())
            if i + 1 < tokens.shape[1]:
                out = model(input_ids=tokens[:, i : i + 1], use_cache=True, **{key: cache})
    return torch.stack(out_logits, 1)


def kld(p_logits, q_logits):
    """Mean KL(p || q) over positions."""
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


# Sliding-window layers keep their window in f16 whatever the spec; the fused
# window kernel reads it in another order than SDPA (1.6e-6 on a step's
# attention output, tests below), and 31 steps of a random gemma3 compound
# that to 0.5-1.3e-4 on the logits (8 prompts measured); the bound is 3x that.
TOL_F16_WINDOWS = 4e-4


def test_f32_spec_equals_dynamic_cache_fused_and_dense(hf, tiny_model, fused_model, decode, make_prompt):
    """32 greedy steps: an f32 InnerQCache gives DynamicCache's logits within
    1e-4 through the fused attention, and exactly through SDPA on the
    dequantized K/V. Sliding layers are compared with a DynamicCache whose
    windows are f16 too (reference_cache), within TOL_F16_WINDOWS fused."""
    ids = make_prompt(batch=1, length=20)
    want = decode(tiny_model, reference_cache(tiny_model.config), ids, steps=STEPS)
    fused = decode(fused_model, InnerQCache(fused_model.config, "f32"), ids, steps=STEPS)
    dense = decode(tiny_model, InnerQCache(tiny_model.config, "f32"), ids, steps=STEPS)
    tol = TOL_F16_WINDOWS if any(fused.cache.windows) else TOL
    torch.testing.assert_close(fused.logits, want.logits, atol=tol, rtol=0)
    assert torch.equal(dense.logits, want.logits)
    assert torch.equal(fused.tokens, want.tokens)
    assert fused.cache.get_seq_length() == 20 + STEPS - 1


# KL divergence of the default spec from DynamicCache over 32 teacher-forced
# steps after a 300-token prompt, measured with transformers 5.25 / torch
# 2.15: llama 0.353, qwen2 0.931, qwen3 0.0695, gemma3 0.0047 (random weights
# at initializer_range 0.1 make attention far more sensitive than a trained
# model's; 4-bit kivi4 measured 0.079 / 0.21 / 0.016 / 0.0004 on the same
# runs). gemma3's head_dim of 256 takes the default's 4-bit unrotated keys
# and 2-bit values (kv/cache_spec.h, kWideHeadDim): 0.0018 with the
# head_dim-64 choice, 0.0047 with this one (5.19 and 5.25 alike) on these
# random weights, where the trained Gemma 3 270M reads 3x lower KLD with it
# (docs/quality.md, "Gemma 3 270M"). The bound is twice the measurement.
DEFAULT_KLD_BOUND = {"llama": 0.71, "qwen2": 1.86, "qwen3": 0.14, "gemma3": 0.0094}


def test_default_spec_kld_is_bounded(hf, arch, tiny_model, fused_model, dynamic_cache, decode, make_prompt):
    ids = make_prompt(batch=1, length=LONG, seed=3)
    tokens = decode(tiny_model, dynamic_cache, ids, steps=STEPS).tokens
    want = forced(tiny_model, transformers.DynamicCache(config=tiny_model.config), ids, tokens)
    cache = InnerQCache(fused_model.config, "innerq")
    got = forced(fused_model, cache, ids, tokens)
    d = kld(want, got)
    assert 0 < d < DEFAULT_KLD_BOUND[arch], f"{arch}: KLD {d}"
    m = cache.memory()
    assert m["codes"] > 0  # the middle really is quantized
    # innerq's plan predicts what the sequences hold.
    assert m["reserved"] == cache.plan().sequence_bytes


def test_fused_attention_equals_dense_within_derived_bound(hf, fused_model, make_prompt, attention_cases):
    """At a decode step, innerq_attention (fused kernels on the quantized
    layer, sliding rings included) against float64 attention over the
    layer's dequantized K/V, per layer, on the two inputs with tight derived
    bounds (tests/python/conftest.py): q = 0, and queries that single out
    one token per head. The default spec centers keys: |μ| is bounded by
    twice the largest dequantized key (quantization moves a key by less than
    its own length)."""
    uniform_case, peaked_case = attention_cases
    ids = make_prompt(batch=1, length=LONG, seed=4)
    cache = InnerQCache(fused_model.config, "innerq")
    with torch.no_grad():
        fused_model(input_ids=ids, use_cache=True, **{cache_kwarg(fused_model): cache})
    g = torch.Generator().manual_seed(5)
    n_heads = fused_model.config.num_attention_heads
    for layer in cache.layers:
        attn = fused_model.model.layers[layer.index].self_attn
        k_new = torch.randn(1, layer.cache.kv_heads, 1, layer.cache.head_dim, generator=g)
        v_new = torch.randn(1, layer.cache.kv_heads, 1, layer.cache.head_dim, generator=g)
        k_tag, v_tag = layer.update(k_new, v_new)
        assert getattr(k_tag, "_innerq_layer", None) is layer
        kd, vd = (x[0].double().numpy() for x in layer.dense())  # [kv_heads, n, D]
        n = kd.shape[1]
        mu = 2 * float(np.linalg.norm(kd, axis=2).max())
        picks = [range(0, n // 2), range(n // 2, n)] * (n_heads // 2)
        cases = [uniform_case(kd, vd, n_heads), peaked_case(kd, vd, picks, attn.scaling, mu)]
        for name, (q, want, tol) in zip(("q = 0", "peaked"), cases, strict=True):
            qt = torch.from_numpy(q)[None, :, None, :]
            got, _ = innerq_hf.innerq_attention(attn, qt, k_tag, v_tag, None, scaling=attn.scaling)
            err = np.abs(got[0, 0].double().numpy() - want)
            assert np.all(err <= tol), f"layer {layer.index}, {name}: worst {err.max()} over {np.min(tol)}"


def test_batch_rows_equal_each_row_alone(hf, fused_model, decode, make_prompt):
    ids = make_prompt(batch=2, length=24, seed=9)
    both = decode(fused_model, InnerQCache(fused_model.config, "f32"), ids, steps=12)
    for row in range(2):
        alone = decode(fused_model, InnerQCache(fused_model.config, "f32"), ids[row : row + 1], steps=12)
        torch.testing.assert_close(both.logits[row : row + 1], alone.logits, atol=TOL, rtol=0)
    assert len(both.cache.sequences) == 2


def test_padded_batch_falls_back_to_dense(hf, fused_model, tiny_model, decode, make_prompt):
    ids = make_prompt(batch=2, length=20, seed=11)
    padded, mask = ids.clone(), torch.ones_like(ids)
    padded[0, :5], mask[0, :5] = 0, 0
    with pytest.warns(UserWarning, match="padded batch"):
        innerq_hf._warned = False
        got = decode(
            fused_model, InnerQCache(fused_model.config, "f32"), padded, steps=12, attention_mask=mask
        )
    want = decode(tiny_model, reference_cache(tiny_model.config), padded, steps=12, attention_mask=mask)
    torch.testing.assert_close(got.logits, want.logits, atol=TOL, rtol=0)


def test_generate_beam_search_and_memory(hf, fused_model, tiny_model, make_prompt):
    """generate() with beams: the beams reorder by forking innerq sequences;
    the same text as DynamicCache (f32 spec); memory equals the plan."""
    ids = make_prompt(batch=1, length=16, seed=12)
    key = cache_kwarg(fused_model)
    kwargs = dict(max_new_tokens=10, num_beams=3, do_sample=False, num_return_sequences=2)
    want = tiny_model.generate(ids, **kwargs, **{key: transformers.DynamicCache(config=tiny_model.config)})
    cache = InnerQCache(fused_model.config, "f32")
    got = fused_model.generate(ids, **kwargs, **{key: cache})
    assert torch.equal(got, want)
    assert len(cache.sequences) == 3
    assert cache.memory()["reserved"] == 3 * cache.plan().sequence_bytes


def test_crop_truncates_and_decoding_goes_on(hf, fused_model, decode, make_prompt):
    """crop drops tokens from every sequence; sliding rings give back up to
    their spare slots and refuse more, changing nothing."""
    ids = make_prompt(batch=1, length=20, seed=13)
    cache = InnerQCache(fused_model.config, "f32")
    first = decode(fused_model, cache, ids, steps=8)
    again = decode(fused_model, InnerQCache(fused_model.config, "f32"), ids, steps=4)
    n = cache.get_seq_length()
    if any(cache.windows):  # gemma3: rings of 16 positions and 16 spare slots
        long = decode(fused_model, InnerQCache(fused_model.config, "f32"), ids, steps=20).cache
        held = long.get_seq_length()  # 39: the rings hold positions 7..38
        with pytest.raises(ValueError, match="sliding-window layer"):
            long.crop(-20)  # position 19 would need position 3 back
        assert long.get_seq_length() == held == len(long.sequences[0])
    cache.crop(-4)
    assert cache.get_seq_length() == n - 4 == len(cache.sequences[0])
    with pytest.raises(ValueError, match="negative"):
        cache.crop(3)
    # The cropped cache continues like one that never held the 4 tokens.
    with torch.no_grad():
        out = fused_model(input_ids=first.tokens[:, 3:4], use_cache=True, **{cache_kwarg(fused_model): cache})
    ref_cache = InnerQCache(fused_model.config, "f32")
    decode(fused_model, ref_cache, ids, steps=4)
    with torch.no_grad():
        ref = fused_model(
            input_ids=first.tokens[:, 3:4], use_cache=True, **{cache_kwarg(fused_model): ref_cache}
        )
    torch.testing.assert_close(out.logits, ref.logits, atol=TOL, rtol=0)
    assert torch.equal(again.tokens, first.tokens[:, :4])


def test_bfloat16_model(hf, arch, make_prompt):
    """A bf16 model stores bf16 K/V through DLPack, no copy in torch."""
    model = build_model(arch, attn_implementation="innerq", dtype=torch.bfloat16)
    ids = make_prompt(batch=1, length=20)
    cache = InnerQCache(model.config, "innerq")
    got = greedy_decode(model, cache, ids, steps=6)
    assert torch.isfinite(got.logits).all()
    assert cache.layers[0].dtype == torch.bfloat16


def test_errors(hf, fused_model):
    with pytest.raises(ValueError, match="k=9"):
        InnerQCache(fused_model.config, "innerq:k=9")
    cache = InnerQCache(fused_model.config, "f32")
    with pytest.raises(ValueError, match="cpu|CPU"):
        cache.layers[0].lazy_initialization(torch.zeros(1, 2, 0, 64, device="meta"), None)
    assert "InnerQCache('f32'" in repr(cache)
    assert isinstance(innerq.__version__, str)
