"""Give the C heap's free pages back to the system between the layers of a long forward.

A long forward frees and re-allocates tensors of many sizes, layer after layer; glibc keeps the freed
pages and the next layer's differently sized blocks do not always fit in them, so resident memory
creeps up. Forwards of at least ``TRIM_FROM`` tokens (perplexity and attention entropy) call
``malloc_trim`` after each layer; shorter ones do not, since re-faulting the pages costs time there.
``make bench`` measures both sides (``evaluation.json``: ``heap_trim``). ``WORKBENCH_TRIM_FROM``
overrides the threshold (1: always trim; a huge number: never).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

TRIM_FROM = int(os.environ.get("WORKBENCH_TRIM_FROM", "16384"))


def _load_malloc_trim() -> Any:
    try:  # glibc only; elsewhere a no-op
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def long_enough(n_tokens: int) -> bool:
    """True for forwards long enough to trim after each layer (read at call time, so tests may lower it)."""
    return n_tokens >= TRIM_FROM


def trim_heap() -> None:
    """Return free heap pages to the system (glibc's ``malloc_trim(0)``; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


__all__ = ["TRIM_FROM", "long_enough", "trim_heap"]
