"""Perplexity and the per-position loss curve, computed so that long inputs fit in memory.

The model's backbone runs once per window (SDPA, no KV cache); the LM head and the loss run in
chunks of positions, so full-vocabulary logits for the whole sequence never exist at once (at 16k
tokens SmolLM2's full logits alone would be 3.2 GB in fp32).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import heap
from .data import Sample
from .events import Event, Sink, null_sink
from .patch import patch
from .rope import RopeSpec

MODES = ("truncated", "sliding")
DTYPES = ("fp32", "bf16", "auto")


class EvalError(ValueError):
    """An evaluation request is invalid."""


def check_finite(result: Any) -> Any:
    """``result`` when its perplexity is finite; else an EvalError naming the likely causes.

    A NaN or infinite perplexity is never a measurement: damaged weights (flipped bytes in a cached
    file), an overflow in a low-precision dtype, or a RoPE setting that produced non-finite angles.
    """
    ppl = getattr(result, "ppl", None)
    if ppl is not None and not math.isfinite(ppl):
        raise EvalError(
            f"perplexity of {getattr(result, 'label', 'the model')!r} at {getattr(result, 'length', '?')} tokens is "
            f"{ppl}: not a measurement. Likely causes: damaged model weights (rebuild the cached model), an "
            "overflow in bf16 (try --dtype fp32), or a RoPE setting with non-finite frequencies")
    return result



@functools.lru_cache(maxsize=1)
def bf16_speedup() -> float:
    """Measured speed of a 1024^2 bf16 matrix product relative to fp32 on the GPU if there is one, else this CPU.

    CPUs without AMX/AVX512-BF16 emulate bf16 and are many times slower than fp32; GPUs with bf16 tensor
    cores are several times faster.
    """
    import time as _t

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def rate(dtype: torch.dtype) -> float:
        a = torch.randn(1024, 1024, device=device).to(dtype)
        a @ a
        sync()
        t0, n = _t.perf_counter(), 0
        while _t.perf_counter() - t0 < 0.15:
            a @ a
            n += 1
        sync()
        return n / (_t.perf_counter() - t0)

    return rate(torch.bfloat16) / rate(torch.float32)


def resolve_dtype(dtype: str) -> str:
    """"auto" -> "bf16" where bf16 matrix products are faster than fp32 here, else "fp32"."""
    if dtype not in DTYPES:
        raise EvalError(f"dtype={dtype!r} is not allowed: one of {DTYPES}")
    if dtype == "auto":
        return "bf16" if bf16_speedup() > 1.2 else "fp32"
    return dtype


def _backbone_and_head(model: Any) -> tuple[Any, Any]:
    head = model.get_output_embeddings()
    backbone = getattr(model, model.base_model_prefix, None)
    if head is None or backbone is None:
        raise EvalError(f"{type(model).__name__} is not a causal LM with a separate backbone and LM head")
    return backbone, head


class _LayerProgress:
    """Calls ``on_layer(done, total)`` after each decoder layer of a forward (long forwards take minutes).

    With ``trim``, also gives the C heap's free pages back after each layer (see :mod:`workbench.heap`).
    """

    def __init__(self, backbone: Any, on_layer: Any, trim: bool = False) -> None:
        layers = getattr(backbone, "layers", None)
        self.total = len(layers) if layers is not None else 0
        self.done = 0
        self.handles = []
        if (on_layer is not None or trim) and layers is not None:
            def hook(*_: Any) -> None:
                self.done += 1
                if trim:
                    heap.trim_heap()
                if on_layer is not None:
                    on_layer(self.done, self.total)

            self.handles = [layer.register_forward_hook(hook) for layer in layers]

    def __enter__(self) -> _LayerProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def token_nll(model: Any, input_ids: torch.Tensor, *, dtype: str = "fp32", chunk_size: int = 1024,
              score_from: int = 0, on_layer: Any = None) -> torch.Tensor:
    """Negative log-likelihood of each next token: ``(n - 1 - score_from,)`` float32 for ``input_ids`` ``(1, n)``.

    Args:
        dtype: "fp32", or "bf16" (autocast: bf16 matrix products, fp32 loss).
        chunk_size: positions per LM-head chunk.
        score_from: skip the first predictions (used by the sliding window).
        on_layer: optional ``f(done, total)`` called after each decoder layer.
    """
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    backbone, head = _backbone_and_head(model)
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if resolve_dtype(dtype) == "bf16" else nullcontext()
    with ctx, _LayerProgress(backbone, on_layer, trim=heap.long_enough(ids.shape[1])):
        hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state  # (1, n, hidden)
        n = ids.shape[1]
        out = []
        for start in range(score_from, n - 1, chunk_size):
            end = min(start + chunk_size, n - 1)
            logits = head(hidden[:, start:end]).float()  # (1, chunk, vocab)
            out.append(F.cross_entropy(logits[0], ids[0, start + 1:end + 1], reduction="none"))
    return torch.cat(out).float().cpu() if out else torch.zeros(0)


@dataclass
class PerplexityResult:
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


def aligned_bucket(length: int, original_length: int, buckets: int = 64) -> int:
    """A bucket width for a ``length``-token curve of about ``buckets`` points whose boundaries include L0
    (a power of two that divides ``original_length``), so PPL within and beyond L0 reads off the curve."""
    width = 1
    while width * 2 <= max(1, length // buckets) and original_length % (width * 2) == 0:
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


def write_results(results: list[PerplexityResult], path: str | Path) -> Path:
    """Write results as JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return p


