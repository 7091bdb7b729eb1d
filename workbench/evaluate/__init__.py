"""Evaluation: perplexity and the per-position loss curve, retrieval tests, and their reports.

- :mod:`.engine`: per-token NLL of long inputs in bounded memory (and the dtype choice).
- :mod:`.perplexity`: perplexity over documents, several methods on the same documents, short-context regression.
- :mod:`.retrieval`: passkey accuracy, the needle grid, needle-driven perplexity.
- :mod:`.report`: results as JSON files and markdown tables.
- :mod:`.suite`: :class:`Evaluation`, every measurement of several methods, presenting itself.
- :mod:`.comparison`: :class:`MethodComparison`, several methods on the same documents (perplexity, entropy).
- :mod:`.figures`: the evaluation's figures (plotly, imported when drawn).
"""

from .comparison import MethodComparison
from .engine import DTYPES, EvalError, bf16_speedup, check_finite, resolve_dtype, token_nll
from .perplexity import (
    MODES,
    PerplexityResult,
    RegressionResult,
    aligned_bucket,
    as_samples,
    check_window,
    compare_methods,
    comparison_forwards,
    make_result,
    perplexity,
    short_context_regression,
)
from .report import evaluation_table, format_table, regression_table, write_results
from .retrieval import (
    NeedleGridResult,
    NeedlePerplexityResult,
    PasskeyResult,
    first_integer,
    needle_grid,
    needle_perplexity,
    passkey_accuracy,
)
from .suite import Evaluation

__all__ = [
    "DTYPES", "MODES", "EvalError", "Evaluation", "MethodComparison", "NeedleGridResult", "NeedlePerplexityResult", "PasskeyResult",
    "PerplexityResult", "RegressionResult", "aligned_bucket", "as_samples", "bf16_speedup", "check_finite",
    "check_window", "compare_methods", "comparison_forwards", "evaluation_table", "first_integer", "format_table", "make_result",
    "needle_grid", "needle_perplexity", "passkey_accuracy", "perplexity", "regression_table", "resolve_dtype",
    "short_context_regression", "token_nll", "write_results",
]
