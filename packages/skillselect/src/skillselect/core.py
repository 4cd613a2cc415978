"""Selection: configuration, the shared context every strategy sees, the strategy registry, ``select``.

Leaf universe: the leaves of the skill tree (cut at ``max_depth`` when given; deeper chains then count
at their prefix), limited to the subtrees named by ``skills`` when given. A problem's leaf set is the
distinct universe leaves its chains reach. Per-leaf accuracy comes from a :class:`skillcore.SkillProfile`
(built from the pool's verdicts, or given, e.g. loaded from the profiler's JSON).

Candidates (``SelectConfig.candidates``): profiling answers a sample of the pool, the profile estimates each
leaf's accuracy from it, and under ``"all"`` (the default) every strategy then draws from every candidate
problem, judged or not; under ``"judged"`` every strategy draws only from the judged problems. A
``correct_portion`` needs per-problem verdicts, so it always draws from judged problems only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator
from skillcore.profile import SkillProfile
from skillcore.tree import SkillTree, format_chain, parse_chain

from skillselect.pool import Pool
from skillselect.samplers import greedy_match, interleave, reachable_rows, sample_by_leaf
from skillselect.weights import leaf_weights, smoothed_accuracy


class SelectionError(ValueError):
    """The selection cannot be made as asked (K too large, missing verdicts, unknown skills...)."""


_NOTHING_JUDGED = (
    "candidates='judged' but no pool problem is judged (the pool has no verdicts): nothing to draw from; "
    "give verdicts for the pool or use candidates='all'"
)


# How chains are resolved to tree nodes and aggregated into the leaf matrix and the profile:
# "vectorised" (default) looks up each distinct chain of the pool once (``Pool.chain_codes``, built with the
# pool), gathers the nodes of all occurrences with NumPy and aggregates with sparse products; "loop" is the
# original per-chain Python loop followed by ``SkillProfile.from_arrays`` (a second per-chain loop). Both
# give the same context, hence the same selection; "loop" is kept as the reference for the equivalence
# tests (tests/test_prepare.py) and the before/after benchmark (benchmarks/bench_select.py).
PrepareMethod = Literal["vectorised", "loop"]


class SelectConfig(BaseModel):
    """Everything that determines a selection; with the same pool, tree and verdicts, the same output."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = "skill"
    k: int = Field(default=1000, ge=0)
    seed: int = 0
    temperature: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    w_max: float = Field(default=1000.0, ge=1.0, allow_inf_nan=False)
    use_posterior: bool = False  # Beta-posterior mean of the profile instead of raw accuracy
    prior: tuple[float, float] | None = None  # Beta prior for use_posterior (default: the profile's)
    smoothing: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)  # add-s (Laplace) accuracy
    correct_portion: float | None = Field(default=None, ge=0.0, le=1.0)
    skills: list[str] | None = None  # restrict to the subtrees at these paths ('a->b')
    max_depth: int | None = Field(default=None, ge=1)
    exclude_ids: list[str] = Field(default_factory=list)
    difficulty_field: str | None = None
    difficulty_band: tuple[float, float] = (0.25, 0.625)
    allow_partial: bool = False  # return what the pool can give instead of raising when K is too large
    unknown_chains: Literal["error", "skip"] = "error"
    # what every strategy draws from: "all" candidate problems (unjudged ones included; the skill strategies
    # still weight leaves by the accuracy measured on the judged ones) or only the "judged" ones
    candidates: Literal["all", "judged"] = "all"

    @model_validator(mode="after")
    def _check(self) -> SelectConfig:
        if self.use_posterior and self.smoothing > 0:
            raise ValueError("use_posterior and smoothing are alternatives; set only one")
        low, high = self.difficulty_band
        if not low <= high:
            raise ValueError(
                f"difficulty_band must be (low, high) with low <= high, got {self.difficulty_band}"
            )
        if self.prior is not None and min(self.prior) <= 0:
            raise ValueError("prior parameters must be positive")
        return self


