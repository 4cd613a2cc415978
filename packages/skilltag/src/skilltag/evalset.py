"""A small labelled evaluation set for zero-shot tagging on a real-style tree, shipped with the package.

``compmath``: a SkillMix-like tree of competition mathematics (7 categories, 45 leaves, each with a
name and a one-line description) and 157 competition-style problems written for it (AMC, AIME and MATH
style; questions only, no solutions or answers), each labelled with its chain(s): 22 need two skills.
Every problem carries ``metadata["split"]``: ``dev`` (tune on these) or ``test`` (report these).
The problems are unlike the offline world's generated ones, so the set measures what the tagger does on
real trees without exemplars.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any

from skillcore import SkillTree, TaggedProblem

Chains = Sequence[Sequence[str]]
SPLITS = ("dev", "test")


def _data(name: str) -> Any:
    return resources.files("skilltag") / "data" / name


def eval_tree() -> SkillTree:
    """The evaluation set's skill tree."""
    with resources.as_file(_data("compmath_tree.json")) as path:
        return SkillTree.load(path)


def eval_problems(split: str | None = None) -> list[TaggedProblem]:
    """The labelled problems, all of them or one split (``dev`` or ``test``), in file order."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    rows = [
        TaggedProblem(**json.loads(line))
        for line in _data("compmath_problems.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return [r for r in rows if split is None or r.metadata.get("split") == split]


def category_accuracy(gold: Sequence[Chains], predicted: Sequence[Chains]) -> float:
    """Share of problems whose first (best) predicted chain starts in one of the gold top-level categories."""
    hits = 0
    for gold_chains, predicted_chains in zip(gold, predicted, strict=True):
        categories = {c[0] for c in gold_chains if c}
        hits += bool(predicted_chains) and bool(predicted_chains[0]) and predicted_chains[0][0] in categories
    return hits / max(len(gold), 1)


def majority_chains(gold: Sequence[Chains]) -> list[list[str]]:
    """The trivial baseline's answer: the most common gold leaf chain (ties: the first seen)."""
    counts = Counter(tuple(c) for chains in gold for c in chains)
    if not counts:
        return []
    return [list(counts.most_common(1)[0][0])]


def majority_category(gold: Sequence[Chains]) -> str:
    """The most common gold top-level category (ties: the first seen)."""
    counts = Counter(c[0] for chains in gold for c in {tuple(x) for x in chains} if c)
    return counts.most_common(1)[0][0] if counts else ""