def _seconds(r: PerplexityResult | None) -> str:
    if r is None:
        return ""
    if r.tokens_forwarded == 0:
        return "(prefix)"
    return f"{r.seconds:.0f}" if r.seconds >= 10 else f"{r.seconds:.1f}"


def format_table(results: list[PerplexityResult]) -> str:
    """A markdown table: one row per setting, PPL (seconds) per length."""
    lengths = sorted({r.length for r in results})
    labels = list(dict.fromkeys(r.label for r in results))
    by = {(r.label, r.length): r for r in results}
    head = "| method | " + " | ".join(f"PPL @ {L}" for L in lengths) + " | " + " | ".join(
        f"seconds @ {L}" for L in lengths) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(lengths))]
    for lab in labels:
        cells = [f"{by[(lab, L)].ppl:.2f}" if (lab, L) in by else "" for L in lengths]
        secs = [_seconds(by.get((lab, L))) for L in lengths]
        lines.append(f"| {lab} | " + " | ".join(cells) + " | " + " | ".join(secs) + " |")
    return "\n".join(lines)


# ---- retrieval: passkey, needle grid; needle-driven perplexity; short-context regression ----------
_FIRST_INT = re.compile(r"\d+")


def _greedy(model: Any, tokens: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = tokens[None].to(device)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else model.config.eos_token_id
    # reading beyond max_position_embeddings is the point here: silence transformers' "friendly reminder"
    import logging

    reminder = logging.getLogger("transformers.generation.stopping_criteria")
    level = reminder.level
    reminder.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=None)
    finally:
        reminder.setLevel(level)
    return out[0, ids.shape[1]:].cpu()


def first_integer(text: str) -> int | None:
    m = _FIRST_INT.search(text)
    return int(m.group()) if m else None