@dataclass
class SelectionContext:
    """What a strategy sees: the pool, the leaf universe, the problem x leaf matrix and leaf statistics."""

    pool: Pool
    tree: SkillTree  # the tree actually used (cut at max_depth)
    config: SelectConfig
    leaf_nodes: np.ndarray  # node indices (in ``tree``) of the universe leaves, preorder
    leaf_chains: list[str]
    matrix: sp.csr_matrix  # pool problems x universe leaves, 1 where a chain reaches the leaf
    candidate: np.ndarray  # bool per problem: not excluded (and in the named skills, when given)
    profile: SkillProfile | None
    leaf_problems: np.ndarray  # judged problems per leaf (from the profile)
    leaf_attempts: np.ndarray
    leaf_correct: np.ndarray
    accuracy: np.ndarray  # raw accuracy per leaf, NaN when unjudged
    accuracy_used: np.ndarray  # raw, posterior mean or smoothed, per the config
    weight: np.ndarray  # leaf weight (0 for unjudged leaves)
    stats: dict[str, int] = field(default_factory=dict)
    drawn_from: np.ndarray | None = None  # set by ``eligible``: the problems the strategy draws from
    n_unjudged_left_out: int = 0  # set by ``eligible``: unjudged problems left out for want of verdicts

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_chains)

    @property
    def has_leaf(self) -> np.ndarray:
        return np.diff(self.matrix.indptr) > 0

    def require_accuracy(self, strategy: str) -> None:
        if self.profile is None:
            raise SelectionError(
                f"strategy {strategy!r} needs per-leaf accuracy: give verdicts for the pool or a profile"
            )

    def correct_mask(self) -> np.ndarray:
        mask = self.pool.correct_mask()
        if mask is None:
            raise SelectionError("correct_portion needs per-problem verdicts (student-correct vs wrong)")
        return mask

    def eligible(
        self, *, need_leaf: bool, need_judged: bool = False, within: np.ndarray | None = None
    ) -> np.ndarray:
        """The problems a strategy draws from: the candidates (not excluded; in the named skills), with a
        leaf when ``need_leaf``, inside ``within`` when given, and judged when ``config.candidates`` is
        ``"judged"``. A strategy that needs per-problem verdicts (``need_judged``, or any strategy with a
        ``correct_portion``: an unjudged problem is neither student-correct nor wrong) draws from judged
        problems only, whatever ``candidates`` says; how many unjudged problems that leaves out is kept in
        ``n_unjudged_left_out``. The mask is kept in ``drawn_from`` (the summary's ``n_candidates``)."""
        mask = self.candidate.copy()
        if need_leaf:
            mask &= self.has_leaf
        if within is not None:
            mask &= within
        judged = self.pool.judged_mask()
        if self.config.candidates == "judged":
            if judged is None:
                raise SelectionError(_NOTHING_JUDGED)
            mask &= judged
        if self.config.correct_portion is not None:
            self.correct_mask()  # raises without verdicts
        if need_judged or self.config.correct_portion is not None:
            if judged is None:
                raise SelectionError("this strategy needs per-problem verdicts: give verdicts for the pool")
            self.n_unjudged_left_out = int(np.count_nonzero(mask & ~judged))
            mask &= judged
        self.drawn_from = mask.copy()  # a copy: a strategy may narrow its own mask further
        return mask

    def cap(self, k: int, available: int, what: str) -> int:
        if k <= available:
            return k
        if self.config.allow_partial:
            return available
        raise SelectionError(
            f"K={k} exceeds what the pool can give: {available} {what} "
            "(lower K, widen the filters, or pass allow_partial=True for a partial selection)"
        )

    def leaf_share(self, rows: np.ndarray) -> np.ndarray:
        counts = np.asarray(self.matrix[rows].sum(axis=0)).ravel().astype(np.float64)
        total = counts.sum()
        return counts / total if total > 0 else counts


@dataclass
class StrategyResult:
    rows: np.ndarray  # pool indices, in selection order
    target: np.ndarray  # the strategy's target share per universe leaf
    available: int  # how many problems the strategy could have chosen from
    via_leaf: np.ndarray | None = None  # for leaf samplers: the leaf each row was drawn through
    draws_per_leaf: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


StrategyFn = Callable[[SelectionContext, int, np.random.Generator], StrategyResult]


@dataclass(frozen=True)
class StrategySpec:
    name: str
    fn: StrategyFn
    needs_accuracy: bool
    description: str


STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(
    name: str, *, needs_accuracy: bool = False, description: str = ""
) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(ctx, k, rng) -> StrategyResult`` under ``name`` (usable from ``select`` and the CLI)."""

    def wrap(fn: StrategyFn) -> StrategyFn:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = StrategySpec(name, fn, needs_accuracy, description or (fn.__doc__ or "").strip())
        return fn

    return wrap


def available_strategies() -> list[str]:
    return list(STRATEGIES)


# ------------------------------------------------------------------------------ strategies
def _normalised(values: np.ndarray) -> np.ndarray:
    total = float(values.sum())
    return values / total if total > 0 else np.zeros_like(values, dtype=np.float64)


def _side_quota(k: int, portion: float) -> tuple[int, int]:
    k_correct = math.floor(portion * k + 0.5)
    return k_correct, k - k_correct


def _sample_leaves(
    ctx: SelectionContext, eligible: np.ndarray, weight: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[str, Any]]:
    """The leaf sampler over ``eligible`` problems, optionally split by the correct portion."""
    portion = ctx.config.correct_portion
    sides: list[tuple[str, np.ndarray, int]]
    if portion is None:
        sides = [("problems reachable through positive-weight leaves", eligible, k)]
    else:
        correct = ctx.correct_mask()
        k_c, k_w = _side_quota(k, portion)
        sides = [
            ("student-correct problems (for the correct portion)", eligible & correct, k_c),
            ("student-wrong problems (for the correct portion)", eligible & ~correct, k_w),
        ]
    picked: list[tuple[np.ndarray, np.ndarray]] = []
    draws = np.zeros(ctx.n_leaves, dtype=np.int64)
    n_draws = available_total = 0
    for what, mask, quota in sides:
        rows = np.flatnonzero(mask)
        sub = ctx.matrix[rows]
        available = int(reachable_rows(sub, weight).sum())
        available_total += available
        quota = ctx.cap(quota, available, what)
        result = sample_by_leaf(sub, weight, quota, rng)
        picked.append((rows[result.rows], result.via_leaf))
        draws += result.draws_per_leaf
        n_draws += result.n_draws
    if portion is None:
        rows_out, via = picked[0]
    else:
        (rc, vc), (rw, vw) = picked
        order = interleave(np.arange(rc.size), rc.size + np.arange(rw.size), portion)
        rows_out, via = np.concatenate([rc, rw])[order], np.concatenate([vc, vw])[order]
    info = {"n_draws": n_draws, "n_rejected_draws": n_draws - int(rows_out.size)}
    return rows_out, via, draws, available_total, info


@register_strategy("skill", needs_accuracy=True, description="draw a leaf by weight, then a problem in it")
def skill_strategy(ctx: SelectionContext, k: int, rng: np.random.Generator) -> StrategyResult:
    """Default sampler: until K distinct, draw a leaf with probability proportional to its weight, then
    a problem uniformly among that leaf's candidate problems (right and wrong alike; unjudged ones too
    under ``candidates="all"``)."""
    ctx.require_accuracy("skill")
    eligible = ctx.eligible(need_leaf=True)
    rows, via, draws, available, info = _sample_leaves(ctx, eligible, ctx.weight, k, rng)
    return StrategyResult(rows, _normalised(ctx.weight), available, via, draws, info)


@register_strategy("skill-match", needs_accuracy=True, description="greedy L2 matching of the leaf histogram")
def match_strategy(ctx: SelectionContext, k: int, rng: np.random.Generator) -> StrategyResult:
    """Matching sampler: add problems one at a time, each time the one that brings the selection's
    normalised leaf histogram closest (L2) to the normalised weights. Deterministic (no randomness)."""
    ctx.require_accuracy("skill-match")
    eligible = ctx.eligible(need_leaf=True)
    eligible &= reachable_rows(ctx.matrix, ctx.weight)
    rows = np.flatnonzero(eligible)
    target = _normalised(ctx.weight)
    portion = ctx.config.correct_portion
    correct = None
    if portion is None:
        k = ctx.cap(k, rows.size, "problems reachable through positive-weight leaves")
    else:
        correct = ctx.correct_mask()[rows]
        k_c, k_w = _side_quota(k, portion)
        n_c = int(correct.sum())
        k_c = ctx.cap(k_c, n_c, "student-correct problems (for the correct portion)")
        k_w = ctx.cap(k_w, rows.size - n_c, "student-wrong problems (for the correct portion)")
        k = k_c + k_w
    picked = greedy_match(ctx.matrix[rows], target, k, correct=correct, portion=portion)
    return StrategyResult(rows[picked], target, int(rows.size))


def _uniform(
    ctx: SelectionContext, eligible: np.ndarray, k: int, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, int]:
    portion = ctx.config.correct_portion
    if portion is None:
        rows = np.flatnonzero(eligible)
        k = ctx.cap(k, rows.size, what)
        return rng.permutation(rows)[:k], int(rows.size)
    correct = ctx.correct_mask()
    k_c, k_w = _side_quota(k, portion)
    rc, rw = np.flatnonzero(eligible & correct), np.flatnonzero(eligible & ~correct)
    k_c = ctx.cap(k_c, rc.size, f"student-correct {what}")
    k_w = ctx.cap(k_w, rw.size, f"student-wrong {what}")
    pc, pw = rng.permutation(rc)[:k_c], rng.permutation(rw)[:k_w]
    return interleave(pc, pw, portion), int(rc.size + rw.size)


@register_strategy("random", description="uniform over the candidate problems")
def random_strategy(ctx: SelectionContext, k: int, rng: np.random.Generator) -> StrategyResult:
    """K problems uniformly without replacement (the paper's random baseline)."""
    eligible = ctx.eligible(need_leaf=False)
    rows, available = _uniform(ctx, eligible, k, rng, "candidate problems")
    return StrategyResult(rows, ctx.leaf_share(np.flatnonzero(eligible)), available)


@register_strategy("difficulty", description="uniform within a band of a numeric metadata field")
def difficulty_strategy(ctx: SelectionContext, k: int, rng: np.random.Generator) -> StrategyResult:
    """K problems uniformly among those whose ``difficulty_field`` lies in ``difficulty_band`` (inclusive),
    e.g. OpenMathReasoning's ``pass_rate_72b_tir`` in [0.25, 0.625]. Missing or non-numeric values
    (such as 'n/a') are out of the band."""
    name = ctx.config.difficulty_field
    if not name:
        raise SelectionError("strategy 'difficulty' needs difficulty_field (a numeric metadata field)")
    if ctx.pool.metadata is None:
        raise SelectionError("strategy 'difficulty' needs pool metadata")
    values = np.array([_as_float(m.get(name)) for m in ctx.pool.metadata], dtype=np.float64)
    low, high = ctx.config.difficulty_band
    in_band = (values >= low) & (values <= high)  # NaN compares False
    eligible = ctx.eligible(need_leaf=False, within=in_band)
    rows, available = _uniform(ctx, eligible, k, rng, f"candidate problems with {name} in [{low}, {high}]")
    info = {"n_missing_difficulty": int(np.isnan(values).sum()), "n_in_band": int(in_band.sum())}
    return StrategyResult(rows, ctx.leaf_share(np.flatnonzero(eligible)), available, info=info)


@register_strategy("balanced", description="uniform over leaves, then a problem in the leaf")
def balanced_strategy(ctx: SelectionContext, k: int, rng: np.random.Generator) -> StrategyResult:
    """The leaf sampler with equal weight on every leaf that has a candidate problem."""
    eligible = ctx.eligible(need_leaf=True)
    present = np.asarray(ctx.matrix[np.flatnonzero(eligible)].sum(axis=0)).ravel() > 0
    weight = present.astype(np.float64)
    rows, via, draws, available, info = _sample_leaves(ctx, eligible, weight, k, rng)
    return StrategyResult(rows, _normalised(weight), available, via, draws, info)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


# ------------------------------------------------------------------------------ context
def build_context(
    pool: Pool,
    tree: SkillTree,
    config: SelectConfig,
    profile: SkillProfile | None = None,
    *,
    prepare: PrepareMethod = "vectorised",
) -> SelectionContext:
    """Resolve the leaf universe, map chains to leaves, and get per-leaf accuracy and weights.

    ``prepare`` picks the implementation of the chain resolution and aggregation (see
    :data:`PrepareMethod`); the result is the same either way.
    """
    if prepare not in ("vectorised", "loop"):
        raise ValueError(f"prepare must be 'vectorised' or 'loop', got {prepare!r}")
    stats: dict[str, int] = {}
    used_tree = tree.truncate(config.max_depth) if config.max_depth is not None else tree
    prefixes = _skill_prefixes(tree, config)
    leaf_nodes = np.array(
        [
            i
            for i in used_tree.leaf_indices.tolist()
            if prefixes is None or any(used_tree.nodes[i].path[: len(p)] == p for p in prefixes)
        ],
        dtype=np.int64,
    )
    column = np.full(len(used_tree.nodes), -1, dtype=np.int64)
    column[leaf_nodes] = np.arange(leaf_nodes.size)
    resolved = _resolve_chains(pool, used_tree) if prepare == "vectorised" else None
    if resolved is not None:
        matrix, unknown, non_leaf = resolved.leaf_matrix(pool.n, used_tree, column)
    else:
        matrix, unknown, non_leaf = _leaf_matrix(pool, used_tree, column)
    stats["n_unknown_chains"], stats["n_non_leaf_chains"] = len(unknown), non_leaf
    if unknown and config.unknown_chains == "error":
        raise SelectionError(
            f"{len(unknown)} chain(s) are not paths of the skill tree, e.g. {'; '.join(unknown[:3])} "
            "(pass unknown_chains='skip' to ignore them)"
        )

    candidate = np.ones(pool.n, dtype=bool)
    excluded = [pool.index_of(uid) for uid in config.exclude_ids]
    hit = np.array([i for i in excluded if i is not None], dtype=np.int64)
    candidate[hit] = False
    stats["n_excluded"] = int(np.unique(hit).size)
    stats["n_exclude_ids_not_in_pool"] = sum(i is None for i in excluded)
    if prefixes is not None:
        candidate &= np.diff(matrix.indptr) > 0
    if config.candidates == "judged":
        judged_rows = pool.judged_mask()
        if judged_rows is None or not judged_rows.any():
            raise SelectionError(_NOTHING_JUDGED)

    if profile is not None:
        if profile.tree is not tree and profile.tree.content_hash() != tree.content_hash():
            raise SelectionError("the profile was built on a different skill tree (tree hash mismatch)")
        if config.prior is not None:
            profile = dataclasses.replace(profile, prior=config.prior)
    elif pool.attempts is not None and pool.correct is not None:
        judged_mask = pool.attempts > 0
        judged_mask[hit] = False
        if resolved is not None:
            profile = resolved.profile(
                used_tree, judged_mask, pool.attempts, pool.correct, prior=config.prior or (1.0, 1.0)
            )
        else:
            judged = np.flatnonzero(judged_mask)
            profile = SkillProfile.from_arrays(
                used_tree,
                [pool.chains[i] for i in judged.tolist()],
                pool.attempts[judged],
                pool.correct[judged],
                unknown="skip",
                prior=config.prior or (1.0, 1.0),
            )

    n_leaves = leaf_nodes.size
    problems, attempts, correct = (np.zeros(n_leaves, dtype=np.int64) for _ in range(3))
    accuracy = np.full(n_leaves, np.nan)
    posterior = np.full(n_leaves, np.nan)
    if profile is not None:
        if profile.tree is used_tree and resolved is not None:
            idx = leaf_nodes  # the profile was built here, on this tree: a leaf is its own node
        else:
            node_of = [profile.tree.find(used_tree.nodes[i].path) for i in leaf_nodes.tolist()]
            idx = np.array([-1 if nd is None else nd.index for nd in node_of], dtype=np.int64)
        found = idx >= 0
        problems[found] = profile.problems[idx[found]]
        attempts[found] = profile.attempts[idx[found]]
        correct[found] = profile.correct[idx[found]]
        judged_leaf = attempts > 0
        accuracy[judged_leaf] = profile.accuracy[idx[judged_leaf]]
        posterior[judged_leaf] = profile.posterior_mean[idx[judged_leaf]]
    if config.use_posterior:
        used = posterior
    elif config.smoothing > 0:
        used = smoothed_accuracy(correct, attempts, config.smoothing)
    else:
        used = accuracy
    weight = leaf_weights(used, temperature=config.temperature, w_max=config.w_max)
    return SelectionContext(
        pool=pool,
        tree=used_tree,
        config=config,
        leaf_nodes=leaf_nodes,
        leaf_chains=[used_tree.nodes[i].chain_text for i in leaf_nodes.tolist()],
        matrix=matrix,
        candidate=candidate,
        profile=profile,
        leaf_problems=problems,
        leaf_attempts=attempts,
        leaf_correct=correct,
        accuracy=accuracy,
        accuracy_used=used,
        weight=weight,
        stats=stats,
    )


def _skill_prefixes(tree: SkillTree, config: SelectConfig) -> list[tuple[str, ...]] | None:
    if not config.skills:
        return None
    prefixes, problems = [], []
    for skill in config.skills:
        path = parse_chain(skill)
        node = tree.find(path)
        if node is None or node.index == 0:
            problems.append(f"{format_chain(path)!r} is not a node of the skill tree")
        elif config.max_depth is not None and len(path) > config.max_depth:
            problems.append(f"{format_chain(path)!r} lies below max_depth={config.max_depth}")
        else:
            prefixes.append(path)
    if problems:
        raise SelectionError("bad skills filter: " + "; ".join(problems))
    return prefixes


@dataclass
class _ResolvedChains:
    """Every chain of a pool resolved once to a node of the (possibly cut) tree, in pool order."""

    problem: np.ndarray  # per resolved chain: its pool row (non-decreasing)
    node: np.ndarray  # per resolved chain: the node index it names (> 0), at its prefix in a cut tree
    unknown: list[str]  # chains that name no node below the root, formatted, in pool order
    unknown_problem: np.ndarray  # the pool row of each unknown chain

    def leaf_matrix(
        self, n_rows: int, tree: SkillTree, column: np.ndarray
    ) -> tuple[sp.csr_matrix, list[str], int]:
        """What :func:`_leaf_matrix` returns, from the resolved chains."""
        is_leaf = np.zeros(len(tree.nodes), dtype=bool)
        is_leaf[tree.leaf_indices] = True
        leaf = is_leaf[self.node]
        cols = column[self.node]
        keep = leaf & (cols >= 0)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.problem[keep], minlength=n_rows), out=indptr[1:])
        matrix = sp.csr_matrix(
            (np.ones(indptr[-1], dtype=np.int64), cols[keep], indptr),
            shape=(n_rows, int((column >= 0).sum())),
        )
        matrix.sum_duplicates()  # rows are in order (problem is non-decreasing); this sorts within rows
        matrix.data[:] = 1
        matrix.sort_indices()
        return matrix, self.unknown, int(leaf.size - np.count_nonzero(leaf))

    def profile(
        self,
        tree: SkillTree,
        judged: np.ndarray,
        attempts: np.ndarray,
        correct: np.ndarray,
        *,
        prior: tuple[float, float],
    ) -> SkillProfile:
        """``SkillProfile.from_arrays(tree, chains of the judged rows, ..., unknown="skip")``, computed as
        a sparse product: (judged rows x named nodes) @ (node x its ancestors, root excluded), so a node
        reached by several chains of one problem counts once."""
        n_rows, n_nodes = judged.size, len(tree.nodes)
        use = judged[self.problem]
        rows = self.problem[use]  # non-decreasing, so the CSR structure is direct
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        named = sp.csr_matrix((np.ones(rows.size), self.node[use], indptr), shape=(n_rows, n_nodes))
        ancestry = [tree.ancestors(i) for i in range(n_nodes)]
        anc_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum([a.size for a in ancestry], out=anc_ptr[1:])
        anc = sp.csr_matrix(
            (np.ones(int(anc_ptr[-1])), np.concatenate(ancestry), anc_ptr), shape=(n_nodes, n_nodes)
        )
        reach = named @ anc  # one stored entry per (problem, node reached), valued by how many chains
        reach.data[:] = 1.0
        per_row = np.stack([judged, attempts, correct], axis=1).astype(np.float64)
        sums = np.rint(reach.T @ per_row).astype(np.int64)  # exact: integer sums far below 2**53
        problems, attempts_sum, correct_sum = np.ascontiguousarray(sums.T)
        return SkillProfile(
            tree=tree,
            problems=problems,
            attempts=attempts_sum,
            correct=correct_sum,
            prior=prior,
            n_unmatched_chains=int(np.count_nonzero(judged[self.unknown_problem])),
        )


