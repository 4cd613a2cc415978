"""The one caching rule: a key of (stage, config, input digests), a folder per key, a manifest written last."""

from __future__ import annotations

import json
import shutil
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


def test_a_stage_works_under_a_temporary_name_and_is_renamed_into_place(tmp_path):
    """Nothing under a stage's final folder name is ever unfinished: the work happens in ``<key>.partial``,
    which becomes ``<key>`` only with its manifest; a run stopped after the manifest, before the rename,
    is completed by the next call without running the stage again."""
    cache = StageCache(tmp_path)
    seen: list[Path] = []

    def crash(folder: Path, key: str) -> StageOutput:
        seen.append(folder)
        (folder / "rows.jsonl").write_text("1\n")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        cache.run("tag", {}, {"pool": "p"}, crash)
    final = cache.folder("tag", stage_key("tag", {}, {"pool": "p"}))
    assert seen == [final.with_name(final.name + ".partial")] and not final.exists()

    def finish(folder: Path, key: str) -> StageOutput:
        (folder / "rows.jsonl").write_text((folder / "rows.jsonl").read_text() + "2\n")
        return StageOutput({"rows": "rows.jsonl"})

    done = cache.run("tag", {}, {"pool": "p"}, finish)
    assert done.dir == final and (final / "rows.jsonl").read_text() == "1\n2\n"
    assert (final / MANIFEST).is_file() and not seen[0].exists()

    # stopped between the manifest and the rename: the next call renames, the stage does not run again
    other = cache.folder("tag", stage_key("tag", {"k": 2}, {"pool": "p"}))
    work = other.with_name(other.name + ".partial")
    shutil.copytree(final, work)
    manifest = json.loads((work / MANIFEST).read_text())
    manifest.update(key=stage_key("tag", {"k": 2}, {"pool": "p"}), config={"k": 2})
    (work / MANIFEST).write_text(json.dumps(manifest))
    again = cache.run("tag", {"k": 2}, {"pool": "p"}, crash)
    assert again.dir == other and not work.exists() and len(seen) == 1

    # unfinished work left under the final name by an older version is resumed, not reused or lost
    old = cache.folder("tag", stage_key("tag", {"k": 3}, {"pool": "p"}))
    old.mkdir()
    (old / "rows.jsonl").write_text("1\n")
    resumed = cache.run("tag", {"k": 3}, {"pool": "p"}, finish)
    assert (resumed.path("rows")).read_text() == "1\n2\n" and resumed.dir == old


LOCKER = """
import sys, time
from skillpipe.cache import workdir_lock
with workdir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_call_per_workdir_and_a_dead_holders_lock_is_taken_over(tmp_path):
    """A second holder is refused at once, told who holds the workdir; once the holder is killed with -9 the
    lock is free (the kernel drops it with the process), with no stale file to clean by hand."""
    import os
    import signal
    import subprocess
    import sys

    from skillpipe.cache import LockHeld, workdir_lock

    workdir = tmp_path / "w"
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as refused:
            workdir_lock(workdir).acquire()
        assert refused.value.holder["pid"] == holder.pid and "host" in refused.value.holder
        assert f"{workdir} is in use by pid {holder.pid} on " in str(refused.value)
        assert "started " in str(refused.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    with workdir_lock(workdir) as lock:  # taken over from the dead holder
        assert lock.held
        assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
    with workdir_lock(workdir):  # and released again
        pass
