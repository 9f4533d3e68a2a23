"""innerq in Hugging Face transformers: a quantized KV cache and the fused
decode attention that reads it.

    import innerq.hf  # registers attn_implementation="innerq"
    from innerq.hf import InnerQCache

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="innerq")
    cache = InnerQCache(model.config, spec="innerq")
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)
    print(cache.memory())

`InnerQCache` holds one innerq sequence per batch row, all in one pool, and
one `InnerQLayer` per attention layer. Prefill attention runs on the incoming
K/V (SDPA) while the cache stores them. At decode (up to 8 new tokens), with
attn_implementation="innerq", `update` stores the new K/V and the attention
function runs innerq's fused kernels on the quantized layer: no dequantized
copy of the history is made. With any other attention implementation (or a
padded batch) `update` returns the cache's contents dequantized, so every
model keeps working, only without the speed.

Keys arrive from transformers with each RoPE pair split into the two halves
of the head (llama GGUF files, and innerq's own models of them, keep pairs
adjacent). A rotated spec (rot=k, the default `innerq` below head_dim 256)
does not care; an unrotated one (the default from head_dim 256 on, as Gemma
3 files store it too) groups channels in transformers' order here.

Tested with transformers 5.19 to 5.25 (pyproject.toml pins the range).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import innerq

__all__ = ["MAX_FUSED_QUERY", "InnerQCache", "InnerQLayer", "innerq_attention"]

#: Queries per sequence up to which a step is decoding (fused attention);
#: longer steps are prefill and attend to their own K/V with SDPA.
MAX_FUSED_QUERY = 8

_TESTED = ((5, 19), (5, 25))


def _check_version() -> None:
    v = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    if not _TESTED[0] <= v <= _TESTED[1]:
        warnings.warn(
            f"innerq.hf was tested with transformers {_TESTED[0][0]}.{_TESTED[0][1]} to "
            f"{_TESTED[1][0]}.{_TESTED[1][1]}; this is {transformers.__version__}",
            stacklevel=3,
        )


def _to_torch(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(a).to(dtype=like.dtype, device=like.device)


class InnerQLayer(CacheLayerMixin):
    """One attention layer of an InnerQCache: its K/V live in the cache's
    innerq sequences (layer `index` of each)."""

    is_compileable = False
    is_croppable = True

    def __init__(self, cache: InnerQCache, index: int, window: int):
        super().__init__()
        self.cache, self.index, self.window = cache, index, window
        self.is_sliding = window > 0
        # A sliding layer's ring gives back at most its spare slots once it
        # has wrapped, so crop cannot always restore it (transformers reads
        # this before assisted decoding).
        self.is_croppable = window == 0
        self.n_tokens = 0
        self.dtype: torch.dtype | None = None
        self.device: torch.device | None = None

    def __repr__(self) -> str:
        kind = f"sliding window {self.window}" if self.window else self.cache.spec
        return f"InnerQLayer({self.index}, {kind}, {self.n_tokens} tokens)"

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.cache._start(key_states.shape[0], key_states.device)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores key/value states [batch, kv_heads, tokens, head_dim] and
        returns what attention reads: at a fused decode step the new states,
        tagged for innerq_attention; otherwise dense K/V."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        past, n = self.n_tokens, key_states.shape[-2]
        if n == 0:  # early initialization passes empty states
            return key_states, value_states
        fused = past > 0 and self.cache._fused() and n <= (1 if self.window else MAX_FUSED_QUERY)
        # A sliding layer attended densely: its ring after the append holds
        # what the mask expects (window − 1 past positions and the new one),
        # unless several new positions push past ones out that the first of
        # them still sees; then the window as it was, and the step.
        before = None
        if not fused and self.window and n > 1 and past + n > self.window:
            before = self._dense_past()
        k = key_states.detach().transpose(1, 2)  # [batch, tokens, heads, dim], a view
        v = value_states.detach().transpose(1, 2)
        innerq.append(self.cache.sequences, self.index, k, v)
        self.n_tokens += n
        if past == 0:  # prefill: attention reads the incoming states
            return key_states, value_states
        if fused:
            key_states._innerq_layer = value_states._innerq_layer = self
            return key_states, value_states
        if before is not None:
            return torch.cat([before[0], key_states], dim=-2), torch.cat([before[1], value_states], dim=-2)
        return self.dense()

    def _dense_past(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last window − 1 positions held before an append (sliding layers)."""
        k, v = self.dense()
        return k[:, :, -(self.window - 1) :, :], v[:, :, -(self.window - 1) :, :]

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the layer holds, dequantized: [batch, kv_heads, n, head_dim]
        (a sliding layer: its window)."""
        ks, vs = [], []
        for seq in self.cache.sequences:
            k, v, _ = seq.dequantize(self.index)
            ks.append(k)
            vs.append(v)
        like = torch.empty(0, dtype=self.dtype, device=self.device)
        return _to_torch(np.stack(ks), like), _to_torch(np.stack(vs), like)

    def get_seq_length(self) -> int:
        return self.n_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.window and self.n_tokens >= self.window:
            return self.window - 1 + query_length, self.n_tokens - self.window + 1
        return self.n_tokens + query_length, 0

    def get_max_length(self) -> int:
        return self.window if self.window else self.cache.max_tokens

    # Sequence operations act on whole innerq sequences (every layer at
    # once): InnerQCache does them once and sets each layer's count. Called
    # on one layer, they would run once per layer: refused.
    def reset(self) -> None:
        self.n_tokens = 0

    def _whole_cache_only(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "InnerQLayer: crop, reorder and batch selection act on every layer of the innerq "
            "sequences at once; call them on the InnerQCache"
        )

    crop = reorder_cache = batch_repeat_interleave = batch_select_indices = _whole_cache_only


class InnerQCache(Cache):
    """A transformers Cache whose K/V live in innerq's quantized block pool.

    config: the model's config (layers, KV heads, head_dim, sliding-window
        layers). spec: an innerq cache spec ("innerq", "innerq-paper", "kivi",
        "q4_0:rot=kv", "f16", ...). max_tokens: the longest sequence (default
        the model's max_position_embeddings). budget: None grows the pool as
        needed; a byte count makes it fixed (innerq.PoolFullError past it).

    Beam search, num_return_sequences and assisted decoding map to fork,
    select and truncate of the innerq sequences."""

    def __init__(
        self,
        config: Any,
        spec: str = "innerq",
        *,
        max_tokens: int | None = None,
        budget: int | None = None,
    ):
        _check_version()
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.config, self.spec = config, str(innerq.CacheSpec(spec))
        n_layers = text.num_hidden_layers
        heads = text.num_attention_heads
        self.kv_heads = getattr(text, "num_key_value_heads", None) or heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        self.max_tokens = max_tokens or getattr(text, "max_position_embeddings", None) or 1 << 20
        layer_types = getattr(text, "layer_types", None) or ["full_attention"] * n_layers
        for t in layer_types:
            if t not in ("full_attention", "sliding_attention"):
                raise ValueError(
                    f"InnerQCache: layer type {t!r} is not supported (full and sliding attention are)"
                )
        window = getattr(text, "sliding_window", None) or 0
        self.windows = [window if t == "sliding_attention" else 0 for t in layer_types]
        self.budget = budget
        self.pool: innerq.Pool | None = None
        self.sequences: list[innerq.Sequence] = []
        super().__init__(layers=[InnerQLayer(self, i, w) for i, w in enumerate(self.windows)])

    def __repr__(self) -> str:
        n = self.layers[0].n_tokens if self.layers else 0
        return f"InnerQCache({self.spec!r}, {len(self.sequences)} sequences, {n} tokens)"

    def _start(self, batch: int, device: torch.device) -> None:
        """The pool and one sequence per batch row, at the first update."""
        if self.pool is not None:
            if batch != len(self.sequences):
                raise ValueError(
                    f"InnerQCache holds {len(self.sequences)} sequences; this step has batch {batch}"
                )
            return
        if device.type != "cpu":
            raise ValueError(f"InnerQCache runs on the CPU; the model's states are on {device}")
        self.pool = innerq.Pool(
            self.spec,
            n_layers=len(self.windows),
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            max_tokens=self.max_tokens,
            max_seqs=batch if self.budget else 0,
            budget=self.budget,
            windows=self.windows if any(self.windows) else None,
        )
        self.sequences = [self.pool.sequence() for _ in range(batch)]

    def _fused(self) -> bool:
        return getattr(self.config, "_attn_implementation", None) == "innerq"

    # ---- what innerq holds ----
    def memory(self) -> dict[str, int]:
        """Bytes of every sequence, by purpose (innerq.Sequence.memory):
        codes, metadata, windows, norm, total, reserved, f16_bytes."""
        total: dict[str, int] = {}
        for seq in self.sequences:
            for key, value in seq.memory().items():
                total[key] = total.get(key, 0) + value
        return total

    def plan(self, tokens: int | None = None) -> innerq.MemoryPlan:
        """innerq's plan for this cache's sequences at `tokens` tokens (now by
        default): memory()["reserved"] equals its sequence_bytes × batch."""
        n = self.layers[0].n_tokens if tokens is None else tokens
        return innerq.plan_memory(
            self.spec,
            tokens=n,
            seqs=max(1, len(self.sequences)),
            n_layers=len(self.windows),
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            windows=self.windows if any(self.windows) else None,
        )

    # ---- sequence operations, once for all layers ----
    def reset(self) -> None:
        for seq in self.sequences:
            seq.clear()
        for layer in self.layers:
            layer.reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(
                f"crop({tokens_to_remove}): give the number of tokens to remove as a negative int, as "
                "transformers' DynamicCache does"
            )
        n = self.layers[0].n_tokens
        if tokens_to_remove == 0 or n == 0:
            return
        keep = max(0, n + tokens_to_remove)
        # A sliding-window ring gives back positions while its spare slots
        # still hold what the shorter sequence attends to; innerq refuses
        # more (ValueError naming the layer), before anything changes.
        for seq in self.sequences:
            seq.truncate(keep)
        for layer in self.layers:
            layer.n_tokens = keep

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.sequences = [self.sequences[int(i)].fork() for i in beam_idx.tolist()]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.sequences = [s if r == 0 else s.fork() for s in self.sequences for r in range(repeats)]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.sequences = [self.sequences[int(i)] for i in indices.tolist()]


def _all_visible(mask: torch.Tensor | None) -> bool:
    """Whether an attention mask lets every query see every key (no padding)."""
    if mask is None:
        return True
    if mask.dtype == torch.bool:
        return bool(mask.all())
    return bool((mask == 0).all())


def innerq_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """attn_implementation="innerq": at a decode step of an InnerQCache, the
    fused decode attention on the quantized layer; otherwise SDPA."""
    layer: InnerQLayer | None = getattr(key, "_innerq_layer", None)
    if layer is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    if kwargs.get("softcap") is not None:
        raise NotImplementedError("innerq attention: attention logit soft-capping is not supported")
    batch, n_heads, n_q, dim = query.shape
    scale = float(scaling) if scaling is not None else 0.0
    if not _all_visible(attention_mask):
        _warn_dense_once()
        k, v = layer.dense()
        return sdpa_attention_forward(module, query, k, v, attention_mask, scaling=scaling, **kwargs)
    out = torch.empty((batch, n_q, n_heads, dim), dtype=query.dtype, device=query.device)
    q = query.detach()
    if n_q == 1:
        innerq.attend(layer.cache.sequences, layer.index, q[:, :, 0, :], scale, out=out[:, 0])
    else:
        visible = layer.n_tokens - n_q + 1
        for b, seq in enumerate(layer.cache.sequences):
            seq.attend_chunk(layer.index, q[b].transpose(0, 1), visible, scale, out=out[b])
    return out, None


_warned = False


def _warn_dense_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "innerq attention: a padded batch is attended on dequantized K/V (SDPA), not the fused "
            "kernels; batches of equal-length prompts decode fused",
            stacklevel=3,
        )


def _register() -> None:
    AttentionInterface.register("innerq", innerq_attention)
    try:  # the mask innerq reads at prefill is SDPA's
        from transformers import AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask
    except ImportError:  # pragma: no cover - older layouts
        return
    AttentionMaskInterface.register("innerq", sdpa_mask)


_register()
