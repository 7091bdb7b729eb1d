"""What ``gpu-run`` does on the GPU and in tiny mode: the same steps, two sets of sizes.

Plain data, no torch: the orchestrator reads it before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STEPS = ("setup", "probe", "parity", "scale", "search", "train", "notebook")

# the notebook 05 budget shared by both presets: a few candidates and a few steps per stage
_NB_SEARCH = {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1}


@dataclass(frozen=True)
class KitPreset:
    """Sizes of every step.

    Args:
        device: "cuda" or "cpu" (the tiny preset: the same code on this machine's CPU).
        eval_dtype: dtype of the evaluations (the library's autocast: "bf16" or "fp32").
        search_weights: dtype of the search model's weights (the search API has no autocast setting, so
            bf16 on the GPU means bf16 weights; the parity step measures that path too).
        parity_reference: "recorded" (the CPU fp32 number in tests/benchmarks/results/evaluation.json)
            or "cpu-fp32" (computed on this machine's CPU first).
        scale_lengths: evaluation lengths; the last is the search target.
        search_seconds: what the search's evaluations should take; its budget is sized from the
            seconds per forward that the scale step measured.
        report_windows: held-out windows per corpus of ``report_corpora`` for the search's report.
        train: TrainConfig fields of the training step (it stops half-way, then resumes).
        notebook: parameters of notebooks/05_progressive_extension.ipynb (run by the launcher).
        boxes: seconds each step may take; scaled down together when a call has less time left.
        budget_s: the whole run's seconds (one call).
    """

    name: str
    model: str
    device: str
    eval_dtype: str
    search_weights: str
    train_dtype: str
    parity_length: int
    parity_reference: str
    scale_lengths: tuple[int, ...]
    probe_length: int
    search_documents: int
    search_seconds: float
    max_population: int
    report_corpora: tuple[str, ...]
    report_windows: int
    train: dict[str, Any]
    notebook: dict[str, Any]
    boxes: dict[str, float]
    budget_s: float

    def __post_init__(self) -> None:
        if set(self.boxes) != set(STEPS):
            raise ValueError(f"preset {self.name}: boxes must name every step {STEPS}")

    @property
    def target_length(self) -> int:
        return self.scale_lengths[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KitPreset:
        """The inverse of :meth:`to_dict` (JSON turns the tuples into lists)."""
        return cls(**{**d, "scale_lengths": tuple(d["scale_lengths"]), "report_corpora": tuple(d["report_corpora"])})


GPU = KitPreset(
    name="gpu", model="smollm2", device="cuda", eval_dtype="bf16", search_weights="bf16", train_dtype="bf16",
    parity_length=8192, parity_reference="recorded",
    scale_lengths=(8192, 16384, 32768, 65536), probe_length=8192,
    search_documents=3, search_seconds=110.0, max_population=64,
    report_corpora=("shakespeare", "bible"), report_windows=3,  # 3 + 3 windows of 64k exist held out
    train={"seq_len": 16384, "steps": 6, "batch_size": 1, "grad_accum": 2, "checkpoint_every": 3,
           "gradient_checkpointing": True, "lr": 2e-5, "warmup": 1},
    notebook={"model": "smollm2", "stage1_multiple": 2, "stage2_multiple": 2, "search1": _NB_SEARCH,
              "train": {"steps": 4, "batch_size": 1, "checkpoint_every": 2, "warmup": 1, "lr": 2e-5,
                        "dtype": "bf16", "gradient_checkpointing": True},
              "search2": _NB_SEARCH, "recovery": _NB_SEARCH, "eval_documents": 1},
    # probe converts the GGUF to fp32 safetensors on first use (~12-30 s) and tokenises the corpora
    boxes={"setup": 25, "probe": 60, "parity": 20, "scale": 45, "search": 150, "train": 55, "notebook": 95},
    budget_s=450,
)

TINY = KitPreset(
    name="tiny", model="teaching-ci", device="cpu", eval_dtype="fp32", search_weights="fp32", train_dtype="fp32",
    parity_length=256, parity_reference="cpu-fp32",
    scale_lengths=(256, 512, 1024, 2048), probe_length=256,
    search_documents=1, search_seconds=3.0, max_population=8,
    report_corpora=("shakespeare", "bible"), report_windows=1,
    train={"seq_len": 512, "steps": 4, "batch_size": 2, "grad_accum": 2, "checkpoint_every": 2,
           "gradient_checkpointing": False, "lr": 1e-3, "warmup": 1},
    notebook={"model": "teaching-ci", "stage1_multiple": 2, "stage2_multiple": 2, "search1": _NB_SEARCH,
              "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "warmup": 1},
              "search2": _NB_SEARCH, "recovery": _NB_SEARCH, "eval_documents": 1},
    # generous: a shared 2-core machine; the run takes what it takes, the boxes only catch a hang
    boxes={"setup": 60, "probe": 90, "parity": 60, "scale": 60, "search": 90, "train": 90, "notebook": 240},
    budget_s=690,
)

PRESETS = {p.name: p for p in (GPU, TINY)}
