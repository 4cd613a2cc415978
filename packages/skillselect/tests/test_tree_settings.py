"""`skillselect select` reads a tree with duplicate sibling names only when told to merge them."""

from __future__ import annotations

import json
from pathlib import Path

from skillcore.io import write_jsonl
from skillcore.synthetic import with_duplicate_siblings
from skillcore.tree import SkillTree
from skillselect.cli import app
from skillselect.testing import random_records
from typer.testing import CliRunner


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def test_select_duplicate_policy(tree: SkillTree, tmp_path: Path) -> None:
    dup = with_duplicate_siblings(tree.to_dict())
    assert len(dup["children"]) > len(tree.root.children)  # the fixture tree has siblings to split
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    tagged, verdicts = random_records(60, seed=2)
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    args = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--verdicts", str(tmp_path / "verdicts.jsonl")]
    args += ["--tree", str(tmp_path / "dup.json"), "--k", "10"]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    assert "duplicates='merge' (Python)" in flat(refused.output)  # the flag comes first, Python last
    merged = runner.invoke(app, [*args, "--tree-duplicates", "merge"])
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout)["n_selected"] == 10
    bad = runner.invoke(app, [*args, "--tree-duplicates", "maybe"])
    assert bad.exit_code == 2 and "choose one of error, merge" in flat(bad.output)
