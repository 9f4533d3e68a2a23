"""innerq: 2-4 bit KV caches that decode faster than a half-precision cache.

Arrays go in as numpy arrays or torch tensors (float32, float16 or bfloat16,
any strides with a contiguous last axis; torch passes through DLPack without
a copy) and come back as numpy float32 arrays.

    import innerq
    model = innerq.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    out = model.generate("The capital of France is", n=32, kv="innerq")
    print(out.text, out.kv_bytes, out.decode_tps)

The cache alone, for any attention layer:

    pool = innerq.Pool("innerq", n_layers=1, kv_heads=8, head_dim=128, max_tokens=32768)
    seq = pool.sequence()
    seq.append(0, k, v)            # [tokens, kv_heads, head_dim]
    o = seq.attend(0, q)           # q [n_heads, head_dim] -> [n_heads, head_dim]

`innerq.hf.InnerQCache` plugs the same cache into Hugging Face transformers.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from collections.abc import Sequence as TypingSequence
from dataclasses import dataclass, field

# libgomp reads its wait policy when it loads (with _core, just below): short
# spinning keeps the idle speed and does not collapse beside busy processes
# (docs/architecture.md, "Threads under contention"). A user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

import numpy as np

from . import _core
from ._core import (
    CacheSpec,
    PoolFullError,
    Sampler,
    Sequence,
    __version__,
    append,
    attend,
    bit_widths,
    cuda_compiled,
    group_sizes,
    kinds,
    set_threads,
    simd_target,
    threads,
    wait_policy,
)

__all__ = [
    "CacheSpec",
    "Generation",
    "MemoryPlan",
    "Model",
    "PerplexityResult",
    "Pool",
    "PoolFullError",
    "Sampler",
    "Sequence",
    "__version__",
    "append",
    "attend",
    "bit_widths",
    "cuda_compiled",
    "group_sizes",
    "kinds",
    "plan_memory",
    "set_threads",
    "simd_target",
    "threads",
    "tokens_for_budget",
    "wait_policy",
]


# ---------------------------------------------------------------------------
# Memory planning
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """What a pool of `seqs` sequences of `tokens` tokens holds (bytes)."""

    bytes: int  # the pool: blocks and every sequence's windows
    sequence_bytes: int  # one sequence
    block_bytes: int  # one block of every layer
    blocks: int  # blocks per layer
    block_tokens: int  # tokens per block
    f16_bytes: int  # the same tokens in an f16 cache

    @property
    def ratio(self) -> float:
        """f16 bytes over these bytes."""
        return self.f16_bytes / self.bytes if self.bytes else float("inf")


def _shape_of(model, n_layers, kv_heads, head_dim, windows):
    if model is not None:
        return model.n_layers, model.n_kv_heads, model.head_dim, (model.windows or None)
    missing = [
        n for n, v in (("n_layers", n_layers), ("kv_heads", kv_heads), ("head_dim", head_dim)) if v is None
    ]
    if missing:
        raise ValueError(f"give model= or {', '.join(missing)}")
    return n_layers, kv_heads, head_dim, windows


def plan_memory(
    kv: str | CacheSpec = "innerq",
    *,
    tokens: int,
    seqs: int = 1,
    model: Model | None = None,
    n_layers: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    windows: list[int] | None = None,
) -> MemoryPlan:
    """Bytes of `seqs` sequences of `tokens` tokens, by arithmetic (nothing is
    allocated). The shape comes from `model` or from n_layers, kv_heads,
    head_dim (and windows: per layer, > 0 for a sliding-window layer)."""
    L, H, D, W = _shape_of(model, n_layers, kv_heads, head_dim, windows)
    return MemoryPlan(**_core.plan_memory(kv, L, H, D, tokens, seqs, W))


def tokens_for_budget(
    kv: str | CacheSpec = "innerq",
    *,
    budget: int,
    seqs: int = 1,
    model: Model | None = None,
    n_layers: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    windows: list[int] | None = None,
) -> int:
    """The most tokens each of `seqs` sequences can hold in `budget` bytes."""
    L, H, D, W = _shape_of(model, n_layers, kv_heads, head_dim, windows)
    return _core.tokens_for_budget(kv, L, H, D, budget, seqs, W)


# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------
class Pool(_core.Pool):
    """Cache blocks for sequences of one shape and one spec.

    budget=None: the pool grows as its sequences need blocks. budget=N bytes:
    a fixed pool whose blocks and the windows of `max_seqs` sequences fit in
    N (plan_memory(...).bytes is the budget that holds them); past it,
    appends raise PoolFullError and store nothing."""

    def __init__(
        self,
        kv: str | CacheSpec = "innerq",
        *,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        max_tokens: int,
        max_seqs: int = 0,
        budget: int | None = None,
        windows: list[int] | None = None,
    ):
        if budget is not None and budget <= 0:
            raise ValueError(f"budget {budget} must be a positive number of bytes, or None to grow")
        super().__init__(kv, n_layers, kv_heads, head_dim, max_tokens, max_seqs, budget or 0, windows)

    def sequence(self) -> Sequence:
        """A new, empty sequence in this pool."""
        return Sequence(self)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"innerq.Pool({self.spec!r}, n_layers={self.n_layers}, kv_heads={self.kv_heads}, "
            f"head_dim={self.head_dim}, max_tokens={self.max_tokens}; {s['sequences']} sequences, "
            f"{s['bytes']} bytes in {s['blocks']} blocks per layer)"
        )


# ---------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------
class _Progress:
    """A progress bar redrawn in place on a terminal (or every 10 % elsewhere)."""

    def __init__(self, label: str, total: int, enabled: bool | None):
        self.label, self.total = label, max(1, total)
        self.tty = sys.stderr.isatty()
        self.enabled = self.tty if enabled is None else enabled
        self.last = -1

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        frac = min(1.0, done / self.total)
        decile = int(frac * 10)
        if not self.tty and decile == self.last:
            return
        self.last = decile
        bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
        end = "   " if self.tty else "\n"
        sys.stderr.write(
            f"{chr(13) if self.tty else ''}{self.label} [{bar}] {int(100 * frac):3d}% {detail}{end}"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
@dataclass
class Generation:
    """What Model.generate produced, with its speed and cache memory."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    stop: str  # "eos", "length" or "context" (the cache is full)
    kv: str
    prefill_s: float
    decode_s: float
    n_decoded: int
    kv_bytes: int  # what the cache's tokens occupy
    kv_reserved: int  # what the sequence holds (whole blocks, windows)
    kv_bytes_f16: int  # the same tokens in an f16 cache

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.n_decoded / self.decode_s if self.decode_s > 0 else 0.0

    def __str__(self) -> str:
        return self.text


