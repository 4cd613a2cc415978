"""``leaf_prf``: the tagging benchmark's headline leaf precision/recall/F1, checked against hand-computed
values. It is micro-averaged over (problem, leaf chain) pairs: a chain counts when it equals a gold chain
of the same problem exactly (a prefix or a reordered chain is wrong); duplicates count once."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from skilltag.quality import leaf_prf

AB = ["Algebra", "Linear equations"]
AC = ["Algebra", "Quadratics"]
AD = ["Algebra", "Inequalities"]
GE = ["Geometry", "Triangles"]


def assert_scores(
    got: dict[str, float], precision: Fraction, recall: Fraction, f1: Fraction, exact: Fraction
) -> None:
    assert got == pytest.approx(
        {"precision": float(precision), "recall": float(recall), "f1": float(f1), "exact_set": float(exact)},
        abs=1e-12,
    )


def test_exact_match_in_any_order() -> None:
    gold = [[AB], [AC, GE]]
    predicted = [[AB], [GE, AC]]  # chain order within a problem does not matter
    assert_scores(leaf_prf(gold, predicted), Fraction(1), Fraction(1), Fraction(1), Fraction(1))


def test_partial_multi_chain_overlap() -> None:
    gold = [[AB, AC], [GE], [AB, AC, GE], [AB]]
    predicted = [
        [AB, GE],  # tp 1 (AB), fp 1 (GE), fn 1 (AC)
        [GE, AC, AD],  # tp 1, fp 2, fn 0
        [AC, AB],  # tp 2, fp 0, fn 1 (GE)
        [AB],  # tp 1: the only exact set
    ]
    # tp 5, fp 3, fn 2: P = 5/8, R = 5/7, F1 = 2tp / (2tp + fp + fn) = 10/15
    assert_scores(leaf_prf(gold, predicted), Fraction(5, 8), Fraction(5, 7), Fraction(2, 3), Fraction(1, 4))


def test_micro_not_macro_average() -> None:
    gold = [[AB], [AB, AC, GE, AD]]
    predicted = [[AB], [AB, ["Geometry", "Circles"], ["Number theory", "Primes"], ["Algebra", "Sequences"]]]
    # micro: tp 2, fp 3, fn 3 -> P = 2/5, R = 2/5, F1 = 2/5 (macro over problems would give P = R = 5/8)
    assert_scores(leaf_prf(gold, predicted), Fraction(2, 5), Fraction(2, 5), Fraction(2, 5), Fraction(1, 2))


def test_empty_predictions() -> None:
    # nothing predicted at all: precision has no denominator and counts as 0, recall 0/3
    assert_scores(leaf_prf([[AB], [AC, GE]], [[], []]), Fraction(0), Fraction(0), Fraction(0), Fraction(0))
    # one problem untagged: tp 1, fp 0, fn 1
    assert_scores(
        leaf_prf([[AB], [AC]], [[AB], []]), Fraction(1), Fraction(1, 2), Fraction(2, 3), Fraction(1, 2)
    )


def test_empty_gold() -> None:
    # a problem with no gold chain: whatever is predicted for it is a false positive
    assert_scores(
        leaf_prf([[], [AB]], [[AC], [AB]]), Fraction(1, 2), Fraction(1), Fraction(2, 3), Fraction(1, 2)
    )
    # no gold anywhere: recall has no denominator and counts as 0
    assert_scores(leaf_prf([[], []], [[AB], [AC]]), Fraction(0), Fraction(0), Fraction(0), Fraction(0))
    # nothing on either side: no pair to score (P = R = F1 = 0), yet every chain set is exact
    assert_scores(leaf_prf([[], []], [[], []]), Fraction(0), Fraction(0), Fraction(0), Fraction(1))


def test_duplicates_count_once() -> None:
    # predicted AB twice and AC once, gold AB (also twice): tp 1, fp 1, fn 0
    got = leaf_prf([[AB, list(AB)]], [[AB, AB, AC]])
    assert_scores(got, Fraction(1, 2), Fraction(1), Fraction(2, 3), Fraction(0))
    # a duplicate does not break an exact set
    assert_scores(leaf_prf([[AB]], [[AB, tuple(AB)]]), Fraction(1), Fraction(1), Fraction(1), Fraction(1))


def test_a_chain_must_match_the_whole_path() -> None:
    # a prefix (stopped above the leaf) and a reversed path are wrong chains: fp 2, fn 1
    got = leaf_prf([[AB]], [[["Algebra"], list(reversed(AB))]])
    assert_scores(got, Fraction(0), Fraction(0), Fraction(0), Fraction(0))
    # names are compared exactly (no case folding)
    assert leaf_prf([[AB]], [[["algebra", "linear equations"]]])["f1"] == 0.0


def test_no_problems_and_mismatched_lengths() -> None:
    assert_scores(leaf_prf([], []), Fraction(0), Fraction(0), Fraction(0), Fraction(0))
    with pytest.raises(ValueError):
        leaf_prf([[AB], [AC]], [[AB]])


def test_matches_a_brute_force_count() -> None:
    """Random chain sets (seeded): the scores equal counts made pair by pair."""
    rng = random.Random(0)
    pool = [AB, AC, AD, GE, ["Geometry", "Circles"]]
    for _ in range(50):
        n = rng.randint(1, 6)
        gold = [rng.sample(pool, rng.randint(0, 3)) for _ in range(n)]
        predicted = [rng.choices(pool, k=rng.randint(0, 4)) for _ in range(n)]
        tp = fp = fn = exact = 0
        for g, s in zip(gold, predicted, strict=True):
            g_set, s_set = {tuple(c) for c in g}, {tuple(c) for c in s}
            tp += sum(1 for c in s_set if c in g_set)
            fp += sum(1 for c in s_set if c not in g_set)
            fn += sum(1 for c in g_set if c not in s_set)
            exact += g_set == s_set
        got = leaf_prf(gold, predicted)
        p = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
        r = Fraction(tp, tp + fn) if tp + fn else Fraction(0)
        f1 = Fraction(2 * tp, 2 * tp + fp + fn) if tp else Fraction(0)
        assert_scores(got, p, r, f1, Fraction(exact, n))
