"""Retrieval tests: passkey accuracy, the needle-in-a-haystack grid and needle-driven perplexity."""

from __future__ import annotations

import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..events import Event, FromDict, Sink, null_sink
from ..patch import patch
from ..rope import RopeSpec
from .engine import EvalError, token_nll

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
class PasskeyResult(FromDict):
    """Passkey retrieval accuracy by length (each trial: length, depth, key, model output, correct)."""

    label: str
    lengths: list[int]
    accuracy: list[float]
    trials: list[dict[str, Any]]
    seconds: float
    spec: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        n = len(self.trials) // max(1, len(self.lengths))
        return (f"{self.label} passkey: " + ", ".join(f"{a:.0%} @ {L}" for L, a in zip(self.lengths, self.accuracy,
                                                                                      strict=True))
                + f" ({n} trials per length)")


def passkey_accuracy(model: Any, tokenizer: Any, lengths: list[int], *, n_trials: int = 5, spec: RopeSpec | None = None,
                     label: str | None = None, seed: int = 0, max_new_tokens: int = 10, progress: bool = True,
                     sink: Sink = null_sink) -> PasskeyResult:
    """Greedy-decode the pass key from prompts of each length; correct when the first integer equals the key."""
    from tqdm.auto import tqdm

    from ..data import passkey_prompts

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
class NeedlePerplexityResult(FromDict):
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

    def summary(self) -> str:
        return (f"{self.label} needle-driven PPL @ {self.length}: {self.ppl:.3f} ({self.n_documents} documents, "
                "answer tokens only)")


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
class NeedleGridResult(FromDict):
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

    def summary(self) -> str:
        cells = [a for row in self.accuracy for a in row]
        return (f"{self.label} needle accuracy {sum(cells) / max(1, len(cells)):.0%} over {len(self.depths)} depths "
                f"x {len(self.lengths)} lengths")

    def markdown(self) -> str:
        """Accuracy per depth (rows) and length (columns)."""
        rows = ["| depth | " + " | ".join(str(L) for L in self.lengths) + " |",
                "|---|" + "---|" * len(self.lengths)]
        rows += [f"| {d:.2f} | " + " | ".join(f"{a:.0%}" for a in row) + " |"
                 for d, row in zip(self.depths, self.accuracy, strict=True)]
        return "\n".join(rows)

    def figures(self) -> list[Any]:
        from .figures import needle_heatmap_figure

        return [needle_heatmap_figure(self)]


def needle_grid(model: Any, tokenizer: Any, depths: list[float], lengths: list[int], *, n_trials: int = 1,
                source: str = "shakespeare", split: str = "heldout", spec: RopeSpec | None = None,
                label: str | None = None, seed: int = 0, progress: bool = True, sink: Sink = null_sink) -> NeedleGridResult:
    """For each depth and length: one needle at that depth, the question last; greedy answer vs the number.

    Also records the answer's NLL (teacher-forced), which still separates settings where accuracy is 0.
    """
    from tqdm.auto import tqdm

    from ..data import needle_sample

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
