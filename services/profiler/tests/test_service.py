"""The profiling service as a real `bentoml serve` process, called over HTTP for every API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from distill.testing import free_port, server_process
from skillcore import write_jsonl

MAX_BODY = 256 * 1024
TOWER = "so \\boxed{2^{2^{2^{2^{2^{2}}}}}}"  # math-verify works on it until the judge's timeout


def bentoml_cli() -> str:
    return str(Path(sys.executable).with_name("bentoml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, world_tree, world_pool_small) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("allowed")
    world_tree.save(root / "tree.json")
    write_jsonl(root / "pool.jsonl", world_pool_small[:40])
    write_jsonl(root / "long-pool.jsonl", world_pool_small)  # a task that runs for minutes unless stopped
    (root / "empty.jsonl").write_text("")
    rows = [p.model_dump(mode="json") for p in world_pool_small[:4]]
    rows[1]["chains"] = [["No Such Skill", "Nowhere"]]
    rows[3]["chains"] = [*rows[3]["chains"], ["Made Up"]]
    write_jsonl(root / "unknown-chains.jsonl", rows)
    broken = root / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen3",')  # cut short
    return root


def fake_hub_cache(root: Path, repo_id: str) -> Path:
    """A Hugging Face hub cache holding ``repo_id``'s config.json only (what an offline check looks for)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return root


def server_env(work: Path, data_dir: Path, tiny_student_dir: Path) -> dict[str, str]:
    return {
        "SKILLPROFILER_ALLOWED_ROOTS": f"{data_dir}:{tiny_student_dir}",
        "SKILLPROFILER_WORK_DIR": str(work),
        "SKILLPROFILER_JUDGE_WORKERS": "2",
        "SKILLPROFILER_JUDGE_MAX_ITEMS": "50",
        "SKILLPROFILER_MAX_BODY_BYTES": str(MAX_BODY),
        "SKILLPROFILER_MAX_NEW_TOKENS": "4096",
        "SKILLPROFILER_MLFLOW": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(fake_hub_cache(work / "hf-hub", "Qwen/Qwen3-4B")),
        "CUDA_VISIBLE_DEVICES": "",
        "BENTOML_HOME": str(work / "bentoml-home"),
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def profiler_server(work: Path, data_dir: Path, tiny_student_dir: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    env = server_env(work, data_dir, tiny_student_dir)
    argv = [bentoml_cli(), "serve", "skillprofiler.service:Profiler", "--port", str(port)]
    log = work / "server.log"
    with (
        server_process(
            argv,
            ready_url=f"http://127.0.0.1:{port}/readyz",
            env=env,
            cwd=work,
            startup_timeout_s=180,
            log_file=log,
        ) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
    ):
        yield {
            "client": client,
            "work": work,
            "port": port,
            "mlflow": env["MLFLOW_TRACKING_URI"],
            "log": log,
            "process": process,
        }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tiny_student_dir: Path
) -> Iterator[dict[str, Any]]:
    with profiler_server(tmp_path_factory.mktemp("work"), data_dir, tiny_student_dir) as running:
        yield running


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


def listening_addresses(port: int) -> list[str] | None:
    """The local addresses of the TCP sockets listening on ``port``, from the kernel's tables (Linux);
    None where there are no such tables."""
    import ipaddress

    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    found = []
    for table in tables:
        for line in table.read_text().splitlines()[1:] if table.exists() else []:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host order words
                found.append(str(ipaddress.ip_address(words)))
    return found


def test_binds_loopback_only(server: dict[str, Any]) -> None:
    """Checked on every machine: the listening socket's address (where the kernel lists it), and a
    connection to a non-loopback address of this host being refused (where it has one)."""
    import socket

    assert httpx.get(f"http://127.0.0.1:{server['port']}/healthz", timeout=3).status_code == 200
    bound = listening_addresses(server["port"])
    if bound is not None:
        assert bound and all(a == "127.0.0.1" for a in bound), bound
    others = [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    others = [a for a in others if not a.startswith("127.")]
    assert bound is not None or others, "nothing to check the binding with on this machine"
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
    assert post(server, "/check_profile", {**ok, "model": "Qwen/Qwen3-4B"}).status_code == 200  # cached
    offline_pool = post(server, "/check_profile", {**ok, "pool": "hf://owner/pool:train"})
    assert offline_pool.status_code == 400 and "Couldn't reach 'owner/pool'" in offline_pool.json()["error"]

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
    # refused at submit (the request is checked before BentoML stores it as a task)
    refused = post(
        server,
        "/profile/submit",
        {"model": "/etc", "pool": str(data_dir / "pool.jsonl"), "tree": str(data_dir / "tree.json")},
    )
    assert refused.status_code == 403 and "outside the allowed roots" in refused.json()["error"]

    bad = post(
        server,
        "/profile/submit",
        {
            "model": "Qwen/Qwen3-4B",
            "pool": str(data_dir / "pool.jsonl"),
            "tree": str(data_dir / "tree.json"),
            "samples_per_problem": 0,
        },
    )
    assert bad.status_code == 400 and "samples_per_problem" in bad.json()["error"]

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


def _log_since(server: dict[str, Any], offset: int) -> str:
    time.sleep(0.5)  # the worker's log lines reach the file shortly after the answer
    return server["log"].read_text(encoding="utf-8", errors="replace")[offset:]


def _log_size(server: dict[str, Any]) -> int:
    return len(server["log"].read_text(encoding="utf-8", errors="replace"))


def test_submit_missing_fields_starts_no_task(server: dict[str, Any], data_dir: Path) -> None:
    start = _log_size(server)
    resp = post(server, "/profile/submit", {"pool": str(data_dir / "pool.jsonl")})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert "missing required field(s): model, tree" in error and "task_id" not in resp.json()
    for body in ({}, [1, 2]):
        assert post(server, "/profile/submit", body).status_code == 400
    not_json = server["client"].post(
        "/profile/submit", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert "is submitted" not in _log_since(server, start)  # BentoML stored no task


def test_empty_pool_refused(server: dict[str, Any], data_dir: Path, tiny_student_dir: Path) -> None:
    body = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "empty.jsonl"),
        "tree": str(data_dir / "tree.json"),
    }
    start = _log_size(server)
    for path in ("/check_profile", "/profile/submit"):
        resp = post(server, path, body)
        assert resp.status_code == 400, (path, resp.text)
        assert "the pool has no problems" in resp.json()["error"]
    assert "is submitted" not in _log_since(server, start)


def test_unknown_chains_refused(server: dict[str, Any], data_dir: Path, tiny_student_dir: Path) -> None:
    body = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "unknown-chains.jsonl"),
        "tree": str(data_dir / "tree.json"),
    }
    for path in ("/check_profile", "/profile/submit"):
        resp = post(server, path, body)
        assert resp.status_code == 400, (path, resp.text)
        error = resp.json()["error"]
        assert "2 chain(s) are not paths of the skill tree" in error
        assert "row 2" in error and "No Such Skill->Nowhere" in error
        assert "row 4" in error and "Made Up" in error


