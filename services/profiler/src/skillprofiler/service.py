"""The student-profiling BentoML service.

APIs (all POST, JSON bodies):

* ``/judge``            judge a batch of answers against expected answers -> verdicts
* ``/check_profile``    validate a profiling request (references, allowed roots) without running it
* ``/profile/submit``   start profiling a student on a tagged pool (a BentoML task);
  ``GET /profile/status?task_id=...`` and ``GET /profile/get?task_id=...`` follow it,
  ``PUT /profile/cancel?task_id=...`` stops it (finished answers are kept; resubmit with its profile_id)
* ``/weakest``          the weakest leaf skills of a finished profile

Start: ``bentoml serve skillprofiler.service:Profiler --port 3000`` (binds 127.0.0.1 unless ``--host``).
Standard ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` come from BentoML.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import bentoml
from distill.engines import EngineError, GenerationStopped, SamplingConfig, make_engine
from distill.judge import JudgeItem, MathJudge
from distill.models import ModelRefError, check_model_ref, is_mlflow_uri, model_context_length
from distill.profiling import (
    ProfileConfig,
    ResumeMismatchError,
    bound_sampling,
    check_pool,
    load_pool,
    log_profile_to_mlflow,
    profile_student,
    summary,
    weakest_report,
    write_reports,
)
from pydantic import BaseModel, Field, ValidationError
from skillcore import ProfileError, SkillProfile, SkillTree, SkillTreeError, TaggedProblem
from skillcore.io import JsonlError
from starlette.responses import JSONResponse

from skillprofiler.config import RefusedReference, Settings
from skillprofiler.tasks import TASKS, stop_tasks_on_exit_signals

log = logging.getLogger("skillprofiler")
F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------------- response models
class VerdictOut(BaseModel):
    unique_id: str
    sample_index: int
    status: str
    extracted_answer: str | None
    expected_answer: str


class JudgeResponse(BaseModel):
    verdicts: list[VerdictOut]
    counts: dict[str, int]
    accuracy: float


class WeakSkill(BaseModel):
    chain: str
    node_id: str
    accuracy: float | None
    posterior_mean: float | None
    ci90: list[float | None]
    attempts: int
    correct: int
    problems: int


class ProfileCheck(BaseModel):
    model: str
    pool: str
    tree: str
    engine: str
    profile_id: str | None
    max_new_tokens: int = Field(description="sampling.max_new_tokens the profile runs with (within its cap)")


class ProfileResponse(BaseModel):
    profile_id: str
    out_dir: str
    problems: int
    attempts: int
    accuracy: float
    status_counts: dict[str, int]
    resumed: int
    weakest: list[WeakSkill]
    mlflow_run_id: str | None = None


# ---------------------------------------------------------------------------- error mapping
def _error(status: int, message: str, ctx: Any = None) -> JSONResponse:
    if ctx is not None:  # BentoML copies the context's status onto the response of APIs taking ctx
        ctx.response.status_code = status
    return JSONResponse({"error": message}, status_code=status)


def validation_message(exc: ValidationError) -> str:
    """One line naming what is wrong with a payload: missing fields first, then the other errors."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
    others = [
        f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in errors if e["type"] != "missing"
    ]
    parts = [f"missing required field(s): {', '.join(missing)}"] if missing else []
    return f"{exc.error_count()} validation error(s) for {exc.title}: " + "; ".join(parts + others)


def client_error(exc: BaseException) -> tuple[int, str] | None:
    """The 4xx status and message for an error that is the client's (None: a server fault)."""
    if isinstance(exc, RefusedReference):
        return 403, str(exc)
    if isinstance(exc, FileNotFoundError):
        return 404, str(exc)
    if isinstance(exc, ProfileError | ResumeMismatchError):  # saved state does not fit the request
        return 409, str(exc)
    if isinstance(exc, GenerationStopped):  # cancelled, timed out or shut down: resumable
        return 409, str(exc)
    if isinstance(exc, ValidationError):
        return 400, validation_message(exc)
    if isinstance(exc, ValueError | ModelRefError | SkillTreeError | JsonlError | KeyError):
        return 400, str(exc)
    if isinstance(exc, RecursionError):  # input nested past what the checks at load foresaw
        return 400, "the request's input is nested too deeply to read"
    if isinstance(exc, EngineError):
        return 422, str(exc)
    return None