@dataclass
class PasskeyResult:
    """Passkey retrieval accuracy by length (each trial: length, depth, key, model output, correct)."""

    label: str
    lengths: list[int]
    accuracy: list[float]
    trials: list[dict[str, Any]]
    seconds: float
    spec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passkey_accuracy(model: Any, tokenizer: Any, lengths: list[int], *, n_trials: int = 5, spec: RopeSpec | None = None,
                     label: str | None = None, seed: int = 0, max_new_tokens: int = 10, progress: bool = True,
                     sink: Sink = null_sink) -> PasskeyResult:
    """Greedy-decode the pass key from prompts of each length; correct when the first integer equals the key."""
    from tqdm.auto import tqdm

    from .data import passkey_prompts

    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise EvalError(f"n_trials={n_trials!r} is not allowed: a positive integer (prompts per length)")
    label = label or (spec.method if spec is not None else "model as loaded")
    prompts = [p for L in lengths for p in passkey_prompts(tokenizer, L, n_trials, seed)]  # built first: fail fast
    trials = []
    t0 = time.time()
    with patch(model, spec) if spec is not None else nullcontext():
        for p in tqdm(prompts, desc=f"passkey {label}", disable=not progress, leave=False):
            text = tokenizer.decode(_greedy(model, p.tokens, max_new_tokens), skip_special_tokens=True)
            got = first_integer(text)
            trials.append({"length": p.length, "depth": p.depth, "passkey": p.passkey, "output": text.strip(),
                           "answer": got, "correct": got == p.passkey})
            sink(Event("passkey.trial", {"label": label, **trials[-1], "seconds": time.time() - t0}))
    accuracy = [sum(t["correct"] for t in trials if t["length"] == L) / n_trials for L in lengths]
    result = PasskeyResult(label, list(lengths), accuracy, trials, time.time() - t0,
                           spec.to_dict() if spec is not None else None)
    sink(Event("passkey.result", result.to_dict()))
    return result


def _answer_nll(model: Any, sample: Any, dtype: str, chunk_size: int) -> torch.Tensor:
    """NLL of the answer tokens only (their predictions start one position earlier)."""
    nll = token_nll(model, sample.tokens[None], dtype=dtype, chunk_size=chunk_size, score_from=sample.answer_start - 1)
    return nll[: sample.answer_len]


@dataclass
class NeedlePerplexityResult:
    """Needle-driven perplexity (LongRoPE2): exp of the mean NLL of the answer tokens only."""

    label: str
    length: int
    ppl: float
    nll: float
    per_document_nll: list[float]
    n_documents: int
    seconds: float
    spec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def needle_perplexity(model: Any, needle_docs: list, *, spec: RopeSpec | None = None, label: str | None = None,
                      dtype: str = "fp32", chunk_size: int = 1024, progress: bool = True,
                      sink: Sink = null_sink) -> NeedlePerplexityResult:
    """Needle-driven perplexity of documents from :func:`workbench.data.needle_samples`."""
    from tqdm.auto import tqdm

    if not needle_docs:
        raise EvalError("no needle documents to evaluate")
    label = label or (spec.method if spec is not None else "model as loaded")
    t0 = time.time()
    per_doc = []
    with patch(model, spec) if spec is not None else nullcontext():
        for i, d in enumerate(tqdm(needle_docs, desc=f"needle PPL {label}", disable=not progress, leave=False)):
            per_doc.append(_answer_nll(model, d, dtype, chunk_size))
            sink(Event("needle.document", {"label": label, "index": i, "of": len(needle_docs),
                                           "nll": float(per_doc[-1].mean()), "seconds": time.time() - t0}))
    mean = float(torch.cat(per_doc).mean())
    result = NeedlePerplexityResult(label, needle_docs[0].length, math.exp(mean), mean,
                                    [float(x.mean()) for x in per_doc], len(needle_docs), time.time() - t0,
                                    spec.to_dict() if spec is not None else None)
    sink(Event("needle.result", result.to_dict()))
    return result