def test_bad_model_references_are_client_errors(server: dict[str, Any], data_dir: Path) -> None:
    ok = {"pool": str(data_dir / "pool.jsonl"), "tree": str(data_dir / "tree.json")}
    cases = [
        (str(data_dir / "broken-model"), "config.json is not readable JSON"),
        ("nobody/not-cached-model", "not in the local Hugging Face cache"),
    ]
    for model, message in cases:
        for path in ("/check_profile", "/profile/submit"):
            resp = post(server, path, {**ok, "model": model})
            assert resp.status_code == 400, (model, path, resp.text)
            assert message in resp.json()["error"]
    cached = post(server, "/check_profile", {**ok, "model": "Qwen/Qwen3-4B"})
    assert cached.status_code == 200, cached.text


def test_client_errors_logged_in_one_line(server: dict[str, Any], data_dir: Path) -> None:
    start = _log_size(server)
    assert post(server, "/judge", {"items": []}).status_code == 400  # BentoML's own payload validation
    assert post(server, "/check_profile", {"model": "x"}).status_code == 400
    assert post(server, "/weakest", {"profile_id": "../x"}).status_code == 400
    assert post(server, "/profile/submit", {}).status_code == 400
    log = _log_since(server, start)
    assert "Traceback" not in log and "[ERROR]" not in log
    assert "WARNING" in log and "validation error" in log and "profile/submit refused (400)" in log


def test_server_faults_keep_error_and_traceback() -> None:
    import logging

    from pydantic import BaseModel, ValidationError
    from skillprofiler.service import ClientErrorLogFilter

    class M(BaseModel):
        x: int

    try:
        M.model_validate({})
    except ValidationError:
        client = logging.LogRecord(
            "b", logging.ERROR, __file__, 1, "Exception on %s", ("/j",), sys.exc_info()
        )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        fault = logging.LogRecord("b", logging.ERROR, __file__, 1, "Exception on %s", ("/j",), sys.exc_info())
    log_filter = ClientErrorLogFilter()
    assert log_filter.filter(client) and log_filter.filter(fault)
    assert client.levelname == "WARNING" and client.exc_info is None
    assert "x: missing" not in client.getMessage() and "missing required field(s): x" in client.getMessage()
    assert fault.levelname == "ERROR" and fault.exc_info is not None


