"""A RoPE spec taken to llama.cpp and read back (notebook 08): which spec to deploy, and the same held-out
windows read by transformers (the spec patched in) and by llama.cpp (the exported GGUF), typed and presenting
itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evaluate import PerplexityResult, perplexity
from .events import Sink, null_sink
from .factors import load_factor_set
from .gguf import GGUFExport, llama_cpp_equivalent, read_gguf
from .rope import RopeSpec, spec_from_dict


def deploy_spec(search_run: str | Path, source_gguf: str | Path,
                factor_set: str = "smollm2-32k") -> tuple[RopeSpec, str]:
    """(spec, where it came from): the ``spec`` of ``search_run``'s ``result.json``; without one, the factor set
    ``factor_set`` (a shipped name or a file), checked against the GGUF's RoPE geometry."""
    result = Path(search_run) / "result.json"
    if result.is_file():
        return spec_from_dict(json.loads(result.read_text())["spec"]), f"the search result {result}"
    shipped = load_factor_set(factor_set).fitted_to(read_gguf(source_gguf))
    return shipped.spec, (f"no search result at {result}: the factor set {shipped.name!r} "
                          f"({shipped.description})")


@dataclass
class EngineComparison:
    """Each setting (the unscaled model and the deployed spec) read on the same windows by both engines."""

    source_gguf: str
    gguf: str
    gguf_bytes: int
    gguf_metadata: dict[str, Any]
    rope_freqs: list[float] | None
    spec: dict[str, Any]
    length: int
    L0: int
    documents: list[str]
    llama_cpp: str  # "ran", or why it did not (how to install it)
    results: dict[str, dict[str, PerplexityResult]] = field(default_factory=dict)  # setting -> engine -> result

    def ratio(self, setting: str) -> float | None:
        """llama.cpp's perplexity over transformers' for ``setting`` (None: llama.cpp did not run)."""
        row = self.results[setting]
        return row["llama.cpp"].ppl / row["transformers"].ppl if "llama.cpp" in row else None

    def summary(self) -> str:
        parts = []
        for name in self.results:
            ratio = self.ratio(name)
            parts.append(f"{name}: transformers PPL {self.results[name]['transformers'].ppl:.3f}"
                         + (f", llama.cpp / transformers = {ratio:.4f}" if ratio is not None else ""))
        return f"{self.length} tokens, {len(self.documents)} window(s): " + "; ".join(parts)

    def markdown(self) -> str:
        """Per setting: each engine's perplexity and seconds, and their ratio."""
        rows = ["| setting | transformers PPL | llama.cpp PPL | llama.cpp / transformers | seconds (transformers, "
                "llama.cpp) |", "|---|---|---|---|---|"]
        for name, row in self.results.items():
            tf, cpp = row["transformers"], row.get("llama.cpp")
            rows.append(f"| {name} | {tf.ppl:.3f} | {f'{cpp.ppl:.3f}' if cpp else 'not run'} | "
                        f"{f'{self.ratio(name):.4f}' if cpp else ''} | {tf.seconds:.0f}"
                        + (f", {cpp.seconds:.0f} |" if cpp else " |"))
        return "\n".join(rows)

    def figures(self) -> list[Any]:
        """Loss by position, every setting in every engine."""
        from .evaluate.figures import position_loss_figure

        return [position_loss_figure([r for row in self.results.values() for r in row.values()], self.L0)]

    def to_dict(self) -> dict[str, Any]:
        ppl: dict[str, dict[str, float]] = {}
        for name, row in self.results.items():
            ppl[name] = {key: v for engine, r in row.items()
                         for key, v in ((engine, r.ppl), (f"{engine}_seconds", r.seconds))}
            if self.ratio(name) is not None:
                ppl[name]["relative_difference"] = self.ratio(name) - 1
        return {"source_gguf": self.source_gguf, "gguf": self.gguf, "gguf_bytes": self.gguf_bytes,
                "gguf_metadata": self.gguf_metadata, "rope_freqs": self.rope_freqs, "spec": self.spec,
                "length": self.length, "L0": self.L0, "documents": self.documents, "llama_cpp": self.llama_cpp,
                "ppl": ppl, "results": {n: {e: r.to_dict() for e, r in row.items()} for n, row in self.results.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineComparison:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "results"}
        return cls(**known, results={n: {e: PerplexityResult.from_dict(r) for e, r in row.items()}
                                     for n, row in data.get("results", {}).items()})


def engine_estimates(model: Any, source_gguf: str | Path, *, length: int, windows: int,
                     compare_default: bool = True) -> list[Any]:
    """What :func:`compare_engines` will take: the transformers engine's estimate and, when llama-cpp-python is
    installed, llama.cpp's (each with this machine's rates)."""
    from . import llamacpp
    from .estimate import job_estimate

    forwards = [(length, windows * (2 if compare_default else 1))]
    out = [job_estimate(model, "transformers", forwards)]
    if llamacpp.available():
        out.append(llamacpp.estimate(source_gguf, forwards, job="llama.cpp").with_rates(llamacpp.calibrate(source_gguf)))
    return out


def compare_engines(model: Any, docs: list[Any], exported: GGUFExport, source_gguf: str | Path, *, length: int,
                    compare_default: bool = True, sink: Sink = null_sink) -> EngineComparison:
    """Read ``docs`` with the exported spec (and, with ``compare_default``, the unscaled model) in transformers
    and, when llama-cpp-python is installed, in llama.cpp from the exported GGUF (the source GGUF unscaled)."""
    from . import llamacpp

    spec = exported.spec
    settings = ([("default", None, Path(source_gguf))] if compare_default else []) + [
        (spec.method, llama_cpp_equivalent(spec), exported.path)]
    ran = llamacpp.available()
    out = EngineComparison(str(source_gguf), str(exported.path), exported.bytes,
                           {k: v for k, v in exported.metadata.items() if k != "workbench.rope_spec"},
                           exported.rope_freqs, spec.to_dict(), length, spec.original_max_position_embeddings,
                           [d.label for d in docs], "ran" if ran else llamacpp.INSTALL_HINT)
    for name, tf_spec, gguf in settings:
        row = out.results.setdefault(name, {})
        row["transformers"] = perplexity(model, docs, spec=tf_spec, label=f"{name} · transformers", length=length,
                                         progress=False, sink=sink)
        if ran:
            row["llama.cpp"] = llamacpp.perplexity(gguf, docs, label=f"{name} · llama.cpp", length=length,
                                                   progress=False, sink=sink)
    return out


__all__ = ["EngineComparison", "compare_engines", "deploy_spec", "engine_estimates"]
