"""The profiling service as a real `bentoml serve` process, called over HTTP for every API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from distill.testing import free_port, server_process
from skillcore import write_jsonl


def bentoml_cli() -> str:
    return str(Path(sys.executable).with_name("bentoml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, world_tree, world_pool_small) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("allowed")
    world_tree.save(root / "tree.json")
    write_jsonl(root / "pool.jsonl", world_pool_small[:40])
    return root


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tiny_student_dir: Path
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("work")
    port = free_port()
    env = {
        "SKILLPROFILER_ALLOWED_ROOTS": f"{data_dir}:{tiny_student_dir}",
        "SKILLPROFILER_WORK_DIR": str(work),
        "SKILLPROFILER_JUDGE_WORKERS": "1",
        "SKILLPROFILER_MLFLOW": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "BENTOML_HOME": str(work / "bentoml-home"),
    }
    argv = [bentoml_cli(), "serve", "skillprofiler.service:Profiler", "--port", str(port)]
    with (
        server_process(
            argv, ready_url=f"http://127.0.0.1:{port}/readyz", env=env, cwd=work, startup_timeout_s=180
        ),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
    ):
        yield {"client": client, "work": work, "port": port, "mlflow": env["MLFLOW_TRACKING_URI"]}


def post(server: dict[str, Any], path: str, body: Any) -> httpx.Response:
    return server["client"].post(path, json=body)


def error_text(resp: httpx.Response) -> str:
    return json.dumps(resp.json())


def test_health_and_metrics(server: dict[str, Any]) -> None:
    c = server["client"]
    for path in ("/healthz", "/livez", "/readyz"):
        assert c.get(path).status_code == 200
    post(server, "/judge", {"items": [{"unique_id": "m", "response": "\\boxed{1}", "expected_answer": "1"}]})
    metrics = c.get("/metrics")
    assert metrics.status_code == 200
    assert 'endpoint="/judge"' in metrics.text and "bentoml_service_request" in metrics.text


def test_binds_loopback_only(server: dict[str, Any]) -> None:
    import socket

    others = [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    others = [a for a in others if not a.startswith("127.")]
    for address in others[:1]:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{address}:{server['port']}/healthz", timeout=3)


def test_judge_batch(server: dict[str, Any]) -> None:
    items = [
        {"unique_id": "a", "response": "so \\boxed{\\frac{1}{2}}", "expected_answer": "0.5"},
        {"unique_id": "b", "response": "\\boxed{(1,2]}", "expected_answer": "[1,2]"},
        {"unique_id": "c", "response": "no box here", "expected_answer": "3"},
        {"unique_id": "d", "sample_index": 2, "response": "\\boxed{\\text{(C)}}", "expected_answer": "C"},
    ]
    resp = post(server, "/judge", {"items": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [(v["unique_id"], v["sample_index"], v["status"]) for v in body["verdicts"]] == [
        ("a", 0, "correct"),
        ("b", 0, "wrong"),
        ("c", 0, "no_answer"),
        ("d", 2, "correct"),
    ]
    assert body["counts"] == {"correct": 2, "wrong": 1, "no_answer": 1} and body["accuracy"] == 0.5


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"items": []},
        {"items": "nope"},
        {"items": [{"unique_id": "a", "response": "x"}]},  # no expected_answer
        {"items": [{"unique_id": "a", "response": "x", "expected_answer": "1", "extra": 1}]},
        {"items": [{"unique_id": "a", "sample_index": -1, "response": "x", "expected_answer": "1"}]},
    ],
)
def test_judge_malformed_payloads(server: dict[str, Any], body: dict[str, Any]) -> None:
    resp = post(server, "/judge", body)
    assert resp.status_code == 400, resp.text
    assert "validation error" in resp.json()["error"]


def test_judge_not_json(server: dict[str, Any]) -> None:
    resp = server["client"].post("/judge", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500


def test_check_profile_references(
    server: dict[str, Any], data_dir: Path, tiny_student_dir: Path, tmp_path: Path
) -> None:
    ok = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "pool.jsonl"),
        "tree": str(data_dir / "tree.json"),
    }
    resp = post(server, "/check_profile", ok)
    assert resp.status_code == 200, resp.text
    assert resp.json()["pool"] == str((data_dir / "pool.jsonl").resolve())
    assert post(server, "/check_profile", {**ok, "model": "models:/student@champion"}).status_code == 200
    assert (
        post(
            server, "/check_profile", {**ok, "model": "Qwen/Qwen3-4B", "pool": "hf://owner/pool:train"}
        ).status_code
        == 200
    )

    outside = tmp_path / "pool.jsonl"
    outside.write_text((data_dir / "pool.jsonl").read_text())
    refused = [
        ({**ok, "pool": str(outside)}, "outside the allowed roots"),
        (
            {**ok, "pool": str(data_dir / ".." / outside.parent.name / "pool.jsonl")},
            "outside the allowed roots",
        ),
        ({**ok, "tree": "/etc/passwd"}, "outside the allowed roots"),
        ({**ok, "model": "/tmp"}, "outside the allowed roots"),
        ({**ok, "pool": "pool.jsonl"}, "must be absolute"),
        ({**ok, "engine": "openai", "base_url": "http://10.1.2.3:8000/v1"}, "not an allowed server"),
        ({**ok, "engine": "openai", "base_url": "http://127.0.0.1:80@example.com/v1"}, "user info"),
        ({**ok, "engine": "openai", "base_url": "http://localhost:x@example.com/v1"}, "user info"),
        ({**ok, "engine": "openai", "base_url": "http://2130706433:8000/v1"}, "not a canonical IP"),
    ]
    for body, message in refused:
        resp = post(server, "/check_profile", body)
        assert resp.status_code == 403, (body, resp.text)
        assert message in resp.json()["error"]
    missing = post(server, "/check_profile", {**ok, "tree": str(data_dir / "nope.json")})
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]
    assert post(server, "/check_profile", {**ok, "engine": "tgi"}).status_code == 400
    assert post(server, "/check_profile", {**ok, "model": "models:/bad/uri/x"}).status_code == 400
    assert post(server, "/check_profile", {**ok, "profile_id": "../../x"}).status_code == 400
    assert post(server, "/check_profile", {"model": str(tiny_student_dir)}).status_code == 400


def wait_task(server: dict[str, Any], task_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = server["client"].get("/profile/status", params={"task_id": task_id})
        assert status.status_code == 200, status.text
        body = status.json()
        if body["status"] not in ("in_progress", "pending"):
            return dict(body)
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish in {timeout_s}s")


def test_profile_task_and_weakest(server: dict[str, Any], data_dir: Path, tiny_student_dir: Path) -> None:
    body = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "pool.jsonl"),
        "tree": str(data_dir / "tree.json"),
        "samples_per_problem": 2,
        "sampling": {"temperature": 0.6, "max_new_tokens": 64, "seed": 1},
        "limit": 6,
        "chunk_size": 3,
        "weakest_k": 5,
    }
    submitted = post(server, "/profile/submit", body)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    assert wait_task(server, task_id)["status"] == "completed"
    result = server["client"].get("/profile/get", params={"task_id": task_id})
    assert result.status_code == 200, result.text
    prof = result.json()
    assert prof["profile_id"] == task_id and prof["problems"] == 6 and prof["attempts"] == 12
    assert sum(prof["status_counts"].values()) == 12
    out = Path(prof["out_dir"])
    assert out.is_relative_to(server["work"])
    assert len((out / "attempts.jsonl").read_text().splitlines()) == 12
    assert (out / "tree.png").is_file() and (out / "tree.html").is_file()

    weakest = post(server, "/weakest", {"profile_id": task_id, "k": 5})
    assert weakest.status_code == 200, weakest.text
    assert weakest.json() == prof["weakest"]
    assert len(weakest.json()) == min(5, len({tuple(c) for p in _pool(data_dir)[:6] for c in p["chains"]}))
    assert prof["mlflow_run_id"]

    # same profile_id again: everything is resumed, nothing regenerated
    again = post(server, "/profile/submit", {**body, "profile_id": "fixed-id"})
    first = wait_task(server, again.json()["task_id"])
    assert first["status"] == "completed"
    rerun = post(server, "/profile/submit", {**body, "profile_id": "fixed-id"})
    assert wait_task(server, rerun.json()["task_id"])["status"] == "completed"
    resumed = server["client"].get("/profile/get", params={"task_id": rerun.json()["task_id"]}).json()
    assert resumed["resumed"] == 6 and resumed["attempts"] == 12

    # the same profile_id with other sampling settings: refused, the saved profile stays as it was
    other = {
        **body,
        "profile_id": "fixed-id",
        "samples_per_problem": 1,
        "sampling": {**body["sampling"], "temperature": 1.0},
    }
    clash = post(server, "/profile/submit", other)
    assert wait_task(server, clash.json()["task_id"])["status"] == "failed"
    got = server["client"].get("/profile/get", params={"task_id": clash.json()["task_id"]})
    assert got.status_code == 409 and "sampling.temperature: 0.6 -> 1.0" in got.json()["error"]
    kept = Path(resumed["out_dir"])
    assert len((kept / "attempts.jsonl").read_text().splitlines()) == 12
    assert json.loads((kept / "request.json").read_text())["samples_per_problem"] == 2


def _pool(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in open(data_dir / "pool.jsonl")]


def test_profile_task_refused_and_malformed(server: dict[str, Any], data_dir: Path) -> None:
    refused = post(
        server,
        "/profile/submit",
        {"model": "/etc", "pool": str(data_dir / "pool.jsonl"), "tree": str(data_dir / "tree.json")},
    )
    assert refused.status_code == 200  # BentoML accepts the task, the task itself refuses
    task_id = refused.json()["task_id"]
    assert wait_task(server, task_id)["status"] == "failed"
    got = server["client"].get("/profile/get", params={"task_id": task_id})
    assert got.status_code == 403 and "outside the allowed roots" in got.json()["error"]

    bad = post(
        server,
        "/profile/submit",
        {
            "model": "x/y",
            "pool": str(data_dir / "pool.jsonl"),
            "tree": str(data_dir / "tree.json"),
            "samples_per_problem": 0,
        },
    )
    assert wait_task(server, bad.json()["task_id"])["status"] == "failed"
    got = server["client"].get("/profile/get", params={"task_id": bad.json()["task_id"]})
    assert got.status_code == 400 and "samples_per_problem" in got.text

    assert server["client"].get("/profile/status", params={"task_id": "nope"}).status_code == 404
    assert server["client"].get("/profile/status").status_code == 400


def test_weakest_errors(server: dict[str, Any]) -> None:
    missing = post(server, "/weakest", {"profile_id": "never-ran"})
    assert missing.status_code == 404 and "no finished profile" in missing.json()["error"]
    assert post(server, "/weakest", {"profile_id": "../secrets"}).status_code == 400
    assert post(server, "/weakest", {"profile_id": "x", "k": 0}).status_code == 400
    assert post(server, "/weakest", {}).status_code == 400


def test_python_client(server: dict[str, Any], data_dir: Path, tiny_student_dir: Path) -> None:
    from distill.judge import JudgeItem
    from skillprofiler.client import ProfilerClient, ProfilerError

    with ProfilerClient(f"http://127.0.0.1:{server['port']}") as client:
        assert client.ready()
        verdicts = client.judge(
            [JudgeItem(unique_id="a", response="\\boxed{0.25}", expected_answer="\\frac14")]
        )
        assert verdicts[0].status == "correct"
        request = {
            "model": str(tiny_student_dir),
            "pool": str(data_dir / "pool.jsonl"),
            "tree": str(data_dir / "tree.json"),
        }
        with pytest.raises(ProfilerError) as refused:
            client.profile(**{**request, "pool": "/etc/passwd"})
        assert refused.value.status_code == 403 and "outside the allowed roots" in refused.value.message
        summary = client.profile(
            **request,
            limit=3,
            sampling={"max_new_tokens": 48},
            profile_id="client-run",
            poll_s=0.3,
            timeout_s=240,
        )
        assert summary["profile_id"] == "client-run" and summary["attempts"] == 3
        assert client.weakest("client-run", k=2) == summary["weakest"][:2]
        with pytest.raises(ProfilerError) as missing:
            client.weakest("nothing-here")
        assert missing.value.status_code == 404