def _resolve_chains(pool: Pool, tree: SkillTree) -> _ResolvedChains:
    """Map every chain occurrence to its node through the pool's chain codes: one dictionary look-up per
    distinct chain (at its prefix when deeper than a cut tree), then a vectorised gather."""
    codes = pool.chain_codes
    depth = int(tree.depth.max())
    lookup = {nd.path: nd.index for nd in tree.nodes[1:]}  # the root is no chain's node
    node_of = np.fromiter(
        (lookup.get(key[:depth], -1) for key in codes.distinct), dtype=np.int64, count=len(codes.distinct)
    )
    node = node_of[codes.code]
    good = node >= 0
    bad_codes = codes.code[~good]
    return _ResolvedChains(
        problem=codes.problem[good],
        node=node[good],
        unknown=[format_chain(codes.distinct[c]) for c in bad_codes.tolist()],
        unknown_problem=codes.problem[~good],
    )


def _leaf_matrix(pool: Pool, tree: SkillTree, column: np.ndarray) -> tuple[sp.csr_matrix, list[str], int]:
    """The reference (``prepare="loop"``): one Python iteration per chain."""
    depth = int(tree.depth.max())
    lookup: dict[tuple[str, ...], int] = {}  # chain -> node index; -1 unknown
    rows: list[int] = []
    cols: list[int] = []
    unknown: list[str] = []
    non_leaf = 0
    for i, chains in enumerate(pool.chains):
        for chain in chains:
            key = tuple(chain[:depth])  # deeper chains count at their prefix in a cut tree
            node = lookup.get(key)
            if node is None:
                found = tree.find(key)
                node = lookup[key] = found.index if found is not None and found.index > 0 else -1
            if node < 0:
                unknown.append(format_chain(chain))
            elif not tree.nodes[node].is_leaf:
                non_leaf += 1
            elif column[node] >= 0:
                rows.append(i)
                cols.append(int(column[node]))
    data = np.ones(len(rows), dtype=np.int64)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(pool.n, int((column >= 0).sum())))
    matrix.sum_duplicates()
    matrix.data[:] = 1  # a leaf counts once per problem, however many of its chains reach it
    matrix.sort_indices()
    return matrix, unknown, non_leaf


