"""The gRPC server: SkillTagger (skilldistill.tagging.v1), grpc.health.v1 and server reflection.

Every request is validated before any work: bad input is INVALID_ARGUMENT (too many problems is
RESOURCE_EXHAUSTED) with a message naming the offending problem; a backend failure is UNAVAILABLE for
that request only; the client's deadline is passed down to the walk and the backend.

Threads: the gRPC server is a ``grpc.aio`` server whose event loop runs in one thread of its own. Health
(Check, Watch, List), reflection, GetSkillTree and request validation are answered on that loop; tagging
work goes to a bounded pool of ``workers`` threads (``TaggingPool``). However many tagging calls are
running or queued, the loop stays free, so a liveness probe is answered while the tagger is saturated.
A queued call whose client gives up (deadline, cancel) is dropped before it starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from skilltag.engine import BackendUnavailable, DeadlineExceeded, ProblemInput, TaggingEngine, TagResult

from skilltagger._generated import tagging_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SkillTagger"].full_name
HEALTH_SERVICE_NAME: str = health.SERVICE_NAME
REFLECTION_SERVICE_NAME: str = reflection.SERVICE_NAME
LOOP_LOOKUP_MAX_PROBLEMS = 16  # cached calls up to this size are answered on the event loop
MAX_HEALTH_LIST = 100  # grpc.health.v1 List: more services than this is RESOURCE_EXHAUSTED

T = TypeVar("T")


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


@dataclass(frozen=True)
class PoolLoad:
    """A snapshot of the tagging pool: calls running on a worker, calls waiting for one, calls finished."""

    workers: int
    active: int
    queued: int
    completed: int


class TaggingPool:
    """A bounded pool of tagging threads, apart from the event loop that answers health and reflection.

    ``run`` is awaited on the loop; the work runs on one of ``workers`` threads. A call cancelled while it
    is still queued (the client's deadline passed, or it hung up) never starts. ``load()`` is the gauge.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tagger")
        self._lock = threading.Lock()
        self._active = 0
        self._queued = 0
        self._completed = 0

    def load(self) -> PoolLoad:
        with self._lock:
            return PoolLoad(self.workers, self._active, self._queued, self._completed)

    async def run(self, fn: Callable[[], T]) -> T:
        def job() -> T:
            with self._lock:
                self._queued -= 1
                self._active += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self._active -= 1
                    self._completed += 1

        with self._lock:
            self._queued += 1
        future = self._executor.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # still queued: it will never run
                with self._lock:
                    self._queued -= 1
            raise

    def shutdown(self) -> None:
        """Drop the queued calls; the running ones finish on their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._queued = 0


class SkillTaggerService:
    def __init__(self, engine: TaggingEngine, limits: ServerLimits, pool: TaggingPool) -> None:
        self.engine = engine
        self.limits = limits
        self.pool = pool
        self.tree_json = engine.tree.to_json()
        self.answered_from_cache = 0  # calls answered on the event loop, without the tagging pool

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

    def from_cache(self, problems: list[ProblemInput]) -> list[TagResult] | None:
        """The results when every problem is in the tag cache, else None (the call goes to the pool).

        A lookup is a few hashes and one indexed SQLite query (tens of microseconds a problem), cheap
        enough for the event loop for calls of up to ``LOOP_LOOKUP_MAX_PROBLEMS`` problems (larger ones
        are looked up on a tagging thread, so the loop never stalls on them); a small cached call so skips
        the hand-over to a tagging thread and back, and does not wait behind walks that occupy every
        worker.
        """
        if len(problems) > LOOP_LOOKUP_MAX_PROBLEMS:
            return None
        return self.engine.lookup(problems)

    # ------------------------------------------------------------------ handlers (on the event loop)
    async def _tag(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> pb.TagProblemsResponse:
        problems = self.validate(request)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        skip_cache = bool(request.skip_cache)
        cached = None if skip_cache else self.from_cache(problems)
        if cached is not None:
            self.answered_from_cache += 1
            return pb.TagProblemsResponse(results=[result_to_proto(r) for r in cached])

        def work() -> list[TagResult]:
            return self.engine.tag(problems, skip_cache=skip_cache, deadline=deadline)

        try:
            results = await self.pool.run(work)
        except BackendUnavailable as exc:
            raise _RequestError(grpc.StatusCode.UNAVAILABLE, f"tagging backend unavailable: {exc}") from exc
        except DeadlineExceeded as exc:
            raise _RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from exc
        return pb.TagProblemsResponse(results=[result_to_proto(r) for r in results])

    async def TagProblems(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TagProblemsResponse:
        try:
            return await self._tag(request, context)
        except _RequestError as err:
            error = err
        except Exception as exc:
            log.exception("TagProblems failed")
            error = _RequestError(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        await context.abort(error.code, error.message)
        raise AssertionError("unreachable")  # context.abort raises

    async def TagStream(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.TagProblemsResponse]:
        error: _RequestError | None = None
        try:
            async for request in requests:
                yield await self._tag(request, context)
        except _RequestError as err:
            error = err
        except Exception as exc:
            log.exception("TagStream failed")
            error = _RequestError(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        if error is not None:
            await context.abort(error.code, error.message)

    async def GetSkillTree(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetSkillTreeResponse:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
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


class HealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 on the event loop, with ``List`` (the installed health.proto declares it and
    reflection advertises it, but grpcio-health-checking's servicer answers it UNIMPLEMENTED)."""

    async def List(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        statuses = dict(self._server_status)  # the base class's status map
        if len(statuses) > MAX_HEALTH_LIST:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{len(statuses)} services > {MAX_HEALTH_LIST}"
            )
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=st) for name, st in statuses.items()}
        )


