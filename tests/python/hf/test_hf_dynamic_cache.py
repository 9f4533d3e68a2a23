"""Baseline checks of the tiny-model fixtures: transformers' own DynamicCache
against no cache at all. An InnerQCache test compares against the same
references with the same helpers."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

STEPS = 32
TOL = 1e-4


def test_dynamic_cache_matches_no_cache(tiny_model, dynamic_cache, decode, reference_logits, make_prompt):
    ids = make_prompt(batch=1, length=20)
    got = decode(tiny_model, dynamic_cache, ids, steps=STEPS)
    assert got.tokens.shape == (1, STEPS)
    assert torch.isfinite(got.logits).all()
    # Random weights at initializer_range 0.1 must not decode one token forever,
    # or a cache that drops history would go unnoticed.
    assert got.tokens.unique().numel() > 1
    ref = reference_logits(tiny_model, ids, got.tokens)
    torch.testing.assert_close(got.logits, ref, atol=TOL, rtol=0)
    assert dynamic_cache.get_seq_length() == ids.shape[1] + STEPS - 1


def test_dynamic_cache_left_padded_batch(tiny_model, dynamic_cache, decode, reference_logits, make_prompt):
    """Batch 2, the first row left-padded by 5: each row's logits equal those of
    the row decoded alone without padding."""
    ids = make_prompt(batch=2, length=20, seed=11)
    pad = 5
    padded = ids.clone()
    padded[0, :pad] = 0
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    got = decode(tiny_model, dynamic_cache, padded, steps=STEPS, attention_mask=mask)
    ref = reference_logits(tiny_model, padded, got.tokens, attention_mask=mask)
    torch.testing.assert_close(got.logits, ref, atol=TOL, rtol=0)
    for row, start in ((0, pad), (1, 0)):
        alone = decode(
            tiny_model,
            transformers.DynamicCache(config=tiny_model.config),
            ids[row : row + 1, start:],
            steps=STEPS,
        )
        torch.testing.assert_close(got.logits[row : row + 1], alone.logits, atol=TOL, rtol=0)
