import math

import numpy as np
import pytest
import scipy.sparse as sp
from skillcore.profile import SkillProfile
from skillcore.records import TaggedProblem
from skillcore.synthetic import random_chains, random_tree
from skillselect import Pool, PoolError, SelectConfig, SelectionError, naive_match, select
from skillselect.core import build_context
from skillselect.testing import LEAVES, leaf_pool, random_records

ALL = ["skill", "skill-match", "random", "balanced"]


@pytest.fixture
def records():
    return random_records(120, seed=1)


@pytest.fixture
def pool(records):
    return Pool.from_records(*records)


@pytest.mark.parametrize("strategy", [*ALL, "difficulty"])
def test_reproducible_for_a_seed_and_report_is_consistent(tree, pool, strategy):
    kw = {"k": 30, "strategy": strategy, "difficulty_field": "pass_rate", "difficulty_band": (0.0, 1.0)}
    a = select(pool, tree, seed=7, **kw)
    b = select(pool, tree, seed=7, **kw)
    assert a.unique_ids == b.unique_ids and len(a) == 30 and len(set(a.unique_ids)) == 30
    if strategy != "skill-match":  # the matching sampler is deterministic by construction
        assert select(pool, tree, seed=8, **kw).unique_ids != a.unique_ids
    rep = a.report
    assert rep["chain"].tolist() == ["->".join(c) for c in LEAVES]
    assert rep["target_share"].sum() == pytest.approx(1.0)
    assert rep["selected_share"].sum() == pytest.approx(1.0)
    assert rep["pool_share"].sum() == pytest.approx(1.0)
    leaf_occurrences = sum(len({tuple(c) for c in pool.chains[pool.index_of(u)]}) for u in a.unique_ids)
    assert rep["selected"].sum() == leaf_occurrences
    s = a.summary
    assert s["n_selected_correct"] + s["n_selected_wrong"] + s["n_selected_unjudged"] == 30
    positive = rep["target_share"][rep["target_share"] > 0]
    assert s["max_target_share"] == pytest.approx(positive.max())
    assert s["target_share_ratio"] == pytest.approx(positive.max() / positive.min())
    assert (rep["selected_correct"] + rep["selected_wrong"] <= rep["selected"]).all()


def test_records_and_arrays_give_the_same_selection(tree, records, pool):
    tagged, _ = records
    arrays = Pool.from_arrays(
        [t.unique_id for t in tagged], [t.chains for t in tagged], pool.attempts, pool.correct
    )
    for strategy in ALL:
        assert (
            select(arrays, tree, k=25, strategy=strategy).unique_ids
            == select(pool, tree, k=25, strategy=strategy).unique_ids
        )


def test_weights_come_from_the_profile_and_zero_accuracy_gets_w_max(tree):
    pool = leaf_pool([50, 50, 50, 50, 50, 50], [0.0, 0.1, 0.2, 0.5, 1.0, 0.8])
    sel = select(pool, tree, k=60, w_max=20.0, temperature=1.0)
    rep = sel.report
    assert rep["accuracy"].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.5, 1.0, 0.8])
    assert rep["weight"].tolist() == pytest.approx([20.0, 10.0, 5.0, 2.0, 1.0, 1.25])
    assert rep["target_share"].tolist() == pytest.approx(list(np.array([20, 10, 5, 2, 1, 1.25]) / 39.25))
    assert rep["drawn"].sum() == 60 and rep["drawn"].iloc[0] == rep["drawn"].max()
    profile = SkillProfile.from_arrays(tree, pool.chains, pool.attempts, pool.correct)
    assert rep["accuracy"].tolist() == pytest.approx(list(profile.accuracy[tree.leaf_indices]))


def test_paper_defaults_put_almost_everything_on_a_zero_accuracy_leaf(tree):
    pool = leaf_pool([400, 400, 400, 400, 400, 400], [0.0, 0.6, 0.7, 0.8, 0.9, 0.5])
    rep = select(pool, tree, k=300).report
    assert rep["target_share"].iloc[0] > 0.99 and rep["selected"].iloc[0] >= 290
    tempered = select(pool, tree, k=300, w_max=10.0, temperature=0.5).report
    assert tempered["selected"].iloc[0] < 150


