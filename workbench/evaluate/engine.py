"""The NLL engine: per-token negative log-likelihood of long inputs, computed so that they fit in memory.

The model's backbone runs once per window (SDPA, no KV cache); the LM head and the loss run in
chunks of positions, so full-vocabulary logits for the whole sequence never exist at once (at 16k
tokens SmolLM2's full logits alone would be 3.2 GB in fp32).
"""

from __future__ import annotations

import functools
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
