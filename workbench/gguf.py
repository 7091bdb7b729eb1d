"""GGUF out: a copy of a model's GGUF that carries a RoPE spec the way llama.cpp applies it.

How llama.cpp (0.3.36's vendored copy) computes a rotation, and so what each method becomes:

- ``{arch}.rope.freq_base`` is ``b``; the optional tensor ``rope_freqs.weight`` (float32, one value
  ``f_i`` per pair; read by the ``llama`` architecture loader) divides pair ``i``'s frequency:
  ``theta_i / f_i`` -- exactly LongRoPE's ``theta_i / lambda_i``. PI, Llama-3, LongRoPE and LongRoPE2
  are written as this tensor, NTK-aware as a new ``freq_base``.
- YaRN is native: ``rope.scaling.type = yarn``, ``rope.scaling.factor = s``,
  ``rope.scaling.original_context_length = L0`` (beta_fast 32 / beta_slow 1 are the loader's fixed
  defaults for ``llama``; it reads no beta keys). llama.cpp then multiplies cos and sin by
  ``0.1 ln s + 1`` itself, and the runtime ``yarn_attn_factor`` is overwritten in that case.
- ``rope.scaling.attn_factor`` (hparams ``rope_attn_factor``) multiplies cos and sin of every pair at
  every position, on top of YaRN's own factor -- as transformers' ``attention_factor`` does. So a
  LongRoPE attention factor ``m`` is written as ``m``, a YaRN one as ``m / (0.1 ln s + 1)``.
  (Measured: see ``tests/test_llamacpp.py``.)

Not expressible on a Llama GGUF, refused with the reason: ``n_hat > 0`` (no start-token window),
dynamic NTK / dynamic YaRN (frequencies follow the current length), and LongRoPE short factors that
differ from 1 (llama.cpp would pick rope_factors_long/short by the context size ``n_ctx``, not by the
sequence length as transformers does).

The output records the spec that made it (``workbench.rope_spec``, JSON; ``workbench.spec_hash``);
it is written to a temporary file beside ``out`` and renamed into place, and the source is only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .rope import NotExpressibleError, RopeSpec, spec_from_dict

GGUF_MAGIC = b"GGUF"
# architectures whose llama.cpp loader reads rope_freqs.weight (per-pair factors) -- checked in the
# vendored llama.cpp of llama-cpp-python 0.3.36 (src/models/llama.cpp)
PER_PAIR_ARCHITECTURES = ("llama",)
SPEC_KEY = "workbench.rope_spec"
HASH_KEY = "workbench.spec_hash"
ROPE_FREQS = "rope_freqs.weight"


class GGUFError(ValueError):
    """A GGUF file or an export request is invalid; the message says what and why."""


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF says about its architecture and RoPE."""

    path: Path
    architecture: str
    rope_dimension_count: int  # rotary dims d: d / 2 frequency pairs
    rope_theta: float
    context_length: int
    original_context_length: int | None
    scaling_type: str | None
    scaling_factor: float | None
    attn_factor: float | None
    rope_freqs: list[float] | None
    spec: dict[str, Any] | None  # the workbench spec recorded by export_gguf, if any
    tensor_count: int
    tokenizer_hash: str  # sha256 prefix of the tokenizer.ggml.* fields: equal hashes, equal tokenizers
    fields: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_pairs(self) -> int:
        return self.rope_dimension_count // 2

    @property
    def head_dim(self) -> int:
        """The rotary dimensions (all of a Llama head's): what a RoPE spec calls head_dim."""
        return self.rope_dimension_count

    @property
    def original_max_position_embeddings(self) -> int:
        """L0: the original context the model was trained at."""
        return self.original_context_length or self.context_length

    @property
    def is_scaled(self) -> bool:
        """True when the file already carries a RoPE rescaling."""
        return (self.rope_freqs is not None or self.scaling_type not in (None, "none", "linear")
                or (self.scaling_factor not in (None, 0.0, 1.0)) or self.attn_factor not in (None, 1.0))


def check_gguf(path: str | os.PathLike) -> Path:
    """``path`` as a Path once it is known to be an existing GGUF file (by its magic); else a GGUFError."""
    p = Path(path)
    if not p.exists():
        raise GGUFError(f"{str(p)!r} does not exist")
    if not p.is_file():
        raise GGUFError(f"{str(p)!r} is not a file")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{str(p)!r} is not a GGUF file (it does not start with the 'GGUF' magic)")
    return p


def _reader(path: str | os.PathLike) -> Any:
    import gguf

    p = check_gguf(path)
    try:
        return gguf.GGUFReader(p)
    except Exception as e:  # a truncated or corrupt file: the reader raises assorted errors
        raise GGUFError(f"{str(p)!r} starts like a GGUF but cannot be read: {e}") from None