def test_leaves_without_judged_items_get_no_weight_and_are_not_drawn(tree):
    tagged, verdicts = random_records(80, seed=2)
    judged_ids = {v.unique_id for v in verdicts}
    # every problem with a 'Counting' chain loses its verdicts: that leaf has no judged items
    on_counting = {t.unique_id for t in tagged if LEAVES[5] in t.chains}
    assert on_counting
    verdicts = [v for v in verdicts if v.unique_id not in on_counting]
    pool = Pool.from_records(tagged, verdicts)
    sel = select(pool, tree, k=20, allow_partial=True, candidates="judged")
    row = sel.report.iloc[5]
    assert np.isnan(row["accuracy"]) and row["weight"] == 0 and row["target_share"] == 0
    assert row["selected"] == 0
    judged_now = {v.unique_id for v in verdicts}
    assert set(sel.unique_ids) <= judged_now < judged_ids
    assert sel.summary["n_leaves_unjudged"] == 1
    # drawing from all candidates: a 'Counting' problem with another chain can come in through that other
    # leaf, never through 'Counting' itself; one with only 'Counting' chains cannot come in at all
    only_counting = {t.unique_id for t in tagged if all(c == LEAVES[5] for c in t.chains)}
    assert only_counting
    sel = select(pool, tree, k=60, candidates="all")
    row = sel.report.iloc[5]
    assert row["weight"] == 0 and row["target_share"] == 0 and row["drawn"] == 0
    assert not set(sel.unique_ids) & only_counting and set(sel.unique_ids) & (on_counting - only_counting)
    assert sel.summary["n_leaves_unjudged"] == 1


def test_empty_pool(tree):
    empty = Pool.from_arrays([], [], [], [])
    assert len(select(empty, tree, k=0)) == 0
    for strategy in ALL:
        with pytest.raises(SelectionError, match="exceeds what the pool can give"):
            select(empty, tree, k=1, strategy=strategy)
        partial = select(empty, tree, k=5, strategy=strategy, allow_partial=True)
        assert len(partial) == 0 and partial.summary["partial"]


@pytest.mark.parametrize("strategy", ALL)
def test_k_larger_than_the_pool(tree, pool, strategy):
    with pytest.raises(SelectionError, match="K=500 exceeds"):
        select(pool, tree, k=500, strategy=strategy)
    sel = select(pool, tree, k=500, strategy=strategy, allow_partial=True)
    assert len(sel) == sel.summary["n_available"] == 120 and sel.summary["partial"]
    assert sorted(sel.unique_ids) == sorted(pool.unique_ids)


def test_duplicate_ids_and_duplicate_verdicts_are_errors(records):
    tagged, verdicts = records
    with pytest.raises(PoolError, match="duplicate unique_id"):
        Pool.from_records([*tagged, tagged[3]], verdicts)
    with pytest.raises(PoolError, match="duplicate verdict"):
        Pool.from_records(tagged, [*verdicts, verdicts[0]])
    with pytest.raises(PoolError, match="duplicate unique_id"):
        Pool.from_arrays(["a", "b", "a"], [[], [], []])


def test_unknown_chains_error_or_skip(tree, records):
    tagged, verdicts = records
    bad = TaggedProblem(unique_id="x", question="q", expected_answer="1", chains=[["Algebra", "Nope"]])
    pool = Pool.from_records([*tagged, bad], verdicts)
    with pytest.raises(SelectionError, match="not paths of the skill tree"):
        select(pool, tree, k=10)
    sel = select(pool, tree, k=10, unknown_chains="skip")
    assert sel.summary["n_unknown_chains"] == 1 and "x" not in sel.unique_ids


def test_bad_config_and_missing_inputs(tree, records, pool):
    tagged, _ = records
    with pytest.raises(SelectionError, match="unknown strategy"):
        select(pool, tree, strategy="nope")
    unjudged = Pool.from_records(tagged)
    with pytest.raises(SelectionError, match="needs per-leaf accuracy"):
        select(unjudged, tree, k=5)
    assert len(select(unjudged, tree, k=5, strategy="random")) == 5
    with pytest.raises(SelectionError, match="correct_portion needs"):
        select(unjudged, tree, k=5, strategy="random", correct_portion=0.5)
    with pytest.raises(ValueError, match="alternatives"):
        SelectConfig(use_posterior=True, smoothing=1.0)
    with pytest.raises(ValueError):
        SelectConfig(k=-1)
    with pytest.raises(SelectionError, match="needs difficulty_field"):
        select(pool, tree, k=5, strategy="difficulty")


