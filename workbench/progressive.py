"""Progressive extension (LongRoPE): search -> fine-tune -> search again -> recover short context.

    01-search1    factors for L1 = s1 x L0 on the original model
    02-finetune   fine-tune at L1 with them
    03-search2    factors for L2 = s2 x L1 on the fine-tuned model, on top of the stage-1 factors
                  (the composed long factor is the product; n_hat is not composed, so the first two
                  searches run without their n_hat stage)
    04-recovery   short factors for L0 on the fine-tuned model, the final long factors fixed
    final/        the fine-tuned weights with short and long factors in rope_parameters
    report.json   perplexity at each length: no fine-tuning, after stage 1, after stage 2; and at L0:
                  the original model, before recovery, after recovery

Every stage writes its own folder and is skipped when complete, resumed when started (search journals,
training checkpoints): the pipeline resumes at the stage where it stopped. Under ``accelerate launch``
the searches and the fine-tuning use every process; process 0 writes the results the others read.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .events import Event, Sink, fan_out, null_sink, read_events
from .finetuned import load_finetuned, save_model
from .hf import model_geometry
from .progressive_results import ProgressiveReport, ShortContextReport
from .rope import LongRopeSpec, spec_from_dict
from .runs import RunFolder, RunFolderError
from .search import LongTarget, SearchConfig, ShortTarget, run_search
from .train import TrainConfig, finetune


class ProgressiveError(ValueError):
    pass


STAGE_BUDGETS = ("search1", "train", "search2", "recovery")
FINETUNE_DIR = "02-finetune"  # the fine-tune's run folder inside a progressive run


@dataclass(frozen=True)
class ProgressiveConfig:
    """Lengths and per-stage budgets. Budgets are SearchConfig / TrainConfig keyword overrides.

    The defaults are the teaching model's CPU pipeline (L0 256 -> 1024 fine-tuned -> 8192 -> recovery at
    256, about 8 minutes here); real models want the paper's budgets.
    """

    stage1_length: int
    stage2_length: int
    search1: dict = field(default_factory=lambda: dict(population=32, parents=16, mutants=8, crossovers=8,
                                                       generations=8, n_hat_stage=False, n_documents=3))
    train: dict = field(default_factory=lambda: dict(steps=120, batch_size=4, lr=5e-4, warmup=10,
                                                     checkpoint_every=20))
    search2: dict = field(default_factory=lambda: dict(population=12, parents=6, mutants=3, crossovers=3,
                                                       generations=3, n_hat_stage=False, n_documents=2))
    recovery: dict = field(default_factory=lambda: dict(population=16, parents=8, mutants=4, crossovers=4,
                                                        generations=4, n_hat_stage=False, n_documents=4))
    recovery_max_factor: float | None = None  # default: the largest stage-1 factor
    corpus: str = "shakespeare"
    eval_documents: int = 8
    seed: int = 0

    @classmethod
    def with_overrides(cls, stage1_length: int, stage2_length: int, **settings: Any) -> ProgressiveConfig:
        """A config whose per-stage budgets (search1, train, search2, recovery) are the defaults updated with
        the given dicts, rather than replaced by them; other settings are passed as they are."""
        merged = {name: ({**cls.__dataclass_fields__[name].default_factory(), **value}
                         if name in STAGE_BUDGETS else value) for name, value in settings.items()}
        return cls(stage1_length, stage2_length, **merged)

    def __post_init__(self) -> None:
        """Every length and budget is checked here, so a bad one is refused before any stage runs."""
        from .search import SearchError
        from .train import TrainError

        for name in ("stage1_length", "stage2_length", "eval_documents"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "eval_documents" else 2):
                raise ProgressiveError(f"{name}={v!r} is not allowed: "
                                       + ("a positive integer" if name == "eval_documents" else "an integer >= 2"))
        if self.stage2_length <= self.stage1_length:
            raise ProgressiveError(f"stage2_length={self.stage2_length} is not allowed: it must be above "
                                   f"stage1_length={self.stage1_length} (lengths must grow: L0 < L1 < L2)")
        r = self.recovery_max_factor
        if r is not None and not (isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r >= 1):
            raise ProgressiveError(f"recovery_max_factor={r!r} is not allowed: None or a finite number >= 1")
        for name, fixed in (("search1", {"target_length", "corpus", "seed"}), ("search2", {"target_length", "corpus", "seed"}),
                            ("recovery", {"target_length", "corpus", "seed", "max_factor"})):
            budget = getattr(self, name)
            if not isinstance(budget, dict):
                raise ProgressiveError(f"{name}={budget!r} is not allowed: a dict of SearchConfig overrides")
            allowed = set(SearchConfig.__dataclass_fields__) - fixed
            unknown = sorted(set(budget) - allowed)
            if unknown:
                raise ProgressiveError(f"{name}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
            try:
                SearchConfig(target_length=self.stage2_length, corpus=self.corpus, seed=self.seed, **budget)
            except SearchError as e:
                raise ProgressiveError(f"{name}: {e}") from None
        for name in ("search1", "search2"):  # the next stage composes long factors only: it would drop an n_hat
            if getattr(self, name).get("n_hat_stage", False):  # off unless asked for (see stage_search_config)
                raise ProgressiveError(f"{name}: n_hat_stage=True is not allowed: the next stage composes the long "
                                       "factors only and would drop an n_hat > 0; leave it False")
        if not isinstance(self.train, dict):
            raise ProgressiveError(f"train={self.train!r} is not allowed: a dict of TrainConfig overrides")
        allowed = set(TrainConfig.__dataclass_fields__) - {"seq_len", "corpora", "seed"}
        unknown = sorted(set(self.train) - allowed)
        if unknown:
            raise ProgressiveError(f"train: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        try:
            TrainConfig(seq_len=self.stage1_length, corpora=(self.corpus,), seed=self.seed, **self.train)
        except TrainError as e:
            raise ProgressiveError(f"train: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def finetune_plan(self) -> tuple[int, int, int, str]:
        """What stage 1's fine-tune will cost in an estimate: (length, steps, rows per micro-batch, engine)."""
        t = TrainConfig(seq_len=self.stage1_length, corpora=(self.corpus,), seed=self.seed, **self.train)
        return (t.seq_len, t.steps * t.grad_accum, t.batch_size,
                "train-checkpointed" if t.gradient_checkpointing else "train")


