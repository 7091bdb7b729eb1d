"""Perplexity over several documents and the per-position loss curve, with a RoPE spec applied while it runs."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..data import Sample
from ..events import Event, FromDict, Sink, null_sink
from ..patch import patch
from ..rope import RopeSpec
from .engine import EvalError, resolve_dtype, token_nll

MODES = ("truncated", "sliding")


@dataclass
class PerplexityResult(FromDict):
    """Perplexity of one setting at one length over several documents."""

    label: str
    length: int
    mode: str
    n_documents: int
    nll: float  # mean NLL over all scored tokens
    ppl: float
    per_document_ppl: list[float]
    documents: list[str]
    concatenated: list[bool]
    bucket_size: int
    per_position_nll: list[float]  # mean NLL per position bucket (position = index of the predicted token)
    seconds: float
    tokens_forwarded: int
    dtype: str
    stride: int | None = None
    spec: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, where: str = "") -> str:
        """One line: the setting, its perplexity and its last quarter's (``where``: e.g. " [llama.cpp]")."""
        return (f"{self.label} @ {self.length}{where}: PPL {self.ppl:.3f} (last quarter {self.tail_ppl():.3f}; "
                f"{self.n_documents} documents, {self.seconds:.1f} s)")

    def figures(self) -> list[Any]:
        """Loss by position."""
        from .figures import position_loss_figure

        return [position_loss_figure([self])]

    def tail_ppl(self, fraction: float = 0.25) -> float:
        """PPL over the last ``fraction`` of positions (from the bucketed curve)."""
        k = max(1, round(len(self.per_position_nll) * fraction))
        return math.exp(sum(self.per_position_nll[-k:]) / k)

    def range_ppl(self, start: int, end: int | None = None) -> float:
        """PPL of the predictions at positions ``start <= position < end`` (from the bucketed curve).

        Raises:
            EvalError: ``start`` or ``end`` is not on a bucket boundary (choose ``bucket_size`` to divide them).
        """
        end = self.length - 1 if end is None else end
        for x in (start, end):
            if x % self.bucket_size and x != self.length - 1:
                raise EvalError(f"position {x} is not on a bucket boundary of bucket_size={self.bucket_size}")
        lo, hi = start // self.bucket_size, -(-end // self.bucket_size)
        if not 0 <= lo < hi <= len(self.per_position_nll):
            raise EvalError(f"positions {start}..{end} are not inside the {self.length}-token window")
        return _weighted_ppl(self.per_position_nll[lo:hi], self.bucket_size, start, end - start)