def http_errors(func: F) -> F:
    """Map library errors to clear 4xx JSON answers ({"error": ...}); BentoML masks 403 bodies otherwise.

    Client errors are logged in one line at WARNING; anything else propagates (BentoML answers 500 and
    logs it at ERROR with its traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            mapped = client_error(exc)
            if mapped is None:
                raise
            status, message = mapped
            log.warning("%s refused (%d): %s", func.__name__, status, _one_line(message))
            return _error(status, message, ctx)

    return wrapper  # type: ignore[return-value]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every refused payload (pydantic ``ValidationError``, 4xx ``BentoMLException``) at ERROR
    with a traceback. Turn those records into one WARNING line; real faults (5xx, other exceptions) keep
    ERROR and their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if isinstance(exc, ValidationError):
            detail = validation_message(exc)
        elif isinstance(exc, bentoml.exceptions.BentoMLException) and int(exc.error_code) < 500:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            return True
        message = record.getMessage()
        record.msg, record.args = "%s: %s", (message, _one_line(detail))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


BENTOML_ERROR_LOGGERS = ("bentoml._internal.server.http_app", "_bentoml_impl.server.app")


def install_log_filter() -> None:
    for name in BENTOML_ERROR_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
            target.addFilter(ClientErrorLogFilter())


# ---------------------------------------------------------------------------- request checks
def check_request(
    settings: Settings,
    model: str,
    pool: str,
    tree: str,
    engine: str,
    base_url: str | None,
    profile_id: str | None,
    sampling: SamplingConfig | None = None,
) -> ProfileCheck:
    """References: allowed roots and servers, well-formed ids, and the model reference itself (a local
    folder with a parseable config.json; a Hub id in the local cache while offline). ``max_new_tokens``
    is bounded by ``SKILLPROFILER_MAX_NEW_TOKENS`` and the model's context length where it is known."""
    if engine == "openai":
        if not base_url:
            raise ValueError("engine 'openai' needs base_url")
        settings.check_base_url(base_url)
        checked_model = model  # the served model's name
    else:
        checked_model = check_model_ref(settings.check_model(model))
    if profile_id is not None:
        settings.profile_dir(profile_id)
    local_model = engine != "openai" and not is_mlflow_uri(checked_model)
    bounded = bound_sampling(
        sampling or SamplingConfig(),
        maximum=settings.max_new_tokens,
        context_length=model_context_length(checked_model) if local_model else None,
    )
    return ProfileCheck(
        model=checked_model,
        pool=settings.check_pool(pool),
        tree=str(settings.check_tree(tree)),
        engine=engine,
        profile_id=profile_id,
        max_new_tokens=bounded.max_new_tokens,
    )


def load_checked(
    checked: ProfileCheck, *, limit: int | None = None, settings: Settings | None = None
) -> tuple[SkillTree, list[TaggedProblem]]:
    """The tree and the pool, refused (``PoolError``) when the pool is empty or names unknown skills. The
    tree is read with the service's tree settings (``SKILLPROFILER_TREE_DUPLICATES``/``_RAW_LEVELS``)."""
    settings = settings or Settings()
    skill_tree = SkillTree.load(
        checked.tree, duplicates=settings.tree_duplicates, raw_levels=settings.tree_raw_levels
    )
    problems = load_pool(checked.pool, limit=limit)
    check_pool(problems, skill_tree, source=checked.pool)
    return skill_tree, problems


def api_fields() -> dict[str, set[str]]:
    """The top-level fields each JSON API takes, by its POST path (a task by its ``/submit`` path)."""
    fields = {}
    for api in Profiler.apis.values():  # type: ignore[attr-defined]
        path = f"{api.route}/submit" if api.is_task else api.route
        fields[path.rstrip("/")] = set(api.input_spec.model_fields)
    return fields


def unknown_fields(path: str, body: bytes) -> str | None:
    """The refusal of a JSON object body naming fields its API does not take (a misspelled field is never
    silently ignored), or None. Bodies that are not JSON objects are left to the API's own checks."""
    known = api_fields().get(path)
    if known is None or not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    unknown = sorted(k for k in data if k not in known)
    if not unknown:
        return None
    names = ", ".join(repr(k)[:80] for k in unknown[:10])
    return f"unknown field(s) {names} in the request to {path}; known: {', '.join(sorted(known))}"