def _device() -> torch.device:
    """This process's GPU (its LOCAL_RANK under accelerate launch) when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass
class ProgressiveResult:
    folder: str
    stages: dict[str, Any]
    report: ProgressiveReport
    final_dir: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_steps(self) -> list[dict[str, Any]]:
        """The fine-tune's steps (its ``train.step`` events: step, loss, ...)."""
        return [e.data for e in read_events(Path(self.folder) / FINETUNE_DIR / "events.jsonl") if e.kind == "train.step"]

    def figures(self) -> list[Any]:
        """The fine-tune's loss curve, and every stage's factors: stage 1's, stage 2's composed, the recovered short."""
        from .plots import factor_curves_figure, training_curve_figure

        L0, L1, L2 = self.report.lengths[:3]
        st = self.stages
        return [training_curve_figure(self.training_steps(), f"Fine-tuning at {L1}"),
                factor_curves_figure({f"stage 1 (L1 = {L1})": st["search1"]["long_factor"],
                                      f"stage 2, composed (L2 = {L2})": st["search2"]["long_factor"],
                                      f"short factors (up to L0 = {L0})": st["recovery"]["short_factor"]})]


def stage_search_config(config: ProgressiveConfig, length: int, budget: dict[str, Any]) -> SearchConfig:
    """A long-factor stage's search: its budget, with the n_hat stage off unless the budget names it (it is refused
    then: the next stage composes the long factors only)."""
    return SearchConfig(target_length=length, corpus=config.corpus, seed=config.seed,
                        **{"n_hat_stage": False, **budget})


