"""Know the cost before the work: a job's peak memory and time, estimated before anything is allocated.

Memory comes from the model's geometry alone (its config: no weights are read), the lengths, the batch, the
dtype and how the engine reads a window:

- ``"window"``: the whole window in one forward (perplexity, passkey, needles, entropy): activations grow
  with the window, the LM head runs in chunks of positions;
- ``"stream"``: chunk by chunk through a KV cache (the search): the cache grows with what was read, the
  activations and the attention mask are those of one chunk;
- ``"llama.cpp"``: a GGUF read by llama.cpp in batches of ``chunk`` tokens: the file's weights (mapped), the KV
  cache of the whole window (``dtype`` "gguf-f16" or "gguf-f32": its type), and the logits of one batch with the
  copies the per-batch NLL makes;
- ``"train"``: a forward and a backward with gradients and AdamW's two moments kept for every weight, and every
  layer's activations (``"train-checkpointed"``: only each layer's input, one layer recomputed at a time).

Time comes from two rates measured on this machine — matrix products (the model's forward on a short input)
and attention (one causal attention of the model's heads on a longer one) — cached per model shape, dtype,
CPU (or GPU) and thread count, so the calibration (about a second on SmolLM2) runs once. A forward of n
tokens costs ``2 n P`` flops in its matrix products (P weights outside the embedding) and ``2 n^2 h d`` per
layer in causal attention (h heads of d dimensions).

A job whose peak exceeds the memory this process may use (``MemAvailable``, and a cgroup limit where one is
set) is refused before the model is loaded, with the estimate and what to change (:class:`TooLarge`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GB = 1e9
ENGINES = ("window", "stream", "train", "train-checkpointed", "llama.cpp")
RUNTIME_BYTES = 450e6  # Python, torch and transformers loaded, before any weight
HEAD_CHUNK = 1024  # positions per LM-head chunk (evaluate.engine)


class TooLarge(ValueError):
    """A job's estimated peak memory exceeds what this machine gives the process."""