# ------------------------------------------------------------------------------ selection
@dataclass
class Selection:
    """The selected problems (deterministic order), the per-leaf report and a summary."""

    unique_ids: list[str]
    rows: np.ndarray  # indices into ``pool``
    report: pd.DataFrame
    summary: dict[str, Any]
    config: SelectConfig
    pool: Pool = field(repr=False)

    def __len__(self) -> int:
        return len(self.unique_ids)

    def records(self) -> list[dict[str, Any]]:
        """The selected problems as rows (full TaggedProblem fields when the pool has records)."""
        return [self.pool.row(int(i)) for i in self.rows]

    def figure(self, top: int = 40) -> Any:
        from skillselect.report import selection_figure

        return selection_figure(self, top=top)

    def save(self, out: str | Path | None = None, report_dir: str | Path | None = None) -> None:
        from skillselect.report import save_selection

        save_selection(self, out=out, report_dir=report_dir)


def select(
    pool: Pool,
    tree: SkillTree,
    config: SelectConfig | None = None,
    *,
    profile: SkillProfile | None = None,
    prepare: PrepareMethod = "vectorised",
    **overrides: Any,
) -> Selection:
    """Choose ``config.k`` problems from ``pool`` with ``config.strategy``; keyword overrides update the config.

    ``prepare="loop"`` runs the reference preparation (same selection, slower; for tests and benchmarks).
    Raises :class:`SelectionError` when the pool cannot give K problems (unless ``allow_partial``).
    """
    base = config.model_dump() if config is not None else {}
    config = SelectConfig.model_validate({**base, **overrides})
    spec = STRATEGIES.get(config.strategy)
    if spec is None:
        raise SelectionError(f"unknown strategy {config.strategy!r}; available: {', '.join(STRATEGIES)}")
    start = time.perf_counter()
    ctx = build_context(pool, tree, config, profile, prepare=prepare)
    prepared = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    result = spec.fn(ctx, config.k, rng)
    done = time.perf_counter()
    return _assemble(ctx, spec, result, {"prepare_s": prepared - start, "strategy_s": done - prepared})