def _finetune_summary(ft_dir: Path, length: int) -> dict[str, Any]:
    """The fine-tune stage's record: its length, steps and first and last loss (from its events)."""
    log = [e.data for e in read_events(ft_dir / "events.jsonl") if e.kind == "train.step"]
    return {"length": length, "steps": len(log), "loss_first": log[0]["loss"] if log else None,
            "loss_last": log[-1]["loss"] if log else None}


def run_progressive(model_name: str, config: ProgressiveConfig, run_dir: str | Path, *, sink: Sink = null_sink,
                    stop: Any = lambda: False, progress: bool = True) -> ProgressiveResult | None:
    """Run (or resume) the whole pipeline for a named model; returns the result on rank 0."""
    from .models import load_model

    folder = Path(run_dir)
    rank = distributed.rank()
    events = fan_out([sink, _open_folder(model_name, config, folder).sink])
    stage = _Stages(events)
    original = load_model(model_name)
    original.model.to(_device())  # the searches and the report run where the fine-tuning does
    L0 = model_geometry(original.model).original_max_position_embeddings
    L1, L2 = config.stage1_length, config.stage2_length
    if not L0 < L1 < L2:
        raise ProgressiveError(f"lengths must grow: L0={L0} < stage1_length={L1} < stage2_length={L2}")

    # ---- stage 1: search on the original model --------------------------------------------------------
    s1_dir = folder / "01-search1"
    cfg1 = stage_search_config(config, L1, config.search1)
    spec1 = _search_stage(original.model, original.tokenizer, cfg1, s1_dir, model_name, events, stop)
    if spec1 is None:
        return None
    stage("search1", {"length": L1, "long_factor": list(spec1.long_factor), "fitness": _fitness(s1_dir)})

    # ---- stage 2: fine-tune at L1 -------------------------------------------------------------------
    ft_dir = folder / FINETUNE_DIR
    if not _finetune_stage(model_name, original.tokenizer, spec1, config, ft_dir, events, stop, progress):
        return None
    tuned, tokenizer, _ = load_finetuned(ft_dir / "model")
    tuned.to(_device())
    stage("finetune", _finetune_summary(ft_dir, L1))

    # ---- stage 3: search again on the fine-tuned model, on top of the stage-1 factors; 4: recovery at L0 -----
    geom = dict(head_dim=spec1.head_dim, rope_theta=spec1.rope_theta, original_max_position_embeddings=L0)
    cfg2 = stage_search_config(config, L2, config.search2)
    target2 = LongTarget(geom, L2, cfg2.attention_policy, base_factors=spec1.long_factor, base_length=L1)
    spec2 = _search_stage(tuned, tokenizer, cfg2, folder / "03-search2", f"{model_name}+finetune", events, stop, target2)
    if spec2 is None:
        return None
    stage("search2", {"length": L2, "long_factor": list(spec2.long_factor), "fitness": _fitness(folder / "03-search2")})
    spec_r = recover_short_context(tuned, tokenizer, spec2, folder / "04-recovery", budget=config.recovery,
                                   max_factor=config.recovery_max_factor or max(spec1.long_factor), corpus=config.corpus,
                                   seed=config.seed, model_name=f"{model_name}+finetune", sink=events, stop=stop)
    if spec_r is None:
        return None
    stage("recovery", {"length": L0, "short_factor": list(spec_r.short_factor), "fitness": _fitness(folder / "04-recovery")})

    # ---- the final model, and the report (process 0) -------------------------------------------------------
    final_dir = folder / "final"
    if rank == 0 and not (final_dir / "workbench_rope.json").exists():
        save_model(tuned, tokenizer, spec_r, final_dir)
    distributed.barrier()
    stage("final", {"dir": str(final_dir), "spec": spec_r.to_dict()})
    report = _final_report(stage, folder / "report.json", lambda: progressive_report(
        original, tuned, tokenizer, spec1, spec2, spec_r, config, L0, L1, L2, events, progress))
    if rank != 0:
        return None
    return ProgressiveResult(str(folder), stage.done, report, str(final_dir), time.time() - stage.t0)