@dataclass(frozen=True)
class Shape:
    """What the cost of a forward depends on, read from a model's config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    experts: int = 1  # mixture of experts: MLPs per layer held in memory
    active_experts: int = 1  # of them, those a token goes through

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Shape:
        """The shape of a config dict (transformers' names; ``n_layer``-style aliases too)."""
        def first(*names: str, default: Any = None) -> Any:
            for name in names:
                if cfg.get(name):
                    return cfg[name]
            return default

        hidden = int(first("hidden_size", "n_embd", "d_model", default=0))
        heads = int(first("num_attention_heads", "n_head", default=0))
        layers = int(first("num_hidden_layers", "n_layer", default=0))
        if not (hidden and heads and layers):
            raise ValueError("the config gives no hidden_size / num_attention_heads / num_hidden_layers: the "
                             "workbench cannot estimate what this model costs")
        return cls(layers=layers, hidden=hidden, heads=heads,
                   kv_heads=int(first("num_key_value_heads", default=heads)),
                   head_dim=int(first("head_dim", default=hidden // heads)),
                   intermediate=int(first("intermediate_size", "n_inner", default=4 * hidden)),
                   vocab=int(first("vocab_size", default=32000)),
                   tied=bool(cfg.get("tie_word_embeddings", False)),
                   experts=int(first("num_local_experts", "num_experts", "n_routed_experts", default=1)),
                   active_experts=int(first("num_experts_per_tok", "moe_topk", default=1)))

    def layer_params(self, experts: int | None = None) -> int:
        """One layer's weights, with ``experts`` MLPs (default: all it holds)."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlps = self.experts if experts is None else experts
        return attention + 3 * self.hidden * self.intermediate * mlps + 2 * self.hidden

    @property
    def params(self) -> int:
        """Every weight (embedding and LM head once each, or once when tied; every expert)."""
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * self.layer_params() + self.hidden

    @property
    def matmul_params(self) -> int:
        """Weights a token's forward multiplies by (all but the embedding lookup; the LM head counts; the experts a
        token is routed to)."""
        active = min(self.experts, self.active_experts)
        return self.layers * self.layer_params(active) + self.vocab * self.hidden

    def kv_bytes_per_token(self, dtype: str) -> int:
        """Keys and values of one token in every layer, both in ``dtype`` (llama.cpp's cache types)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * _bytes(dtype)

    def autocast_kv_bytes_per_token(self, dtype: str) -> int:
        """The same in a transformers cache read under ``dtype``: under bf16 autocast the values come out of their
        projection in bf16 but the keys in fp32, since the rotation multiplies them by fp32 cos/sin (measured:
        a saved SmolLM2 cache takes 34,560 bytes per token)."""
        return self.layers * self.kv_heads * self.head_dim * (4 + _bytes(dtype))


def _bytes(dtype: str) -> int:
    return 2 if dtype in ("bf16", "fp16", "gguf-f16") else 4


def forward_bytes(shape: Shape, length: int, *, dtype: str = "fp32", engine: str = "window", batch: int = 1,
                  chunk: int = 4096, weight_bytes: float | None = None) -> float:
    """Peak bytes of a process running one forward (or training step) of ``batch`` windows of ``length`` tokens,
    the loaded weights included (fp32 weights; bf16 runs under autocast, which keeps a bf16 copy; llama.cpp:
    ``weight_bytes``, the GGUF's size)."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not allowed: one of {ENGINES}")
    b = _bytes(dtype)
    if engine == "llama.cpp":  # logits of one batch: llama.cpp's buffer and the reduction's copies (measured: 2.4x)
        weights = weight_bytes if weight_bytes is not None else shape.params * 4
        return RUNTIME_BYTES + weights + length * shape.kv_bytes_per_token(dtype) + 2.5 * chunk * shape.vocab * 4
    weights = shape.params * 4 + (shape.params * 2 if b == 2 else 0)
    per_token = b * (2 * shape.hidden + 2 * shape.intermediate)  # residual, norm and the MLP's widest moment
    head = HEAD_CHUNK * shape.vocab * 4 * 2 * batch  # fp32 logits of one chunk and their log-softmax
    if engine == "window":
        act = batch * length * (per_token + 4 * shape.hidden)  # + the final hidden states kept for the head
        return RUNTIME_BYTES + weights + act + head
    if engine == "stream":
        c = min(chunk, length)
        act = batch * c * per_token
        mask = batch * c * length * 4  # one chunk's queries against every key read so far
        return RUNTIME_BYTES + weights + act + mask + head + batch * length * shape.autocast_kv_bytes_per_token(dtype)
    # train: fp32 master weights, their gradients and AdamW's two moments; every layer's activations kept
    layer = b * (4 * shape.hidden + 3 * shape.intermediate + 2 * shape.heads * shape.head_dim)
    kept = shape.layers * (layer if engine == "train" else b * shape.hidden) + (layer if engine != "train" else 0)
    act = batch * length * (kept + per_token)
    logits = batch * length * shape.vocab * 4 * 2
    return RUNTIME_BYTES + shape.params * 16 + (shape.params * 2 if b == 2 else 0) + act + logits


def forward_flops(shape: Shape, length: int) -> tuple[float, float]:
    """(matrix-product flops, attention flops) of one causal forward of ``length`` tokens."""
    return 2.0 * length * shape.matmul_params, 2.0 * shape.layers * shape.heads * shape.head_dim * length ** 2


# ---- what this machine gives ---------------------------------------------------------------------------------
def available_bytes(root: Path = Path("/")) -> float:
    """Memory this process may still use: ``MemAvailable``, lowered by a cgroup limit where one is set (``root``:
    where /proc and /sys are, for tests)."""
    found = []
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage in (("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.current"),
                         ("sys/fs/cgroup/memory/memory.limit_in_bytes", "sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = (root / limit).read_text().strip(), int((root / usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            found.append(int(cap) - used)
    if not found and root == Path("/"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    if not found:
        return math.inf
    return float(max(0, min(found)))


def device_name() -> str:
    """The processor the rates belong to: the GPU's name, or the CPU's model name."""
    import torch

    from .runs import cpu_name

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()


# ---- rates measured here ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """Flops per second of matrix products and of attention, measured on this machine for one model and dtype."""

    matmul: float
    attention: float
    source: str  # "measured now" or "measured <date>"
    busy: bool = False  # measured while other work held the CPUs (measured again next time; the faster kept)

    def seconds(self, shape: Shape, length: int, engine: str = "window", batch: int = 1) -> float:
        mm, att = forward_flops(shape, length)
        t = batch * (mm / self.matmul + att / self.attention)
        return {"train": 3 * t, "train-checkpointed": 4 * t}.get(engine, t)  # a backward: about two forwards


def _rates_file() -> Path:
    from .cache import cache_dir

    return cache_dir() / "rates.json"


def _rates_key(shape: Shape, dtype: str) -> str:
    import torch

    return f"{device_name()}|{torch.get_num_threads()} threads|{dtype}|{json.dumps(shape.__dict__, sort_keys=True)}"


def cached_rates(shape: Shape, dtype: str) -> Rates | None:
    """Rates measured earlier for this shape, dtype, processor and thread count; None if never."""
    try:
        entry = json.loads(_rates_file().read_text()).get(_rates_key(shape, dtype))
    except (OSError, ValueError):
        return None
    if not entry:
        return None
    return Rates(entry["matmul"], entry["attention"], f"measured {entry['date']}", bool(entry.get("busy")))


def machine_busy() -> bool:
    """Whether other work holds most of this machine's CPUs now (1-minute load average over half the CPUs)."""
    try:
        return os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
    except OSError:
        return False


def measured_rates(shape: Shape, dtype: str, measure: Any) -> Rates:
    """The cached rates of ``shape`` and ``dtype`` on this machine, or ``measure()``'s ``(matmul, attention)``, stored.
    A measurement made beside other work is kept only until a quieter one (the faster of the two is kept)."""
    found = cached_rates(shape, dtype)
    if found is not None and not found.busy:
        return found
    busy = machine_busy()
    matmul, attention = measure()
    if found is not None:
        matmul, attention = max(matmul, found.matmul), max(attention, found.attention)
    rates = Rates(matmul, attention, "measured now", busy)
    _store(shape, dtype, rates)
    return rates


def rates_from_batches(shape: Shape, batch: int, seconds: list[float]) -> tuple[float, float]:
    """(matmul, attention) rates from the seconds of consecutive batches of ``batch`` tokens of one sequence: batch k
    reads the same matrix products as the others and ``batch (k batch + (batch + 1) / 2)`` query-key pairs, so a
    line fitted through (pairs, seconds) gives attention (its slope) and the matrix products (its intercept)."""
    per_pair = 4.0 * shape.layers * shape.heads * shape.head_dim  # QK^T and AV for one query-key pair
    pairs = [batch * (k * batch + (batch + 1) / 2) for k in range(len(seconds))]
    mean_p, mean_t = sum(pairs) / len(pairs), sum(seconds) / len(seconds)
    slope = sum((p - mean_p) * (t - mean_t) for p, t in zip(pairs, seconds, strict=True)) / sum(
        (p - mean_p) ** 2 for p in pairs)
    attention = per_pair / slope if slope > 0 else math.inf
    matmul_seconds = max(mean_t - mean_p * per_pair / attention, 0.5 * min(seconds))
    return 2.0 * batch * shape.matmul_params / matmul_seconds, min(attention, 1e16)


def calibrate(model: Any, dtype: str = "fp32", *, length: int = 1024, attention_length: int = 4096) -> Rates:
    """The rates of ``model`` on this machine (cached; about a second on a 135M model): one forward of
    ``length`` tokens gives the matrix-product rate, one causal attention of the model's heads over
    ``attention_length`` tokens the attention rate."""
    import torch

    shape = Shape.from_config(model.config.to_dict())

    def measure() -> tuple[float, float]:
        device = next(model.parameters()).device
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else _Null()
        vocab = min(shape.vocab, int(getattr(model.config, "vocab_size", shape.vocab)))
        ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0)).to(device)
        q = torch.randn(1, shape.heads, attention_length, shape.head_dim, device=device)
        kv = q[:, : shape.heads]
        with torch.no_grad(), cast:
            model(ids[:, :64])  # warm up
            att = _timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True), device)
            whole = _timed(lambda: model(ids), device)
        attention = 2.0 * shape.heads * shape.head_dim * attention_length ** 2 / att
        mm, att_in_forward = forward_flops(shape, length)
        return mm / max(whole - att_in_forward / attention, 0.25 * whole), attention

    return measured_rates(shape, dtype, measure)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _timed(fn: Any, device: Any) -> float:
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def _store(shape: Shape, dtype: str, rates: Rates) -> None:
    path = _rates_file()
    try:
        table = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        table = {}
    table[_rates_key(shape, dtype)] = {"matmul": rates.matmul, "attention": rates.attention,
                                       "date": time.strftime("%Y-%m-%d"), "busy": rates.busy}
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(path)


