"""Attention entropy by layer, head and query position, without ever holding an n x n matrix.

For every query row the attention weights are ``p = softmax(q·kᵀ · scaling)`` over the causal prefix;
its entropy ``H = −Σ p log p`` says how spread the attention is (0: one key; ``ln(i+1)``: uniform over
the prefix). Beyond L0 an unscaled model's attention typically spreads out; an attention factor m
(cos, sin × m, logits × m²) sharpens it again.

Forward hooks on each attention module recompute q and k from the layer input (exactly as the module
does, rotary included) and reduce them block by block: query rows a block at a time, keys streamed a
block at a time with a running softmax (as flash attention does), so beyond q and k themselves the
memory is ``heads × query_block × key_block`` whatever the length. The forward stops after the last
requested layer.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import heap
from .events import Event, FromDict, Sink, null_sink
from .patch import patch
from .rope import RopeSpec


class EntropyError(ValueError):
    pass


@dataclass
class EntropyResult(FromDict):
    """Mean entropy and mean maximum weight per layer, head and query-position bucket."""

    label: str
    length: int
    layers: list[int]
    n_heads: int
    bucket_size: int
    entropy: list[list[list[float]]]  # [layer][head][bucket], nats
    max_weight: list[list[list[float]]]  # [layer][head][bucket]
    rows_per_bucket: list[int]  # query rows averaged in each bucket
    temperature: float = 1.0  # extra multiplier on the logits (1: as the model computes them)
    seconds: float = 0.0
    spec: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        pos = self.by_position()
        return (f"{self.label} @ {self.length}: mean entropy {sum(pos) / len(pos):.3f} nats (first bucket {pos[0]:.3f}, "
                f"last {pos[-1]:.3f}; uniform would be {self.uniform_reference()[-1]:.3f}), {self.seconds:.1f} s")

    def figures(self) -> list[Any]:
        """Entropy by layer and head, and by query position."""
        from .evaluate.figures import entropy_heatmap_figure, entropy_position_figure

        return [entropy_heatmap_figure(self), entropy_position_figure([self])]

    def by_position(self) -> list[float]:
        """Mean entropy per bucket over all layers and heads."""
        t = torch.tensor(self.entropy)  # (layers, heads, buckets)
        return t.mean(dim=(0, 1)).tolist()

    def max_weight_by_position(self) -> list[float]:
        return torch.tensor(self.max_weight).mean(dim=(0, 1)).tolist()

    def layer_head(self) -> list[list[float]]:
        """Mean entropy per layer and head over all buckets."""
        return torch.tensor(self.entropy).mean(dim=2).tolist()

    def uniform_reference(self) -> list[float]:
        """Entropy of uniform attention over the causal prefix, at each bucket's mid position."""
        return [math.log(min(self.length, (b + 0.5) * self.bucket_size) + 1) for b in range(len(self.rows_per_bucket))]


def without_attention_factor(spec: RopeSpec) -> RopeSpec:
    """The same frequencies with the attention factor set to 1 (to see what the temperature does)."""
    return spec.without_attention_factor()  # each method knows its own (most have none)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, n, head_dim); cos/sin: (batch, n, rotary_dim); rotates the first rotary_dim dims."""
    rd = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]  # (batch, 1, n, rotary_dim)
    rot = x[..., :rd] * cos + _rotate_half(x[..., :rd]) * sin
    return torch.cat([rot, x[..., rd:]], dim=-1) if rd < x.shape[-1] else rot


