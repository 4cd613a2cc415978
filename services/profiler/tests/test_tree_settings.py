"""The profiler's tree settings (server-wide environment variables) decide how a request's tree is read."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from skillcore import SkillTree, SkillTreeError, write_jsonl
from skillcore.synthetic import with_duplicate_siblings
from skillprofiler.config import Settings
from skillprofiler.service import ProfileCheck, load_checked

TREE = {"name": "r", "children": [{"name": "A", "children": [{"name": "x"}, {"name": "y"}]}, {"name": "B"}]}


def test_tree_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dup.json").write_text(json.dumps(with_duplicate_siblings(TREE)))
    row = {"unique_id": "p", "question": "q", "solution": "s", "expected_answer": "1", "chains": [["A", "y"]]}
    write_jsonl(tmp_path / "pool.jsonl", [row])
    checked = ProfileCheck(
        model="m",
        pool=str(tmp_path / "pool.jsonl"),
        tree=str(tmp_path / "dup.json"),
        engine="hf",
        profile_id=None,
        max_new_tokens=64,
    )
    assert Settings.from_env().tree_duplicates == "error"
    with pytest.raises(SkillTreeError, match="SKILLPROFILER_TREE_DUPLICATES=merge"):
        load_checked(checked, settings=Settings.from_env())
    monkeypatch.setenv("SKILLPROFILER_TREE_DUPLICATES", "merge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree, problems = load_checked(checked, settings=Settings.from_env())
    assert tree.content_hash() == SkillTree.from_dict(TREE).content_hash() and len(problems) == 1
    monkeypatch.setenv("SKILLPROFILER_TREE_DUPLICATES", "yes")
    with pytest.raises(ValueError, match="choose one of error, merge"):
        Settings.from_env()
    monkeypatch.setenv("SKILLPROFILER_TREE_DUPLICATES", "error")
    monkeypatch.setenv("SKILLPROFILER_TREE_RAW_LEVELS", "groups")
    assert Settings.from_env().tree_raw_levels == "groups"
