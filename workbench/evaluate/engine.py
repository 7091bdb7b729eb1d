"""The NLL engine: per-token negative log-likelihood of long inputs, computed so that they fit in memory.

The model's backbone runs once per window (SDPA, no KV cache); the LM head and the loss run in
chunks of positions, so full-vocabulary logits for the whole sequence never exist at once (at 16k
tokens SmolLM2's full logits alone would be 3.2 GB in fp32).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from .. import heap

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


def _cache_keyword(backbone: Any) -> str:
    """transformers 5.24 renamed the forward's ``past_key_values`` to ``cache`` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _digest(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


class NLLStream:
    """Per-token NLL of one sequence read chunk by chunk through a KV cache: read to any prefix, pause, go on.

    With static frequencies (patch the model with ``length=len(tokens)``), the NLL of a prefix is exactly the
    first part of the whole window's NLL, so a candidate can be judged on a prefix and, if it is worth it,
    continued later without recomputing the prefix. Chunks start at multiples of ``chunk_tokens`` whenever
    :meth:`advance` is called, so a stream paused and continued computes exactly what one read straight through
    does (and so does a stream started again from nothing). Chunks also end at every position in ``stops``,
    wherever :meth:`advance` is asked to stop, for the same reason.

    Memory: the model, the KV cache of what was read (``cache_bytes``) and one chunk's activations.
    """

    def __init__(self, model: Any, tokens: torch.Tensor, *, dtype: str = "fp32", chunk_tokens: int = 4096,
                 head_chunk: int = 1024, stops: tuple[int, ...] = ()) -> None:
        if chunk_tokens < 1:
            raise EvalError(f"chunk_tokens={chunk_tokens} is not allowed: a positive number of tokens")
        self.model = model
        self.tokens = tokens.reshape(-1)  # (n,)
        self.n = int(self.tokens.shape[0])
        self.dtype = resolve_dtype(dtype)
        self.chunk_tokens, self.head_chunk = chunk_tokens, head_chunk
        self.stops = tuple(sorted(set(stops)))
        self.reached = 0  # tokens read into the model
        self.forwarded = 0  # tokens forwarded, restarts included
        self._parts: list[torch.Tensor] = []
        self._cache: Any = None

    @property
    def nll(self) -> torch.Tensor:
        """NLL of every prediction scored so far: ``(min(reached, n - 1),)`` float32 (target tokens 1..)."""
        return torch.cat(self._parts) if self._parts else torch.zeros(0)

    @property
    def done(self) -> bool:
        return self.reached >= self.n

    @property
    def cache_bytes(self) -> int:
        """Bytes the paused stream holds in its KV cache."""
        if self._cache is None:
            return 0
        return sum(t.numel() * t.element_size() for layer in getattr(self._cache, "layers", [])
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None)

    def release(self) -> None:
        """Forget the KV cache; a later :meth:`advance` starts again from the first token."""
        self._cache, self._parts, self.reached = None, [], 0

    def state(self) -> dict[str, Any]:
        """Where the stream is, for another process to go on from it exactly: the tokens read, their losses and
        the KV cache, all cut to the last whole chunk (consistent also when taken while a chunk was being read,
        as on Ctrl-C)."""
        from ..patch import STAMP

        reached = self.reached

        def whole(t: torch.Tensor) -> torch.Tensor:  # no copy of a CPU cache that holds just what was read
            return t if t.device.type == "cpu" and t.shape[2] == reached else t[:, :, :reached].to("cpu", copy=True)

        layers = [] if self._cache is None else [(whole(layer.keys), whole(layer.values))
                                                 for layer in self._cache.layers if layer.keys is not None]
        spec, length = getattr(self._cache, STAMP, (None, None))  # the frequencies the cache was rotated with
        return {**self._reading(), "reached": reached, "nll": self.nll[:min(reached, self.n - 1)].clone(),
                "cache": layers, "rotated": None if spec is None else [json.dumps(spec.to_dict()), length]}

    def _reading(self) -> dict[str, Any]:
        """What a saved state must share with a stream to go on in it exactly: its tokens and how they are read."""
        return {"n": self.n, "tokens": _digest(self.tokens), "chunk_tokens": self.chunk_tokens, "stops": self.stops,
                "dtype": self.dtype}

    def restore(self, state: dict[str, Any]) -> bool:
        """Go on from :meth:`state` of a stream over the same tokens, read the same way; False (and nothing
        changed) when it is another stream's."""
        from transformers import DynamicCache

        if any(state.get(k) != v for k, v in self._reading().items()) or (state["reached"] > 0 and not state["cache"]):
            return False
        device = next(self.model.parameters()).device
        cache = DynamicCache()
        for i, (keys, values) in enumerate(state["cache"]):
            cache.update(keys.to(device), values.to(device), i)
        if state.get("rotated"):  # a patch with these very frequencies goes on with it (any other refuses it)
            from ..patch import STAMP
            from ..rope import spec_from_dict

            setattr(cache, STAMP, (spec_from_dict(json.loads(state["rotated"][0])), state["rotated"][1]))
        self._cache, self._parts, self.reached = cache, [state["nll"]], int(state["reached"])
        return True

    @torch.no_grad()
    def advance(self, to: int, after_chunk: Any = None) -> torch.Tensor:
        """Read the tokens up to position ``to`` (clamped to the sequence); returns :attr:`nll`.

        Args:
            after_chunk: optional ``f(stream) -> bool`` called after each chunk; True stops reading there
                (racing: the candidate cannot win any more).
        """
        from transformers import DynamicCache

        to = min(int(to), self.n)
        backbone, head = _backbone_and_head(self.model)
        device = next(self.model.parameters()).device
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if self.dtype == "bf16" else nullcontext()
        if self._cache is None:
            self._cache = DynamicCache()
        with ctx:
            while self.reached < to:
                start = self.reached
                end = min([(start // self.chunk_tokens + 1) * self.chunk_tokens, to,
                           *(p for p in self.stops if p > start)])
                ids = self.tokens[start:end][None].to(device)  # (1, chunk)
                positions = torch.arange(start, end, device=device)[None]  # (1, chunk)
                hidden = backbone(input_ids=ids, position_ids=positions, use_cache=True,
                                  **{_cache_keyword(backbone): self._cache}).last_hidden_state  # (1, chunk, hidden)
                last = min(end, self.n - 1)  # the last token predicts nothing
                labels = self.tokens[start + 1:last + 1].to(device)
                for a in range(0, last - start, self.head_chunk):
                    b = min(a + self.head_chunk, last - start)
                    logits = head(hidden[:, a:b]).float()  # (1, piece, vocab)
                    self._parts.append(F.cross_entropy(logits[0], labels[a:b], reduction="none").float().cpu())
                self.reached = end
                self.forwarded += end - start
                if heap.long_enough(self.n):  # chunks of many sizes against a growing cache: give pages back
                    heap.trim_heap()
                if after_chunk is not None and after_chunk(self):
                    break
        return self.nll