def _qk(attn: torch.nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q (batch, heads, n, d) and k (batch, kv_heads, n, d) after the rotary, as the attention module computes them."""
    cfg = attn.config
    d = attn.head_dim
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    b, n, _ = hidden.shape
    if hasattr(attn, "q_proj"):
        q, k = attn.q_proj(hidden), attn.k_proj(hidden)
    elif hasattr(attn, "qkv_proj"):  # Phi-3: fused projection
        qkv = attn.qkv_proj(hidden)
        q, k = qkv[..., : heads * d], qkv[..., heads * d: heads * d + kv * d]
    else:
        raise EntropyError(f"{type(attn).__name__}: no q_proj/k_proj or qkv_proj; unsupported attention module")
    q = q.view(b, n, heads, d).transpose(1, 2)  # (batch, heads, n, d)
    k = k.view(b, n, kv, d).transpose(1, 2)  # (batch, kv_heads, n, d)
    return _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)


class _Blocks:
    """Three preallocated heads x query_block x key_block buffers, reused for every block of every layer.

    Each block is computed into them with ``out=`` and in-place ops, so the reduction makes no large
    allocation in its loop: allocations of ever-changing size (the causal prefix grows row block by
    row block) fragment the C heap, and on a 16k forward that cost more resident memory than the
    buffers themselves.
    """

    def __init__(self, heads: int, rows: int, keys: int, dtype: torch.dtype) -> None:
        self.raw, self.s, self.e = (torch.empty(heads * rows * keys, dtype=dtype) for _ in range(3))

    @staticmethod
    def view(buf: torch.Tensor, *shape: int) -> torch.Tensor:
        return buf[:math.prod(shape)].view(*shape)  # contiguous, whatever the block's size


def _stream(state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, s: torch.Tensor,
            e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one block of logits s (heads, B, K) into the running (m, z, y) of each row; e is scratch.

    m is the running maximum, ``z = Σ exp(s − m)`` and ``y = Σ exp(s − m)(s − m)``; when m rises to
    m', old terms are rescaled by ``a = exp(m − m')`` and their (s − m) shifts by (m − m').
    Every row has a finite logit in the first block (key 0 is in every causal prefix). s is
    overwritten with s − m'.
    """
    heads, rows, keys = s.shape
    m_blk = s.amax(-1)  # (heads, B)
    m = m_blk if state is None else torch.maximum(state[0], m_blk)
    s.sub_(m[..., None])
    torch.exp(s, out=e)
    z_blk = e.sum(-1)
    y_blk = torch.bmm(e.view(heads * rows, 1, keys), s.view(heads * rows, keys, 1)).view(heads, rows)
    if state is None:
        return m, z_blk, y_blk
    m_old, z, y = state
    a = torch.exp(m_old - m)
    return m, a * z + z_blk, a * (y + (m_old - m) * z) + y_blk


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    backbone = getattr(model, model.base_model_prefix, model)
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise EntropyError(f"{type(model).__name__}: no decoder layers found")
    return [layer.self_attn for layer in layers]


class _Stop(Exception):
    """Raised after the last requested layer: the rest of the forward is not needed."""


class EntropyProbe:
    """Hooks that reduce each requested layer's attention rows to entropy statistics during a forward.

    Use as a context manager around forwards of ``model`` (one sequence at a time, same length; the
    statistics of several forwards are pooled); read the result with :meth:`results`. It also rides
    along other evaluations, e.g. ``compare_methods(..., probe=...)``.

    Args:
        layers: layer indices (default: all).
        bucket_size: query positions per bucket (default: length / 32).
        query_block: query rows reduced at once.
        key_block: keys streamed at once (memory: a few heads x query_block x key_block floats,
            whatever the length).
        queries_per_bucket: sample this many query rows per bucket (seeded) instead of all of them.
        temperatures: extra multipliers on the logits; 1.0 is the model as it runs.
        stop_after_last: end the forward after the last requested layer (standalone use).
    """

    def __init__(self, model: torch.nn.Module, layers: list[int] | None = None, bucket_size: int | None = None,
                 query_block: int = 64, queries_per_bucket: int | None = None,
                 temperatures: tuple[float, ...] = (1.0,), stop_after_last: bool = False, seed: int = 0,
                 key_block: int = 1024) -> None:
        self.modules = _attention_modules(model)
        n_layers = len(self.modules)
        self.layers = sorted(set(range(n_layers) if layers is None else layers))
        bad = [i for i in self.layers if not 0 <= i < n_layers]
        if bad:
            raise EntropyError(f"layers={bad} is not allowed: the model has layers 0..{n_layers - 1}")
        if query_block < 1:
            raise EntropyError(f"query_block={query_block} is not allowed: at least 1")
        if key_block < 1:
            raise EntropyError(f"key_block={key_block} is not allowed: at least 1")
        if queries_per_bucket is not None and queries_per_bucket < 1:
            raise EntropyError(f"queries_per_bucket={queries_per_bucket} is not allowed: at least 1 (or None: all)")
        self.bucket_size, self.query_block, self.key_block = bucket_size, query_block, key_block
        self.queries_per_bucket, self.temperatures = queries_per_bucket, tuple(temperatures)
        self.stop_after_last, self.seed = stop_after_last, seed
        self.handles: list[Any] = []
        self.stats: dict[tuple[float, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.length = 0
        self.on_layer: Any = None

    def __enter__(self) -> EntropyProbe:
        self.stats = {}
        for i in self.layers:
            self.handles.append(self.modules[i].register_forward_pre_hook(self._hook(i), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> bool:
        for h in self.handles:
            h.remove()
        self.handles = []
        return exc[0] is _Stop  # swallow the early stop

    def _rows(self, n: int, bucket: int) -> torch.Tensor:
        """Query positions to reduce: all, or a seeded sample per bucket."""
        if self.queries_per_bucket is None:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(self.seed)
        picks = []
        for start in range(0, n, bucket):
            size = min(bucket, n - start)
            k = min(self.queries_per_bucket, size)
            picks.append(start + torch.randperm(size, generator=gen)[:k].sort().values)
        return torch.cat(picks)

    def _hook(self, layer: int):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
            if hidden.shape[0] != 1:
                raise EntropyError("attention entropy runs one sequence at a time (batch size 1)")
            with torch.no_grad():
                q, k = _qk(module, hidden.float(), cos.float(), sin.float())
                self._reduce(layer, q[0], k[0], module.scaling)
            n = q.shape[2]
            del q, k
            if heap.long_enough(n):  # q, k and this layer's activations are freed: give their pages back
                heap.trim_heap()
            if self.on_layer is not None:
                self.on_layer(layer)
            if self.stop_after_last and layer == self.layers[-1]:
                raise _Stop()

        return hook

    def _reduce(self, layer: int, q: torch.Tensor, k: torch.Tensor, scaling: float) -> None:
        """q: (heads, n, d), k: (kv_heads, n, d) -> per temperature, sums of H and max weight per head and bucket.

        Rows are reduced ``query_block`` at a time and, within a row block, keys are streamed
        ``key_block`` at a time with a running maximum m, ``z = Σ exp(s − m)`` and
        ``y = Σ exp(s − m)(s − m)``; then ``H = log z − y / z`` and the maximum weight is ``1 / z``.
        Every buffer is heads × query_block × key_block whatever the length, so the allocator reuses
        the same blocks instead of fragmenting over rows of growing length.
        """
        heads, n, d = q.shape
        kv = k.shape[0]
        groups = heads // kv
        self.length = n
        bucket = self.bucket_size or max(1, math.ceil(n / 32))
        n_buckets = math.ceil(n / bucket)
        rows = self._rows(n, bucket)
        qg = q.view(kv, groups, n, d)  # (kv, groups, n, d): heads sharing a key head
        blocks = _Blocks(heads, self.query_block, self.key_block, q.dtype)
        sums = {t: (torch.zeros(heads, n_buckets, dtype=torch.float64), torch.zeros(heads, n_buckets, dtype=torch.float64))
                for t in self.temperatures}
        count = torch.zeros(n_buckets, dtype=torch.float64)
        for start in range(0, len(rows), self.query_block):
            idx = rows[start:start + self.query_block]  # (B,) query positions
            end = int(idx.max()) + 1  # keys needed: the causal prefix of the last row
            first = int(idx.min())  # key blocks wholly at or before the first row need no causal mask
            B = len(idx)
            q_blk = qg[:, :, idx].reshape(kv, groups * B, d)  # the rows of heads sharing a key head
            state = {t: None for t in self.temperatures}
            for k0 in range(0, end, self.key_block):
                k1 = min(end, k0 + self.key_block)
                raw = blocks.view(blocks.raw, kv, groups * B, k1 - k0)
                torch.bmm(q_blk, k[:, k0:k1].transpose(-1, -2), out=raw)
                raw = raw.view(heads, B, k1 - k0)
                future = (torch.arange(k0, k1)[None, :] > idx[:, None]) if k1 - 1 > first else None
                for t in self.temperatures:
                    s = torch.mul(raw, scaling * t, out=blocks.view(blocks.s, heads, B, k1 - k0))
                    if future is not None:  # a large finite negative (not -inf): exp gives 0 and 0 x s stays 0
                        s.masked_fill_(future, -1e30)
                    state[t] = _stream(state[t], s, blocks.view(blocks.e, heads, B, k1 - k0))
            b_idx = idx // bucket
            count.index_add_(0, b_idx, torch.ones(len(idx), dtype=torch.float64))
            for t in self.temperatures:
                _, z, y = state[t]
                h_sum, w_sum = sums[t]
                h_sum.index_add_(1, b_idx, (torch.log(z) - y / z).double())
                w_sum.index_add_(1, b_idx, z.reciprocal().double())
        for t in self.temperatures:
            h_sum, w_sum = sums[t]
            old = self.stats.get((t, layer))
            if old is not None and old[0].shape == h_sum.shape:  # several documents: accumulate
                self.stats[(t, layer)] = (old[0] + h_sum, old[1] + w_sum, old[2] + count)
            else:
                self.stats[(t, layer)] = (h_sum, w_sum, count)
        self._bucket = bucket

    def results(self, label: str, seconds: float = 0.0, spec: RopeSpec | None = None) -> list[EntropyResult]:
        """One result per temperature, in the order given."""
        if not self.stats:
            raise EntropyError("the probe saw no forward")
        out = []
        for t in self.temperatures:
            ent, mw, count = [], [], None
            for layer in self.layers:
                h_sum, w_sum, count = self.stats[(t, layer)]
                c = count.clamp(min=1)
                ent.append((h_sum / c).tolist())
                mw.append((w_sum / c).tolist())
            notes = [f"logits x {t:g} on the same inputs"] if t != 1.0 else []
            if self.queries_per_bucket is not None:
                notes.append(f"{self.queries_per_bucket} sampled query rows per bucket (seed {self.seed})")
            out.append(EntropyResult(label=label, length=self.length, layers=list(self.layers),
                                     n_heads=len(ent[0]), bucket_size=self._bucket, entropy=ent, max_weight=mw,
                                     rows_per_bucket=[int(x) for x in count.tolist()], temperature=t,
                                     seconds=seconds, spec=spec.to_dict() if spec is not None else None,
                                     notes=notes))
        return out


def attention_entropy(model: torch.nn.Module, tokens: torch.Tensor, *, spec: RopeSpec | None = None,
                      label: str | None = None, layers: list[int] | None = None, bucket_size: int | None = None,
                      query_block: int = 64, queries_per_bucket: int | None = None, key_block: int = 1024,
                      sink: Sink = null_sink) -> EntropyResult:
    """Attention entropy of one sequence under ``spec`` (None: the model as loaded).

    Raises:
        EntropyError: bad layers, block sizes, or an unsupported attention module.
    """
    return attention_entropies(model, tokens, spec=spec, label=label, layers=layers, bucket_size=bucket_size,
                               query_block=query_block, queries_per_bucket=queries_per_bucket, key_block=key_block,
                               sink=sink)[0]


def attention_entropies(model: torch.nn.Module, tokens: torch.Tensor, *, spec: RopeSpec | None = None,
                        label: str | None = None, layers: list[int] | None = None, bucket_size: int | None = None,
                        query_block: int = 64, queries_per_bucket: int | None = None, key_block: int = 1024,
                        temperatures: tuple[float, ...] = (1.0,), sink: Sink = null_sink) -> list[EntropyResult]:
    """As :func:`attention_entropy`, with extra logit multipliers evaluated in the same forward."""
    ids = tokens if tokens.dim() == 2 else tokens[None]
    if ids.shape[0] != 1:
        raise EntropyError("attention entropy runs one sequence at a time (batch size 1)")
    label = label or (spec.method if spec is not None else "model as loaded")
    backbone = getattr(model, model.base_model_prefix)
    probe = EntropyProbe(model, layers, bucket_size, query_block, queries_per_bucket, temperatures,
                         stop_after_last=True, key_block=key_block)
    t0 = time.time()
    probe.on_layer = lambda layer: sink(Event("entropy.layer", {"label": label, "layer": layer,
                                                                "layers": probe.layers,
                                                                "seconds": time.time() - t0}))
    with torch.no_grad(), patch(model, spec) if spec is not None else nullcontext(), probe:
        backbone(input_ids=ids.to(next(model.parameters()).device), use_cache=False)
    results = probe.results(label, time.time() - t0, spec)
    for r in results:
        sink(Event("entropy.result", r.to_dict()))
    return results


def eager_attentions(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every layer's full attention matrix, (1, heads, n, n) each, from one eager forward (quadratic memory:
    for short inputs; the model's attention implementation is restored afterwards)."""
    ids = tokens if tokens.dim() == 2 else tokens[None]
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(impl)


def eager_entropy(model: torch.nn.Module, tokens: torch.Tensor, bucket_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: (entropy, max weight) per layer, head, bucket from an eager forward's full attention matrices."""
    att = eager_attentions(model, tokens)  # layers x (1, heads, n, n)
    n = att[0].shape[-1]
    buckets = torch.arange(n) // bucket_size
    n_b = int(buckets.max()) + 1
    ent, mw = [], []
    for a in att:
        p = a[0].double()  # (heads, n, n)
        h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)  # (heads, n)
        w = p.amax(-1)
        ent.append(torch.stack([h[:, buckets == b].mean(1) for b in range(n_b)], 1))
        mw.append(torch.stack([w[:, buckets == b].mean(1) for b in range(n_b)], 1))
    return torch.stack(ent), torch.stack(mw)  # (layers, heads, buckets)


__all__ = ["EntropyError", "EntropyProbe", "EntropyResult", "attention_entropies", "attention_entropy", "eager_entropy",
           "without_attention_factor"]


def probe_results(probes: dict[str, EntropyProbe]) -> list[EntropyResult]:
    """The results of probes by setting, in order; a probe's second result (logits x 1/m² on the same inputs) is
    labelled as the setting without its attention factor."""
    out = []
    for label, probe in probes.items():
        rs = probe.results(label)
        if len(rs) > 1:
            rs[1].label = f"{label} without attention factor (same inputs)"
        out.extend(rs)
    return out


def mean_entropy_beyond(result: EntropyResult, original_max_position_embeddings: int) -> float:
    """Mean entropy (over layers, heads and position buckets) of the query positions from L0 on: how far
    attention spreads where the model never read in training. Buckets are taken from the one holding L0."""
    pos = result.by_position()
    first = len(result.rows_per_bucket) * original_max_position_embeddings // result.length
    if first >= len(pos):
        raise EntropyError(f"no query position at or beyond L0={original_max_position_embeddings} in a "
                           f"{result.length}-token result")
    return sum(pos[first:]) / len(pos[first:])


@dataclass
class EntropyComparison:
    """One text read several ways (notebook 03): at L0 and at ``length`` without scaling, with ``method``, and with
    it but without its attention factor; ``runs`` in that order."""

    model: str
    L0: int
    length: int
    method: str
    document: str
    runs: list[EntropyResult]

    def beyond_L0(self) -> dict[str, float]:
        """Mean entropy of the query positions from L0 on, for the runs at ``length``."""
        return {r.label: mean_entropy_beyond(r, self.L0) for r in self.runs if r.length == self.length}

    def summary(self) -> str:
        return "mean entropy beyond L0: " + ", ".join(f"{k} {v:.3f} nats" for k, v in self.beyond_L0().items())

    def markdown(self) -> str:
        beyond = self.beyond_L0()
        rows = ["| setting | mean entropy (nats) | last bucket | uniform there | beyond L0 | seconds |",
                "|---|---|---|---|---|---|"]
        for r in self.runs:
            pos = r.by_position()
            rows.append(f"| {r.label} | {sum(pos) / len(pos):.3f} | {pos[-1]:.3f} | {r.uniform_reference()[-1]:.3f} | "
                        + (f"{beyond[r.label]:.3f}" if r.label in beyond else "") + f" | {r.seconds:.1f} |")
        return "\n".join(rows)

    def figures(self, part: str | None = None) -> list[Any]:
        """``part`` "position": entropy by query position at ``length``; "layer_head": the method's change by layer
        and head against no scaling, and no scaling itself; None: both."""
        from .evaluate.figures import entropy_heatmap_figure, entropy_position_figure

        figs: list[Any] = []
        if part in (None, "position"):
            figs.append(entropy_position_figure(self.runs[1:], self.L0))
        if part in (None, "layer_head"):
            figs += [entropy_heatmap_figure(self.runs[2], self.runs[1]), entropy_heatmap_figure(self.runs[1])]
        return figs

    def to_dict(self) -> dict[str, Any]:
        """The notebook's results.json numbers (every run's full result is entropy.json)."""
        return {"model": self.model, "L0": self.L0, "length": self.length, "method": self.method,
                "document": self.document,
                "mean_entropy": {r.label: sum(r.by_position()) / len(r.by_position()) for r in self.runs},
                "mean_entropy_beyond_L0": self.beyond_L0(), "seconds": {r.label: r.seconds for r in self.runs}}


__all__ += ["EntropyComparison", "mean_entropy_beyond", "probe_results"]
