"""Tiny random-init models of the four architectures innerq runs (llama,
qwen2, qwen3, gemma3), built in-process from configs (no hub, no files), and
greedy-decode helpers that return the logits of every step so that two caches
can be compared step by step. The fixtures in conftest.py wrap them.

torch and transformers are imported lazily: this module imports without them.

5.25 renamed the forward/generate keyword `past_key_values` to `cache` (the
old name still works with a deprecation warning until 5.40/6.0);
`cache_kwarg(model)` gives the name the installed version wants.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SEED = 1234
VOCAB = 256
PAD, BOS, EOS = 0, 1, 2

# name -> (config class name, config kwargs). Head dims 64 / 128 / 128 / 256,
# GQA 4 query heads on 2 KV heads everywhere. gemma3 has three sliding layers
# (window 16) and one full layer, like the real model's 5:1 pattern; prompts
# plus 32 decode steps run well past the window.
ARCHS: dict[str, tuple[str, dict]] = {
    "llama": (
        "LlamaConfig",
        dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
        ),
    ),
    "qwen2": (
        # Qwen2's attention takes head_dim = hidden_size // heads (its config
        # has no usable head_dim field): 512 / 4 = 128. Qwen2 has q/k/v bias.
        "Qwen2Config",
        dict(
            hidden_size=512,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
    ),
    "qwen3": (
        "Qwen3Config",
        dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=128,
        ),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=16,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        ),
    ),
}

COMMON = dict(
    vocab_size=VOCAB,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
    # Larger than the default 0.02 so that attention is not uniform
    # and logits differ visibly between tokens: a cache that returns
    # wrong K/V then changes the logits by far more than 1e-4.
    initializer_range=0.1,
    tie_word_embeddings=False,
)


def build_config(arch: str, attn_implementation: str = "sdpa"):
    import transformers

    cls_name, kwargs = ARCHS[arch]
    config = getattr(transformers, cls_name)(**COMMON, **kwargs)
    config._attn_implementation = attn_implementation
    return config


def build_model(arch: str, attn_implementation: str = "sdpa", dtype=None):
    """A random-init causal LM of `arch`, float32 unless `dtype`, eval mode,
    with a fixed seed (the same weights on every call)."""
    import torch
    import transformers

    config = build_config(arch, attn_implementation)
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation=attn_implementation, dtype=dtype or torch.float32
    )
    model.eval()
    # generate() reads these from the generation config.
    model.generation_config.pad_token_id = PAD
    model.generation_config.bos_token_id = BOS
    model.generation_config.eos_token_id = EOS
    return model


def cache_kwarg(model) -> str:
    """The keyword the model's forward takes its Cache by: `cache` from 5.25
    on, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prompt_ids(batch: int = 1, length: int = 20, seed: int = 7):
    """Random token ids in [3, VOCAB) (no pad/bos/eos), shape [batch, length]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


@dataclass
class Decoded:
    tokens: torch.Tensor  # [batch, steps] greedy tokens
    logits: torch.Tensor  # [batch, steps, vocab] logits that chose them
    cache: object  # the cache after the last step


def greedy_decode(model, cache, ids, steps: int = 32, attention_mask=None) -> Decoded:
    """Prefill `ids` through `model` with `cache`, then `steps - 1` single-token
    decode steps, greedy. logits[:, i] is the distribution that produced
    tokens[:, i] (step 0: the prefill's last position). Calls the model's
    forward directly (no generate()), so no EOS stop and nothing hidden.
    With `attention_mask` (2D, 1 = token, 0 = left padding) the mask grows by
    one column a step and position ids follow the mask, as generate() does."""
    import torch

    key = cache_kwarg(model)
    tokens, logits = [], []
    mask = attention_mask
    with torch.no_grad():
        kwargs = {key: cache, "use_cache": True}
        if mask is not None:
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, **kwargs)
        for step in range(steps):
            last = out.logits[:, -1, :].float()
            nxt = last.argmax(-1)
            tokens.append(nxt)
            logits.append(last)
            if step == steps - 1:
                break
            kwargs = {key: cache, "use_cache": True}
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
                kwargs["attention_mask"] = mask
                kwargs["position_ids"] = mask.long().sum(-1, keepdim=True) - 1
            out = model(input_ids=nxt[:, None], **kwargs)
    return Decoded(torch.stack(tokens, 1), torch.stack(logits, 1), cache)


def full_forward_logits(model, ids, tokens, attention_mask=None):
    """The no-cache reference for `greedy_decode`: one forward over the prompt
    followed by the decoded tokens (teacher forcing), returning the logits at
    the positions that predicted `tokens`: [batch, steps, vocab]."""
    import torch

    full = torch.cat([ids, tokens[:, :-1]], dim=1)
    kwargs = {"use_cache": False}
    if attention_mask is not None:
        mask = torch.cat(
            [attention_mask, attention_mask.new_ones(attention_mask.shape[0], tokens.shape[1] - 1)], dim=1
        )
        kwargs["attention_mask"] = mask
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=full, **kwargs)
    p = ids.shape[1]
    return out.logits[:, p - 1 : p - 1 + tokens.shape[1], :].float()
