"""The tagger's CLI and its gRPC service read a tree with duplicate sibling names when told to merge them,
and refuse it otherwise with a message that names the flag."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from skillcore import SkillTree, SkillTreeError, write_jsonl
from skillcore.synthetic import with_duplicate_siblings
from skilltag.factory import EngineSettings, build_engine
from skilltag.testing import small_problems
from skilltagger.cli import app
from skilltagger.client import TaggerClient
from skilltagger.testing import running_server
from typer.testing import CliRunner


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def dup_file(tree: SkillTree, tmp_path: Path) -> Path:
    dup = with_duplicate_siblings(tree.to_dict())
    assert len(dup["children"]) > len(tree.root.children)
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(dup))
    return path


def test_service_and_cli_take_the_duplicate_policy(tree: SkillTree, dup_file: Path, tmp_path: Path) -> None:
    settings = EngineSettings(tree=dup_file, embedding_options={"threads": 1})
    with pytest.raises(SkillTreeError, match="--tree-duplicates merge"):
        build_engine(settings)
    settings.tree_duplicates = "merge"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = build_engine(settings)
    assert engine.tree.content_hash() == tree.content_hash()  # merged back into the small tree

    source = tmp_path / "pool.jsonl"
    write_jsonl(source, small_problems(3))
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--tree", str(dup_file), "--port", "0"])
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    tag = ["tag", str(source), str(tmp_path / "out.jsonl"), "--no-mlflow", "--tree", str(dup_file)]
    refused = runner.invoke(app, tag)
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    bad = runner.invoke(app, [*tag, "--tree-duplicates", "true"])
    assert bad.exit_code == 2 and "choose one of error, merge" in flat(bad.output)

    with running_server(engine) as address:  # the service, started on the merged tree
        with TaggerClient.from_address(address) as client:
            served = client.skill_tree()
            assert served.tree_hash == tree.content_hash()
            assert all(r.chains for r in client.tag(small_problems(3)))
        via = runner.invoke(app, [*tag, "--server", address, "--tree-duplicates", "merge"])
        assert via.exit_code == 0, via.output
        unmerged = runner.invoke(app, [*tag, "--server", address])
        assert unmerged.exit_code == 2 and "--tree-duplicates merge" in flat(unmerged.output)

    local = ["tag", str(source), str(tmp_path / "local.jsonl"), "--no-mlflow", "--tree", str(dup_file)]
    done = runner.invoke(app, [*local, "--tree-duplicates", "merge", "--threads", "1"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["n_leaves"] == tree.n_leaves
