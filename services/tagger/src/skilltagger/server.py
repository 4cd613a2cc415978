"""The gRPC server: SkillTagger (skilldistill.tagging.v1), grpc.health.v1 and server reflection.

Every request is validated before any work: bad input is INVALID_ARGUMENT (too many problems is
RESOURCE_EXHAUSTED) with a message naming the offending problem; a backend failure is UNAVAILABLE for
that request only; the client's deadline is passed down to the walk and the backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from skilltag.engine import BackendUnavailable, DeadlineExceeded, ProblemInput, TaggingEngine, TagResult

from skilltagger._generated import tagging_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SkillTagger"].full_name


@dataclass(frozen=True)
class ServerLimits:
    max_problems_per_call: int = 256
    max_id_chars: int = 256
    max_question_chars: int = 20_000
    max_solution_chars: int = 200_000
    max_message_bytes: int = 64 * 1024 * 1024


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the handler can answer INVALID_ARGUMENT."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe_parser(message_cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_cls.FromString(data)
        except (DecodeError, ValueError) as exc:
            return _Malformed(f"request is not a valid {message_cls.DESCRIPTOR.full_name}: {exc}")

    return parse


class _RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def result_to_proto(result: TagResult) -> pb.ProblemResult:
    chains = []
    for i, names in enumerate(result.chains):
        scores = result.scores[i] if result.scores is not None else []
        chains.append(pb.Chain(names=names, scores=scores))
    return pb.ProblemResult(
        id=result.id,
        chains=chains,
        backend=result.backend,
        backend_config_hash=result.backend_config_hash,
        tree_hash=result.tree_hash,
        from_cache=result.from_cache,
    )


class SkillTaggerService:
    def __init__(self, engine: TaggingEngine, limits: ServerLimits) -> None:
        self.engine = engine
        self.limits = limits
        self.tree_json = engine.tree.to_json()

    # ------------------------------------------------------------------ validation
    def validate(self, request: Any) -> list[ProblemInput]:
        lim = self.limits
        if isinstance(request, _Malformed):
            raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        if request.tree_hash and request.tree_hash != self.engine.tree_hash:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown tree hash {request.tree_hash!r}: this server tags against tree "
                f"{self.engine.tree_hash} (see GetSkillTree)",
            )
        n = len(request.problems)
        if n == 0:
            raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, "the request holds no problems")
        if n > lim.max_problems_per_call:
            raise _RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many problems in one call: {n} > {lim.max_problems_per_call}; split the batch "
                "(TaggerClient does) or use TagStream",
            )
        seen: set[str] = set()
        out = []
        for i, p in enumerate(request.problems):
            where = f"problems[{i}] (id={p.id[:40]!r})"
            if not p.id:
                raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"problems[{i}]: empty id")
            if len(p.id) > lim.max_id_chars:
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{where}: id longer than {lim.max_id_chars} characters"
                )
            if p.id in seen:
                raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: duplicate id in one request")
            seen.add(p.id)
            if not p.question.strip():
                raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: empty question")
            if len(p.question) > lim.max_question_chars:
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: question has {len(p.question)} characters, limit {lim.max_question_chars}",
                )
            if len(p.solution) > lim.max_solution_chars:
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: solution has {len(p.solution)} characters, limit {lim.max_solution_chars}",
                )
            out.append(ProblemInput(p.id, p.question, p.solution))
        return out

    # ------------------------------------------------------------------ handlers
    def _tag(self, request: Any, context: grpc.ServicerContext) -> pb.TagProblemsResponse:
        problems = self.validate(request)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        try:
            results = self.engine.tag(problems, skip_cache=request.skip_cache, deadline=deadline)
        except BackendUnavailable as exc:
            raise _RequestError(grpc.StatusCode.UNAVAILABLE, f"tagging backend unavailable: {exc}") from exc
        except DeadlineExceeded as exc:
            raise _RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from exc
        return pb.TagProblemsResponse(results=[result_to_proto(r) for r in results])

    def TagProblems(self, request: Any, context: grpc.ServicerContext) -> pb.TagProblemsResponse:
        try:
            return self._tag(request, context)
        except _RequestError as err:
            _abort(context, err)
        except Exception as exc:
            log.exception("TagProblems failed")
            _abort(
                context,
                _RequestError(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"),
            )

    def TagStream(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[pb.TagProblemsResponse]:
        try:
            for request in requests:
                if not context.is_active():
                    return
                yield self._tag(request, context)
        except _RequestError as err:
            _abort(context, err)
        except Exception as exc:
            log.exception("TagStream failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    def GetSkillTree(self, request: Any, context: grpc.ServicerContext) -> pb.GetSkillTreeResponse:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        tree = self.engine.tree
        return pb.GetSkillTreeResponse(
            tree_json=self.tree_json,
            tree_hash=self.engine.tree_hash,
            n_nodes=len(tree) - 1,
            n_leaves=tree.n_leaves,
            backend=self.engine.backend.name,
            backend_config_hash=self.engine.backend_config_hash,
        )

    def handler(self) -> grpc.GenericRpcHandler:
        ser = _serialize
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "TagProblems": grpc.unary_unary_rpc_method_handler(
                    self.TagProblems,
                    request_deserializer=_safe_parser(pb.TagProblemsRequest),
                    response_serializer=ser,
                ),
                "TagStream": grpc.stream_stream_rpc_method_handler(
                    self.TagStream,
                    request_deserializer=_safe_parser(pb.TagProblemsRequest),
                    response_serializer=ser,
                ),
                "GetSkillTree": grpc.unary_unary_rpc_method_handler(
                    self.GetSkillTree,
                    request_deserializer=_safe_parser(pb.GetSkillTreeRequest),
                    response_serializer=ser,
                ),
            },
        )


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _abort(context: grpc.ServicerContext, err: _RequestError) -> NoReturn:
    context.abort(err.code, err.message)
    raise AssertionError("unreachable")  # context.abort raises


class TaggerServer:
    """A started-on-demand gRPC server around an engine. ``port=0`` picks a free port (see ``.port``)."""

    def __init__(
        self,
        engine: TaggingEngine,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        workers: int = 8,
        limits: ServerLimits | None = None,
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self.service = SkillTaggerService(engine, self.limits)
        options = [
            ("grpc.max_receive_message_length", self.limits.max_message_bytes),
            ("grpc.max_send_message_length", self.limits.max_message_bytes),
        ]
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagger"),
            options=options,
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self.server.add_generic_rpc_handlers((self.service.handler(),))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.host = host
        self.port = self.server.add_insecure_port(f"{_bracket(host)}:{port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind {host}:{port}")

    @property
    def address(self) -> str:
        return f"grpc://{_bracket(self.host)}:{self.port}"

    def start(self) -> TaggerServer:
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float | None = 5.0) -> Any:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds; returns an Event."""
        self.health.enter_graceful_shutdown()
        return self.server.stop(grace)

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self.server.wait_for_termination(timeout))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