def _final_report(stage: Any, path: Path, make: Any) -> ProgressiveReport | None:
    """Process 0 writes (or reads back) the report and records its stage; every process waits for it."""
    report = None
    if distributed.rank() == 0:
        report = _report_stage(path, make)
        stage("report", {k: v for k, v in report.to_dict().items() if k != "per_document"})
    distributed.barrier()
    return report


def _report_stage(path: Path, make: Any) -> ProgressiveReport:
    """The report at ``path``, made (by ``make()``) and written when it is not there yet."""
    if path.exists():
        return ProgressiveReport.from_dict(json.loads(path.read_text()))
    report = make()
    path.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _open_folder(model_name: str, config: ProgressiveConfig, folder: Path) -> RunFolder:
    """The pipeline's run folder, new or resumed, after the lengths are checked against the model's config."""
    from .models import load_model_config

    L0 = model_geometry(load_model_config(model_name)).original_max_position_embeddings  # the config only: fast
    if not L0 < config.stage1_length:
        raise ProgressiveError(f"stage1_length={config.stage1_length} is not allowed: lengths must grow: "
                               f"L0={L0} < stage1_length < stage2_length={config.stage2_length}")
    try:
        return RunFolder.open(folder, "progressive", {"model": model_name, "config": config.to_dict()},
                              resume=(folder / "params.json").exists())
    except RunFolderError as e:
        raise ProgressiveError(str(e)) from None


class _Stages:
    """Records each completed stage and reports it: ``seconds`` since the pipeline's call began,
    ``stage_seconds`` spent on it in this call (about 0 when a resumed run found it done)."""

    def __init__(self, events: Sink) -> None:
        self.events, self.t0 = events, time.time()
        self.clock = self.t0
        self.done: dict[str, Any] = {}

    def __call__(self, name: str, info: dict) -> None:
        now = time.time()
        self.done[name] = info
        self.events(Event("progressive.stage", {"stage": name, **info, "seconds": now - self.t0,
                                                "stage_seconds": now - self.clock}))
        self.clock = now


def _finetune_stage(model_name: str, tokenizer: Any, spec1: Any, config: ProgressiveConfig, ft_dir: Path,
                    events: Sink, stop: Any, progress: bool) -> bool:
    """Fine-tune a fresh copy of the model at L1 with the stage-1 factors (or resume, or skip when done);
    False when stopped."""
    from .models import load_model

    if (ft_dir / "model" / "workbench_rope.json").exists():
        return True
    tcfg = TrainConfig(seq_len=config.stage1_length, corpora=(config.corpus,), seed=config.seed, **config.train)
    model = load_model(model_name).model  # a fresh copy: the original stays for the report
    events(Event("progressive.start", {"stage": "finetune"}))
    result = finetune(model, tokenizer, spec1, tcfg, ft_dir, resume=(ft_dir / "params.json").exists(), sink=events,
                      stop=stop, progress=progress and distributed.is_main(), model_name=model_name)
    if result.stopped:
        return False
    distributed.barrier()
    return True


def _fitness(folder: Path) -> float | None:
    p = folder / "result.json"
    return json.loads(p.read_text())["best_fitness"] if p.exists() else None


def _search_stage(model: Any, tokenizer: Any, cfg: SearchConfig, folder: Path, model_name: str, events: Sink,
                  stop: Any, target: Any = None) -> LongRopeSpec | None:
    """Run (or resume, or skip when done) one search stage; every rank returns the winning spec."""
    if not (folder / "result.json").exists() or json.loads((folder / "result.json").read_text())["stopped"]:
        events(Event("progressive.start", {"stage": folder.name}))
        result = run_search(model, tokenizer, cfg, folder, resume=(folder / "params.json").exists(), sink=events,
                            stop=stop, model_name=model_name, report=False, target=target)
        if distributed.broadcast(result.stopped if result is not None else False):  # process 0's result decides
            return None
    distributed.barrier()
    return spec_from_dict(json.loads((folder / "result.json").read_text())["spec"])


