"""The real gRPC server on loopback: tagging, streaming, health, reflection, bad input, failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from skillcore import SkillTree
from skilltag.backends.openai_chat import OpenAIBackend, OpenAIConfig
from skilltag.engine import TaggingEngine
from skilltag.testing import free_port, small_problems
from skilltagger._generated import tagging_pb2 as pb
from skilltagger._generated import tagging_pb2_grpc as pb_grpc
from skilltagger.client import TaggerClient, parse_address
from skilltagger.server import ServerLimits, TaggerServer
from skilltagger.testing import running_server


@pytest.fixture()
def client(server_address: str) -> Iterator[TaggerClient]:
    with TaggerClient.from_address(server_address, batch_size=4, timeout=60) as c:
        yield c


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.SkillTaggerStub]:
    channel = grpc.insecure_channel(parse_address(address))
    return channel, pb_grpc.SkillTaggerStub(channel)


def test_get_skill_tree(client: TaggerClient, tree: SkillTree) -> None:
    info = client.skill_tree()
    assert info.tree_hash == tree.content_hash()
    assert info.tree.to_dict() == tree.to_dict()
    assert info.backend == "embedding" and len(info.backend_config_hash) == 16


def test_tag_then_cache_hits_on_second_call(client: TaggerClient, tree: SkillTree) -> None:
    rows = small_problems(10, prefix="cache-")
    for row in rows:  # texts no other test has tagged through the shared engine's cache
        row["question"] += " (cache test)"
    first = client.tag(rows)  # 3 calls of at most 4
    assert [r.id for r in first] == [r["unique_id"] for r in rows]
    assert not any(r.from_cache for r in first)
    assert all(r.chains and all(tree.is_valid_chain(c) for c in r.chains) for r in first)
    assert sum(r["metadata"]["gold_chain"] in res.chains for r, res in zip(rows, first, strict=True)) >= 8
    assert all(r.scores is not None and len(r.scores) == len(r.chains) for r in first)
    second = client.tag(rows)
    assert all(r.from_cache for r in second)
    assert [r.chains for r in second] == [r.chains for r in first]
    third = client.tag(rows[:2], skip_cache=True)
    assert not any(r.from_cache for r in third)


def test_stream_answers_each_batch_in_order(client: TaggerClient) -> None:
    rows = small_problems(11, prefix="stream-")
    results = list(client.tag_stream(rows))
    assert [r.id for r in results] == [r["unique_id"] for r in rows]
    assert all(r.chains for r in results)


def test_health_and_reflection(server_address: str) -> None:
    channel = grpc.insecure_channel(parse_address(server_address))
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "skilldistill.tagging.v1.SkillTagger"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    listed = health.List(health_pb2.HealthListRequest(), timeout=5).statuses
    assert {k: v.status for k, v in listed.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING,
        "skilldistill.tagging.v1.SkillTagger": health_pb2.HealthCheckResponse.SERVING,
    }
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    )
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"skilldistill.tagging.v1.SkillTagger", "grpc.health.v1.Health"} <= names
    file_req = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="skilldistill.tagging.v1.SkillTagger"
    )
    answer = next(iter(refl.ServerReflectionInfo(iter([file_req]), timeout=5)))
    assert answer.file_descriptor_response.file_descriptor_proto
    channel.close()


def test_every_method_reflection_advertises_is_implemented(server_address: str) -> None:
    """What a grpcurl-style client sees: every service reflection lists, and every method of it (from the
    descriptors reflection serves), answers something other than UNIMPLEMENTED to an empty request."""
    channel = grpc.insecure_channel(parse_address(server_address))
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        return next(iter(refl.ServerReflectionInfo(iter([request]), timeout=5)))

    services = [
        s.name
        for s in ask(reflection_pb2.ServerReflectionRequest(list_services="")).list_services_response.service
    ]
    assert len(services) == 3, services  # SkillTagger, Health, ServerReflection
    checked = []
    for service in services:
        answer = ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        package, short = service.rsplit(".", 1)
        (desc,) = [s for f in files if f.package == package for s in f.service if s.name == short]
        for method in desc.method:
            path = f"/{service}/{method.name}"
            if method.client_streaming:
                call = channel.stream_stream(path) if method.server_streaming else channel.stream_unary(path)
                request: object = iter([b""])
            else:
                call = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
                request = b""
            try:
                reply = call(request, timeout=5)
                if method.server_streaming:
                    next(iter(reply), None)  # the first message (Watch answers at once), or the end
                    reply.cancel()
            except grpc.RpcError as exc:
                assert exc.code() != grpc.StatusCode.UNIMPLEMENTED, f"{path}: {exc.details()}"
            checked.append(path)
    assert "/grpc.health.v1.Health/List" in checked and len(checked) >= 7
    channel.close()


def test_health_answers_while_every_tagging_worker_is_busy(engine: TaggingEngine) -> None:
    """A liveness probe (a fresh connection, a 1-second deadline) gets SERVING while all tagging workers
    run uncached calls and more wait for one; the server's own gauge shows the calls in flight before and
    after the probe. A fully cached call is answered meanwhile too, without a tagging worker."""
    workers, calls = 2, 4
    server = TaggerServer(engine, host="127.0.0.1", port=free_port(), workers=workers).start()
    rows = small_problems(128, prefix="busy-")
    try:
        with (
            TaggerClient.from_address(server.address, batch_size=256, timeout=300) as client,
            ThreadPoolExecutor(calls) as pool,
        ):
            client.tag(rows[:3])  # cached from here on
            pending = [pool.submit(client.tag_batch, rows, skip_cache=True) for _ in range(calls)]
            waited = time.monotonic() + 60
            while not (server.load().active == workers and server.load().queued == calls - workers):
                assert time.monotonic() < waited, f"the pool never filled: {server.load()}"
                time.sleep(0.01)
            probe = grpc.insecure_channel(parse_address(server.address))
            status = health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            probe.close()
            answered_on_loop = server.service.answered_from_cache
            cached = client.tag_batch(rows[:3], timeout=5)
            after = server.load()
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            assert (
                all(r.from_cache for r in cached)
                and server.service.answered_from_cache == answered_on_loop + 1
            )
            assert after.active == workers and after.completed < calls, after  # still saturated
            assert not all(p.done() for p in pending)
            results = [p.result(timeout=300) for p in pending]
        assert all(len(r) == len(rows) and not any(x.from_cache for x in r) for r in results)
        assert server.load().active == 0 and server.load().queued == 0
    finally:
        server.stop(grace=1.0).wait()


def test_a_queued_call_whose_deadline_passes_never_runs(engine: TaggingEngine) -> None:
    workers = 1
    server = TaggerServer(engine, host="127.0.0.1", port=free_port(), workers=workers).start()
    rows = small_problems(64, prefix="queued-")
    try:
        with (
            TaggerClient.from_address(server.address, batch_size=256, timeout=300) as client,
            ThreadPoolExecutor(2) as pool,
        ):
            busy = [pool.submit(client.tag_batch, rows, skip_cache=True) for _ in range(2)]
            while server.load().active < workers:
                time.sleep(0.01)
            with pytest.raises(grpc.RpcError) as info:
                client.tag_batch(rows[:1], skip_cache=True, timeout=0.05)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            for b in busy:
                b.result(timeout=300)
        time.sleep(0.2)
        load = server.load()
        assert load.queued == 0 and load.active == 0 and load.completed == 2, load  # the third never ran
    finally:
        server.stop(grace=1.0).wait()


LIMITS = ServerLimits()


def _problem(**kw: str) -> pb.Problem:
    base = {"id": "x", "question": "Solve 2x = 4.", "solution": "x = 2"}
    base.update(kw)
    return pb.Problem(**base)


BAD_REQUESTS = [
    ("no problems", pb.TagProblemsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "no problems"),
    (
        "empty question",
        pb.TagProblemsRequest(problems=[_problem(question="  ")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty question",
    ),
    (
        "empty id",
        pb.TagProblemsRequest(problems=[_problem(id="")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty id",
    ),
    (
        "duplicate id",
        pb.TagProblemsRequest(problems=[_problem(), _problem(question="Solve 3x = 9.")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate id",
    ),
    (
        "oversized question",
        pb.TagProblemsRequest(problems=[_problem(question="x" * (LIMITS.max_question_chars + 1))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "question has 20001 characters",
    ),
    (
        "oversized solution",
        pb.TagProblemsRequest(problems=[_problem(solution="y" * (LIMITS.max_solution_chars + 1))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "solution has",
    ),
    (
        "oversized id",
        pb.TagProblemsRequest(problems=[_problem(id="i" * 300)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id longer than",
    ),
    (
        "too many problems",
        pb.TagProblemsRequest(
            problems=[_problem(id=str(i)) for i in range(LIMITS.max_problems_per_call + 1)]
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many problems",
    ),
    (
        "unknown tree",
        pb.TagProblemsRequest(problems=[_problem()], tree_hash="0" * 64),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown tree hash",
    ),
]


@pytest.mark.parametrize(
    ("label", "request_msg", "code", "text"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_is_rejected_clearly(
    server_address: str, label: str, request_msg: pb.TagProblemsRequest, code: grpc.StatusCode, text: str
) -> None:
    channel, stub = _stub(server_address)
    with pytest.raises(grpc.RpcError) as info:
        stub.TagProblems(request_msg, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details()
    # the server stays up and keeps answering
    ok = stub.TagProblems(pb.TagProblemsRequest(problems=[_problem(id="ok")]), timeout=30)
    assert ok.results[0].chains
    channel.close()


def test_malformed_bytes_are_invalid_argument(server_address: str) -> None:
    channel = grpc.insecure_channel(parse_address(server_address))
    raw = channel.unary_unary("/skilldistill.tagging.v1.SkillTagger/TagProblems")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid skilldistill.tagging.v1.TagProblemsRequest" in info.value.details()
    raw_tree = channel.unary_unary("/skilldistill.tagging.v1.SkillTagger/GetSkillTree")
    with pytest.raises(grpc.RpcError) as info:
        raw_tree(b"\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_stream_with_a_bad_batch_fails_after_good_ones(server_address: str) -> None:
    channel, stub = _stub(server_address)
    good = pb.TagProblemsRequest(problems=[_problem(id="s1")])
    bad = pb.TagProblemsRequest(problems=[_problem(id="s2", question="")])
    responses = stub.TagStream(iter([good, bad, good]), timeout=30)
    first = next(responses)
    assert first.results[0].id == "s1"
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty question" in info.value.details()
    channel.close()


def test_client_respects_tree_hash_pin(server_address: str, tree: SkillTree) -> None:
    with TaggerClient.from_address(server_address, tree_hash=tree.content_hash()) as pinned:
        assert pinned.tag(small_problems(1))[0].chains
    with (
        TaggerClient.from_address(server_address, tree_hash="deadbeef") as wrong,
        pytest.raises(grpc.RpcError) as info,
    ):
        wrong.tag(small_problems(1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_rejects_non_grpc_addresses() -> None:
    with pytest.raises(ValueError, match="grpc://host:port"):
        parse_address("http://localhost:80")


def test_backend_failure_is_unavailable_for_that_request_only(tree: SkillTree) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(OpenAIConfig(base_urls=(dead,), model="m", max_retries=2, backoff_base=0.01))
    engine = TaggingEngine(tree, backend)
    with running_server(engine) as address, TaggerClient.from_address(address, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.tag(small_problems(2))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "failed 3 times" in info.value.details()
        assert backend.counters["retries"] >= 2  # the failing node query retried twice before giving up
        assert client.health() == "SERVING"
        assert client.skill_tree().tree_hash == tree.content_hash()
    backend.close()


@pytest.mark.timeout(120)  # a hang guard; the status code proves the deadline
def test_client_deadline_is_honoured(tree: SkillTree) -> None:
    # a socket that accepts connections and never answers
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hole.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{hole.getsockname()[1]}/v1"
    backend = OpenAIBackend(OpenAIConfig(base_urls=(url,), model="m", request_timeout=60))
    engine = TaggingEngine(tree, backend)
    try:
        with running_server(engine) as address, TaggerClient.from_address(address) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.tag(small_problems(1), timeout=1.5)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert client.health() == "SERVING"
    finally:
        stop.set()
        thread.join()
        for s in accepted:
            s.close()
        hole.close()
        backend.close()