@pytest.mark.parametrize("strategy", ["skill", "skill-match", "random", "balanced"])
def test_correct_portion_is_exact(tree, records, pool, strategy):
    # student-correct from the verdicts themselves: more than half of a problem's attempts correct
    _, verdicts = records
    tally: dict[str, list[int]] = {}
    for v in verdicts:
        tally.setdefault(v.unique_id, []).append(int(v.correct))
    correct = {uid for uid, hits in tally.items() if 2 * sum(hits) > len(hits)}
    sel = select(pool, tree, k=21, strategy=strategy, correct_portion=1 / 3)
    flags = [u in correct for u in sel.unique_ids]
    assert sum(flags) == 7 and sel.summary["n_selected_correct"] == 7  # floor(21/3 + 1/2)
    assert sel.summary["n_selected_wrong"] == 14 and set(sel.unique_ids) <= set(tally)
    # every prefix of j picks holds floor(j/3 + 1/2) correct ones: interleaved, not all correct first
    assert [sum(flags[:j]) for j in range(1, 22)] == [math.floor(j / 3 + 0.5) for j in range(1, 22)]
    n_correct = len(correct)
    with pytest.raises(SelectionError, match="student-correct"):
        select(pool, tree, k=2 * n_correct + 2, strategy=strategy, correct_portion=0.5)


def test_restricting_to_named_skills(tree, pool):
    for strategy in ALL:
        sel = select(pool, tree, k=15, strategy=strategy, skills=["Algebra->Linear", "Counting"])
        assert sel.report["chain"].tolist() == [
            "Algebra->Linear->One step",
            "Algebra->Linear->Two step",
            "Counting",
        ]
        for uid in sel.unique_ids:
            chains = pool.chains[pool.index_of(uid)]
            assert any(c[:2] == ["Algebra", "Linear"] or c == ["Counting"] for c in chains)
    with pytest.raises(SelectionError, match="not a node"):
        select(pool, tree, k=5, skills=["Algebra->Cubic"])


def test_max_depth_cuts_the_tree_and_chains_match_their_prefix(tree, pool):
    sel = select(pool, tree, k=20, max_depth=1)
    rep = sel.report
    assert rep["chain"].tolist() == ["Algebra", "Geometry", "Counting"]
    full = SkillProfile.from_arrays(tree, pool.chains, pool.attempts, pool.correct)
    algebra = tree.node("Algebra").index
    assert rep["attempts"].iloc[0] == full.attempts[algebra]
    assert rep["accuracy"].iloc[0] == pytest.approx(full.accuracy[algebra])
    with pytest.raises(SelectionError, match="below max_depth"):
        select(pool, tree, k=5, max_depth=1, skills=["Algebra->Linear"])


def test_excluded_ids_are_never_selected(tree, pool):
    held_out = pool.unique_ids[:100]
    for strategy in ALL:
        sel = select(pool, tree, k=20, strategy=strategy, exclude_ids=[*held_out, "not-in-pool"])
        assert not set(sel.unique_ids) & set(held_out) and len(sel) == 20
        assert sel.summary["n_excluded"] == 100 and sel.summary["n_exclude_ids_not_in_pool"] == 1
        with pytest.raises(SelectionError):
            select(pool, tree, k=21, strategy=strategy, exclude_ids=held_out)


def test_posterior_and_smoothing_options(tree):
    pool = leaf_pool([3, 3, 3, 3, 3, 3], [0.0, 0.1, 0.2, 0.5, 1.0, 0.8], attempts=1)
    rep = select(pool, tree, k=6, use_posterior=True).report
    expected = (1 + rep["correct"]) / (2 + rep["attempts"])
    assert rep["accuracy_used"].tolist() == pytest.approx(expected.tolist())
    assert rep["weight"].tolist() == pytest.approx((1 / expected).tolist())
    rep2 = select(pool, tree, k=6, use_posterior=True, prior=(2.0, 2.0)).report
    assert rep2["accuracy_used"].tolist() == pytest.approx(
        ((2 + rep["correct"]) / (4 + rep["attempts"])).tolist()
    )
    rep3 = select(pool, tree, k=6, smoothing=0.5).report
    assert rep3["accuracy_used"].tolist() == pytest.approx(
        ((0.5 + rep["correct"]) / (1 + rep["attempts"])).tolist()
    )
    assert select(pool, tree, k=6).report["weight"].iloc[0] == 1000.0