def progressive_report(original: Any, tuned: Any, tokenizer: Any, spec1: Any, spec2: Any, spec_r: Any,
                       config: ProgressiveConfig, L0: int, L1: int, L2: int, sink: Sink = null_sink,
                       progress: bool = False) -> ProgressiveReport:
    """Held-out perplexity at L0, L1, L2: no fine-tuning (original model + stage-1 factors), after stage 1
    (fine-tuned + stage-1 factors), after stage 2 (fine-tuned + composed factors); and at L0 the original
    model, the final model before recovery (short factors all 1) and after recovery."""
    from dataclasses import replace

    from .data import samples
    from .evaluate import compare_methods

    docs = samples(tokenizer, config.corpus, "heldout", L2, config.eval_documents, per_document=4, progress=False)
    lengths = [L0, L1, L2]
    rows: dict[str, dict[str, float]] = {}
    per_doc: dict[str, Any] = {}
    for label, model, spec in (("no fine-tuning", original.model, spec1), ("after stage 1", tuned, spec1),
                               ("after stage 2", tuned, spec2)):
        results = compare_methods(model, {label: spec}, docs, lengths, progress=progress, sink=sink)
        rows[label] = {str(r.length): r.ppl for r in results}
        per_doc[label] = {str(r.length): r.per_document_ppl for r in results}
    short = short_context_report(original.model, tuned, tokenizer, replace(spec_r, short_factor=None), spec_r,
                                 corpus=config.corpus, documents=config.eval_documents * 2, progress=progress)
    return ProgressiveReport(lengths, rows, short, [d.label for d in docs], per_doc)


def recover_short_context(model: Any, tokenizer: Any, long_spec: LongRopeSpec, run_dir: str | Path, *,
                          budget: dict | None = None, max_factor: float | None = None, corpus: str = "shakespeare",
                          seed: int = 0, model_name: str = "model", sink: Sink = null_sink,
                          stop: Any = lambda: False) -> LongRopeSpec | None:
    """Stage 4 on its own: search short factors for inputs up to L0 on a model extended with ``long_spec``'s long
    factors (kept fixed), in ``run_dir`` (resumed or skipped when done, as in :func:`run_progressive`).

    Args:
        budget: search settings (population, generations, n_documents, ...); default: the pipeline's recovery budget.
        max_factor: the short factors' upper bound (default: the largest long factor).
    Returns:
        ``long_spec`` with the recovered ``short_factor``; None when stopped.
    """
    L0 = long_spec.original_max_position_embeddings
    geom = dict(head_dim=long_spec.head_dim, rope_theta=long_spec.rope_theta, original_max_position_embeddings=L0)
    settings = ProgressiveConfig.__dataclass_fields__["recovery"].default_factory() if budget is None else budget
    cap = max(1.0, max_factor or max(long_spec.long_factor))
    cfg = SearchConfig(target_length=L0, corpus=corpus, seed=seed, max_factor=cap, **settings)
    target = ShortTarget(geom, long_spec.long_factor, long_spec.factor, cfg.attention_policy)
    return _search_stage(model, tokenizer, cfg, Path(run_dir), model_name, sink, stop, target)


def short_context_report(original: Any, extended: Any, tokenizer: Any, long_spec: LongRopeSpec,
                         recovered: LongRopeSpec, *, corpus: str = "shakespeare", documents: int = 16,
                         progress: bool = False) -> ShortContextReport:
    """Held-out perplexity at L0 of the original model, the extended one before recovery (short factors all 1)
    and after it (the change after recovery against the original: ``.change``; LongRoPE's target: at most +2 %)."""
    from dataclasses import replace

    from .data import samples
    from .evaluate import perplexity

    L0 = long_spec.original_max_position_embeddings
    docs = samples(tokenizer, corpus, "heldout", L0, documents, per_document=8, progress=False)
    at_L0 = {
        "original": perplexity(original, docs, length=L0, label="original", progress=progress).ppl,
        "before recovery": perplexity(extended, docs, spec=replace(long_spec, short_factor=None), length=L0,
                                      label="before recovery", progress=progress).ppl,
        "after recovery": perplexity(extended, docs, spec=recovered, length=L0, label="after recovery",
                                     progress=progress).ppl,
    }
    return ShortContextReport(at_L0, len(docs))