# ---- a job's estimate -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """What a job will take: peak memory, its forwards ``(length, count)``, and time when rates are known."""

    job: str
    shape: Shape
    dtype: str
    engine: str
    forwards: tuple[tuple[int, int], ...]
    batch: int = 1
    chunk: int = 4096
    rates: Rates | None = None
    extra_seconds: float = 0.0  # work outside the forwards (e.g. decoding steps), when known
    notes: tuple[str, ...] = field(default=())
    weight_bytes: float | None = None  # the weights' own size where not fp32 (a GGUF's file)
    kept: int = 0  # forwards a resumed job reads from its journal instead of running (not in ``forwards``)

    @property
    def longest(self) -> int:
        return max(length for length, _ in self.forwards)

    @property
    def count(self) -> int:
        return sum(n for _, n in self.forwards)

    @property
    def peak_bytes(self) -> float:
        return forward_bytes(self.shape, self.longest, dtype=self.dtype, engine=self.engine, batch=self.batch,
                             chunk=self.chunk, weight_bytes=self.weight_bytes)

    def with_rates(self, rates: Rates | None) -> Estimate:
        return replace(self, rates=rates)

    def forward_seconds(self, length: int | None = None) -> float | None:
        if self.rates is None:
            return None
        return self.rates.seconds(self.shape, length or self.longest, self.engine, self.batch)

    @property
    def seconds(self) -> float | None:
        if self.rates is None:
            return None
        return sum(n * self.rates.seconds(self.shape, L, self.engine, self.batch) for L, n in self.forwards) \
            + self.extra_seconds

    def line(self) -> str:
        """One line: "~1.4 GB peak, ~80 s per 32k forward on this CPU, ~12 min in all (9 forwards)"."""
        what = "step" if self.engine.startswith("train") else "forward"
        parts = [f"{self.job}: ~{self.peak_bytes / GB:.1f} GB peak ({self.dtype})"]
        if self.rates is not None:
            parts.append(f"{_about(self.forward_seconds())} per {_k(self.longest)} {what} on this "
                         f"{'GPU' if _on_gpu() else 'CPU'}")
            kept = f"; {self.kept} kept from its journal" if self.kept else ""
            parts.append(f"{_about(self.seconds)} {'left' if self.kept else 'in all'} "
                         f"({self.count} {what}{'s' if self.count != 1 else ''}{kept})")
        else:
            parts.append(f"{self.count} {what}s of up to {_k(self.longest)} tokens")
        notes = list(self.notes)
        if self.rates is not None and self.rates.busy:
            notes.append("rates measured beside other work: a quiet machine is faster")
        return ", ".join(parts) + "".join(f"; {n}" for n in notes)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "dtype": self.dtype, "engine": self.engine, "forwards": [list(f) for f in self.forwards],
                "kept": self.kept, "batch": self.batch, "peak_bytes": self.peak_bytes, "seconds": self.seconds,
                "rates": None if self.rates is None else self.rates.__dict__}


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _k(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else f"{n:,}-token"


def _about(seconds: float | None) -> str:
    text = duration(seconds)
    return text if text.startswith("<") else f"~{text}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def job_estimate(model: Any, job: str, forwards: list[tuple[int, int]], *, dtype: str = "fp32",
                 engine: str = "window", batch: int = 1, chunk: int = 4096) -> Estimate:
    """The estimate of a job on a loaded transformers model, with this machine's rates (calibrated once, cached):
    what a notebook prints before its long work (the command line prints the same line)."""
    from .evaluate import resolve_dtype

    dtype = resolve_dtype(dtype)
    est = Estimate(job, Shape.from_config(model.config.to_dict()), dtype, engine,
                   tuple((L, n) for L, n in forwards if n), batch, chunk)
    return est.with_rates(calibrate(model, dtype))