def test_max_new_tokens_is_capped(server: dict[str, Any], data_dir: Path, tiny_student_dir: Path) -> None:
    """10^12 new tokens ran forever: refused at /check_profile and /profile/submit (no task), naming the
    field, the value and the cap (the tiny student's context is 1,024; the configured maximum 4,096)."""
    ok = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "pool.jsonl"),
        "tree": str(data_dir / "tree.json"),
    }
    start = _log_size(server)
    for path in ("/check_profile", "/profile/submit"):
        resp = post(server, path, {**ok, "sampling": {"max_new_tokens": 10**12}})
        assert resp.status_code == 400, (path, resp.text)
        error = resp.json()["error"]
        assert "sampling.max_new_tokens 1000000000000 is over the cap of 1024" in error
        assert "max_position_embeddings" in error
    assert "is submitted" not in _log_since(server, start)
    hub = {**ok, "model": "Qwen/Qwen3-4B", "sampling": {"max_new_tokens": 5000}}  # context unknown here
    resp = post(server, "/check_profile", hub)
    assert resp.status_code == 400 and "over the cap of 4096 (the configured maximum)" in resp.json()["error"]
    fits = post(server, "/check_profile", {**ok, "sampling": {"max_new_tokens": 1024}})
    assert fits.status_code == 200 and fits.json()["max_new_tokens"] == 1024
    default = post(server, "/check_profile", ok)  # the default (8192) is lowered to the cap, not refused
    assert default.status_code == 200 and default.json()["max_new_tokens"] == 1024


