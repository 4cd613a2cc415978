"""The profile-fraction helpers: the skill target as the strategy computes it, subsamples of the judged
problems, and the distances between targets (figures worked out by hand)."""

import math

import numpy as np
import pytest
from skillselect import (
    Pool,
    SelectConfig,
    SelectionError,
    profile_fraction_rows,
    select,
    share_ratio,
    skill_target,
    subsample_judged,
    target_distance,
)
from skillselect.testing import leaf_pool


def test_target_distance_and_share_ratio_by_hand():
    # |0.5-0.25| + |0.5-0.5| + |0-0.25| = 0.5; TV 0.25; largest difference 0.25; nothing dropped
    assert target_distance(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.5, 0.25])) == {
        "l1": 0.5,
        "tv": 0.25,
        "max_abs": 0.25,
        "n_leaves_dropped": 0,
    }
    # the third leaf has a share in the reference and none in the other: dropped
    d = target_distance(np.array([0.5, 0.25, 0.25]), np.array([0.75, 0.25, 0.0]))
    assert (d["l1"], d["tv"], d["max_abs"], d["n_leaves_dropped"]) == (0.5, 0.25, 0.25, 1)
    assert target_distance(np.array([0.2, 0.8]), np.array([0.2, 0.8]))["l1"] == 0
    with pytest.raises(ValueError, match="different leaves"):
        target_distance(np.ones(2) / 2, np.ones(3) / 3)
    assert share_ratio(np.array([0.5, 0.25, 0.25, 0.0])) == 2.0  # zero shares are not the smallest
    assert math.isnan(share_ratio(np.zeros(3)))


def test_skill_target_is_the_strategys_normalised_weights(tree):
    # accuracies 0, .1, .2, .5, 1, .8 with w_max = 20, T = 1: weights 20, 10, 5, 2, 1, 1.25 (sum 39.25)
    pool = leaf_pool([50] * 6, [0.0, 0.1, 0.2, 0.5, 1.0, 0.8])
    target = skill_target(pool, tree, w_max=20.0)
    np.testing.assert_allclose(target, np.array([20, 10, 5, 2, 1, 1.25]) / 39.25, rtol=1e-12)
    # the same as what a real selection reports as its target, whatever K and strategy the config names
    sel = select(pool, tree, k=30, w_max=20.0, strategy="skill")
    np.testing.assert_allclose(target, sel.report["target_share"].to_numpy(), rtol=1e-12)
    # T = 0: every judged leaf weighs 1
    np.testing.assert_allclose(skill_target(pool, tree, temperature=0.0, strategy="random"), [1 / 6] * 6)


def test_subsample_keeps_a_seeded_share_of_the_judged_problems(tree):
    pool = leaf_pool([50] * 6, [0.0, 0.1, 0.2, 0.5, 1.0, 0.8])  # 300 judged problems, 10 attempts each
    sub = subsample_judged(pool, 0.1, seed=3)
    judged = sub.judged_mask()
    assert judged is not None and judged.sum() == 30  # round(0.1 * 300)
    assert sub.unique_ids == pool.unique_ids and sub.chains == pool.chains
    assert (sub.attempts[judged] == pool.attempts[judged]).all() and (
        sub.correct[judged] == pool.correct[judged]
    ).all()
    assert (sub.attempts[~judged] == 0).all() and (sub.correct[~judged] == 0).all()
    again = subsample_judged(pool, 0.1, seed=3).judged_mask()
    other = subsample_judged(pool, 0.1, seed=4).judged_mask()
    assert (again == judged).all() and not (other == judged).all()
    # a tiny share still keeps one problem; the whole share keeps all
    assert subsample_judged(pool, 0.001, seed=0).judged_mask().sum() == 1
    assert subsample_judged(pool, 1.0, seed=0).judged_mask().sum() == 300
    with pytest.raises(ValueError, match="fraction"):
        subsample_judged(pool, 0.0, seed=0)
    with pytest.raises(SelectionError, match="no judged problem"):
        subsample_judged(Pool.from_arrays(["a"], [[["Counting"]]]), 0.5, seed=0)


def test_profile_fraction_rows_on_a_pool_with_exact_leaf_accuracies(tree):
    # Every problem of a leaf has that leaf's accuracy, so a subsample measures the same accuracy on every
    # leaf it still reaches: its target is the full weights renormalised over those leaves. Leaf 5 has 2
    # problems of 252, so small subsamples often drop it.
    weights = np.array([20, 10, 5, 2, 1, 1.25])
    pool = leaf_pool([50, 50, 50, 50, 50, 2], [0.0, 0.1, 0.2, 0.5, 1.0, 0.8])
    config = SelectConfig(w_max=20.0)
    full, rows = profile_fraction_rows(pool, tree, config, fractions=(0.05, 1.0), seeds=range(4))
    assert full == {
        "n_pool": 252,
        "n_judged": 252,
        "n_leaves": 6,
        "n_leaves_with_share": 6,
        "share_ratio": 20 / 1,
    }
    assert [(r["fraction"], r["seed"]) for r in rows] == [(f, s) for f in (0.05, 1.0) for s in range(4)]
    reference = weights / weights.sum()
    for row in rows:
        sub = subsample_judged(pool, row["fraction"], row["seed"])
        kept = np.array(
            [
                sub.judged_mask()[[i for i, u in enumerate(pool.unique_ids) if u.startswith(f"L{j}-")]].any()
                for j in range(6)
            ]
        )
        expected = np.where(kept, weights, 0) / np.where(kept, weights, 0).sum()
        assert row["n_judged"] == (13 if row["fraction"] == 0.05 else 252)  # round(0.05 * 252) = 13
        assert row["n_leaves_dropped"] == int((~kept).sum())
        assert row["l1"] == pytest.approx(float(np.abs(reference - expected).sum()), abs=1e-12)
        assert row["max_abs"] == pytest.approx(float(np.abs(reference - expected).max()), abs=1e-12)
        assert row["share_ratio"] == pytest.approx(share_ratio(expected))
        if row["fraction"] == 1.0:
            assert row["l1"] == 0 and row["n_leaves_dropped"] == 0
    # over 4 seeds at 5% (13 of 252), the 2-problem leaf is kept with probability 1 - C(250,13)/C(252,13)
    # ~ 0.10 per seed; at least one seed drops it here, which moves the target
    assert any(r["n_leaves_dropped"] == 1 and r["l1"] > 0 for r in rows if r["fraction"] == 0.05)