def test_a_saved_profile_gives_the_same_selection_as_the_verdicts(tree, records, pool, tmp_path):
    tagged, verdicts = records
    profile = SkillProfile.from_records(tree, tagged, verdicts)
    profile.save(tmp_path / "profile.json")
    loaded = SkillProfile.load(tmp_path / "profile.json", tree)
    unjudged = Pool.from_records(tagged)
    for strategy in ("skill", "skill-match"):
        a = select(pool, tree, k=25, strategy=strategy)
        b = select(unjudged, tree, k=25, strategy=strategy, profile=loaded)
        assert a.unique_ids == b.unique_ids
        assert a.report["weight"].tolist() == b.report["weight"].tolist()
    # cut trees read the profile at the cut nodes
    assert (
        select(unjudged, tree, k=10, max_depth=1, profile=loaded).report["attempts"].tolist()
        == select(pool, tree, k=10, max_depth=1).report["attempts"].tolist()
    )
    other = random_tree(10, seed=1)
    with pytest.raises(SelectionError, match="different skill tree"):
        select(unjudged, other, k=5, profile=loaded, unknown_chains="skip")


def test_difficulty_band(tree, pool):
    sel = select(
        pool, tree, k=20, strategy="difficulty", difficulty_field="pass_rate", difficulty_band=(0.25, 0.625)
    )
    for uid in sel.unique_ids:
        assert 0.25 <= float(pool.metadata[pool.index_of(uid)]["pass_rate"]) <= 0.625
    assert sel.summary["n_missing_difficulty"] == sum(m["pass_rate"] == "n/a" for m in pool.metadata)
    with pytest.raises(SelectionError, match="pass_rate in"):
        select(pool, tree, k=119, strategy="difficulty", difficulty_field="pass_rate")


def test_skill_match_through_select_equals_the_naive_objective(tree):
    tagged, verdicts = random_records(40, seed=5)
    pool = Pool.from_records(tagged, verdicts)
    sel = select(pool, tree, k=15, strategy="skill-match", temperature=2.0)
    ctx = build_context(pool, tree, sel.config)
    target = sel.report["target_share"].to_numpy()
    rows = np.flatnonzero(ctx.candidate & pool.judged_mask())
    expected = rows[naive_match(ctx.matrix[rows], target, 15)]
    assert sel.rows.tolist() == expected.tolist()
    random_l2 = select(pool, tree, k=15, strategy="random", temperature=2.0).summary["l2_to_target"]
    assert sel.summary["l2_to_target"] < random_l2


def test_scale_smoke_on_a_synthetic_tree():
    big = random_tree(300, seed=2)
    chains = random_chains(big, 3000, seed=2)
    rng = np.random.default_rng(2)
    att = rng.integers(1, 4, size=3000)
    pool = Pool.from_arrays([f"s{i}" for i in range(3000)], chains, att, rng.binomial(att, 0.6))
    match = select(pool, big, k=200, strategy="skill-match")
    skill = select(pool, big, k=200, strategy="skill")
    assert len(match) == len(skill) == 200
    assert match.summary["l2_to_target"] < skill.summary["l2_to_target"]
    assert sp.issparse(build_context(pool, big, match.config).matrix)


def test_skill_strategy_draws_leaves_in_proportion_to_weight(tree):
    from scipy import stats

    pool = leaf_pool([4000] * 6, [0.1, 0.2, 0.4, 0.5, 0.8, 1.0])
    sel = select(pool, tree, k=600, seed=11, strategy="skill")
    rep = sel.report
    expected = rep["target_share"].to_numpy() * 600
    assert stats.chisquare(rep["drawn"].to_numpy(), expected).pvalue > 1e-3
    # single-chain problems: the selected histogram is the drawn one
    assert rep["selected"].tolist() == rep["drawn"].tolist()