def test_judge_item_and_body_limits(server: dict[str, Any]) -> None:
    item = {"unique_id": "a", "response": "\\boxed{1}", "expected_answer": "1"}
    over = post(server, "/judge", {"items": [item] * 51})
    assert over.status_code == 400 and "51 items, over the limit of 50" in over.json()["error"]
    assert post(server, "/judge", {"items": [item] * 50}).status_code == 200

    big = {"items": [{**item, "response": "x" * (MAX_BODY + 10)}]}
    resp = post(server, "/judge", big)  # refused from its Content-Length
    assert resp.status_code == 413 and "SKILLPROFILER_MAX_BODY_BYTES" in resp.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it is read
        yield b'{"items": [{"unique_id": "a", "expected_answer": "1", "response": "'
        for _ in range(2 * MAX_BODY // 65536):
            yield b"x" * 65536
        yield b'"}]}'

    streamed = server["client"].post("/judge", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "over the limit" in streamed.json()["error"]
    submit = server["client"].post(
        "/profile/submit", content=json.dumps(big), headers={"content-type": "application/json"}
    )
    assert submit.status_code == 413
    assert server["client"].get("/healthz").status_code == 200


def test_judge_budget_answers_the_rest_timeout(server: dict[str, Any]) -> None:
    items = [{"unique_id": f"t{i}", "response": TOWER, "expected_answer": str(i)} for i in range(6)]
    items.append({"unique_id": "ok", "response": "\\boxed{7}", "expected_answer": "7"})
    resp = post(server, "/judge", {"items": items, "budget_s": 1.0})
    assert resp.status_code == 200, resp.text
    statuses = [v["status"] for v in resp.json()["verdicts"]]
    assert statuses == ["timeout"] * 6 + ["correct"]  # never "wrong"
    assert post(server, "/judge", {"items": items, "budget_s": 0}).status_code == 400


def test_deep_nesting_is_the_same_error_every_time(server: dict[str, Any]) -> None:
    answer = "1"
    for _ in range(500):
        answer = "\\frac{" + answer + "}{1}"
    body = {"items": [{"unique_id": "deep", "response": f"\\boxed{{{answer}}}", "expected_answer": "1"}]}
    assert [post(server, "/judge", body).json()["verdicts"][0]["status"] for _ in range(3)] == ["error"] * 3


def test_a_slow_judge_request_does_not_hold_a_small_one(server: dict[str, Any]) -> None:
    """No lock across requests: a one-item request sent while a slow request (power towers, each judged
    until the timeout) runs is answered while the slow one is still running."""
    import threading

    port = server["port"]
    slow = {
        "items": [{"unique_id": f"s{i}", "response": TOWER, "expected_answer": str(i)} for i in range(12)]
    }
    small = {"items": [{"unique_id": "q", "response": "\\boxed{\\frac{1}{2}}", "expected_answer": "0.5"}]}
    slow_result: list[httpx.Response] = []

    def send_slow() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            slow_result.append(c.post("/judge", json=slow))

    thread = threading.Thread(target=send_slow)
    thread.start()
    time.sleep(1.0)  # the slow request is being judged
    resp = post(server, "/judge", small)
    assert resp.status_code == 200 and resp.json()["verdicts"][0]["status"] == "correct"
    assert thread.is_alive(), "the slow request finished first: nothing was shown"
    thread.join(120)
    assert [v["status"] for v in slow_result[0].json()["verdicts"]] == ["timeout"] * 12


def test_limit_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from skillprofiler.config import Settings

    defaults = Settings.from_env()
    assert (defaults.judge_max_items, defaults.judge_budget_s) == (1000, 30.0)
    assert (defaults.max_body_bytes, defaults.max_new_tokens) == (16 * 1024 * 1024, 32768)
    monkeypatch.setenv("SKILLPROFILER_JUDGE_BUDGET_S", "2.5")
    monkeypatch.setenv("SKILLPROFILER_MAX_NEW_TOKENS", "2048")
    assert Settings.from_env().judge_budget_s == 2.5 and Settings.from_env().max_new_tokens == 2048
    for name, value in (("SKILLPROFILER_JUDGE_MAX_ITEMS", "0"), ("SKILLPROFILER_MAX_BODY_BYTES", "16MB")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=name):
            Settings.from_env()
        monkeypatch.delenv(name)


# ---------------------------------------------------------------------------- stopping tasks
def long_task(data_dir: Path, tiny_student_dir: Path) -> dict[str, Any]:
    return {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "long-pool.jsonl"),
        "tree": str(data_dir / "tree.json"),
        "samples_per_problem": 2,
        # near-uniform sampling over the tiny student's 1,026 tokens: answers run to the token cap
        "sampling": {"temperature": 5.0, "top_p": 1.0, "max_new_tokens": 768, "seed": 0},
        "chunk_size": 2,
        "batch_size": 4,
    }


def cpu_seconds(process: Any, window_s: float) -> float:
    """CPU time the server's process tree (arbiter, worker, judge subprocesses) used over ``window_s``."""
    import psutil

    def total() -> float:
        procs = [psutil.Process(process.pid)]
        procs += procs[0].children(recursive=True)
        used = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                used += times.user + times.system
        return used

    before = total()
    time.sleep(window_s)
    return total() - before


def saved_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_answers(path: Path, at_least: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while saved_lines(path) < at_least:
        assert time.monotonic() < deadline, f"{path} has fewer than {at_least} answers after {timeout_s}s"
        time.sleep(0.2)


def test_cancel_stops_generation_keeps_answers_and_resumes(
    server: dict[str, Any], data_dir: Path, tiny_student_dir: Path
) -> None:
    client = server["client"]
    body = long_task(data_dir, tiny_student_dir)
    task_id = post(server, "/profile/submit", body).json()["task_id"]
    attempts = server["work"] / "profiles" / task_id / "attempts.jsonl"
    wait_for_answers(attempts, 4)  # two chunks answered and saved
    assert cpu_seconds(server["process"], 1.0) > 0.2  # generating

    cancel = client.put("/profile/cancel", params={"task_id": task_id})
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "canceling" and cancel.json()["profile_id"] == task_id
    assert wait_task(server, task_id)["status"] == "canceled"
    assert cpu_seconds(server["process"], 2.0) < 0.2  # the worker went idle: no generation left running
    result = client.get("/profile/get", params={"task_id": task_id})
    assert result.status_code == 409
    assert "cancelled by request" in result.text and f"profile_id={task_id!r}" in result.text

    saved = saved_lines(attempts)
    assert saved % 2 == 0 and 4 <= saved < 800  # whole problems only (both samples), far from done
    for line in attempts.read_text().splitlines():
        json.loads(line)
    assert client.put("/profile/cancel", params={"task_id": task_id}).status_code == 409  # finished
    assert client.put("/profile/cancel", params={"task_id": "no-such-task"}).status_code == 404
    assert client.put("/profile/cancel").status_code == 400

    # a retried task is a new task, cancellable like a submitted one
    retried = client.post("/profile/retry", params={"task_id": task_id})
    assert retried.status_code == 200, retried.text
    retry_id = retried.json()["task_id"]
    assert client.put("/profile/cancel", params={"task_id": retry_id}).status_code == 200
    assert wait_task(server, retry_id)["status"] == "canceled"

    # the saved answers resume: the same request over those problems generates nothing new
    resumed = post(server, "/profile/submit", {**body, "profile_id": task_id, "limit": saved // 2})
    final = wait_task(server, resumed.json()["task_id"])
    assert final["status"] == "completed", final
    answer = client.get("/profile/get", params={"task_id": resumed.json()["task_id"]}).json()
    assert answer["resumed"] == saved // 2 and answer["attempts"] == saved


def test_sigterm_during_a_task_drains_within_the_limit(
    tmp_path: Path, data_dir: Path, tiny_student_dir: Path
) -> None:
    """SIGTERM to `bentoml serve` (what Docker and Kubernetes send) while a profile generates: the task
    is stopped, its finished answers stay, and the whole server exits within the drain limit."""
    import psutil

    drain_limit_s = 30
    with profiler_server(tmp_path, data_dir, tiny_student_dir) as running:
        process = running["process"]
        task_id = post(running, "/profile/submit", long_task(data_dir, tiny_student_dir)).json()["task_id"]
        attempts = tmp_path / "profiles" / task_id / "attempts.jsonl"
        wait_for_answers(attempts, 2)
        tree = psutil.Process(process.pid).children(recursive=True)
        assert tree, "bentoml serve runs its worker as a child process"
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=drain_limit_s)  # raises TimeoutExpired past the limit
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, f"processes left running: {alive}"
        log = running["log"].read_text()
        assert "SIGTERM: stopping 1 profiling task(s)" in log
        for line in attempts.read_text().splitlines():
            json.loads(line)  # every saved answer is whole


def test_hostile_requests_are_refused_in_one_line_and_the_server_still_stops(
    tmp_path: Path, data_dir: Path, tiny_student_dir: Path
) -> None:
    """Trees it cannot walk (a YAML anchor that contains itself, 1,000 levels of JSON), a pool row nested
    3,000 deep, a model folder without weights and a misspelled field: each is a one-line 400 from
    /check_profile and /profile/submit (no task stored, no worker held); the server still answers, and
    SIGTERM stops it within the drain limit."""
    import psutil
    from skillcore.testing import deep_pool_row, hostile_trees

    trees = hostile_trees(data_dir / "hostile")
    deep_pool = data_dir / "hostile" / "deep-pool.jsonl"
    deep_pool.write_text(deep_pool_row() + "\n")
    no_weights = data_dir / "hostile" / "no-weights"
    no_weights.mkdir(exist_ok=True)
    (no_weights / "config.json").write_text((tiny_student_dir / "config.json").read_text())
    ok = {
        "model": str(tiny_student_dir),
        "pool": str(data_dir / "pool.jsonl"),
        "tree": str(data_dir / "tree.json"),
    }
    cases = [
        ({**ok, "tree": str(trees["self_reference"])}, "the skill tree contains itself"),
        ({**ok, "tree": str(trees["deep"])}, "nested too deeply to read"),
        ({**ok, "pool": str(deep_pool)}, "nested deeper than 64 levels"),
        ({**ok, "model": str(no_weights)}, "holds no weights (no model.safetensors"),
        ({**ok, "modle": "x"}, "unknown field(s) 'modle'"),
    ]  # fmt: skip
    drain_limit_s = 30
    with profiler_server(tmp_path, data_dir, tiny_student_dir) as running:
        client = running["client"]
        for body, expected in cases:
            for path in ("/check_profile", "/profile/submit"):
                resp = client.post(path, json=body, timeout=60)  # before: 500, or no answer at all
                assert resp.status_code == 400, (path, body, resp.text[:2000])
                error = resp.json()["error"]
                assert expected in error and "\n" not in error, (path, error[:2000])
        judge = client.post("/judge", json={"itemz": []}, timeout=60)
        assert judge.status_code == 400 and "unknown field(s) 'itemz'" in judge.json()["error"]
        assert client.get("/readyz").status_code == 200
        item = {"unique_id": "m", "response": "\\boxed{1}", "expected_answer": "1"}
        assert client.post("/judge", json={"items": [item]}).json()["counts"] == {"correct": 1}
        assert not list((tmp_path / "profiles").glob("*/attempts.jsonl"))  # no task ran

        process = running["process"]
        tree = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=drain_limit_s)  # raises TimeoutExpired past the limit
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, f"processes left running: {alive}"
        log = running["log"].read_text()
        assert "RecursionError" not in log and "Traceback" not in log, log[-3000:]
