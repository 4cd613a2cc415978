"""The sampling kernels: weighted leaf draws, greedy histogram matching (fast and naive), interleaving.

All kernels take a binary problem x leaf matrix (scipy CSR, rows = candidate problems) and return row
indices in selection order. They are deterministic for a given ``numpy.random.Generator`` state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.sparse as sp


@dataclass
class LeafDraws:
    """Result of :func:`sample_by_leaf`."""

    rows: np.ndarray  # selected rows, in acceptance order
    via_leaf: np.ndarray  # the leaf each selected row was drawn through
    draws_per_leaf: np.ndarray  # all leaf draws made (accepted and rejected as duplicates)
    n_draws: int


def reachable_rows(matrix: sp.csr_matrix, leaf_weight: np.ndarray) -> np.ndarray:
    """Boolean mask of rows with at least one leaf of positive weight."""
    positive = (leaf_weight > 0).astype(np.int64)
    return np.asarray(matrix @ positive).ravel() > 0


def sample_by_leaf(
    matrix: sp.csr_matrix, leaf_weight: np.ndarray, k: int, rng: np.random.Generator
) -> LeafDraws:
    """Repeat until ``k`` distinct rows: draw a leaf with probability proportional to its weight, then a
    row uniformly among the rows that have that leaf; a row already selected is a rejected draw.

    Draws are made in vectorised batches. A leaf whose rows are all selected is dropped from the
    distribution between batches: every draw through it would be rejected, so the sequence of accepted
    rows has exactly the distribution of the one-draw-at-a-time process, without its unbounded loop.
    ``k`` must not exceed the number of reachable rows (see :func:`reachable_rows`).
    """
    n_rows, n_leaves = matrix.shape
    weight = np.asarray(leaf_weight, dtype=np.float64)
    if weight.shape != (n_leaves,) or np.any(weight < 0) or not np.all(np.isfinite(weight)):
        raise ValueError("leaf weights must be finite, non-negative, one per leaf")
    available = int(reachable_rows(matrix, weight).sum())
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} rows reachable through positive-weight leaves")
    by_leaf = matrix.T.tocsr()
    by_leaf.sort_indices()
    sizes = np.diff(by_leaf.indptr)
    remaining = sizes.copy()
    selected = np.zeros(n_rows, dtype=bool)
    rows: list[int] = []
    via: list[int] = []
    draws = np.zeros(n_leaves, dtype=np.int64)
    n_draws = 0
    indptr, indices = matrix.indptr, matrix.indices
    while len(rows) < k:
        p = np.where(remaining > 0, weight, 0.0)
        p = p / p.sum()
        batch = max(256, 2 * (k - len(rows)))
        leaves = rng.choice(n_leaves, size=batch, p=p)
        offsets = (rng.random(batch) * sizes[leaves]).astype(np.int64)
        picks = by_leaf.indices[by_leaf.indptr[leaves] + offsets]
        used = batch
        for j in range(batch):
            r = int(picks[j])
            if selected[r]:
                continue
            selected[r] = True
            rows.append(r)
            via.append(int(leaves[j]))
            remaining[indices[indptr[r] : indptr[r + 1]]] -= 1
            if len(rows) == k:
                used = j + 1
                break
        draws += np.bincount(leaves[:used], minlength=n_leaves)
        n_draws += used
    return LeafDraws(
        rows=np.asarray(rows, dtype=np.int64),
        via_leaf=np.asarray(via, dtype=np.int64),
        draws_per_leaf=draws,
        n_draws=n_draws,
    )


def side_schedule(step: int, n_correct: int, portion: float) -> bool:
    """Whether pick number ``step`` (0-based) should be student-correct, so that after ``j`` picks
    exactly ``floor(portion * j + 0.5)`` of them are."""
    return n_correct < math.floor(portion * (step + 1) + 0.5)


def interleave(correct_rows: np.ndarray, wrong_rows: np.ndarray, portion: float) -> np.ndarray:
    """Merge two pick sequences following :func:`side_schedule`; the other side fills in when one runs out."""
    out: list[int] = []
    ic = iw = 0
    for step in range(len(correct_rows) + len(wrong_rows)):
        want = side_schedule(step, ic, portion)
        if (want and ic < len(correct_rows)) or iw >= len(wrong_rows):
            out.append(int(correct_rows[ic]))
            ic += 1
        else:
            out.append(int(wrong_rows[iw]))
            iw += 1
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------------- matching
TIE_TOLERANCE = 1e-9


def greedy_match(
    matrix: sp.csr_matrix,
    target: np.ndarray,
    k: int,
    *,
    correct: np.ndarray | None = None,
    portion: float | None = None,
) -> np.ndarray:
    """Greedy L2 histogram matching, the matching sampler's objective computed incrementally.

    Let ``c`` be the selection's leaf counts (a row adds 1 to each of its leaves) and ``m = sum(c)``.
    Each step adds the row minimising ``D = sum_l (c'_l / m' - t_l)^2`` over rows not yet selected
    (rows with no leaf are never candidates). Ties go to the lowest row index; near-ties in floating
    point are settled with exact rational arithmetic, so the choices equal :func:`naive_match`'s.

    With ``correct`` (bool per row) and ``portion``, step ``j`` only considers the side given by
    :func:`side_schedule`, falling back to the other side when that one has no candidates left.

    Why it is fast: with ``k_e`` the row's leaf count, ``a_e = sum_{l in e} c_l`` and ``tau_e = sum_{l in e}
    t_l``, ``D(e) = (Q + 2 a_e + k_e) / (m + k_e)^2 - 2 (P + tau_e) / (m + k_e) + |t|^2`` where
    ``Q = |c|^2`` and ``P = c.t``. Only ``a_e`` changes between steps, and only for rows sharing a leaf with
    the row just added, so each step is one vectorised scoring pass plus a sparse update. Rows with an
    identical leaf set (and side) always score the same, so they are scored once, as a group.
    Returns the selected rows in order (fewer than ``k`` when the candidates run out).
    """
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.sort_indices()
    n_rows, n_leaves = matrix.shape
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (n_leaves,):
        raise ValueError(f"target must have one entry per leaf ({n_leaves}), got shape {target.shape}")
    side = None if portion is None or correct is None else np.asarray(correct, dtype=bool)

    # ---- group rows by (side, leaf set), groups numbered in order of their lowest row
    indptr, indices = matrix.indptr, matrix.indices
    group_of: dict[tuple[bool, bytes], int] = {}
    members: list[list[int]] = []
    group_leaves: list[np.ndarray] = []
    group_side: list[bool] = []
    for r in range(n_rows):
        leaves = indices[indptr[r] : indptr[r + 1]]
        if leaves.size == 0:
            continue
        s = bool(side[r]) if side is not None else False
        key = (s, leaves.tobytes())
        g = group_of.get(key)
        if g is None:
            g = group_of[key] = len(members)
            members.append([])
            group_leaves.append(leaves.astype(np.int64))
            group_side.append(s)
        members[g].append(r)
    n_groups = len(members)
    if n_groups == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    g_indptr = np.concatenate(([0], np.cumsum([lv.size for lv in group_leaves]))).astype(np.int64)
    g_indices = np.concatenate(group_leaves)
    by_group = sp.csr_matrix((np.ones(g_indices.size), g_indices, g_indptr), shape=(n_groups, n_leaves))
    by_leaf = by_group.T.tocsr()
    kg = np.diff(g_indptr).astype(np.float64)
    tau = np.asarray(by_group @ target).ravel()
    alpha = np.zeros(n_groups, dtype=np.float64)
    taken = np.zeros(n_groups, dtype=np.int64)  # rows used from each group (members are ascending)
    dead = np.zeros(n_groups, dtype=bool)
    g_side = np.asarray(group_side, dtype=bool)
    left = {True: int(sizes[g_side].sum()), False: int(sizes[~g_side].sum())}

    head = np.array([mem[0] for mem in members], dtype=np.int64)  # lowest unused row per group
    exact = _ExactTau(target, group_leaves)

    counts = np.zeros(n_leaves, dtype=np.int64)
    m = 0
    q = 0
    p_scaled = 0  # c.t exactly, scaled by 2**exact.scale
    out: list[int] = []
    n_correct = 0
    for step in range(k):
        score_mask = dead
        if side is not None:
            want = side_schedule(step, n_correct, float(portion or 0.0))
            if left[want] == 0:
                want = not want
            if left[want] == 0:
                break
            score_mask = dead | (g_side != want)
        elif left[False] == 0:
            break
        p_float = float(counts @ target)
        inv = 1.0 / (m + kg)
        score = (q + kg + 2.0 * alpha) * inv * inv - 2.0 * (p_float + tau) * inv
        score[score_mask] = np.inf
        best = int(np.argmin(score))
        near = np.flatnonzero(score <= score[best] + TIE_TOLERANCE)
        if near.size > 1:
            best = _exact_best(near, kg, alpha, head, exact, q, m, p_scaled)
        row = int(head[best])
        taken[best] += 1
        if taken[best] == sizes[best]:
            dead[best] = True
        else:
            head[best] = members[best][taken[best]]
        left[bool(g_side[best])] -= 1
        n_correct += int(g_side[best]) if side is not None else 0
        out.append(row)
        for leaf in group_leaves[best]:
            q += 2 * int(counts[leaf]) + 1
            counts[leaf] += 1
            m += 1
            alpha[by_leaf.indices[by_leaf.indptr[leaf] : by_leaf.indptr[leaf + 1]]] += 1.0
        p_scaled += exact.tau(best)
    return np.asarray(out, dtype=np.int64)


class _ExactTau:
    """Exact per-group target sums: every target entry is a binary fraction, so scaled by a common
    power of two they are Python integers; ``rank`` orders groups by their exact sum (ties share a rank)."""

    def __init__(self, target: np.ndarray, group_leaves: list[np.ndarray]) -> None:
        fractions = [Fraction(float(x)) for x in target]
        self.scale = max((f.denominator.bit_length() - 1 for f in fractions), default=0)
        self.t = [f.numerator << (self.scale - (f.denominator.bit_length() - 1)) for f in fractions]
        self.group_leaves = group_leaves
        self._tau: list[int] | None = None
        self._rank: np.ndarray | None = None

    def _build(self) -> None:
        t = self.t
        self._tau = [sum(t[i] for i in leaves.tolist()) for leaves in self.group_leaves]
        order = sorted(range(len(self._tau)), key=self._tau.__getitem__)
        rank = np.zeros(len(order), dtype=np.int64)
        current, previous = -1, None
        for g in order:
            if self._tau[g] != previous:
                current, previous = current + 1, self._tau[g]
            rank[g] = current
        self._rank = rank

    def tau(self, g: int) -> int:
        if self._tau is None:
            self._build()
        assert self._tau is not None
        return self._tau[g]

    def rank(self) -> np.ndarray:
        if self._rank is None:
            self._build()
        assert self._rank is not None
        return self._rank


def _exact_best(
    near: np.ndarray,
    kg: np.ndarray,
    alpha: np.ndarray,
    head: np.ndarray,
    exact: _ExactTau,
    q: int,
    m: int,
    p_scaled: int,
) -> int:
    """Among near-tied groups, the one with the smallest exact objective, then the lowest next row.

    For a fixed (k_e, a_e) the objective falls as tau_e grows, so only the largest-tau group (lowest next
    row among equals) of each (k_e, a_e) pair can win; those few are compared exactly."""
    k_e = kg[near].astype(np.int64)
    a_e = alpha[near].astype(np.int64)
    order = np.lexsort((head[near], -exact.rank()[near], a_e, k_e))
    first = np.ones(order.size, dtype=bool)
    first[1:] = (k_e[order][1:] != k_e[order][:-1]) | (a_e[order][1:] != a_e[order][:-1])
    best_key: tuple[Fraction, int] | None = None
    best_group = -1
    scale = 1 << exact.scale
    for pos in order[first].tolist():
        g = int(near[pos])
        k_g, a_g = int(k_e[pos]), int(a_e[pos])
        denom = m + k_g
        value = Fraction(q + 2 * a_g + k_g, denom * denom) - Fraction(
            2 * (p_scaled + exact.tau(g)), denom * scale
        )
        key = (value, int(head[g]))
        if best_key is None or key < best_key:
            best_key, best_group = key, g
    return best_group


def naive_match(
    matrix: np.ndarray | sp.spmatrix,
    target: np.ndarray,
    k: int,
    *,
    correct: np.ndarray | None = None,
    portion: float | None = None,
) -> np.ndarray:
    """Reference implementation of the matching objective, O(K x N x S) in exact arithmetic.

    Same candidates, side schedule and tie rule (lowest row index) as :func:`greedy_match`; for tests.
    """
    dense = sp.csr_matrix(matrix).toarray() if sp.issparse(matrix) else np.asarray(matrix)
    x = (dense > 0).astype(np.int64)
    n_rows, n_leaves = x.shape
    t = [Fraction(float(v)) for v in np.asarray(target, dtype=np.float64)]
    side = None if portion is None or correct is None else np.asarray(correct, dtype=bool)
    available = [r for r in range(n_rows) if x[r].any()]
    counts = [0] * n_leaves
    out: list[int] = []
    n_correct = 0
    for step in range(k):
        pool = available
        if side is not None:
            want = side_schedule(step, n_correct, float(portion or 0.0))
            pool = [r for r in available if side[r] == want] or available
        best, best_d = -1, None
        for r in pool:
            new = [counts[j] + int(x[r, j]) for j in range(n_leaves)]
            total = sum(new)
            d = sum(((Fraction(new[j], total) - t[j]) ** 2 for j in range(n_leaves)), Fraction(0))
            if best_d is None or d < best_d:
                best, best_d = r, d
        if best < 0:
            break
        out.append(best)
        available.remove(best)
        n_correct += int(side[best]) if side is not None else 0
        for j in range(n_leaves):
            counts[j] += int(x[best, j])
    return np.asarray(out, dtype=np.int64)