def aligned_bucket(length: int, original_max_position_embeddings: int, buckets: int = 64) -> int:
    """A bucket width for a ``length``-token curve of about ``buckets`` points whose boundaries include L0
    (a power of two that divides ``original_max_position_embeddings``), so PPL within and beyond L0 reads off
    the curve."""
    width = 1
    while width * 2 <= max(1, length // buckets) and original_max_position_embeddings % (width * 2) == 0:
        width *= 2
    return width


def _weighted_ppl(bucket_nll: list[float], bucket_size: int, start: int, n: int) -> float:
    """exp of the token-weighted mean NLL over buckets starting at ``start`` (the last one may be shorter)."""
    total = 0.0
    for k, v in enumerate(bucket_nll):
        lo = start + k * bucket_size
        total += v * (min(lo + bucket_size, start + n) - lo)
    return math.exp(total / n)


def _buckets(nll: torch.Tensor, bucket_size: int) -> list[float]:
    return [float(nll[i:i + bucket_size].mean()) for i in range(0, len(nll), bucket_size)]


def _document_nll(model: Any, tokens: torch.Tensor, mode: str, window: int, stride: int, dtype: str,
                  chunk_size: int, on_layer: Any = None) -> tuple[torch.Tensor, int]:
    """Per-token NLL of a whole sample and how many tokens were forwarded."""
    n = tokens.shape[0]
    if mode == "truncated" or n <= window:
        return token_nll(model, tokens[:window][None], dtype=dtype, chunk_size=chunk_size,
                         on_layer=on_layer), min(n, window)
    parts, forwarded, scored_to = [], 0, 0  # scored_to: predictions 0..scored_to-1 are done
    start = 0
    while scored_to < n - 1:
        end = min(start + window, n)
        piece = tokens[start:end][None]
        skip = scored_to - start  # predictions of this window already scored by the previous one
        parts.append(token_nll(model, piece, dtype=dtype, chunk_size=chunk_size, score_from=skip))
        forwarded += end - start
        scored_to = end - 1
        start = min(start + stride, n - window) if end < n else n
    return torch.cat(parts), forwarded


def make_result(label: str, window: int, mode: str, samples: list[Sample], per_doc: list[torch.Tensor],
                curve: torch.Tensor, bucket: int, seconds: float, forwarded: int, dtype: str, stride: int | None,
                spec: RopeSpec | None, notes: list[str] | None = None) -> PerplexityResult:
    """A PerplexityResult from per-document NLLs and the mean per-position curve (shared by both engines)."""
    nll_all = torch.cat(per_doc)
    mean = float(nll_all.mean())
    return PerplexityResult(
        label=label, length=window, mode=mode, n_documents=len(samples), nll=mean, ppl=math.exp(mean),
        per_document_ppl=[math.exp(float(x.mean())) for x in per_doc], documents=[s.label for s in samples],
        concatenated=[s.concatenated for s in samples], bucket_size=bucket,
        per_position_nll=_buckets(curve, bucket), seconds=seconds, tokens_forwarded=forwarded,
        dtype=resolve_dtype(dtype), stride=stride, spec=spec.to_dict() if spec is not None else None,
        notes=notes or [],
    )


def as_samples(data: list[Sample] | list[torch.Tensor]) -> list[Sample]:
    """Samples as given, or token tensors wrapped as samples; refuses empty data."""
    if not data:
        raise EvalError("no documents to evaluate")
    return [d if isinstance(d, Sample) else Sample(d, "tensor", "?", [f"doc{i}"]) for i, d in enumerate(data)]


def _evaluate(model: Any, samples: list[Sample], spec: RopeSpec | None, label: str, window: int, mode: str,
              stride: int, dtype: str, bucket: int, chunk_size: int, progress: bool,
              sink: Sink, observer: Any = None) -> tuple[PerplexityResult, list[torch.Tensor]]:
    from tqdm.auto import tqdm

    t0 = time.time()
    per_doc, forwarded = [], 0
    curve_sum, curve_count = torch.zeros(window - 1), torch.zeros(window - 1)
    with patch(model, spec) if spec is not None else nullcontext(), observer or nullcontext():
        for i, s in enumerate(tqdm(samples, desc=f"{label} @ {window}", disable=not progress, leave=False)):
            def on_layer(done: int, total: int, i: int = i) -> None:
                sink(Event("ppl.layer", {"label": label, "length": window, "index": i, "of": len(samples),
                                         "layer": done, "layers": total, "seconds": time.time() - t0}))

            nll, f = _document_nll(model, s.tokens, mode, window, stride, dtype, chunk_size, on_layer)
            forwarded += f
            per_doc.append(nll)
            pos = nll[: window - 1]  # sliding mode: the first window's positions make the curve
            curve_sum[: len(pos)] += pos
            curve_count[: len(pos)] += 1
            sink(Event("ppl.document", {"label": label, "length": window, "index": i, "of": len(samples),
                                        "document": s.label, "ppl": math.exp(float(nll.mean())),
                                        "seconds": time.time() - t0}))
    result = make_result(label, window, mode, samples, per_doc, curve_sum / curve_count.clamp(min=1), bucket,
                         time.time() - t0, forwarded, dtype, stride if mode == "sliding" else None, spec)
    sink(Event("ppl.result", result.to_dict()))
    return result, per_doc


def check_window(samples: list[Sample], length: int | None, mode: str, stride: int) -> int:
    """The evaluation window for these samples, after checking mode, length and stride."""
    if mode not in MODES:
        raise EvalError(f"mode={mode!r} is not allowed: one of {MODES}")
    shortest = min(s.tokens.shape[0] for s in samples)
    window = length or shortest
    if window < 2:
        raise EvalError(f"length={window} is not allowed: at least 2 tokens")
    if mode == "truncated" and window > shortest:
        raise EvalError(f"length={window} is not allowed: the shortest document has only {shortest} tokens")
    if mode == "sliding" and not 0 < stride <= window:
        raise EvalError(f"stride={stride} is not allowed: it must be in [1, window={window}]")
    return window


def perplexity(model: Any, data: list[Sample] | list[torch.Tensor], *, spec: RopeSpec | None = None,
               label: str | None = None, length: int | None = None, mode: str = "truncated",
               stride: int = 256, dtype: str = "fp32", bucket_size: int | None = None,
               chunk_size: int = 1024, progress: bool = True, sink: Sink = null_sink) -> PerplexityResult:
    """Perplexity over several documents, with ``spec`` applied while it runs (None: the model as is).

    Args:
        data: samples (or token tensors) of at least ``length`` tokens.
        length: the evaluation window (default: the shortest sample's length).
        mode: "truncated" (one window of ``length`` tokens per document, the paper's protocol) or
            "sliding" (windows of ``length`` moving by ``stride`` over each whole sample).
        bucket_size: width of the per-position loss buckets (default: length / 64).

    Raises:
        EvalError: bad mode, stride, length or empty data.
    """
    samples = as_samples(data)
    window = check_window(samples, length, mode, stride)
    label = label or (spec.method if spec is not None else "model as loaded")
    bucket = bucket_size or max(1, window // 64)
    return _evaluate(model, samples, spec, label, window, mode, stride, dtype, bucket, chunk_size, progress,
                     sink)[0]


def compare_methods(model: Any, specs: dict[str, RopeSpec | None], data: list[Sample], lengths: list[int], *,
                    dtype: str = "fp32", bucket_size: int | None = None, chunk_size: int = 1024,
                    progress: bool = True, sink: Sink = null_sink, probe: Any = None) -> list[PerplexityResult]:
    """Truncated perplexity of each spec at each length, on the same documents.

    For a spec whose frequencies do not depend on the sequence length, the causal model's loss on
    the first ``L`` tokens of a longer window is exactly its loss on an ``L``-token window, so one
    forward at the longest length serves every shorter length (noted in the result). Length-dependent
    specs (LongRoPE short/long switch, dynamic NTK/YaRN) run once per length.

    Args:
        probe: optional ``probe(label, length)`` returning a context manager (e.g. an
            :class:`~workbench.entropy.EntropyProbe`) to keep active during that setting's forwards,
            or None; lets other measurements ride on the same forwards.
    """
    samples = as_samples(data)
    lengths = sorted(set(lengths))
    for L in lengths:
        check_window(samples, L, "truncated", 1)
    out: list[PerplexityResult] = []
    for label, spec in specs.items():
        runs = lengths if spec is not None and spec.is_length_dependent else lengths[-1:]
        for L in runs:
            bucket = bucket_size or max(1, L // 64)
            full, per_doc = _evaluate(model, samples, spec, label, L, "truncated", 1, dtype, bucket, chunk_size,
                                      progress, sink, probe(label, L) if probe is not None else None)
            if L != lengths[-1]:
                out.append(full)
                continue
            for short in lengths[:-1] if len(runs) == 1 else []:
                prefix = [nll[: short - 1] for nll in per_doc]
                b = bucket_size or max(1, short // 64)
                note = f"first {short} tokens of the {L}-token run (causal model, length-independent RoPE)"
                out.append(make_result(label, short, "truncated", samples, prefix, torch.stack(prefix).mean(0), b,
                                       0.0, 0, dtype, None, spec, [note]))
            out.append(full)
    return out


def comparison_forwards(specs: dict[str, RopeSpec | None], lengths: list[int], documents: int) -> list[tuple[int, int]]:
    """The forwards :func:`compare_methods` makes, as ``(length, count)``: a length-dependent spec reads every
    length, the others the longest only (for an estimate before the work)."""
    lengths = sorted(set(lengths))
    count = dict.fromkeys(lengths, 0)
    for spec in specs.values():
        for L in (lengths if spec is not None and spec.is_length_dependent else lengths[-1:]):
            count[L] += documents
    return [(L, n) for L, n in count.items() if n]


def result_at(results: list[PerplexityResult], label: str, length: int) -> PerplexityResult:
    """The result of setting ``label`` at ``length`` among ``results``."""
    return next(r for r in results if r.label == label and r.length == length)


@dataclass
class RegressionResult(FromDict):
    """Short-context regression: perplexity at L0 before and after a change."""

    length: int
    before_label: str
    after_label: str
    before_ppl: float
    after_ppl: float

    @property
    def change(self) -> float:
        """Relative change of perplexity (+0.02 = 2% worse)."""
        return self.after_ppl / self.before_ppl - 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": self.change}

    def summary(self) -> str:
        return (f"{self.after_label} at L0 = {self.length}: PPL {self.after_ppl:.2f} against {self.before_label} "
                f"{self.before_ppl:.2f} ({self.change:+.1%})")


def short_context_regression(model: Any, data: list[Sample], length: int, *, before: RopeSpec | None = None,
                             after: RopeSpec | None = None, before_label: str = "original",
                             after_label: str | None = None, dtype: str = "fp32", progress: bool = True,
                             sink: Sink = null_sink) -> RegressionResult:
    """PPL at ``length`` (normally L0) with ``before`` and ``after`` applied (None: the model as loaded)."""
    a = perplexity(model, data, spec=before, label=before_label, length=length, dtype=dtype, progress=progress,
                   sink=sink)
    b = perplexity(model, data, spec=after, label=after_label or (after.method if after else "model"), length=length,
                   dtype=dtype, progress=progress, sink=sink)
    return RegressionResult(length, a.label, b.label, a.ppl, b.ppl)
