"""The one caching rule: a key of (stage, config, input digests), a folder per key, a manifest written last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skillpipe.cache import MANIFEST, StageCache, StageOutput, digest_json, digest_path, stage_key


def test_digests_follow_content_not_names_or_times(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n')
    b.write_text('{"x": 1}\n')
    assert digest_path(a) == digest_path(b)
    b.write_text('{"x": 2}\n')
    assert digest_path(a) != digest_path(b)
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    before = digest_path(folder)
    (folder / "sub" / "w.bin").write_bytes(b"\x00" * 11)
    assert digest_path(folder) != before
    assert digest_json({"a": 1, "b": 2}) == digest_json({"b": 2, "a": 1})  # key order does not matter


def test_the_key_changes_with_the_config_and_each_input():
    key = stage_key("select", {"k": 10}, {"pool": "p1", "verdicts": "v1"})
    assert key == stage_key("select", {"k": 10}, {"verdicts": "v1", "pool": "p1"})
    assert (
        len(
            {
                key,
                stage_key("select", {"k": 11}, {"pool": "p1", "verdicts": "v1"}),
                stage_key("select", {"k": 10}, {"pool": "p2", "verdicts": "v1"}),
                stage_key("train", {"k": 10}, {"pool": "p1", "verdicts": "v1"}),
            }
        )
        == 4
    )


def test_a_finished_stage_is_reused_and_a_changed_one_runs_anew(tmp_path):
    cache = StageCache(tmp_path)
    calls: list[str] = []

    def make(value: str):  # type: ignore[no-untyped-def]
        def fn(folder: Path, key: str) -> StageOutput:
            calls.append(key)
            (folder / "out.txt").write_text(value)
            return StageOutput({"out": "out.txt"}, {"value": value})

        return fn

    first = cache.run("select", {"k": 1}, {"pool": "p"}, make("a"), label="skill")
    assert not first.reused and first.dir == tmp_path / "select" / f"skill-{first.key}"
    manifest = json.loads((first.dir / MANIFEST).read_text())
    assert manifest["config"] == {"k": 1} and manifest["inputs"] == {"pool": "p"}
    assert manifest["digests"]["out"] == digest_path(first.dir / "out.txt") == first.digest("out")
    again = cache.run("select", {"k": 1}, {"pool": "p"}, make("b"), label="skill")
    assert again.reused and again.key == first.key and again.info == {"value": "a"} and len(calls) == 1
    other = cache.run("select", {"k": 2}, {"pool": "p"}, make("b"), label="skill")
    assert not other.reused and other.key != first.key and len(calls) == 2
    assert (first.dir / "out.txt").read_text() == "a"  # the old folder stays for a switch back


def test_an_unfinished_folder_is_resumed_not_reused(tmp_path):
    cache = StageCache(tmp_path)

    def crash(folder: Path, key: str) -> StageOutput:
        (folder / "rows.jsonl").write_text("1\n")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        cache.run("tag", {}, {"pool": "p"}, crash)
    assert cache.lookup("tag", {}, {"pool": "p"}) is None  # no manifest: not finished

    def resume(folder: Path, key: str) -> StageOutput:
        rows = (folder / "rows.jsonl").read_text()  # what the crashed call saved is still there
        (folder / "rows.jsonl").write_text(rows + "2\n")
        return StageOutput({"rows": "rows.jsonl"})

    done = cache.run("tag", {}, {"pool": "p"}, resume)
    assert (done.path("rows")).read_text() == "1\n2\n" and not done.reused


def test_keyed_outputs_are_identified_by_the_stage_key(tmp_path):
    cache = StageCache(tmp_path)

    def fn(folder: Path, key: str) -> StageOutput:
        (folder / "model").mkdir()
        (folder / "model" / "weights").write_bytes(b"w")
        return StageOutput({"model": "model"}, keyed={"model"})

    result = cache.run("train", {"lr": 1}, {"train": "t"}, fn)
    assert result.digest("model") == f"key:train/{result.key}"