@dataclass
class NeedleGridResult:
    """Needle-in-a-haystack scores on a depth x length grid: exact-match accuracy and mean answer NLL."""

    label: str
    depths: list[float]
    lengths: list[int]
    accuracy: list[list[float]]  # [depth][length]
    answer_nll: list[list[float]]  # [depth][length]
    trials: list[dict[str, Any]]
    seconds: float
    spec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def needle_grid(model: Any, tokenizer: Any, depths: list[float], lengths: list[int], *, n_trials: int = 1,
                source: str = "shakespeare", split: str = "heldout", spec: RopeSpec | None = None,
                label: str | None = None, seed: int = 0, progress: bool = True, sink: Sink = null_sink) -> NeedleGridResult:
    """For each depth and length: one needle at that depth, the question last; greedy answer vs the number.

    Also records the answer's NLL (teacher-forced), which still separates settings where accuracy is 0.
    """
    from tqdm.auto import tqdm

    from .data import needle_sample

    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise EvalError(f"n_trials={n_trials!r} is not allowed: a positive integer (needles per cell)")
    label = label or (spec.method if spec is not None else "model as loaded")
    cells = [(i, j, d, L, k) for i, d in enumerate(depths) for j, L in enumerate(lengths) for k in range(n_trials)]
    docs = {c: needle_sample(tokenizer, source, split, c[3], [c[2]], seed * 104729 + c[4] * 131 + c[1]) for c in cells}
    acc = [[0.0] * len(lengths) for _ in depths]
    nll = [[0.0] * len(lengths) for _ in depths]
    trials = []
    t0 = time.time()
    with patch(model, spec) if spec is not None else nullcontext():
        for c in tqdm(cells, desc=f"needle grid {label}", disable=not progress, leave=False):
            i, j, d, L, _ = c
            doc = docs[c]
            prompt = doc.tokens[: doc.answer_start]
            text = tokenizer.decode(_greedy(model, prompt, 12), skip_special_tokens=True)
            correct = first_integer(text) == doc.number
            answer_nll = float(_answer_nll(model, doc, "fp32", 1024).mean())
            acc[i][j] += correct / n_trials
            nll[i][j] += answer_nll / n_trials
            trials.append({"depth": d, "length": L, "key": doc.key, "number": doc.number, "output": text.strip(),
                           "correct": correct, "answer_nll": answer_nll})
            sink(Event("needle.trial", {"label": label, **trials[-1], "seconds": time.time() - t0}))
    result = NeedleGridResult(label, list(depths), list(lengths), acc, nll, trials, time.time() - t0,
                              spec.to_dict() if spec is not None else None)
    sink(Event("needle.grid", result.to_dict()))
    return result


@dataclass
class RegressionResult:
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


def save(result: Any, path: str | Path) -> Path:
    """Write a result (or a list of results) as JSON; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = [r.to_dict() for r in result] if isinstance(result, list) else result.to_dict()
    p.write_text(json.dumps(data, indent=1, default=float))
    return p


def evaluation_table(results: list[PerplexityResult], original_length: int,
                     entropy_beyond: dict[str, float] | None = None) -> str:
    """A markdown table per method: PPL at each length, at the longest length also the PPL of the positions
    within and beyond L0 (where the curve's buckets allow) and of the last quarter, the change of PPL at L0
    against the first setting (short-context regression), and mean attention entropy beyond L0 if measured."""
    lengths = sorted({r.length for r in results})
    labels = list(dict.fromkeys(r.label for r in results))
    by = {(r.label, r.length): r for r in results}
    top = lengths[-1]
    base = by.get((labels[0], original_length))
    split = top > original_length and all(original_length % r.bucket_size == 0 for r in results if r.length == top)
    head = ["method", *(f"PPL @ {L}" for L in lengths)]
    if split:
        head += [f"PPL of positions < L0 @ {top}", f"PPL of positions ≥ L0 @ {top}"]
    head.append(f"last-quarter PPL @ {top}")
    if base is not None:
        head.append(f"PPL @ L0 vs {labels[0]}")
    if entropy_beyond:
        head.append("attention entropy beyond L0 (nats)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab in labels:
        r_top = by.get((lab, top))
        cells = [lab, *(f"{by[(lab, L)].ppl:.2f}" if (lab, L) in by else "" for L in lengths)]
        if split:
            cells += [f"{r_top.range_ppl(0, original_length):.2f}", f"{r_top.range_ppl(original_length):.2f}"] \
                if r_top is not None else ["", ""]
        cells.append(f"{r_top.tail_ppl():.2f}" if r_top is not None else "")
        if base is not None:
            r = by.get((lab, original_length))
            cells.append(f"{r.ppl / base.ppl - 1:+.1%}" if r is not None else "")
        if entropy_beyond:
            cells.append(f"{entropy_beyond[lab]:.3f}" if lab in entropy_beyond else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
