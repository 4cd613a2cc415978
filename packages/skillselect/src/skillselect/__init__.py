"""skillselect: choose K training problems from a tagged pool, weighted toward the student's weak skills.

Strategies (``available_strategies()``): ``skill`` (draw a leaf by weight, then a problem in it),
``skill-match`` (greedy L2 matching of the selection's leaf histogram to the weights), ``random``,
``difficulty`` (a band on a numeric metadata field) and ``balanced`` (uniform over leaves).
"""

from skillselect.core import (
    STRATEGIES,
    SelectConfig,
    Selection,
    SelectionContext,
    SelectionError,
    StrategyResult,
    available_strategies,
    build_context,
    register_strategy,
    select,
)
from skillselect.pool import Pool, PoolError, read_ids
from skillselect.report import log_selection, save_selection, selection_figure
from skillselect.samplers import greedy_match, naive_match, sample_by_leaf
from skillselect.targets import (
    profile_fraction_rows,
    share_ratio,
    skill_target,
    subsample_judged,
    target_distance,
)
from skillselect.weights import leaf_weights, smoothed_accuracy

__all__ = [
    "STRATEGIES",
    "Pool",
    "PoolError",
    "SelectConfig",
    "Selection",
    "SelectionContext",
    "SelectionError",
    "StrategyResult",
    "available_strategies",
    "build_context",
    "greedy_match",
    "leaf_weights",
    "log_selection",
    "naive_match",
    "profile_fraction_rows",
    "read_ids",
    "register_strategy",
    "sample_by_leaf",
    "save_selection",
    "select",
    "selection_figure",
    "share_ratio",
    "skill_target",
    "smoothed_accuracy",
    "subsample_judged",
    "target_distance",
]
