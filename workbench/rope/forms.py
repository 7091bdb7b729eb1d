"""What a method's spec becomes outside the workbench: a transformers config, a GGUF, serving flags.

Each method writes its own form (``RopeSpec.hf_form``, ``RopeSpec.gguf_form``,
``RopeSpec.llama_cpp_flags``); the modules at the boundary (``workbench.hf``, ``workbench.gguf``,
``workbench.doctor``) only add what every method shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NotExpressibleError(ValueError):
    """The spec cannot be written in a target format (a stock transformers config, a llama.cpp GGUF)
    without changing what it computes; the message says why."""


@dataclass(frozen=True)
class HFForm:
    """A spec as transformers rope parameters.

    ``params`` holds ``rope_type`` and that type's keys (not ``rope_theta``, which ``rope_theta`` carries:
    a method may write another base, as NTK-aware scaling does). ``top_level_original`` marks the
    Phi-3 convention of keeping ``original_max_position_embeddings`` at the top level of a v4 config.
    """

    params: dict[str, Any]
    max_position_embeddings: int
    rope_theta: float
    notes: tuple[str, ...] = ()
    top_level_original: bool = False


@dataclass(frozen=True)
class GGUFForm:
    """A spec as llama.cpp reads it from a GGUF.

    ``metadata`` keys are relative to the architecture (``"rope.freq_base"`` for
    ``"llama.rope.freq_base"``); ``rope_freqs`` divides pair i's frequency (the ``rope_freqs.weight``
    tensor); ``attention_factor`` multiplies cos and sin on top of what llama.cpp applies itself;
    ``sets_context`` says whether the file's context length becomes the target length.
    """

    metadata: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, "uint32"|"float32"|"string")
    rope_freqs: list[float] | None = None
    attention_factor: float = 1.0
    notes: tuple[str, ...] = ()
    sets_context: bool = True


# What tests/test_llamacpp.py checks by running llama.cpp (llama-cpp-python 0.3.36) against transformers
# on SmolLM2-135M (Llama architecture, Q4_1 GGUF).
LLAMA_CPP_VERIFIED = ("verified by execution on a Llama GGUF: llama.cpp reproduces transformers' perplexity "
                      "(tests/test_llamacpp.py, SmolLM2 beyond L0)")


def gguf_export_command(spec: Any, source: str = "model.gguf", out: str | None = None,
                        factors_file: str = "factors.json") -> str:
    """The ``workbench export gguf`` command line that writes ``spec`` into a copy of ``source``."""
    cmd = f"workbench export gguf --model {source} --method {spec.method} --target {spec.target_length}"
    if "long_factor" in type(spec).required_params():
        cmd += f" --factors {factors_file}"
    return cmd + f" --out {out or f'model-{spec.method}.gguf'}"
