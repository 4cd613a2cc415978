"""How many judged problems the skill target needs: the target from a subsample of the profile against the
target from the full profile (``benchmarks/profile_fraction.py`` runs this on a fully profiled pool).

Profiling answers a sample of the pool (the pipeline's ``profile.limit``); the profile estimates each leaf's
accuracy from it and the ``skill`` strategy's target is the normalised leaf weights. These helpers take the
target as the strategy itself computes it (:func:`skill_target`, a ``select`` call with K = 0), keep the
verdicts of a random share of the judged problems (:func:`subsample_judged`) and measure how far two targets
are apart (:func:`target_distance`, :func:`share_ratio`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from skillcore.profile import SkillProfile
from skillcore.tree import SkillTree

from skillselect.core import SelectConfig, SelectionError, select, share_ratio
from skillselect.pool import Pool


def skill_target(
    pool: Pool,
    tree: SkillTree,
    config: SelectConfig | None = None,
    *,
    profile: SkillProfile | None = None,
    **overrides: Any,
) -> np.ndarray:
    """The ``skill`` strategy's target share per universe leaf (the report's order): its normalised leaf
    weights under the config's weight settings, taken from a ``select`` call with K = 0."""
    selection = select(pool, tree, config, profile=profile, **{**overrides, "strategy": "skill", "k": 0})
    return selection.report["target_share"].to_numpy(dtype=np.float64)


def subsample_judged(pool: Pool, fraction: float, seed: int) -> Pool:
    """The pool with the verdicts of ``round(fraction * judged)`` (at least one) of its judged problems,
    drawn uniformly with ``seed``; every other problem is unjudged. Ids, chains and metadata are kept."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    judged = pool.judged_mask()
    if judged is None or pool.attempts is None or pool.correct is None or not judged.any():
        raise SelectionError("the pool has no judged problem to subsample")
    rows = np.flatnonzero(judged)
    size = max(1, round(fraction * rows.size))
    keep = np.zeros(pool.n, dtype=bool)
    keep[np.random.default_rng(seed).choice(rows, size=size, replace=False)] = True
    return Pool(
        unique_ids=pool.unique_ids,
        chains=pool.chains,
        attempts=np.where(keep, pool.attempts, 0),
        correct=np.where(keep, pool.correct, 0),
        metadata=pool.metadata,
        records=pool.records,
        n_unmatched_verdicts=pool.n_unmatched_verdicts,
    )


def target_distance(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far ``other`` lies from ``reference`` (two targets over the same leaves): ``l1`` = sum of the
    absolute share differences, ``tv`` = half of it (total variation, in [0, 1]), ``max_abs`` = the largest
    absolute share difference, ``n_leaves_dropped`` = leaves with a share in ``reference`` and none in
    ``other`` (in a subsample: leaves left with no judged problem, hence weight 0)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"targets over different leaves: shapes {a.shape} and {b.shape}")
    diff = np.abs(a - b)
    l1 = float(diff.sum())
    return {
        "l1": l1,
        "tv": l1 / 2,
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "n_leaves_dropped": int(np.count_nonzero((a > 0) & (b == 0))),
    }


def profile_fraction_rows(
    pool: Pool,
    tree: SkillTree,
    config: SelectConfig | None = None,
    *,
    fractions: Sequence[float] = (0.02, 0.05, 0.1, 0.2),
    seeds: Iterable[int] = range(5),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The full profile's target (``full``: judged problems, leaves with a share, share ratio) and one row
    per (fraction, seed): the subsample's size, its :func:`target_distance` to the full target and its
    share ratio. ``pool`` is the fully profiled pool (every problem it should draw from judged)."""
    full_target = skill_target(pool, tree, config)
    judged = pool.judged_mask()
    full = {
        "n_pool": pool.n,
        "n_judged": int(np.count_nonzero(judged)) if judged is not None else 0,
        "n_leaves": int(full_target.size),
        "n_leaves_with_share": int(np.count_nonzero(full_target > 0)),
        "share_ratio": share_ratio(full_target),
    }
    seed_list = list(seeds)
    rows: list[dict[str, Any]] = []
    for fraction in fractions:
        for seed in seed_list:
            sub = subsample_judged(pool, fraction, seed)
            target = skill_target(sub, tree, config)
            sub_judged = sub.judged_mask()
            rows.append(
                {
                    "fraction": float(fraction),
                    "seed": int(seed),
                    "n_judged": int(np.count_nonzero(sub_judged)) if sub_judged is not None else 0,
                    **target_distance(full_target, target),
                    "share_ratio": share_ratio(target),
                }
            )
    return full, rows