def _assemble(
    ctx: SelectionContext, spec: StrategySpec, result: StrategyResult, timings: dict[str, float]
) -> Selection:
    pool, config = ctx.pool, ctx.config
    rows = np.asarray(result.rows, dtype=np.int64)
    matrix = ctx.matrix
    selected_counts = np.asarray(matrix[rows].sum(axis=0)).ravel().astype(np.int64)
    pool_counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
    selected_share = _normalised(selected_counts.astype(np.float64))
    pool_share = _normalised(pool_counts.astype(np.float64))
    correct_mask = pool.correct_mask()
    judged_mask = pool.judged_mask()
    if correct_mask is not None and judged_mask is not None:
        sel_correct = rows[correct_mask[rows]]
        sel_wrong = rows[judged_mask[rows] & ~correct_mask[rows]]
        leaf_correct = np.asarray(matrix[sel_correct].sum(axis=0)).ravel().astype(np.int64)
        leaf_wrong = np.asarray(matrix[sel_wrong].sum(axis=0)).ravel().astype(np.int64)
        n_correct, n_wrong = int(sel_correct.size), int(sel_wrong.size)
    else:
        leaf_correct = leaf_wrong = np.zeros(ctx.n_leaves, dtype=np.int64)
        n_correct = n_wrong = 0
    drawn = (
        np.bincount(result.via_leaf, minlength=ctx.n_leaves).astype(np.int64)
        if result.via_leaf is not None
        else np.zeros(ctx.n_leaves, dtype=np.int64)
    )
    target = np.asarray(result.target, dtype=np.float64)
    nodes = [ctx.tree.nodes[i] for i in ctx.leaf_nodes.tolist()]
    report = pd.DataFrame(
        {
            "chain": ctx.leaf_chains,
            "node_id": [nd.id for nd in nodes],
            "depth": [nd.depth for nd in nodes],
            "pool_problems": pool_counts,
            "judged_problems": ctx.leaf_problems,
            "attempts": ctx.leaf_attempts,
            "correct": ctx.leaf_correct,
            "accuracy": ctx.accuracy,
            "accuracy_used": ctx.accuracy_used,
            "weight": ctx.weight,
            "target_share": target,
            "pool_share": pool_share,
            "selected": selected_counts,
            "selected_share": selected_share,
            "selected_correct": leaf_correct,
            "selected_wrong": leaf_wrong,
            "drawn": drawn,
        }
    )
    k_requested = config.k
    drawn_from = ctx.drawn_from
    n_candidates = int(result.available) if drawn_from is None else int(np.count_nonzero(drawn_from))
    n_judged_candidates = (
        0 if drawn_from is None or judged_mask is None else int(np.count_nonzero(drawn_from & judged_mask))
    )
    summary: dict[str, Any] = {
        "strategy": spec.name,
        "k_requested": k_requested,
        "n_selected": int(rows.size),
        "partial": bool(rows.size < k_requested),
        "seed": config.seed,
        "n_pool": pool.n,
        "candidates": config.candidates,
        "n_candidates": n_candidates,
        "n_judged_candidates": n_judged_candidates,
        "k_over_candidates": k_requested / n_candidates if n_candidates else None,
        "n_unjudged_left_out": ctx.n_unjudged_left_out,
        "n_available": int(result.available),
        "n_leaves": ctx.n_leaves,
        "n_leaves_weighted": int((ctx.weight > 0).sum()),
        "n_leaves_unjudged": int(np.count_nonzero(ctx.leaf_attempts == 0)),
        "n_leaves_selected": int((selected_counts > 0).sum()),
        "n_selected_correct": n_correct,
        "n_selected_wrong": n_wrong,
        "n_selected_unjudged": int(rows.size) - n_correct - n_wrong,
        "max_target_share": float(target.max()) if target.size else 0.0,
        "target_share_ratio": share_ratio(target),  # largest / smallest positive leaf share
        "l2_to_target": float(np.linalg.norm(selected_share - target)),
        "tv_to_target": float(0.5 * np.abs(selected_share - target).sum()),
        "pool_l2_to_target": float(np.linalg.norm(pool_share - target)),
        "n_unmatched_verdicts": pool.n_unmatched_verdicts,
        **ctx.stats,
        **result.info,
        **{k: round(v, 4) for k, v in timings.items()},
    }
    return Selection(
        unique_ids=[pool.unique_ids[i] for i in rows.tolist()],
        rows=rows,
        report=report,
        summary=summary,
        config=config,
        pool=pool,
    )


def share_ratio(target: np.ndarray) -> float:
    """Largest over smallest positive share (NaN when no share is positive): how far the target leans."""
    positive = np.asarray(target, dtype=np.float64)
    positive = positive[positive > 0]
    return float(positive.max() / positive.min()) if positive.size else math.nan
