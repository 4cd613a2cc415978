"""Python client for the tagging service, with the same batching as the engine.

with TaggerClient.from_address("grpc://127.0.0.1:50051") as client:
    results = client.tag(problems)           # any number; split into calls of batch_size
    for r in client.tag_stream(problems):    # one bidirectional stream for bulk work
        ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from skillcore import PoolProblem, SkillTree
from skilltag.engine import ProblemInput, TagResult

from skilltagger._generated import tagging_pb2 as pb
from skilltagger._generated import tagging_pb2_grpc as pb_grpc

ProblemLike = ProblemInput | PoolProblem | Mapping[str, Any]


def parse_address(address: str) -> str:
    """``grpc://host:port`` (or plain ``host:port``) -> the gRPC target ``host:port``."""
    target = address.removeprefix("grpc://")
    if not target or ":" not in target or target.startswith("http"):
        raise ValueError(f"not a gRPC address: {address!r} (expected grpc://host:port)")
    return target


@dataclass(frozen=True)
class SkillTreeInfo:
    tree: SkillTree
    tree_hash: str
    backend: str
    backend_config_hash: str


def _to_proto(problem: ProblemLike) -> pb.Problem:
    p = problem if isinstance(problem, ProblemInput) else ProblemInput.from_record(problem)
    return pb.Problem(id=p.id, question=p.question, solution=p.solution)


def result_from_proto(msg: Any) -> TagResult:
    chains = [list(c.names) for c in msg.chains]
    has_scores = bool(msg.chains) and all(len(c.scores) == len(c.names) for c in msg.chains)
    return TagResult(
        id=msg.id,
        chains=chains,
        scores=[list(c.scores) for c in msg.chains] if has_scores else None,
        backend=msg.backend,
        backend_config_hash=msg.backend_config_hash,
        tree_hash=msg.tree_hash,
        from_cache=msg.from_cache,
    )


class TaggerClient:
    def __init__(
        self,
        channel: grpc.Channel,
        *,
        batch_size: int = 64,
        timeout: float | None = 300.0,
        parallel_calls: int = 4,
        tree_hash: str = "",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.channel = channel
        self.stub = pb_grpc.SkillTaggerStub(channel)
        self.batch_size = batch_size
        self.timeout = timeout
        self.parallel_calls = max(1, parallel_calls)
        self.tree_hash = tree_hash

    @classmethod
    def from_address(cls, address: str, **kwargs: Any) -> TaggerClient:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        return cls(grpc.insecure_channel(parse_address(address), options=options), **kwargs)

    # ------------------------------------------------------------------ calls
    def skill_tree(self, *, timeout: float | None = None) -> SkillTreeInfo:
        resp = self.stub.GetSkillTree(pb.GetSkillTreeRequest(), timeout=timeout or self.timeout)
        return SkillTreeInfo(
            tree=SkillTree.from_dict(json.loads(resp.tree_json)),
            tree_hash=resp.tree_hash,
            backend=resp.backend,
            backend_config_hash=resp.backend_config_hash,
        )

    def tag_batch(
        self, problems: Sequence[ProblemLike], *, skip_cache: bool = False, timeout: float | None = None
    ) -> list[TagResult]:
        """One TagProblems call (the server enforces its own per-call limit)."""
        request = pb.TagProblemsRequest(
            problems=[_to_proto(p) for p in problems], tree_hash=self.tree_hash, skip_cache=skip_cache
        )
        resp = self.stub.TagProblems(request, timeout=timeout or self.timeout)
        return [result_from_proto(r) for r in resp.results]

    def tag(
        self, problems: Sequence[ProblemLike], *, skip_cache: bool = False, timeout: float | None = None
    ) -> list[TagResult]:
        """Tag any number of problems in calls of ``batch_size``, up to ``parallel_calls`` at once."""
        batches = [problems[i : i + self.batch_size] for i in range(0, len(problems), self.batch_size)]
        if len(batches) <= 1:
            return self.tag_batch(problems, skip_cache=skip_cache, timeout=timeout) if batches else []
        with ThreadPoolExecutor(self.parallel_calls) as pool:
            parts = pool.map(lambda b: self.tag_batch(b, skip_cache=skip_cache, timeout=timeout), batches)
            return [r for part in parts for r in part]

    def tag_stream(
        self, problems: Iterable[ProblemLike], *, skip_cache: bool = False, timeout: float | None = None
    ) -> Iterator[TagResult]:
        """Bulk tagging over one TagStream call; results come back in input order."""

        def requests() -> Iterator[pb.TagProblemsRequest]:
            batch: list[pb.Problem] = []
            for problem in problems:
                batch.append(_to_proto(problem))
                if len(batch) >= self.batch_size:
                    yield pb.TagProblemsRequest(
                        problems=batch, tree_hash=self.tree_hash, skip_cache=skip_cache
                    )
                    batch = []
            if batch:
                yield pb.TagProblemsRequest(problems=batch, tree_hash=self.tree_hash, skip_cache=skip_cache)

        for resp in self.stub.TagStream(requests(), timeout=timeout):
            for r in resp.results:
                yield result_from_proto(r)

    def health(self, service: str = "", *, timeout: float = 5.0) -> str:
        """The health status name (``SERVING``, ``NOT_SERVING``, ...)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TaggerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