def _value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def read_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Read a GGUF's architecture and RoPE metadata (not its weights).

    Raises:
        GGUFError: not a GGUF, unreadable, or without the keys a RoPE model has.
    """
    return _info(_reader(path), Path(path))


def _info(r: Any, path: Path) -> GGUFInfo:
    arch = _value(r, "general.architecture")
    if not arch:
        raise GGUFError(f"{str(path)!r} has no general.architecture")

    def get(suffix: str) -> Any:
        return _value(r, f"{arch}.{suffix}")

    ctx = get("context_length")
    dims = get("rope.dimension_count")
    if dims is None:
        n_embd, n_head = get("embedding_length"), get("attention.head_count")
        dims = get("attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    if ctx is None or dims is None:
        raise GGUFError(f"{str(path)!r} ({arch}) has no {arch}.context_length or rope dimension count: "
                        "not a RoPE language model")
    freqs = None
    for t in r.tensors:
        if t.name == ROPE_FREQS:
            freqs = [float(x) for x in np.asarray(t.data, dtype=np.float32).reshape(-1)]
    spec_text = _value(r, SPEC_KEY)
    h = hashlib.sha256()
    for k in sorted(k for k in r.fields if k.startswith("tokenizer.ggml.")):
        h.update(k.encode())
        for part in r.fields[k].parts:
            h.update(part.tobytes())
    return GGUFInfo(
        path=Path(path), architecture=str(arch), rope_dimension_count=int(dims),
        rope_theta=float(get("rope.freq_base") or 10000.0), context_length=int(ctx),
        original_context_length=get("rope.scaling.original_context_length"),
        scaling_type=get("rope.scaling.type"), scaling_factor=get("rope.scaling.factor"),
        attn_factor=get("rope.scaling.attn_factor"), rope_freqs=freqs,
        spec=json.loads(spec_text) if spec_text else None, tensor_count=len(r.tensors),
        tokenizer_hash=h.hexdigest()[:16],
        fields={k: f.contents() for k, f in r.fields.items()
                if not k.startswith("GGUF.") and not k.startswith("tokenizer.ggml.")},
    )


def gguf_spec(path: str | os.PathLike) -> RopeSpec | None:
    """The spec :func:`export_gguf` recorded in a GGUF, or None for a file it did not write."""
    info = read_gguf(path)
    return spec_from_dict(info.spec) if info.spec else None


@dataclass(frozen=True)
class GGUFPlan:
    """What a spec becomes in a GGUF: metadata to set, metadata to drop, an optional rope_freqs tensor."""

    metadata: dict[str, tuple[Any, str]]  # key -> (value, "uint32" | "float32" | "string")
    rope_freqs: list[float] | None
    notes: list[str]


def plan_gguf(spec: RopeSpec, info: GGUFInfo) -> GGUFPlan:
    """How ``spec`` is carried by a copy of the GGUF ``info`` describes.

    Raises:
        GGUFError: the spec does not fit the file, or llama.cpp cannot express it (the message says why).
    """
    arch = info.architecture
    D = info.n_pairs
    if spec.n_pairs != D:
        what = "factors" if "long_factor" in spec.params() else "pairs (head_dim / 2)"
        raise GGUFError(f"the spec has {spec.n_pairs} {what} but {info.path.name}'s rope dimension count "
                        f"{info.rope_dimension_count} needs {D}")
    if not math.isclose(spec.rope_theta, info.rope_theta, rel_tol=1e-6):
        raise GGUFError(f"the spec's rope_theta={spec.rope_theta:g} differs from the GGUF's freq_base "
                        f"{info.rope_theta:g}: it was made for another model")
    L0 = info.original_max_position_embeddings
    if spec.original_max_position_embeddings != L0:
        raise GGUFError(f"the spec's original_max_position_embeddings={spec.original_max_position_embeddings} "
                        f"differs from the GGUF's context length {L0}: it was made for another model")
    if info.is_scaled:
        raise GGUFError(f"{info.path.name} already carries a RoPE rescaling (rope_freqs / rope.scaling.*); "
                        "export from the unscaled GGUF")
    if spec.n_hat > 0:
        raise GGUFError(f"n_hat={spec.n_hat} is not expressible in llama.cpp: it has no start-token "
                        "window (positions below n_hat keeping the original rotation); use n_hat=0")
    try:
        form = spec.gguf_form(arch)  # the method's own: dynamic frequencies, a short/long switch... are refused
    except NotExpressibleError as e:
        raise GGUFError(str(e)) from None
    if form.rope_freqs is not None and arch not in PER_PAIR_ARCHITECTURES:
        raise GGUFError(f"per-pair factors ({spec.method}) need rope_freqs.weight, which llama.cpp reads only "
                        f"for the {', '.join(PER_PAIR_ARCHITECTURES)} architecture; this GGUF is {arch!r}")
    key = f"{arch}."
    meta = {key + k: v for k, v in form.metadata.items()}
    if not math.isclose(form.attention_factor, 1.0, rel_tol=0, abs_tol=1e-9):
        meta[key + "rope.scaling.attn_factor"] = (float(form.attention_factor), "float32")
    if form.sets_context:
        meta[key + "context_length"] = (int(spec.target_length), "uint32")
        meta.setdefault(key + "rope.scaling.original_context_length", (L0, "uint32"))
    meta[SPEC_KEY] = (json.dumps(spec.to_dict()), "string")
    meta[HASH_KEY] = (spec.spec_hash(), "string")
    return GGUFPlan(meta, form.rope_freqs, list(form.notes))


@dataclass(frozen=True)
class GGUFExport:
    path: Path
    spec: RopeSpec
    metadata: dict[str, Any]
    rope_freqs: list[float] | None
    notes: list[str]
    bytes: int


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _copy_metadata(reader: Any, writer: Any, pending: dict[str, tuple[Any, str]]) -> None:
    """Every key of the source into the writer, with the plan's keys (``pending``: value, kind) replacing or added."""
    import gguf

    types = {"uint32": gguf.GGUFValueType.UINT32, "float32": gguf.GGUFValueType.FLOAT32,
             "string": gguf.GGUFValueType.STRING}
    for f in reader.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue  # the writer writes these itself
        if f.name in pending:
            value, kind = pending.pop(f.name)
            writer.add_key_value(f.name, value, types[kind])
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    for k, (value, kind) in pending.items():
        writer.add_key_value(k, value, types[kind])


