"""Prints what transformers actually hands a custom Cache and a custom attention
function, for the installed version (not a test; run it after a version bump):

    build/venv/bin/python tests/python/hf/probe_contract.py [llama|gemma3 ...]

It registers an attention function "probe" (plus sdpa's mask builder under the
same name), passes a logging Cache subclass to generate() with a left-padded
batch of 2, then a 2-beam search, and prints:
  - every Cache / layer method generate() and the model call, in order;
  - the positional and keyword arguments each layer's update() receives;
  - the kwargs, mask and module attributes the attention function receives at
    prefill and at decode, per layer type;
  - whether an extra generate() kwarg reaches the attention function.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import transformers
from conftest import PAD, build_model, prompt_ids
from transformers import AttentionInterface, Cache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

EVENTS: list[str] = []


def describe(x):
    if isinstance(x, torch.Tensor):
        return f"Tensor{tuple(x.shape)}:{str(x.dtype).replace('torch.', '')}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in sorted(x.items())) + "}"
    if isinstance(x, (list, tuple)):
        return type(x).__name__ + "[" + ", ".join(describe(v) for v in x) + "]"
    if x is None or isinstance(x, (int, float, bool, str)):
        return repr(x)
    return type(x).__name__


def logged_layer(base):
    class Logged(base):
        def update(self, key_states, value_states, *args, **kwargs):
            EVENTS.append(
                f"layer.update(K={describe(key_states)}, args={describe(args)}, kwargs={describe(kwargs)})"
            )
            return super().update(key_states, value_states, *args, **kwargs)

        def get_mask_sizes(self, query_length, *args):
            out = super().get_mask_sizes(query_length, *args)
            EVENTS.append(
                f"layer.get_mask_sizes({query_length}{', ' + describe(args) if args else ''}) -> {out}"
            )
            return out

    Logged.__name__ = "Logged" + base.__name__
    return Logged


class ProbeCache(Cache):
    """A Cache with one logged Dynamic(SlidingWindow)Layer per config layer."""

    def __init__(self, config):
        config = config.get_text_config(decoder=True)
        layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        layers = []
        for t in layer_types:
            if t == "sliding_attention":
                layers.append(logged_layer(DynamicSlidingWindowLayer)(sliding_window=config.sliding_window))
            else:
                layers.append(logged_layer(DynamicLayer)())
        super().__init__(layers=layers)


LOGGED_CACHE_METHODS = [
    "get_seq_length",
    "get_mask_sizes",
    "get_query_offset",
    "get_max_length",
    "reset",
    "reorder_cache",
    "crop",
    "batch_repeat_interleave",
    "batch_select_indices",
    "activate_past_recording",
    "early_initialization",
]


def _wrap(name):
    def method(self, *args, **kwargs):
        out = getattr(Cache, name)(self, *args, **kwargs)
        EVENTS.append(
            f"cache.{name}({', '.join(describe(a) for a in args)}"
            f"{', ' + describe(kwargs) if kwargs else ''}) -> {describe(out)}"
        )
        return out

    return method


for _name in LOGGED_CACHE_METHODS:
    if hasattr(Cache, _name):
        setattr(ProbeCache, _name, _wrap(_name))


def probe_attention(module, query, key, value, attention_mask, **kwargs):
    mask = describe(attention_mask)
    if (
        isinstance(attention_mask, torch.Tensor)
        and attention_mask.dtype == torch.bool
        and attention_mask.shape[-1] <= 24
    ):
        rows = attention_mask[:, 0, -1, :].int().tolist()
        mask += f" last-query-row per batch={rows}"
    EVENTS.append(
        f"attn(layer_idx={module.layer_idx}, module.sliding_window={getattr(module, 'sliding_window', 'n/a')}, "
        f"module.is_causal={getattr(module, 'is_causal', 'n/a')}, Q={describe(query)}, K={describe(key)}, "
        f"mask={mask}, kwargs={describe(kwargs)})"
    )
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def summarize(title):
    print(f"--- {title}")
    counts = Counter()
    last = None
    for e in EVENTS:
        if e == last:
            counts[e] += 1
            continue
        if last is not None and counts[last]:
            print(f"      (x{counts[last] + 1})")
        print("   ", e)
        last = e
    if last is not None and counts[last]:
        print(f"      (x{counts[last] + 1})")
    EVENTS.clear()


def main(archs):
    AttentionInterface.register("probe", probe_attention)
    AttentionMaskInterface.register("probe", sdpa_mask)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for arch in archs:
        model = build_model(arch, attn_implementation="sdpa")
        model.set_attn_implementation("probe")
        print(
            f"\n===== {arch}: config._attn_implementation={model.config._attn_implementation}, "
            f"layer_types={getattr(model.config, 'layer_types', None)}, "
            f"sliding_window={getattr(model.config, 'sliding_window', None)}"
        )
        ids = prompt_ids(batch=2, length=6)
        ids[0, :2] = PAD
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        cache = ProbeCache(model.config)
        kw = dict(max_new_tokens=3, do_sample=False, past_key_values=cache, attention_mask=mask)
        try:
            model.generate(ids, innerq_probe=object(), **kw)
            summarize(
                "generate(batch 2, row 0 left-padded by 2, greedy, 3 tokens, extra kwarg innerq_probe=object())"
            )
        except Exception as e:  # the extra kwarg may be refused
            EVENTS.clear()
            print(f"--- extra generate kwarg refused: {type(e).__name__}: {str(e)[:200]}")
            cache = ProbeCache(model.config)
            kw["past_key_values"] = cache
            model.generate(ids, **kw)
            summarize("generate(batch 2, row 0 left-padded by 2, greedy, 3 tokens)")
        # Sliding: run long enough to pass the window on gemma3.
        if getattr(model.config, "sliding_window", None):
            cache = ProbeCache(model.config)
            long_ids = prompt_ids(batch=1, length=model.config.sliding_window + 2)
            model.generate(long_ids, max_new_tokens=2, do_sample=False, past_key_values=cache)
            summarize(f"generate(batch 1, prompt {long_ids.shape[1]} > window, 2 tokens)")
        cache = ProbeCache(model.config)
        model.generate(
            prompt_ids(batch=1, length=4),
            max_new_tokens=2,
            num_beams=2,
            do_sample=False,
            past_key_values=cache,
        )
        summarize("generate(batch 1, num_beams=2, 2 tokens)")
        # An extra kwarg through a direct forward (not generate()).
        from conftest import cache_kwarg

        marker = object()
        with torch.no_grad():
            model(
                input_ids=prompt_ids(batch=1, length=3),
                use_cache=True,
                **{cache_kwarg(model): ProbeCache(model.config)},
                innerq_probe=marker,
            )
        EVENTS[:] = [e for e in EVENTS if e.startswith(("attn", "layer.update"))][:2]
        summarize(
            f"model(..., {cache_kwarg(model)}=cache, innerq_probe=object()) (direct forward): first update + attn"
        )
        # Without a registered mask builder.
        AttentionInterface.register("probe_nomask", probe_attention)
        model.set_attn_implementation("probe_nomask")
        model.generate(
            ids,
            max_new_tokens=1,
            do_sample=False,
            past_key_values=ProbeCache(model.config),
            attention_mask=mask,
        )
        EVENTS[:] = [e for e in EVENTS if e.startswith("attn")][:1]
        summarize("attn_implementation registered WITHOUT AttentionMaskInterface (padded batch): mask seen")


if __name__ == "__main__":
    main(sys.argv[1:] or ["llama", "gemma3"])