@dataclass
class PerplexityResult:
    """Teacher-forced scores of one cache spec against the f16 cache."""

    kv: str
    ppl: float
    kld: float  # mean KL divergence of the next-token distribution from f16's
    top1: float  # share of positions with f16's argmax
    tokens: int
    kv_bytes: int  # at the end of the last chunk
    kv_bytes_f16: int
    nll: float = field(repr=False, default=0.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


class Model(_core.Model):
    """A GGUF model (llama, qwen2, qwen3, gemma3) running on innerq caches.

    The methods mirror the innerq tool: generate (`innerq generate`),
    perplexity (`innerq perplexity`), tokenize; extend/decode send tokens
    through sequences of a pool made by Model.pool."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(os.fspath(path))

    def __repr__(self) -> str:
        return (
            f"innerq.Model({self.arch}, {self.n_layers} layers, {self.n_heads}/{self.n_kv_heads} "
            f"heads, head_dim {self.head_dim}, {self.n_params / 1e6:.0f}M parameters)"
        )

    def pool(
        self,
        kv: str | CacheSpec = "innerq",
        *,
        max_tokens: int = 4096,
        max_seqs: int = 1,
        budget: int | None = None,
    ) -> Pool:
        """A pool with this model's cache shape (sliding-window layers
        included). budget=None grows; budget="plan" is the planned bytes of
        max_seqs sequences of max_tokens; an int is a byte budget."""
        if budget == "plan":
            budget = plan_memory(kv, model=self, tokens=max_tokens, seqs=max_seqs).bytes
        return Pool(
            kv,
            n_layers=self.n_layers,
            kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            max_tokens=max_tokens,
            max_seqs=max_seqs,
            budget=budget,
            windows=self.windows or None,
        )

    def detokenize(self, tokens: Iterable[int], errors: str = "replace") -> str:
        """The text of the tokens; bytes that are not UTF-8 become U+FFFD
        (errors="strict" raises instead; detokenize_bytes gives the bytes)."""
        return self.detokenize_bytes(tokens).decode("utf-8", errors=errors)

    def detokenize_bytes(self, tokens: Iterable[int]) -> bytes:
        return super().detokenize([int(t) for t in tokens])

    def generate(
        self,
        prompt: str,
        n: int = 128,
        *,
        kv: str | CacheSpec = "innerq",
        chat: bool = False,
        system: str = "",
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        seed: int = 0,
        max_tokens: int | None = None,
        stream: Callable[[str], None] | None = None,
    ) -> Generation:
        """Up to n tokens after the prompt, through a cache of spec `kv`
        (greedy unless temperature > 0). chat=True wraps the prompt in the
        model's chat template. max_tokens: the cache's capacity (default
        prompt + n). stream: called with each new piece of text."""
        if n < 0:
            raise ValueError(f"n {n} must be >= 0")
        text = self.chat_turn(prompt, system, True) if chat else prompt
        ids = self.tokenize(text, add_bos=True, special=True)
        if len(ids) == 0:
            raise ValueError("the prompt is empty")
        capacity = max_tokens or len(ids) + max(1, n)
        if len(ids) >= capacity:
            raise ValueError(f"the prompt has {len(ids)} tokens, which does not fit max_tokens={capacity}")
        sampler = Sampler(temperature, top_k, top_p, seed)
        seq = self.pool(kv, max_tokens=capacity).sequence()
        t0 = time.perf_counter()
        logits = self.extend(seq, ids.tolist())
        prefill_s = time.perf_counter() - t0
        out: list[int] = []
        stop, decode_s, n_decoded, printed = "length", 0.0, 0, ""
        while len(out) < n:
            token = sampler.sample(logits)
            if self.ends_generation(token):
                stop = "eos"
                break
            out.append(token)
            if stream is not None:
                text_now = self.detokenize(out)
                stream(text_now[len(printed) :])
                printed = text_now
            if len(out) == n:
                break
            if len(seq) >= capacity:
                stop = "context"
                break
            t = time.perf_counter()
            logits = self.decode([seq], [token])[0]
            decode_s += time.perf_counter() - t
            n_decoded += 1
        m = seq.memory()
        return Generation(
            text=self.detokenize(out),
            tokens=out,
            prompt_tokens=len(ids),
            stop=stop,
            kv=str(kv),
            prefill_s=prefill_s,
            decode_s=decode_s,
            n_decoded=n_decoded,
            kv_bytes=m["total"],
            kv_reserved=m["reserved"],
            kv_bytes_f16=m["f16_bytes"],
        )

    def perplexity(
        self,
        text: str | None = None,
        *,
        file: str | os.PathLike | None = None,
        kv: str | TypingSequence[str] = ("innerq",),
        ctx: int = 1024,
        prefix: int = 512,
        chunks: int | None = None,
        token_batch: int = 1,
        progress: bool | None = None,
    ) -> list[PerplexityResult]:
        """`innerq perplexity`: cuts the text (or the UTF-8 file) into chunks of ctx tokens, prefills `prefix` tokens, then scores
        every later token teacher-forced through each spec's cache against
        the f16 cache (the first result). token_batch tokens go through the
        cache per step (1: token by token, as decoding sees it). A progress
        bar runs on stderr on a terminal (progress=True/False forces it)."""
        if (text is None) == (file is None):
            raise ValueError("give the text, or file= a path to it (one of the two)")
        if file is not None:
            with open(file, encoding="utf-8") as f:
                text = f.read()
        specs = [kv] if isinstance(kv, (str, CacheSpec)) else list(kv)
        specs = ["f16"] + [str(s) for s in specs if str(s) != "f16"]
        for s in specs:
            CacheSpec(s)  # a bad spec fails before any work
        if ctx < 2 or ctx > self.n_ctx_train:
            raise ValueError(f"ctx {ctx} is not in 2..{self.n_ctx_train} (the model's training context)")
        if not 1 <= prefix < ctx:
            raise ValueError(f"prefix {prefix} must be in [1, ctx {ctx})")
        if token_batch < 1:
            raise ValueError(f"token_batch {token_batch} must be >= 1")
        tokens = self.tokenize(text, add_bos=False)
        available = len(tokens) // ctx
        if available == 0:
            raise ValueError(f"the text has {len(tokens)} tokens, fewer than one chunk of ctx {ctx}")
        n_chunks = min(chunks, available) if chunks else available
        nll = np.zeros(len(specs))
        kld = np.zeros(len(specs))
        top1 = np.zeros(len(specs), dtype=np.int64)
        kv_bytes = [0] * len(specs)
        kv_f16 = [0] * len(specs)
        scored = 0
        bar = _Progress("perplexity", n_chunks * (ctx - prefix), progress)
        done = 0
        for c in range(n_chunks):
            chunk = tokens[c * ctx : (c + 1) * ctx].tolist()
            if self.adds_bos:
                chunk[0] = self.bos
            # Every spec's sequence takes the same tokens in one weight pass
            # per step, as `innerq perplexity` batches its configs.
            seqs = [self.pool(spec, max_tokens=ctx).sequence() for spec in specs]
            # logits[:, i] scores token first + i; t is the next token to send.
            logits = self.extend(seqs, chunk[:prefix])[:, None, :]
            first = t = prefix
            while True:
                logp = _log_softmax(logits)  # [specs, n, V]
                nxt = np.asarray(chunk[first : first + logits.shape[1]])
                nll -= logp[:, np.arange(len(nxt)), nxt].sum(axis=1)
                base = logp[0]
                kld += np.maximum(0.0, (np.exp(base) * (base - logp)).sum(axis=2)).sum(axis=1)
                top1 += (logits.argmax(axis=2) == logits[0].argmax(axis=1)).sum(axis=1)
                done += len(nxt)
                bar.update(done, f"chunk {c + 1}/{n_chunks}")
                if t >= ctx - 1:
                    break
                n = min(token_batch, ctx - 1 - t)
                logits = self.extend(seqs, chunk[t : t + n], all_logits=True)
                first, t = t + 1, t + n
            for i, seq in enumerate(seqs):
                m = seq.memory()
                kv_bytes[i], kv_f16[i] = m["total"], m["f16_bytes"]
            scored += ctx - prefix
        bar.finish()
        return [
            PerplexityResult(
                kv=s,
                ppl=float(np.exp(nll[i] / scored)),
                kld=float(kld[i] / scored),
                top1=float(top1[i] / scored),
                tokens=scored,
                kv_bytes=kv_bytes[i],
                kv_bytes_f16=kv_f16[i],
                nll=float(nll[i]),
            )
            for i, s in enumerate(specs)
        ]
