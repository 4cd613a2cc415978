"""The student-profiling BentoML service.

APIs (all POST, JSON bodies):

* ``/judge``            judge a batch of answers against expected answers -> verdicts
* ``/check_profile``    validate a profiling request (references, allowed roots) without running it
* ``/profile/submit``   start profiling a student on a tagged pool (a BentoML task);
  ``GET /profile/status?task_id=...`` and ``GET /profile/get?task_id=...`` follow it
* ``/weakest``          the weakest leaf skills of a finished profile

Start: ``bentoml serve skillprofiler.service:Profiler --port 3000`` (binds 127.0.0.1 unless ``--host``).
Standard ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` come from BentoML.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import bentoml
from distill.engines import EngineError, SamplingConfig, make_engine
from distill.judge import JudgeItem, MathJudge
from distill.models import ModelRefError
from distill.profiling import (
    ProfileConfig,
    ResumeMismatchError,
    load_pool,
    log_profile_to_mlflow,
    profile_student,
    summary,
    weakest_report,
    write_reports,
)
from pydantic import BaseModel, Field, ValidationError
from skillcore import ProfileError, SkillProfile, SkillTree, SkillTreeError
from skillcore.io import JsonlError
from starlette.responses import JSONResponse

from skillprofiler.config import RefusedReference, Settings

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


def http_errors(func: F) -> F:
    """Map library errors to clear 4xx JSON answers ({"error": ...}); BentoML masks 403 bodies otherwise."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        try:
            return func(*args, **kwargs)
        except RefusedReference as exc:
            return _error(403, str(exc), ctx)
        except FileNotFoundError as exc:
            return _error(404, str(exc), ctx)
        except (ProfileError, ResumeMismatchError) as exc:  # saved state does not fit the request
            return _error(409, str(exc), ctx)
        except (ValueError, ValidationError, ModelRefError, SkillTreeError, JsonlError, KeyError) as exc:
            return _error(400, str(exc), ctx)
        except EngineError as exc:
            return _error(422, str(exc), ctx)

    return wrapper  # type: ignore[return-value]


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
        self, items: Annotated[list[JudgeItem], Field(min_length=1, max_length=10_000)]
    ) -> JudgeResponse:
        """Judge answers: the last \\boxed{...} of each response against its expected answer."""
        verdicts = self.math_judge.judge(items)
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
        self, model: str, pool: str, tree: str, engine: str, base_url: str | None, profile_id: str | None
    ) -> ProfileCheck:
        if engine == "openai":
            if not base_url:
                raise ValueError("engine 'openai' needs base_url")
            self.settings.check_base_url(base_url)
            checked_model = model  # the served model's name
        else:
            checked_model = self.settings.check_model(model)
        if profile_id is not None:
            self.settings.profile_dir(profile_id)
        return ProfileCheck(
            model=checked_model,
            pool=self.settings.check_pool(pool),
            tree=str(self.settings.check_tree(tree)),
            engine=engine,
            profile_id=profile_id,
        )

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
    ) -> ProfileCheck:
        """Validate a profiling request (what /profile/submit would run) and return the resolved references."""
        return self._check(model, pool, tree, engine, base_url, profile_id)

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
        checked = self._check(model, pool, tree, engine, base_url, profile_id)
        task_id = getattr(ctx.request.state, "task_id", None) if ctx.request is not None else None
        pid = profile_id or task_id or uuid.uuid4().hex
        out = self.settings.profile_dir(pid)
        skill_tree = SkillTree.load(checked.tree)
        problems = load_pool(checked.pool, limit=limit)
        out.mkdir(parents=True, exist_ok=True)
        config = ProfileConfig(
            samples_per_problem=samples_per_problem,
            sampling=sampling or SamplingConfig(),
            chunk_size=chunk_size,
            weakest_k=weakest_k,
        )
        opts: dict[str, Any] = {"batch_size": batch_size} if engine == "hf" else {}
        if engine == "openai":
            opts = {"base_url": self.settings.check_base_url(base_url or "")}
        with make_engine(engine, checked.model, **opts) as gen:
            result = profile_student(
                gen, skill_tree, problems, out_dir=out, config=config, judge=self.math_judge, progress=False
            )
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