def precheck_submit(settings: Settings, body: bytes) -> tuple[int, str] | None:
    """What ``/profile/submit`` would refuse before a task is stored: (status, message), or None to go on.

    The same payload validation as the task (its BentoML input model), the same reference checks, and the
    tree and pool loaded and checked (so an empty pool or unknown chains never become a task)."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return 400, f"request body is not valid JSON: {exc}"
    except RecursionError:
        return 400, "request body is nested too deeply to read"
    if not isinstance(data, dict):
        return 400, "request body must be a JSON object"
    try:
        request = Profiler.apis["profile"].input_spec.model_validate(data)  # type: ignore[attr-defined]
        fields = {k: getattr(request, k) for k in type(request).model_fields}
        checked = check_request(
            settings,
            fields["model"],
            fields["pool"],
            fields["tree"],
            fields["engine"],
            fields["base_url"],
            fields["profile_id"],
            fields["sampling"],
        )
        load_checked(checked, limit=fields["limit"], settings=settings)
    except Exception as exc:
        mapped = client_error(exc)
        if mapped is None:
            raise
        return mapped
    return None


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    """A request body over ``SKILLPROFILER_MAX_BODY_BYTES``."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, refused (``BodyTooLarge``) as soon as it passes ``limit`` bytes; None when
    the client went away."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body over the limit of {limit} bytes (SKILLPROFILER_MAX_BODY_BYTES)")
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