class TaggerServer:
    """A started-on-demand gRPC server around an engine. ``port=0`` picks a free port (see ``.port``).

    ``workers`` is the number of tagging threads (calls beyond it wait in a queue); gRPC itself, health and
    reflection run on an event loop in a thread of their own (see the module docstring).
    """

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
        self.pool = TaggingPool(workers)
        self.service = SkillTaggerService(engine, self.limits, self.pool)
        self.host = host
        self._stopped = threading.Event()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tagger-grpc", daemon=True)
        self._thread.start()
        try:
            self.server, self.health, self.port = self._call(self._build(host, port, max_concurrent_rpcs))
        except BaseException:
            self._close_loop()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
            self._stopped.set()

    async def _build(
        self, host: str, port: int, max_concurrent_rpcs: int | None
    ) -> tuple[grpc.aio.Server, HealthServicer, int]:
        options = [
            ("grpc.max_receive_message_length", self.limits.max_message_bytes),
            ("grpc.max_send_message_length", self.limits.max_message_bytes),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_concurrent_rpcs)
        server.add_generic_rpc_handlers((self.service.handler(),))
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        # every service listed here answers: SkillTagger, Health (Check, Watch, List), reflection itself
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME), server
        )
        try:
            bound = server.add_insecure_port(f"{_bracket(host)}:{port}")
        except RuntimeError as exc:
            raise RuntimeError(f"could not bind {host}:{port}: {exc}") from exc
        if bound == 0:
            raise RuntimeError(f"could not bind {host}:{port}")
        return server, health_servicer, bound

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def address(self) -> str:
        return f"grpc://{_bracket(self.host)}:{self.port}"

    def load(self) -> PoolLoad:
        """Tagging calls running, queued and finished (a gauge; safe from any thread)."""
        return self.pool.load()

    def start(self) -> TaggerServer:
        async def start() -> None:
            await self.server.start()
            for name in ("", SERVICE_NAME):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._call(start())
        return self

    def stop(self, grace: float | None = 5.0) -> threading.Event:
        """Refuse new calls, let in-flight ones (queued ones included) finish for up to ``grace`` seconds;
        then cancel what is left. Returns an Event set once the server has stopped. Safe to call twice and
        from a signal handler (it does not block)."""
        if self._stopping:
            return self._stopped
        self._stopping = True

        async def stop() -> None:
            try:
                await self.health.enter_graceful_shutdown()
                await self.server.stop(grace)
            finally:
                self.pool.shutdown()
                self._loop.call_soon(self._loop.stop)

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        return self._stopped

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; True when ``timeout`` passed first (as grpc's
        ``wait_for_termination``)."""
        return not self._stopped.wait(timeout)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