def check_fits(estimate: Estimate, *, force: bool = False, remedy: str = "", available: float | None = None,
               force_hint: str = "; or pass --force if you know better") -> None:
    """Refuse a job whose peak would exceed the memory this process may use (unless ``force``).

    ``force_hint`` ends the message: how to start anyway (the command line's --force; "" where there is none).

    Raises:
        TooLarge: with the estimate, what is available, and ``remedy`` (what to change).
    """
    free = available_bytes() if available is None else available
    if force or estimate.peak_bytes <= free:
        return
    hint = remedy or ("ask for shorter lengths or a smaller batch" + (", or --dtype bf16" if estimate.dtype == "fp32"
                                                                      else ""))
    raise TooLarge(f"{estimate.job} needs ~{estimate.peak_bytes / GB:.1f} GB at {estimate.longest:,} tokens "
                   f"({estimate.dtype}, {estimate.engine} engine) but this machine has {free / GB:.1f} GB available: "
                   f"refused before loading anything. {hint[0].upper() + hint[1:]}{force_hint}")


__all__ = ["ENGINES", "Estimate", "Rates", "Shape", "TooLarge", "available_bytes", "cached_rates", "calibrate",
           "check_fits", "device_name", "duration", "forward_bytes", "forward_flops", "job_estimate", "measured_rates",
           "rates_from_batches"]