def export_gguf(spec: RopeSpec, source_gguf: str | os.PathLike, out: str | os.PathLike) -> GGUFExport:
    """Copy ``source_gguf`` to ``out`` with ``spec`` carried as llama.cpp applies it.

    All metadata and tensors are copied byte for byte; the RoPE keys of the plan are set, a
    ``rope_freqs.weight`` tensor is added for per-pair methods, and the spec is recorded. The file is
    written beside ``out`` under a temporary name and renamed into place; ``source_gguf`` is only read.

    Raises:
        GGUFError: see :func:`plan_gguf`; also a source that is not a GGUF, or ``out`` equal to it.
    """
    import gguf

    src, dst = Path(source_gguf), Path(out)
    check_gguf(src)
    if _same_file(src, dst):
        raise GGUFError(f"the output {str(dst)!r} is the input GGUF: choose another path (the source is never "
                        "modified)")
    if dst.exists() and dst.is_dir():
        raise GGUFError(f"the output {str(dst)!r} is a directory: give a file name")
    reader = _reader(src)
    info = _info(reader, src)
    plan = plan_gguf(spec, info)
    if any(t.name == ROPE_FREQS for t in reader.tensors) and plan.rope_freqs is not None:
        raise GGUFError(f"{src.name} already has {ROPE_FREQS}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(tmp, info.architecture, endianess=reader.endianess)
        _copy_metadata(reader, writer, dict(plan.metadata))
        extra = None
        if plan.rope_freqs is not None:
            extra = np.asarray(plan.rope_freqs, dtype=np.float32)  # (D,)
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        if extra is not None:
            writer.add_tensor_info(ROPE_FREQS, extra.shape, extra.dtype, extra.nbytes, gguf.GGMLQuantizationType.F32)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
        if extra is not None:
            writer.write_tensor_data(extra)
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return GGUFExport(dst, spec, {k: v for k, (v, _) in plan.metadata.items()}, plan.rope_freqs, plan.notes,
                      dst.stat().st_size)


def llama_cpp_equivalent(spec: RopeSpec) -> RopeSpec:
    """The spec under which transformers computes what ``spec``'s exported GGUF computes in llama.cpp at every
    length: the same spec, except where the method says otherwise (LongRoPE / LongRoPE2: llama.cpp applies the
    long factors and the attention factor to every sequence, where transformers uses short_factor up to L0)."""
    return spec.llama_cpp_equivalent()


__all__ = ["GGUFError", "GGUFExport", "GGUFInfo", "GGUFPlan", "PER_PAIR_ARCHITECTURES",
           "export_gguf", "gguf_spec", "llama_cpp_equivalent", "plan_gguf", "read_gguf"]
