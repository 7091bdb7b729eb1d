"""A search bound to a model, its fitness documents and a run folder: evaluation, resume, several processes.

Fitness: perplexity on the *train* split at the target length (LongRoPE), or needle-driven perplexity
(LongRoPE2), exp of the mean per-document loss; the target says which (targets.py). Process 0 runs the algorithm;
how each round's candidates are shared among processes is processes.py.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import distributed
from ..events import Event, Sink, fan_out, null_sink
from ..hf import NotExpressibleError, model_geometry, to_hf
from ..runs import RunFolder, RunFolderError, cpu_name, git, model_fingerprint
from .config import GRID, SearchConfig, SearchError
from .evaluator import Evaluator, rung_survivors
from .ga import GeneticAlgorithm, Genome, Space
from .journal import Journal, Record, candidate_key
from .processes import Workers
from .racing import Threshold, threshold
from .results import SearchResult
from .targets import TARGETS, LongTarget, ShortTarget, seed_label


def _resolve_target(config: SearchConfig, geometry: Any, target: LongTarget | ShortTarget | None
                    ) -> LongTarget | ShortTarget:
    """The given target checked against the model, or a LongTarget for ``config.target_length``."""
    L0 = geometry.original_max_position_embeddings
    geom = dict(head_dim=geometry.head_dim, rope_theta=geometry.rope_theta, original_max_position_embeddings=L0)
    if target is None:
        if config.target_length <= L0:
            raise SearchError(f"target_length={config.target_length} is not allowed: it must be above the model's "
                              f"original context L0={L0}")
        target = TARGETS[config.mode](geom, config.target_length, config.attention_policy)
    if isinstance(target, ShortTarget) and config.target_length > L0:
        raise SearchError(f"target_length={config.target_length} is not allowed for short factors: they apply up "
                          f"to L0={L0}")
    if (isinstance(target, ShortTarget) or target.base) and config.mode != "longrope":
        raise SearchError("mode='longrope2' is not allowed for short-factor or composed (stage-2) searches")
    return target


def _check_against_model(config: SearchConfig, target: Any, n_pairs: int, head_dim: int) -> float:
    """Everything the model decides, checked before the documents are read or the folder written; the max factor."""
    s = target.s
    max_factor = config.max_factor_for(s)
    if max_factor < s:
        raise SearchError(f"max_factor={config.max_factor!r} is not allowed: the maximum factor must be at least "
                          f"the extension ratio s={s:g} (use '1+s', '1.25s', '2s' or a number >= s)")
    for i, factors in enumerate(config.user_seeds):
        if len(factors) != n_pairs:
            raise SearchError(f"user_seeds[{i}] has {len(factors)} factors (--factors); the model has "
                              f"{n_pairs} frequency pairs (head_dim {head_dim}): give {n_pairs}")
    target.check(config, n_pairs)
    return max_factor


class Search:
    """A search bound to a model, its fitness documents and a run folder.

    Create it on every process (each with its own model replica); call :meth:`run` on every process.
    Process 0 drives the algorithm and returns the :class:`SearchResult`; the others return None.
    """

    def __init__(self, model: Any, tokenizer: Any, config: SearchConfig, run_dir: str | Path, *,
                 sink: Sink = null_sink, stop: Callable[[], bool] = lambda: False, resume: bool = False,
                 model_name: str = "model", target: LongTarget | ShortTarget | None = None) -> None:
        geometry = model_geometry(model)
        self.target = _resolve_target(config, geometry, target)
        self.s = self.target.s
        self.n_pairs = geometry.head_dim // 2
        max_factor = _check_against_model(config, self.target, self.n_pairs, geometry.head_dim)
        self.model, self.tokenizer, self.cfg = model, tokenizer, config
        self.geometry = dict(head_dim=geometry.head_dim, rope_theta=geometry.rope_theta,
                             original_max_position_embeddings=geometry.original_max_position_embeddings)
        self.max_grid = int(math.floor(max_factor * GRID + 1e-9))
        self.comm = distributed.Comm()
        self.folder = Path(run_dir)
        self.sink = sink if self.comm.rank == 0 else null_sink
        self.stop = stop
        self.model_name = model_name
        self.docs = self._documents()
        self.evaluator = Evaluator(model, self.docs, self.target, config,
                                   checkpoint=self.folder / f"partial-{self.comm.rank}.pt")
        self.reached: dict[str, Record] = {}  # evaluations this run has reached so far, in order
        self.notes: list[str] = []
        self.resume = resume
        self.records: dict[str, Record] = {}  # every evaluation known, including the journal's (read by run())
        self.journaled_generations: set[tuple[int | None, int]] = set()  # (critical_dim, generation) journaled
        self._open_folder(resume)
        self.journal = Journal(self.folder, self.comm.rank)
        self.workers = Workers(self.comm, self.evaluator, self.journal, self.sink, stop)
        self.replayed = 0
        self.baseline_factors: dict[str, list[float]] = {}

    def _documents(self) -> list[Any]:
        cfg = self.cfg
        return self.target.documents(self.tokenizer, cfg, "train", cfg.n_documents, per_document=cfg.per_document,
                                     seed=cfg.seed)

    @property
    def tokens(self) -> int:
        """Token-forwards spent on the evaluations reached (the same whether or not the run was resumed)."""
        return sum(r.tokens for r in self.reached.values())

    @property
    def tokens_saved(self) -> int:
        """Token-forwards racing and the rungs spared against reading every candidate whole."""
        return sum(len(self.docs) * self.cfg.target_length - r.tokens for r in self.reached.values())

    # -- run folder ----------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What must match to resume this search's folder."""
        return {"config": self.cfg.to_dict(), "model": self.model_name, "model_fingerprint": model_fingerprint(self.model),
                "target": self.target.identity(),
                "documents": [getattr(d, "label", None) or getattr(d, "key", "") for d in self.docs]}

    def _open_folder(self, resume: bool) -> None:
        try:
            self.run_folder = RunFolder.open(self.folder, "search", self.identity(), resume)
        except RunFolderError as e:
            raise SearchError(str(e)) from None

    def _read_journal(self) -> None:
        """Process 0, holding the folder's lock: what a resumed search has done already. Only under the lock,
        for reading cuts off a torn last line, which must never be a line another search is writing."""
        if not self.resume:
            return
        journal = Journal.read(self.folder)
        self.records, self.journaled_generations = journal.records, journal.generations
        for w in journal.warnings:
            self.notes.append(w)
            self.sink(Event("search.warning", {"message": w}))

    # -- evaluation ------------------------------------------------------------------------------
    def _rounds(self, stage: str) -> list[int]:
        """The prefix lengths a batch is read to in turn: the rungs (factor search only), then the whole window."""
        return [*(self.cfg.rungs if stage in ("init", "generation") else ()), self.cfg.target_length]

    def _evaluate_batch(self, space: Space, batch: list[tuple[Genome, int]], threshold: Threshold | None,
                        stage: str, generation: int) -> list[Record]:
        """Evaluate (genome, n_hat) candidates, from the journal where possible; in order.

        With rungs, the batch is read to each rung in turn and only :func:`rung_survivors` go on; a candidate
        a rung dropped comes back incomplete (it cannot become a parent)."""
        keys = [candidate_key(space.cd, genome, n_hat) for genome, n_hat in batch]
        items = {k: (i, genome, n_hat) for i, (k, (genome, n_hat)) in enumerate(zip(keys, batch, strict=True))}
        out: dict[str, Record] = {}
        alive = list(dict.fromkeys(keys))
        rounds = self._rounds(stage)
        for rung, to in enumerate(rounds):
            out.update(self._round(space, [(k, *items[k]) for k in alive], threshold, stage, generation, rung, to))
            if rung == len(rounds) - 1 or self.stop():
                break
            alive = rung_survivors(alive, {k: r.rung_loss for k, r in out.items()}, rung, self.cfg.rung_keep)
            self.evaluator.forget(set(alive))
            self.sink(Event("search.rung", {"stage": stage, "generation": generation, "rung": rung, "tokens": to,
                                            "kept": len(alive), "tokens_total": self.tokens}))
        self.evaluator.forget(set())
        results = []
        for key in keys:
            rec = out.get(key)
            if rec is None:  # stopped before it was evaluated
                continue
            self.reached[key] = rec
            self.replayed += rec.replayed
            self.sink(Event("search.eval", {"key": key, "factors": list(space.factors(tuple(rec.genome))),
                                            "n_hat": rec.n_hat, "fitness": rec.fitness, "complete": rec.complete,
                                            "documents": len(rec.nll), "reached": rec.reached,
                                            "rung_loss": rec.rung_loss, "stage": stage, "generation": generation,
                                            "replayed": rec.replayed, "tokens_total": self.tokens,
                                            "seconds": rec.seconds}))
            results.append(rec)
        return results

    def _settled(self, rec: Record, rung: int) -> bool:
        """Whether a known record already answers round ``rung`` (read that far, complete, or out of the race)."""
        if rec.complete or rec.reached is None or rec.raced:
            return True
        return rung < len(self.cfg.rungs) and len(rec.rung_loss) > rung

    def _round(self, space: Space, items: list[tuple[str, int, Genome, int]], threshold: Threshold | None,
               stage: str, generation: int, rung: int, to: int) -> dict[str, Record]:
        """Read candidates ``(key, index in batch, genome, n_hat)`` to ``to`` tokens, across the processes."""
        out: dict[str, Record] = {}
        todo = []
        for key, index, genome, n_hat in items:
            rec = self.records.get(key)
            if rec is not None and self._settled(rec, rung):
                out[key] = rec
            else:
                todo.append((index, genome, n_hat, key, rec))
        job = {"space": space, "todo": todo, "threshold": threshold, "stage": stage, "generation": generation,
               "to": to, "stop": self.stop()}
        for rec in self.workers.round(job):
            out[rec.key] = self.records[rec.key] = rec
        return out

    # -- the algorithm -----------------------------------------------------------------------------
    def _threshold(self, target: Record) -> Threshold | None:
        """What a candidate must beat to pass ``target`` (racing's rule, see racing.py)."""
        return threshold(self.cfg.racing, target, list(self.reached.values()), len(self.docs))

    def _seeds(self, space: Space) -> list[tuple[str, Genome]]:
        seeds = [(name, space.project(f)) for name, f in self.target.seeds(self.cfg.seed_methods)]
        if space.cd is not None:
            # strict increase from s packs projected baselines into s, s+0.01, ...: seed spread ramps too
            top = space.max_grid / GRID
            for k in (1, 2, 3, 4):
                end = self.s + (top - self.s) * k / 4
                ramp = [1.0] * space.cd + [self.s + (end - self.s) * j / max(1, space.length - 1)
                                           for j in range(space.length)]
                seeds.append((f"ramp to {end:.2f}", space.project(ramp)))
        for i, factors in enumerate(self.cfg.user_seeds):  # their lengths were checked against the model
            seeds.append((f"user{i}", space.project(factors)))
        unique: dict[Genome, str] = {}
        for name, g in seeds:
            unique.setdefault(g, name)
        return [(name, g) for g, name in unique.items()]

    def _population(self, ga: GeneticAlgorithm, seeds: list[tuple[str, Genome]]) -> list[Genome]:
        """The seeds, filled up with mutations of the seeds in turn."""
        population = [g for _, g in seeds]
        seen = set(population)
        i = 0
        while len(population) < self.cfg.population:
            g = ga.mutate(population[i % len(seeds)], seen)
            seen.add(g)
            population.append(g)
            i += 1
        return population

    def _search_space(self, space: Space, offset: int) -> tuple[list[Record], dict[str, float], list[dict]]:
        """The factor search in one space (one critical dimension): population, then generations."""
        cfg = self.cfg
        ga = GeneticAlgorithm(space, cfg, offset)
        seeds = self._seeds(space)
        records = self._evaluate_batch(space, [(g, 0) for g in self._population(ga, seeds)], None, "init", 0)
        by_genome = {tuple(r.genome): r for r in records}
        named = (*cfg.seed_methods, "original", "long factors")  # the methods' seeds, and recovery's reference ones
        baselines = {name: by_genome[g].fitness for name, g in seeds if g in by_genome and name in named}
        factors = {name: list(space.factors(g)) for name, g in seeds if name in baselines}
        self.baseline_factors = self.baseline_factors or factors  # the first space's (LongRoPE2: per cd)
        self.sink(Event("search.baselines", {"critical_dim": space.cd, "fitness": baselines,
                                             "labels": {name: seed_label(name) for name in baselines},
                                             "factors": factors}))
        parents = sorted((r for r in records if r.complete), key=lambda r: r.fitness)[: cfg.parents]
        history = [self._generation_event(0, parents, records, space)]
        for gen in range(1, cfg.generations + 1):
            if self.stop() or not parents:
                break
            # only what this run has reached: on resume the journal also holds later generations
            seen = {tuple(r.genome) for r in self.reached.values() if r.cd == space.cd and r.n_hat == 0}
            children = ga.children([tuple(p.genome) for p in parents], seen)
            bar = self._threshold(parents[-1]) if len(parents) >= cfg.parents else None  # the worst parent
            evaluated = self._evaluate_batch(space, [(g, 0) for g in children], bar, "generation", gen)
            records += evaluated
            parents = sorted([*parents, *(r for r in evaluated if r.complete)], key=lambda r: r.fitness)[: cfg.parents]
            history.append(self._generation_event(gen, parents, evaluated, space))
        return parents, baselines, history

    def _generation_event(self, gen: int, parents: list[Record], evaluated: list[Record], space: Space) -> dict:
        fits = [p.fitness for p in parents]
        row = {"generation": gen, "critical_dim": space.cd, "best": fits[0] if fits else math.inf,
               "median": statistics.median(fits) if fits else math.inf,
               "best_factors": list(space.factors(tuple(parents[0].genome))) if parents else [],
               "parents": [p.key for p in parents], "evaluated": len(evaluated),
               "stopped_early": sum(not r.complete for r in evaluated), "tokens_total": self.tokens,
               "population_factors": [list(space.factors(tuple(p.genome))) for p in parents],
               "seconds": sum(r.seconds for r in evaluated)}  # as measured, also when replayed: for the time left
        if self.comm.rank == 0 and (space.cd, gen) not in self.journaled_generations:  # once, also across resumes
            self.journal.append({"kind": "generation", **{k: v for k, v in row.items()
                                                          if k not in ("population_factors", "seconds")}})
            self.journaled_generations.add((space.cd, gen))
        self.sink(Event("search.generation", row))
        return row

    def run(self) -> SearchResult | None:
        """Run (or resume) the search; process 0 returns the result, the others serve and return None.

        Raises:
            RunFolderError: another process is running a search in this folder (every process raises it).
        """
        with self.run_folder.hold("a search"):
            if self.comm.rank != 0:
                self.workers.serve()
                return None
            return self._run()

    def _spaces(self) -> list[Space]:
        """The genome spaces the target searches: one (LongRoPE), or one per critical dimension (LongRoPE2)."""
        return self.target.spaces(self.cfg, self.n_pairs, self.max_grid)

    def _run(self) -> SearchResult:
        t0 = time.time()
        cfg = self.cfg
        best: tuple[Record, Space] | None = None
        baselines: dict[str, float] = {}
        history: list[dict] = []
        try:
            self._read_journal()
            self.sink(Event("search.start", {"config": cfg.to_dict(), "budget": cfg.evaluations_budget,
                                             "resumed_evaluations": len(self.records), "notes": self.notes,
                                             "cpu": cpu_name(), "commit": git("rev-parse", "HEAD") or "unknown"}))
            tops: list[tuple[Record, Space]] = []
            for k, space in enumerate(self._spaces()):
                parents, base, hist = self._search_space(space, k)
                history += hist
                baselines = baselines or base
                tops += [(p, space) for p in parents]
            tops.sort(key=lambda t: t[0].fitness)
            if tops:
                best = tops[0]
            if best is not None and cfg.n_hat_stage and not self.stop():
                best = self._n_hat_stage(tops[: cfg.n_hat_top], best)
        finally:
            self.workers.finish()
        if not self.stop():  # finished: no candidate is left half read (one paused at a rung may have been saved)
            for part in self.folder.glob("partial-*.pt"):
                part.unlink(missing_ok=True)
        return self._result(best, baselines, history, time.time() - t0)

    def _n_hat_stage(self, tops: list[tuple[Record, Space]], best: tuple[Record, Space]) -> tuple[Record, Space]:
        choices = [n for n in self.cfg.n_hat_choices if 0 < n <= self.cfg.target_length]
        for rec, space in tops:
            bar = self._threshold(best[0])  # a candidate must beat the best so far
            tried = self._evaluate_batch(space, [(tuple(rec.genome), n) for n in choices], bar, "n_hat", -1)
            for r in tried:
                if r.fitness < best[0].fitness:
                    best = (r, space)
        self.sink(Event("search.n_hat", {"best_n_hat": best[0].n_hat, "best": best[0].fitness}))
        return best

    def _result(self, best: tuple[Record, Space] | None, baselines: dict[str, float], history: list[dict],
                seconds: float) -> SearchResult:
        common = dict(baselines=baselines, baseline_labels={k: seed_label(k) for k in baselines},
                      evaluations=len(self.reached), evaluations_replayed=self.replayed, tokens_forwarded=self.tokens,
                      tokens_saved_by_racing=self.tokens_saved, seconds=seconds, stopped=self.stop(), notes=self.notes,
                      racing=self.cfg.racing, baseline_factors=self.baseline_factors,
                      generations=[{k: v for k, v in h.items() if k != "population_factors"} for h in history])
        if best is None:
            result = SearchResult(best_factors=[], best_n_hat=0, best_fitness=math.inf, critical_dim=None, spec={},
                                  rope_parameters=None, export_notes=[], **common)
        else:
            rec, space = best
            spec = self.evaluator.spec(space, tuple(rec.genome), rec.n_hat)
            try:
                exp = to_hf(spec, allow_lossy=rec.n_hat > 0)
                rope_parameters, notes = exp.rope_parameters, list(exp.notes)
            except NotExpressibleError as e:
                rope_parameters, notes = None, [str(e)]
            result = SearchResult(best_factors=list(space.factors(tuple(rec.genome))), best_n_hat=rec.n_hat,
                                  best_fitness=rec.fitness, critical_dim=space.cd, spec=spec.to_dict(),
                                  rope_parameters=rope_parameters, export_notes=notes, **common)
        self.run_folder.write("result", result)
        self.sink(Event("search.done", {k: v for k, v in result.to_dict().items() if k != "generations"}))
        return result


def run_search(model: Any, tokenizer: Any, config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               report: bool = True, sink: Sink = null_sink, stop: Callable[[], bool] = lambda: False,
               model_name: str = "model", report_documents: int = 20,
               target: LongTarget | ShortTarget | None = None) -> SearchResult | None:
    """Search, then (process 0) the held-out report, written to ``run_dir/report.json``."""
    from ..events import JsonlSink
    from .report import heldout_report

    folder = Path(run_dir)
    jsonl: list[JsonlSink] = []

    def journal_events(event: Event) -> None:
        """events.jsonl, opened at the first event: a search refused by its checks leaves no folder behind."""
        if distributed.rank() != 0:
            return
        if not jsonl:
            jsonl.append(JsonlSink(folder / "events.jsonl"))
        jsonl[0](event)

    both = fan_out([sink, journal_events])
    search = Search(model, tokenizer, config, folder, sink=both, stop=stop, resume=resume, model_name=model_name,
                    target=target)
    result = search.run()
    if result is not None and report and not result.stopped and result.best_factors and target is None:
        rep = heldout_report(model, tokenizer, result, config, n_documents=report_documents, sink=both)
        search.run_folder.write("report", rep)
        both(Event("search.report", rep.to_dict()))
    return result
