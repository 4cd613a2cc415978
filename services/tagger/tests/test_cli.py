"""The CLI as a user runs it: a bulk job killed halfway resumes with nothing lost or duplicated, and
`serve` drains in-flight calls on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import mlflow
from skillcore import TaggedProblem, read_jsonl, write_jsonl
from skilltag import TaggingEngine, tag_records
from skilltag.testing import free_port, small_problems
from skilltagger.cli import app
from skilltagger.client import TaggerClient
from skilltagger.testing import running_server
from typer.testing import CliRunner

CLI = [sys.executable, "-m", "skilltagger.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MLFLOW_EXPERIMENT_NAME="tagger-test",
    )
    return env


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_killed_bulk_job_resumes_without_loss_or_duplicates(tmp_path: Path, tree_file: Path) -> None:
    n = 300
    source = tmp_path / "pool.jsonl"
    write_jsonl(source, small_problems(n))
    output = tmp_path / "tagged.jsonl"
    args = [
        *CLI,
        "tag",
        str(source),
        str(output),
        "--tree",
        str(tree_file),
        "--batch-size",
        "4",
        "--threads",
        "1",
    ]
    job = subprocess.Popen(
        [*args, "--no-mlflow"], env=_env(tmp_path), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while _lines(output) < 12 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait()
    at_kill = _lines(output)
    assert 12 <= at_kill < n, f"the job was not killed mid-way ({at_kill} of {n} rows)"

    done = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    rows = list(read_jsonl(output))
    ids = [r["unique_id"] for r in rows]
    assert len(ids) == n and len(set(ids)) == n, "rows lost or duplicated"
    assert set(ids) == {f"q{i}" for i in range(n)}
    tagged = [TaggedProblem.model_validate(r) for r in rows]
    assert all(t.chains for t in tagged)
    assert summary["n_problems"] == n and summary["resumed_with"] >= at_kill - 1
    assert summary["tagged_now"] == n - summary["resumed_with"]
    assert summary["chains_per_problem"]["mean"] >= 1.0 and summary["leaves_covered"] == 6
    stats = json.loads(Path(str(output) + ".stats.json").read_text())
    assert sum(stats["coverage"].values()) >= n

    # the second run was tracked: one finished run with the tagged dataset as an input
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tagger-test"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["n_problems"] == n
    inputs = runs[0].inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["tagged"]

    # a third run has nothing left to do
    again = subprocess.run(
        [*args, "--no-mlflow"], env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert json.loads(again.stdout.strip().splitlines()[-1])["tagged_now"] == 0
    assert _lines(output) == n


def test_serve_drains_in_flight_calls_on_sigterm(tmp_path: Path, tree_file: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--tree",
            str(tree_file),
            "--port",
            str(port),
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--grace",
            "30",
            "--threads",
            "1",
        ],
        env=_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with TaggerClient.from_address(f"grpc://127.0.0.1:{port}", batch_size=256, timeout=120) as client:
            client.wait_ready(timeout=120)
            assert client.health() == "SERVING"
            rows = small_problems(256, prefix="drain-")
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(client.tag, rows)
                time.sleep(0.3)
                in_flight = not call.done()
                proc.send_signal(signal.SIGTERM)
                results = call.result(timeout=120)
            assert in_flight, "the call finished before SIGTERM; nothing was drained"
            assert len(results) == 256 and all(r.chains for r in results)
            assert proc.wait(timeout=60) == 0
            try:
                client.tag(rows[:1], timeout=5)
                raise AssertionError("a stopped server answered")
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert "draining in-flight calls" in err


def test_tag_through_a_running_server_from_an_hf_folder(tmp_path: Path, engine: TaggingEngine) -> None:
    folder = tmp_path / "pool_ds"
    write_jsonl(folder / "train.jsonl", small_problems(9, prefix="hf-"))
    output = tmp_path / "via_server.jsonl"
    with running_server(engine) as address:
        result = CliRunner().invoke(
            app,
            ["tag", f"hf://{folder}", str(output), "--server", address, "--batch-size", "4", "--no-mlflow"],
        )
        assert result.exit_code == 0, result.output
        with TaggerClient.from_address(address) as client:
            tagged = list(tag_records(read_jsonl(tmp_path / "pool_ds" / "train.jsonl"), client, batch_size=4))
    rows = list(read_jsonl(output))
    assert [r["unique_id"] for r in rows] == [f"hf-{i}" for i in range(9)]
    assert all(r["chains"] and r["metadata"]["tagger"]["backend"] == "embedding" for r in rows)
    assert [t.chains for t in tagged] == [r["chains"] for r in rows]
    assert json.loads(result.stdout.strip().splitlines()[-1])["n_problems"] == 9


def test_tree_option_is_a_file_or_world_and_never_silent(tmp_path: Path, engine: TaggingEngine) -> None:
    from skillworld import world_tree

    source = tmp_path / "pool.jsonl"
    write_jsonl(source, small_problems(2))
    runner = CliRunner()

    def tag(output: str, *options: str) -> Any:
        return runner.invoke(app, ["tag", str(source), str(tmp_path / output), "--no-mlflow", *options])

    assert runner.invoke(app, ["serve"]).exit_code == 2  # --tree is required
    missing = tag("a.jsonl")
    assert missing.exit_code == 2 and "skill tree is needed" in missing.output
    not_found = tag("b.jsonl", "--tree", str(tmp_path / "nope.json"))
    assert not_found.exit_code == 2 and "not found" in not_found.output

    world = tag("world.jsonl", "--tree", "world", "--threads", "1")
    assert world.exit_code == 0, world.output
    assert json.loads(world.stdout.strip().splitlines()[-1])["n_leaves"] == world_tree().n_leaves
    rows = list(read_jsonl(tmp_path / "world.jsonl"))
    assert {r["metadata"]["tagger"]["tree_hash"] for r in rows} == {world_tree().content_hash()}

    with running_server(engine) as address:  # the service serves the small tree, not the world's
        other = tag("c.jsonl", "--server", address, "--tree", "world")
    assert other.exit_code == 2 and "another tree" in other.output


def test_tag_needs_no_expected_answer_and_names_a_bad_row(tmp_path: Path, tree_file: Path) -> None:
    """Tagging reads the question (and solution): rows without an expected answer are tagged; a row
    without a question fails with its row number and no traceback."""
    source = tmp_path / "pool.jsonl"
    rows = [{"unique_id": p["unique_id"], "question": p["question"]} for p in small_problems(3)]
    write_jsonl(source, rows)
    runner = CliRunner()
    args = ["tag", str(source), str(tmp_path / "out.jsonl"), "--tree", str(tree_file), "--no-mlflow"]
    done = runner.invoke(app, [*args, "--threads", "1"])
    assert done.exit_code == 0, done.output
    tagged = list(read_jsonl(tmp_path / "out.jsonl"))
    assert [r["unique_id"] for r in tagged] == ["q0", "q1", "q2"]
    assert all(r["expected_answer"] == "" and r["chains"] for r in tagged)
    write_jsonl(source, [*rows, {"unique_id": "q3", "solution": "no question here"}])
    bad = runner.invoke(app, [*args[:2], str(tmp_path / "bad.jsonl"), *args[3:], "--threads", "1"])
    said = " ".join(bad.output.replace("│", " ").split())  # the error box's borders and wrapping out
    assert bad.exit_code == 2 and "row 4" in said and "question" in said
    assert bad.exception is None or isinstance(bad.exception, SystemExit)


def test_openai_concurrency_reaches_the_backend() -> None:
    """`--openai-concurrency` sets how many chat requests one tagger keeps in flight (no request is sent
    while building the engine)."""
    from skilltagger.cli import _engine

    engine = _engine("world", "openai", None, None, ["http://127.0.0.1:9/v1"], "m", concurrency=64)
    try:
        assert engine.backend.cfg.max_concurrency == 64 and engine.backend._pool._max_workers == 64
    finally:
        engine.backend.close()
    result = CliRunner().invoke(app, ["serve", "--tree", "world", "--openai-concurrency", "0"])
    assert result.exit_code == 2 and "openai-concurrency" in result.output


def test_hostile_trees_and_rows_are_refused_in_one_line(tmp_path: Path, tree_file: Path) -> None:
    """A tree that contains itself (YAML anchor) or nests 1,000 levels deep, given to `serve` (the gRPC
    service's tree) or to `tag`, and a pool row nested 3,000 deep: exit 2 with one line, no traceback."""
    from skillcore.testing import deep_pool_row, hostile_trees

    trees = hostile_trees(tmp_path / "trees")
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, small_problems(2))
    deep_pool = tmp_path / "deep-pool.jsonl"
    deep_pool.write_text(deep_pool_row() + "\n")
    port = str(free_port())
    cases = [
        (["serve", "--tree", str(trees["self_reference"]), "--port", port], "contains itself"),
        (["serve", "--tree", str(trees["deep"]), "--port", port], "nested too deeply"),
        (["tag", str(pool), str(tmp_path / "a.jsonl"), "--tree", str(trees["self_reference"]), "--no-mlflow"],
         "contains itself"),
        (["tag", str(pool), str(tmp_path / "b.jsonl"), "--tree", str(trees["deep"]), "--no-mlflow"],
         "nested too deeply"),
        (["tag", str(deep_pool), str(tmp_path / "c.jsonl"), "--tree", str(tree_file), "--no-mlflow"],
         "nested deeper than 64 levels"),
    ]  # fmt: skip
    env = {**_env(tmp_path), "COLUMNS": "400"}
    for args, expected in cases:
        done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if expected in line]
        assert len(errors) == 1, (args, done.stderr[-2000:])  # one line says it (in typer's error box)
        assert len(done.stderr.strip().splitlines()) < 12, done.stderr  # usage, box, progress: no dump