class RequestGuardMiddleware:
    """Checks made before BentoML sees a request.

    * Body size: a body over ``SKILLPROFILER_MAX_BODY_BYTES`` is refused with 413, from its
      Content-Length when it gives one, else while it is read (a body is never held past the limit).
    * ``/profile/submit``: BentoML stores any body as a task and validates it only when the task runs;
      the request is checked first (``precheck_submit``) and a refusal is answered here, so a refused
      request starts no task. The task id of a stored task (submit or retry) is noted in ``TASKS``.
    * ``PUT /profile/cancel``: answered here from ``TASKS`` (BentoML's development server cannot cancel):
      the task stops generating within moments; ``GET /profile/status`` reads ``in_progress`` until it
      has stopped, then ``canceled`` (``/profile/get`` says how far it got and how to resume).
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], path: str = "/profile"):
        self.app = app
        self.path = path
        self.settings: Settings | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method"), scope.get("path", "").rstrip("/")
        if method == "PUT" and path == f"{self.path}/cancel":
            await self._cancel(scope, receive, send)
            return
        if method == "GET" and path == f"{self.path}/status":
            await self.app(scope, receive, self._status_sender(scope, send))
            return
        if method in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self.settings is None:
            self.settings = Settings.from_env()
        limit = self.settings.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await self._refuse(
                scope,
                receive,
                send,
                413,
                f"request body of {int(length)} bytes is over the limit of {limit}"
                " bytes (SKILLPROFILER_MAX_BODY_BYTES)",
            )
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge as exc:
            await self._refuse(scope, receive, send, 413, str(exc))
            return
        if body is None:
            return
        if method == "POST":
            unknown = unknown_fields(path, body)
            if unknown is not None:
                await self._refuse(scope, receive, send, 400, unknown)
                return
        if method == "POST" and path == f"{self.path}/submit":
            import anyio

            try:
                refused = await anyio.to_thread.run_sync(precheck_submit, self.settings, body)
            except Exception as exc:  # a server fault: answered (500), logged, never a request left hanging
                log.exception("profile/submit: checking the request failed")
                refused = (
                    500,
                    f"checking the request failed: {type(exc).__name__}: {_one_line(str(exc))[:500]}",
                )
            if refused is not None:
                await self._refuse(scope, receive, send, *refused)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if method == "POST" and path in (f"{self.path}/submit", f"{self.path}/retry"):
            send = self._task_noting_sender(send)
        await self.app(scope, replay, send)

    @staticmethod
    def _task_id(scope: Scope) -> str | None:
        from urllib.parse import parse_qs

        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("task_id")
        return values[0] if values else None

    async def _cancel(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = self._task_id(scope)
        if not task_id:
            await self._refuse(scope, receive, send, 400, "task_id is required")
            return
        outcome, profile_id = TASKS.cancel(task_id, "cancelled by request")
        if outcome == "unknown":
            await self._refuse(scope, receive, send, 404, f"no task {task_id!r} in this server")
            return
        if outcome == "finished":
            await self._refuse(scope, receive, send, 409, f"task {task_id!r} has already finished")
            return
        log.info("task %s: cancel requested", task_id)
        answer = {
            "task_id": task_id,
            "status": "canceling",
            "profile_id": profile_id,
            "detail": "generation stops within moments; finished answers are kept: submit again with "
            "this profile_id to resume",
        }
        await JSONResponse(answer)(scope, receive, send)

    @staticmethod
    def _task_noting_sender(send: Send) -> Send:
        """Notes the task id of the answer (a stored task) in ``TASKS`` before the client can see it."""

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.body":
                try:
                    answer = json.loads(message.get("body") or b"null")
                except ValueError:
                    answer = None
                if isinstance(answer, dict) and isinstance(answer.get("task_id"), str):
                    TASKS.submitted(answer["task_id"])
            await send(message)

        return noting

    def _status_sender(self, scope: Scope, send: Send) -> Send:
        """A task that ended because it was asked to stop reads ``canceled`` (BentoML says ``failed``)."""
        task_id = self._task_id(scope)
        if task_id is None or TASKS.reason(task_id) is None:
            return send
        start: Message | None = None

        async def rewriting(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                body = message.get("body", b"")
                try:
                    answer = json.loads(body)
                    if answer.get("status") == "failed":
                        answer["status"] = "canceled"
                        body = json.dumps(answer).encode()
                except (ValueError, AttributeError):
                    pass
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                start = None
                message = {**message, "body": body, "more_body": False}
            await send(message)

        return rewriting

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        where = scope.get("path", "").strip("/") or "/"
        log.warning("%s refused (%d): %s", where, status, _one_line(message))
        await _error(status, message)(scope, receive, send)


# ---------------------------------------------------------------------------- the service
@bentoml.service(
    name="skillprofiler",
    http={"host": "127.0.0.1", "port": 3000},
    threads=4,  # a long profile task must not block the judge API
    traffic={"timeout": 24 * 3600},
)
class Profiler:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.math_judge = MathJudge(workers=self.settings.judge_workers, timeout_s=5.0)
        install_log_filter()
        stop_tasks_on_exit_signals()  # a SIGTERM stops running profiles first, so shutdown drains in seconds
        log.info(
            "allowed roots: %s; work dir: %s",
            ", ".join(map(str, self.settings.allowed_roots)),
            self.settings.work_dir,
        )

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.math_judge.close()

    # ------------------------------------------------------------------ judge
    @bentoml.api
    @http_errors
    def judge(
        self,
        items: Annotated[list[JudgeItem], Field(min_length=1)],
        budget_s: Annotated[float | None, Field(gt=0)] = None,
    ) -> JudgeResponse:
        """Judge answers: the last \\boxed{...} of each response against its expected answer.

        At most ``SKILLPROFILER_JUDGE_MAX_ITEMS`` items (400 above). Items not judged within the time
        budget (``budget_s``, at most ``SKILLPROFILER_JUDGE_BUDGET_S`` seconds, the default) are
        ``timeout``. Requests share the judge workers, item by item, so a small request is not queued
        behind a slow one."""
        if len(items) > self.settings.judge_max_items:
            raise ValueError(
                f"items: {len(items)} items, over the limit of {self.settings.judge_max_items} per request "
                "(SKILLPROFILER_JUDGE_MAX_ITEMS)"
            )
        budget = min(budget_s or self.settings.judge_budget_s, self.settings.judge_budget_s)
        verdicts = self.math_judge.judge(items, budget_s=budget)
        counts: dict[str, int] = {}
        for v in verdicts:
            counts[v.status] = counts.get(v.status, 0) + 1
        return JudgeResponse(
            verdicts=[VerdictOut(**v.model_dump()) for v in verdicts],
            counts=counts,
            accuracy=counts.get("correct", 0) / len(verdicts),
        )

    # ------------------------------------------------------------------ profile
    def _check(
        self,
        model: str,
        pool: str,
        tree: str,
        engine: str,
        base_url: str | None,
        profile_id: str | None,
        sampling: SamplingConfig | None = None,
    ) -> ProfileCheck:
        return check_request(self.settings, model, pool, tree, engine, base_url, profile_id, sampling)

    @bentoml.api
    @http_errors
    def check_profile(
        self,
        model: str,
        pool: str,
        tree: str,
        engine: Literal["hf", "openai", "vllm"] = "hf",
        base_url: str | None = None,
        profile_id: str | None = None,
        sampling: SamplingConfig | None = None,
    ) -> ProfileCheck:
        """Validate a profiling request (what /profile/submit would run) and return the resolved references.

        The tree and the pool are loaded too: an empty pool or chains the tree does not hold are refused."""
        checked = self._check(model, pool, tree, engine, base_url, profile_id, sampling)
        load_checked(checked, settings=self.settings)
        return checked

    @bentoml.task
    @http_errors
    def profile(
        self,
        model: Annotated[
            str, Field(min_length=1, description="HF id, models:/ URI, or a directory under an allowed root")
        ],
        pool: Annotated[
            str,
            Field(min_length=1, description="tagged pool JSONL under an allowed root, or hf://owner/name"),
        ],
        tree: Annotated[str, Field(min_length=1, description="skill tree JSON/YAML under an allowed root")],
        ctx: bentoml.Context,
        engine: Literal["hf", "openai", "vllm"] = "hf",
        base_url: str | None = None,
        samples_per_problem: Annotated[int, Field(ge=1, le=64)] = 1,
        sampling: SamplingConfig | None = None,
        limit: Annotated[int | None, Field(ge=1)] = None,
        batch_size: Annotated[int, Field(ge=1, le=1024)] = 16,
        chunk_size: Annotated[int, Field(ge=1, le=100_000)] = 64,
        weakest_k: Annotated[int, Field(ge=1, le=1000)] = 10,
        profile_id: str | None = None,
    ) -> ProfileResponse:
        """Run the student on the pool, judge, aggregate per skill. Reusing a ``profile_id`` resumes it."""
        checked = self._check(model, pool, tree, engine, base_url, profile_id, sampling)
        task_id = getattr(ctx.request.state, "task_id", None) if ctx.request is not None else None
        pid = profile_id or task_id or uuid.uuid4().hex
        out = self.settings.profile_dir(pid)
        skill_tree, problems = load_checked(checked, limit=limit, settings=self.settings)
        out.mkdir(parents=True, exist_ok=True)
        config = ProfileConfig(
            samples_per_problem=samples_per_problem,
            sampling=(sampling or SamplingConfig()).model_copy(
                update={"max_new_tokens": checked.max_new_tokens}
            ),
            chunk_size=chunk_size,
            weakest_k=weakest_k,
        )
        opts: dict[str, Any] = {"batch_size": batch_size} if engine == "hf" else {}
        if engine == "openai":
            opts = {"base_url": self.settings.check_base_url(base_url or "")}
        key = task_id or f"direct-{uuid.uuid4().hex}"  # a direct /profile call stops on shutdown only
        stop = TASKS.start(key, pid)
        limit_s = self.settings.task_timeout_s
        timer = threading.Timer(
            limit_s, TASKS.cancel, (key, f"timed out after {limit_s:g} s (SKILLPROFILER_TASK_TIMEOUT_S)")
        )
        timer.daemon = True
        timer.start()
        try:
            with make_engine(engine, checked.model, **opts) as gen:
                result = profile_student(
                    gen,
                    skill_tree,
                    problems,
                    out_dir=out,
                    config=config,
                    judge=self.math_judge,
                    progress=False,
                    stop=stop,
                )
        except GenerationStopped as exc:
            raise GenerationStopped(
                f"profile {pid!r} {TASKS.reason(key) or 'stopped'}: {exc}; submit again with "
                f"profile_id={pid!r} to resume"
            ) from exc
        finally:
            timer.cancel()
            TASKS.finish(key)
        # written once the profile is done: a refused request (409) leaves the saved profile's files alone
        skill_tree.save(out / "tree.json")  # /weakest reads the profile against this exact tree
        (out / "request.json").write_text(
            json.dumps(
                {
                    "model": model,
                    "pool": pool,
                    "tree": tree,
                    "engine": engine,
                    "samples_per_problem": samples_per_problem,
                }
            ),
            encoding="utf-8",
        )
        paths = write_reports(result, config)
        run_id = None
        if self.settings.log_to_mlflow:
            run_id = log_profile_to_mlflow(
                result, config, problems, paths=paths, engine_kind=engine, pool_source=pool
            )
        summ = summary(result)
        return ProfileResponse(
            profile_id=pid,
            out_dir=str(out),
            problems=summ["problems"],
            attempts=summ["attempts"],
            accuracy=summ["accuracy"],
            status_counts=summ["status_counts"],
            resumed=result.resumed,
            weakest=[WeakSkill(**w) for w in result.weakest(weakest_k)],
            mlflow_run_id=run_id,
        )

    # ------------------------------------------------------------------ weakest
    @bentoml.api
    @http_errors
    def weakest(
        self,
        profile_id: Annotated[str, Field(min_length=1, max_length=128)],
        k: Annotated[int, Field(ge=1, le=1000)] = 10,
        min_attempts: Annotated[int, Field(ge=1)] = 1,
    ) -> list[WeakSkill]:
        """The k weakest leaf skills of a finished profile (by accuracy, then attempts)."""
        out = self.settings.profile_dir(profile_id)
        profile_file = out / "profile.json"
        if not profile_file.is_file():
            raise FileNotFoundError(f"no finished profile {profile_id!r}")
        prof = SkillProfile.load(profile_file, SkillTree.load(Path(out / "tree.json")))
        return [WeakSkill(**w) for w in weakest_report(prof, k, min_attempts=min_attempts)]


install_log_filter()  # also set in the worker by Profiler.__init__, after BentoML configured logging
Profiler.add_asgi_middleware(RequestGuardMiddleware)  # type: ignore[attr-defined]
