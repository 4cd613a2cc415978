"""The select stage draws from every tagged problem with a chain (``select.candidates: all``) or from the
judged ones only (``judged``), records K / candidates, and keys every strategy on ``candidates``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skillcore import read_jsonl, write_jsonl
from skillpipe import stages
from skillpipe.cache import StageResult, digest_path
from skillpipe.config import SelectSection, load_config
from skillselect.testing import random_records, small_tree


def result(stage: str, folder: Path, name: str, file: str) -> StageResult:
    return StageResult(stage, stage, folder, {name: file}, {name: digest_path(folder / file)})


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[StageResult, StageResult, StageResult, set[str], set[str]]:
    tagged, verdicts = random_records(120, seed=8, judged_share=0.3)
    tagged[0] = tagged[0].model_copy(update={"chains": []})  # a tagged problem without a chain
    verdicts = [v for v in verdicts if v.unique_id != tagged[0].unique_id]
    write_jsonl(tmp_path / "tagged.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    small_tree().save(tmp_path / "tree.json")
    with_chain = {t.unique_id for t in tagged if t.chains}
    judged = {v.unique_id for v in verdicts}
    assert len(with_chain) == 119 and 15 < len(judged) < 60
    return (
        result("tag", tmp_path, "tagged", "tagged.jsonl"),
        result("profile", tmp_path, "verdicts", "verdicts.jsonl"),
        result("data", tmp_path, "tree", "tree.json"),
        with_chain,
        judged,
    )


def test_select_stage_draws_from_all_tagged_or_only_judged(tmp_path, monkeypatch, inputs):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    tagged, verdicts, tree, with_chain, judged = inputs
    st = stages.Stages(tmp_path / "work")
    k = 15
    cfg = SelectSection(k=k, temperature=0.5, w_max=10.0, baselines=["random"])
    assert cfg.candidates == "all"  # the default
    every = stages.select(st, cfg, tagged, verdicts, tree)
    only = stages.select(st, cfg.model_copy(update={"candidates": "judged"}), tagged, verdicts, tree)
    for name in ("skill", "random"):
        ids_all = {r["unique_id"] for r in read_jsonl(every[name].path("selected"))}
        ids_judged = {r["unique_id"] for r in read_jsonl(only[name].path("selected"))}
        assert len(ids_all) == len(ids_judged) == k
        assert ids_all <= with_chain and ids_all - judged, name  # unjudged problems are drawn
        assert ids_judged <= judged, name
        # the stage's record: K over what the strategy could draw from
        info = st.records[f"select:{name}"]  # the last call: candidates=judged
        assert (info["candidates"], info["n_candidates"], info["n_judged_candidates"]) == (
            "judged",
            len(judged),
            len(judged),
        )
        assert info["k_over_candidates"] == round(k / len(judged), 4)
        assert every[name].info["candidates"] == "all" and every[name].info["n_judged_candidates"] == len(
            judged
        )
        # candidates reshapes every strategy: another key, another folder
        assert every[name].key != only[name].key
    # random draws from every tagged problem with a chain (the chainless one is not in the pool); skill
    # from those with a leaf in the tree (all of them here)
    assert every["random"].info["n_candidates"] == every["skill"].info["n_candidates"] == len(with_chain)
    assert every["random"].info["k_over_candidates"] == round(k / 119, 4)
    saved = json.loads((every["skill"].dir / "summary.json").read_text())["summary"]
    assert saved["n_candidates"] == 119 and saved["n_pool"] == 119 and saved["candidates"] == "all"


def test_selection_key_keeps_candidates_for_every_strategy():
    cfg = SelectSection(k=10)
    for strategy in ("skill", "random", "balanced"):
        key_all = stages._selection_key(cfg.for_strategy(strategy))
        key_judged = stages._selection_key(
            cfg.model_copy(update={"candidates": "judged"}).for_strategy(strategy)
        )
        assert key_all["candidates"] == "all" and key_judged["candidates"] == "judged"
        assert key_all != key_judged
    # the weight settings still key only the strategies that read accuracy
    assert "w_max" in stages._selection_key(cfg.for_strategy("skill"))
    assert "w_max" not in stages._selection_key(cfg.for_strategy("random"))


def test_candidates_is_a_pipeline_setting():
    for preset in ("cpu-demo", "paper", "smoke"):
        assert load_config(preset=preset).select.candidates == "all"
    assert load_config(preset="smoke", sets=["select.candidates=judged"]).select.candidates == "judged"
    with pytest.raises(ValueError, match=r"select\.candidates"):
        load_config(preset="smoke", sets=["select.candidates=some"])
