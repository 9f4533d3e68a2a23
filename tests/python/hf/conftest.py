"""Fixtures for the Hugging Face transformers tests: tiny random-init models of the
four architectures innerq runs (llama, qwen2, qwen3, gemma3), built in-process
from configs (no hub, no files), and greedy-decode helpers that return the
logits of every step so that two caches can be compared step by step.

torch and transformers are imported lazily: this conftest must import without
them (the test modules skip with pytest.importorskip).

Tested with transformers 5.19 and 5.25 (scripts/python-env.sh --hf). 5.25
renamed the forward/generate keyword `past_key_values` to `cache` (the old name
still works with a deprecation warning until 5.40/6.0); `cache_kwarg(model)`
gives the name the installed version wants.
"""

from __future__ import annotations

import pytest
from tiny_models import ARCHS, build_model, full_forward_logits, greedy_decode, prompt_ids

# --- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="session")
def hf():
    """(torch, transformers), skipping when either is missing; torch on 1 thread."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # One thread: the models are tiny, and with other work on the 2 cores
    # torch's OpenMP threads wait for each other: the suite took 56 s on 2
    # threads under load against 4.5 s idle, and 4.7 s on 1 thread under the
    # same load.
    torch.set_num_threads(1)
    return torch, transformers


@pytest.fixture(scope="session", params=list(ARCHS))
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_model(hf, arch):
    """One random-init model per architecture (session-scoped: treat it as
    read-only)."""
    return build_model(arch)


@pytest.fixture
def dynamic_cache(hf, tiny_model):
    """A fresh DynamicCache laid out from the model's config (sliding layers
    become DynamicSlidingWindowLayer)."""
    _, transformers = hf
    return transformers.DynamicCache(config=tiny_model.config)


@pytest.fixture(scope="session")
def decode():
    """greedy_decode(model, cache, ids, steps=32, attention_mask=None) -> Decoded."""
    return greedy_decode


@pytest.fixture(scope="session")
def reference_logits():
    """full_forward_logits(model, ids, tokens, attention_mask=None) -> logits."""
    return full_forward_logits


@pytest.fixture(scope="session")
def make_prompt():
    """prompt_ids(batch=1, length=20, seed=7) -> LongTensor [batch, length]."""
    return prompt_ids
