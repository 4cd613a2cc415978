"""Statistics of a tagged pool: coverage per leaf, chains per problem, and leaf-level quality against
known chains (the offline world's ground truth). Shared by the CLI, the benchmark and the pipeline."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from skillcore import SkillTree

Chains = Sequence[Sequence[str]]


def tag_stats(rows: list[dict[str, Any]], tree: SkillTree) -> dict[str, Any]:
    """Chains-per-problem statistics and the number of problems per leaf (coverage)."""
    per_problem = [len(r.get("chains") or []) for r in rows]
    coverage: Counter[str] = Counter()
    for r in rows:
        for chain in {tuple(c) for c in r.get("chains") or []}:
            coverage[" -> ".join(chain)] += 1
    leaves = [" -> ".join(leaf.path) for leaf in tree.leaves()]
    return {
        "n_problems": len(rows),
        "n_untagged": sum(1 for n in per_problem if n == 0),
        "chains_per_problem": {
            "mean": statistics.fmean(per_problem) if per_problem else 0.0,
            "min": min(per_problem, default=0),
            "max": max(per_problem, default=0),
            "histogram": {str(k): v for k, v in sorted(Counter(per_problem).items())},
        },
        "leaves_covered": sum(1 for leaf in leaves if coverage[leaf] > 0),
        "n_leaves": len(leaves),
        "coverage": {leaf: coverage[leaf] for leaf in leaves},
    }


def leaf_prf(gold: Sequence[Chains], predicted: Sequence[Chains]) -> dict[str, float]:
    """Micro precision, recall and F1 over (problem, leaf chain) pairs, and the share of exact chain sets."""
    tp = fp = fn = exact = 0
    for gold_chains, predicted_chains in zip(gold, predicted, strict=True):
        g = {tuple(c) for c in gold_chains}
        s = {tuple(c) for c in predicted_chains}
        tp += len(g & s)
        fp += len(s - g)
        fn += len(g - s)
        exact += g == s
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / max(p + r, 1e-12),
        "exact_set": exact / max(len(gold), 1),
    }
