"""The pipeline's tree settings: ``data.tree_duplicates`` and ``data.tree_raw_levels`` choose how the user's
tree is read where the pipeline first loads it (``check_inputs`` and the data stage, whose normalised
tree.json every later stage reads), and they are part of the data stage's key."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from skillcore import SkillTree, write_jsonl
from skillcore.synthetic import with_duplicate_siblings
from skillpipe import stages
from skillpipe.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[3]
TREE = {
    "name": "math",
    "children": [
        {"name": "Algebra", "children": [{"name": "Linear"}, {"name": "Quadratic"}, {"name": "Systems"}]},
        {"name": "Geometry", "children": [{"name": "Triangles"}, {"name": "Circles"}]},
    ],
}
RAW = {
    "description": "math",
    "subtrees": {
        "0": {
            "description": "Solving linear equations",
            "subtrees": {
                "0": {"description": "Isolating x", "subtrees": 3},
                "1": {"description": "b", "subtrees": 4},
            },
        },
        "1": {"description": "Counting", "subtrees": [1, 2]},
    },
}


def _pipeline_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "distill_pipeline_script", ROOT / "pipelines" / "distill.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_stage_reads_the_tree_with_the_configured_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "dup.json").write_text(json.dumps(with_duplicate_siblings(TREE)))
    (tmp_path / "raw.json").write_text(json.dumps(RAW))
    write_jsonl(
        tmp_path / "pool.jsonl",
        [
            {"unique_id": f"p{i}", "question": f"q{i}", "solution": "s", "expected_answer": "1"}
            for i in range(3)
        ],
    )
    pool = ["data.pool=" + str(tmp_path / "pool.jsonl")]
    dup = [*pool, "data.tree=" + str(tmp_path / "dup.json")]
    check_inputs = _pipeline_script().check_inputs

    default = load_config(sets=dup)
    assert default.data.tree_duplicates == "error" and default.data.tree_raw_levels == "instances"
    with pytest.raises(typer.BadParameter) as err:
        check_inputs(default)
    assert "data.tree_duplicates=merge" in str(err.value)
    with pytest.raises((ConfigError, ValidationError)):
        load_config(sets=[*dup, "data.tree_duplicates=yes"])

    cfg = load_config(sets=[*dup, "data.tree_duplicates=merge"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_inputs(cfg)
        st = stages.Stages(tmp_path / "work")
        merged = stages.data(st, cfg.data)
    assert SkillTree.load(merged.path("tree")).content_hash() == SkillTree.from_dict(TREE).content_hash()

    raw = [*pool, "data.tree=" + str(tmp_path / "raw.json")]
    instances = stages.data(st, load_config(sets=raw).data)
    groups = stages.data(st, load_config(sets=[*raw, "data.tree_raw_levels=groups"]).data)
    assert instances.key != groups.key  # the settings are part of the stage's key
    assert [leaf.chain_text for leaf in SkillTree.load(instances.path("tree")).leaves()] == [
        "Solving linear equations->Isolating x",
        "Solving linear equations->b",
        "Counting",
    ]
    assert [leaf.chain_text for leaf in SkillTree.load(groups.path("tree")).leaves()] == [
        "Solving linear equations",
        "Counting",
    ]
