"""Per-skill accuracy profiles of a student, aggregated over a skill tree.

A problem counts once at every node any of its chains passes through (root excluded): its attempts and
correct answers are added there. Aggregation is vectorised: chains are resolved to node indices once,
expanded to (problem, node) pairs through a padded ancestor matrix, de-duplicated, and summed with
``np.bincount``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from skillcore.records import TaggedProblem, Verdict
from skillcore.tree import SkillTree, format_chain

UnknownPolicy = Literal["error", "skip"]


class ProfileError(ValueError):
    pass


@dataclass
class SkillProfile:
    tree: SkillTree
    problems: np.ndarray  # per node (preorder index): problems reaching the node
    attempts: np.ndarray  # per node: judged attempts
    correct: np.ndarray  # per node: correct attempts
    prior: tuple[float, float] = (1.0, 1.0)  # Beta(alpha, beta) prior on a node's accuracy
    n_unmatched_chains: int = 0

    # ------------------------------------------------------------------ building
    @classmethod
    def from_arrays(
        cls,
        tree: SkillTree,
        chains: Sequence[Sequence[Sequence[str]]],
        attempts: Sequence[int] | np.ndarray,
        correct: Sequence[int] | np.ndarray,
        *,
        unknown: UnknownPolicy = "error",
        prior: tuple[float, float] = (1.0, 1.0),
    ) -> SkillProfile:
        """``chains[i]`` are problem i's chains; ``attempts[i]``/``correct[i]`` its judged samples."""
        att = np.asarray(attempts, dtype=np.int64)
        cor = np.asarray(correct, dtype=np.int64)
        if not (len(chains) == att.size == cor.size):
            raise ProfileError(
                f"length mismatch: {len(chains)} chain lists, {att.size} attempts, {cor.size} correct"
            )
        if np.any(att < 0) or np.any(cor < 0) or np.any(cor > att):
            raise ProfileError("attempts and correct must satisfy 0 <= correct <= attempts")

        n_nodes = len(tree.nodes)
        max_depth = int(tree.depth.max())
        lookup: dict[tuple[str, ...], int] = {}
        prob_idx: list[int] = []
        node_idx: list[int] = []
        unmatched: list[str] = []
        for i, problem_chains in enumerate(chains):
            for chain in problem_chains:
                key = tuple(chain)[:max_depth]  # chains deeper than a truncated tree match their prefix
                idx = lookup.get(key)
                if idx is None:
                    node = tree.find(key)
                    if node is None or node.index == 0:
                        unmatched.append(format_chain(chain))
                        continue
                    idx = lookup[key] = node.index
                prob_idx.append(i)
                node_idx.append(idx)
        if unmatched and unknown == "error":
            shown = "; ".join(unmatched[:5])
            raise ProfileError(f"{len(unmatched)} chain(s) are not paths of the tree, e.g. {shown}")

        ancestors = _ancestor_matrix(tree)  # (n_nodes, max_depth), -1 padded
        p = np.asarray(prob_idx, dtype=np.int64)
        expanded = ancestors[np.asarray(node_idx, dtype=np.int64)]  # (m, max_depth)
        mask = expanded >= 0
        pairs = np.sort(np.repeat(p, max_depth)[mask.ravel()] * n_nodes + expanded[mask])
        if pairs.size:  # a node shared by two chains of one problem counts once
            pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
        nodes = pairs % n_nodes
        probs = pairs // n_nodes
        return cls(
            tree=tree,
            problems=np.bincount(nodes, minlength=n_nodes).astype(np.int64),
            attempts=np.bincount(nodes, weights=att[probs], minlength=n_nodes).astype(np.int64),
            correct=np.bincount(nodes, weights=cor[probs], minlength=n_nodes).astype(np.int64),
            prior=prior,
            n_unmatched_chains=len(unmatched),
        )

    @classmethod
    def from_records(
        cls,
        tree: SkillTree,
        tagged: Iterable[TaggedProblem],
        verdicts: Iterable[Verdict],
        *,
        unknown: UnknownPolicy = "error",
        prior: tuple[float, float] = (1.0, 1.0),
    ) -> SkillProfile:
        """Join verdicts to tagged problems by ``unique_id`` (several samples per problem allowed)."""
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for v in verdicts:
            c = counts[v.unique_id]
            c[0] += 1
            c[1] += int(v.correct)
        chains, att, cor = [], [], []
        for problem in tagged:
            if problem.unique_id not in counts:
                continue  # not judged: contributes nothing
            chains.append(problem.chains)
            a, c_ = counts[problem.unique_id]
            att.append(a)
            cor.append(c_)
        return cls.from_arrays(tree, chains, att, cor, unknown=unknown, prior=prior)

    # ------------------------------------------------------------------ statistics
    @property
    def accuracy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.attempts > 0, self.correct / np.maximum(self.attempts, 1), np.nan)

    @property
    def posterior_mean(self) -> np.ndarray:
        a, b = self.prior
        return (a + self.correct) / (a + b + self.attempts)

    def credible_interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        from scipy import stats  # 0.4 s to import: paid only by what asks for intervals

        a, b = self.prior
        tail = (1.0 - level) / 2
        post_a = a + self.correct
        post_b = b + self.attempts - self.correct
        return stats.beta.ppf(tail, post_a, post_b), stats.beta.ppf(1 - tail, post_a, post_b)

    def leaf_accuracy(self, *, use_posterior: bool = False) -> dict[str, float]:
        """Chain text ('a->b->c') -> accuracy (NaN when unjudged) for every leaf."""
        values = self.posterior_mean if use_posterior else self.accuracy
        return {self.tree.nodes[i].chain_text: float(values[i]) for i in self.tree.leaf_indices}

    def tier_counts(self) -> dict[str, int]:
        """How many judged leaves sit in each band of the paper's regime: mastered (60% or above), weak
        (15-45%), at the floor (10% or below); and how many leaves were judged at all."""
        acc = self.accuracy[self.tree.leaf_indices]
        acc = acc[~np.isnan(acc)]
        return {
            "leaves_judged": int(acc.size),
            "leaves_60_up": int(np.count_nonzero(acc >= 0.6)),
            "leaves_15_45": int(np.count_nonzero((acc >= 0.15) & (acc <= 0.45))),
            "leaves_10_down": int(np.count_nonzero(acc <= 0.1)),
        }

    def to_frame(self, *, leaves_only: bool = False) -> pd.DataFrame:
        low, high = self.credible_interval()
        idx = self.tree.leaf_indices if leaves_only else np.arange(1, len(self.tree.nodes))
        return pd.DataFrame(
            {
                "node_id": [self.tree.nodes[i].id for i in idx],
                "chain": [self.tree.nodes[i].chain_text for i in idx],
                "depth": self.tree.depth[idx],
                "is_leaf": [self.tree.nodes[i].is_leaf for i in idx],
                "problems": self.problems[idx],
                "attempts": self.attempts[idx],
                "correct": self.correct[idx],
                "accuracy": self.accuracy[idx],
                "posterior_mean": self.posterior_mean[idx],
                "ci90_low": low[idx],
                "ci90_high": high[idx],
            }
        )

    def weakest(
        self, k: int = 10, *, by: Literal["accuracy", "posterior_mean"] = "accuracy", min_attempts: int = 1
    ) -> pd.DataFrame:
        """The k leaves with the lowest score among those with at least ``min_attempts`` attempts."""
        frame = self.to_frame(leaves_only=True)
        frame = frame[frame["attempts"] >= min_attempts]
        return frame.sort_values([by, "attempts", "chain"], ascending=[True, False, True]).head(k)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.problems)
        return {
            "tree_hash": self.tree.content_hash(),
            "prior": list(self.prior),
            "n_unmatched_chains": self.n_unmatched_chains,
            "nodes": [
                {
                    "chain": list(self.tree.nodes[i].path),
                    "problems": int(self.problems[i]),
                    "attempts": int(self.attempts[i]),
                    "correct": int(self.correct[i]),
                }
                for i in nonzero
                if i > 0
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], tree: SkillTree) -> SkillProfile:
        if data.get("tree_hash") not in (None, tree.content_hash()):
            raise ProfileError("profile was built on a different skill tree (tree hash mismatch)")
        n = len(tree.nodes)
        problems, attempts, correct = (np.zeros(n, dtype=np.int64) for _ in range(3))
        for row in data["nodes"]:
            i = tree.node(row["chain"]).index
            problems[i], attempts[i], correct[i] = row["problems"], row["attempts"], row["correct"]
        prior = data.get("prior", [1.0, 1.0])
        return cls(
            tree,
            problems,
            attempts,
            correct,
            (float(prior[0]), float(prior[1])),
            int(data.get("n_unmatched_chains", 0)),
        )

    def save(self, path: str | Path) -> None:
        from skillcore.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path, tree: SkillTree) -> SkillProfile:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), tree)


def _ancestor_matrix(tree: SkillTree) -> np.ndarray:
    n, depth = len(tree.nodes), max(int(tree.depth.max()), 1)
    out = np.full((n, depth), -1, dtype=np.int64)
    for i in range(1, n):
        anc = tree.ancestors(i)
        out[i, : anc.size] = anc
    return out
