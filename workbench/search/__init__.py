"""Evolutionary search for LongRoPE and LongRoPE2 rescale factors.

    config.py    SearchConfig (every parameter; all must match to resume) and the named budgets (PRESETS)
    ga.py        the genetic algorithm (pure, seeded): Space, GeneticAlgorithm
    targets.py   what a genome means: long factors (optionally composed on a stage-1 model) or short ones
    racing.py    stopping hopeless candidates early: exact (default) or heuristic
    evaluator.py reading a candidate's documents through a KV cache: racing by position, rungs (multi-fidelity)
    journal.py   the evaluation journal a resumed search replays
    run.py       Search / run_search: evaluation, run folder, resume, several processes
    report.py    the held-out report against PI, NTK and YaRN, per window and per document; how well rungs rank

The algorithm is pure and seeded: given the same seed and the same evaluations it proposes the same
candidates. Every finished evaluation is journaled as it completes, and a resumed search re-runs the
algorithm from the start, reading evaluations from the journal, so it ends with exactly the result of an
uninterrupted run. With exact racing (the default) it also ends with the plain algorithm's result.
"""

from .config import GRID, MODES, N_HAT_CHOICES, PRESETS, RACING, SearchConfig, SearchError
from .evaluator import Evaluator
from .ga import GeneticAlgorithm, Genome, Space
from .journal import Journal, JournalContents, JournalError, Record, candidate_key
from .racing import Threshold, hopeless
from .report import heldout_report, rank_correlation, rung_fidelity
from .results import HeldoutReport, SearchOutcome, SearchResult
from .run import Search, run_search
from .targets import SHORT_SEEDS, LongRope2Target, LongTarget, ShortTarget, seed_label

__all__ = [
    "GRID", "MODES", "N_HAT_CHOICES", "PRESETS", "RACING", "SHORT_SEEDS", "Evaluator", "GeneticAlgorithm", "Genome",
    "Journal", "JournalContents", "JournalError", "LongRope2Target", "LongTarget", "Record", "Search", "SearchConfig", "SearchError",
    "HeldoutReport", "SearchOutcome", "SearchResult", "ShortTarget", "Space", "Threshold", "candidate_key", "heldout_report", "hopeless", "rank_correlation", "run_search", "seed_label",
    "rung_fidelity",
]
