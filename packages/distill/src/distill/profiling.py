"""Profile a student on a tagged pool: generate k answers per problem, judge them, aggregate per skill.

Generation and judging are ``distill.rollout`` (shared with evaluation): answers and verdicts are saved
chunk by chunk, a rerun with the same folder resumes, and answers from another model or sampling setup are
never mixed into a new profile. This module adds the per-skill aggregation, reports and MLflow logging.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from skillcore import SkillProfile, SkillTree, TaggedProblem
from skillcore.io import atomic_write_text, iter_rows
from skillcore.records import map_record
from skillcore.tree import format_chain

from distill.engines import GenerationEngine, SamplingConfig
from distill.rollout import (
    ATTEMPTS_FILE,
    RUN_FILE,
    VERDICTS_FILE,
    Judge,
    OnMismatch,
    ResumeMismatchError,
    RolloutResult,
    rollout,
)

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
__all__ = ["ATTEMPTS_FILE", "RUN_FILE", "VERDICTS_FILE", "ResumeMismatchError"]  # re-exported for callers


class ProfileConfig(BaseModel):
    """Settings of one profiling run (the paper: k=1, temperature 0.6, thinking on)."""

    model_config = ConfigDict(extra="forbid")

    samples_per_problem: int = Field(default=1, ge=1, le=64, description="k answers per problem")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    chunk_size: int = Field(default=64, ge=1, description="problems generated and saved together")
    judge_timeout_s: float = Field(default=5.0, gt=0)
    judge_workers: int | None = Field(default=None, ge=0)
    weakest_k: int = Field(default=10, ge=1)
    min_attempts: int = Field(default=1, ge=1, description="leaves with fewer attempts are not ranked")

    def effective_sampling(self) -> SamplingConfig:
        return self.sampling.model_copy(update={"n": self.samples_per_problem})


@dataclass
class ProfileResult(RolloutResult):
    """The rollout (attempts, verdicts, what was generated or resumed) and the per-skill profile."""

    profile: SkillProfile

    def weakest(self, k: int = 10, *, min_attempts: int = 1) -> list[dict[str, Any]]:
        return weakest_report(self.profile, k, min_attempts=min_attempts)


def load_pool(
    source: str | Path, *, mapping: str = "native", limit: int | None = None
) -> list[TaggedProblem]:
    """Tagged problems from a JSONL file or ``hf://`` dataset; every row must carry ``chains``."""
    problems: list[TaggedProblem] = []
    for i, row in enumerate(iter_rows(source)):
        if limit is not None and len(problems) >= limit:
            break
        record = map_record(row, mapping)
        if not isinstance(record, TaggedProblem):
            raise ValueError(f"{source}: row {i + 1} has no 'chains' (tag the pool first)")
        problems.append(record)
    ids = [p.unique_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: unique_id values repeat")
    return problems


class GenerationLimitError(ValueError):
    """A sampling setup that asks for more new tokens than the model or the caller allows."""


def bound_sampling(
    sampling: SamplingConfig, *, maximum: int, context_length: int | None = None
) -> SamplingConfig:
    """``sampling`` with ``max_new_tokens`` within its cap: ``maximum``, lower still when ``context_length``
    (the model's ``max_position_embeddings``) is known. A value the caller set above the cap raises
    ``GenerationLimitError`` naming the field, the value and the cap; the default, where the caller left it
    unset, is lowered to the cap."""
    cap, reason = maximum, "the configured maximum"
    if context_length is not None and context_length < cap:
        cap, reason = context_length, "the model's context length (max_position_embeddings)"
    if sampling.max_new_tokens <= cap:
        return sampling
    if "max_new_tokens" in sampling.model_fields_set:
        raise GenerationLimitError(
            f"sampling.max_new_tokens {sampling.max_new_tokens} is over the cap of {cap} ({reason})"
        )
    return sampling.model_copy(update={"max_new_tokens": cap})


class PoolError(ValueError):
    """A pool that cannot be profiled against a tree: no problems, or chains the tree does not hold."""


def check_pool(
    problems: Sequence[TaggedProblem], tree: SkillTree, *, source: str | Path = "pool", shown: int = 5
) -> None:
    """Refuse a pool that would profile nothing or would silently drop skills.

    Raises ``PoolError`` when ``problems`` is empty, or when a chain is not a path of ``tree`` (matched as
    ``SkillProfile`` matches them: chains deeper than a truncated tree match their prefix). The message
    names the first ``shown`` unknown chains with their row (1-based, in pool order) and ``unique_id``.
    No tolerance: one unknown chain refuses the pool (tag it against this tree first).
    """
    if not problems:
        raise PoolError(f"{source}: the pool has no problems")
    max_depth = int(tree.depth.max())
    unknown: list[str] = []
    count = 0
    for row, problem in enumerate(problems, start=1):
        for chain in problem.chains:
            node = tree.find(tuple(chain)[:max_depth])
            if node is None or node.index == 0:
                count += 1
                if len(unknown) < shown:
                    unknown.append(f"row {row} ({problem.unique_id}): {format_chain(chain)!r}")
    if count:
        raise PoolError(
            f"{source}: {count} chain(s) are not paths of the skill tree, e.g. {'; '.join(unknown)}"
            " (tag the pool against this tree)"
        )


def profile_student(
    engine: GenerationEngine,
    tree: SkillTree,
    problems: Sequence[TaggedProblem],
    *,
    out_dir: str | Path,
    config: ProfileConfig | None = None,
    judge: Judge | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
    on_mismatch: OnMismatch = "error",
    shard: tuple[int, int] | None = None,
    stop: threading.Event | None = None,
) -> ProfileResult:
    """The shared rollout (generate and judge, resumable through ``out_dir``), then the per-skill profile.

    ``on_chunk(done_problems, total_problems)`` is called after each saved chunk (service progress).
    ``on_mismatch``: what to do when ``out_dir`` holds answers from another model or sampling setup,
    raise ``ResumeMismatchError`` or discard them and start over. ``shard=(i, n)``: only shard ``i`` of
    ``n`` (see ``distill.rollout.rollout``); the profile then covers that shard alone. ``stop``: set it to
    stop generating within moments (``GenerationStopped``; finished chunks are kept for a resume).
    """
    config = config or ProfileConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = rollout(
        engine,
        problems,
        config.effective_sampling(),
        out_dir=out,
        judge=judge,
        chunk_size=config.chunk_size,
        judge_workers=config.judge_workers,
        judge_timeout_s=config.judge_timeout_s,
        progress=progress,
        desc="profiling",
        on_chunk=on_chunk,
        on_mismatch=on_mismatch,
        shard=shard,
        stop=stop,
    )
    answered = {v.unique_id for v in done.verdicts}
    problems = [p for p in problems if p.unique_id in answered] if shard is not None else problems
    profile = SkillProfile.from_records(tree, problems, done.verdicts, unknown="skip")
    profile.save(out / PROFILE_FILE)
    return ProfileResult(
        attempts=done.attempts,
        verdicts=done.verdicts,
        out_dir=out,
        generated=done.generated,
        resumed=done.resumed,
        profile=profile,
    )


# ---------------------------------------------------------------------------- reports
def weakest_report(profile: SkillProfile, k: int = 10, *, min_attempts: int = 1) -> list[dict[str, Any]]:
    """The k weakest leaves: chain, accuracy, posterior mean, 90% interval, counts."""
    frame = profile.weakest(k, min_attempts=min_attempts)
    rows = []
    for rec in frame.to_dict(orient="records"):
        rows.append(
            {
                "chain": rec["chain"],
                "node_id": rec["node_id"],
                "accuracy": _num(rec["accuracy"]),
                "posterior_mean": _num(rec["posterior_mean"]),
                "ci90": [_num(rec["ci90_low"]), _num(rec["ci90_high"])],
                "attempts": int(rec["attempts"]),
                "correct": int(rec["correct"]),
                "problems": int(rec["problems"]),
            }
        )
    return rows


def _num(value: Any) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)  # NaN -> None (JSON-safe)


def weakest_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| # | skill | accuracy | correct/attempts | 90% interval |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, start=1):
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.1%}"
        lo, hi = r["ci90"]
        lines.append(f"| {i} | {r['chain']} | {acc} | {r['correct']}/{r['attempts']} | {lo:.2f}-{hi:.2f} |")
    return "\n".join(lines) + "\n"


def write_reports(result: ProfileResult, config: ProfileConfig) -> dict[str, Path]:
    """profile.json (already written), leaves.csv, weakest.json/.md, tree.png, tree.html, summary.json."""
    from distill.viz import plot_tree, tree_html

    out = result.out_dir
    paths = {"profile": out / PROFILE_FILE}
    frame: pd.DataFrame = result.profile.to_frame()
    paths["nodes"] = out / "nodes.csv"
    frame.to_csv(paths["nodes"], index=False)
    weakest = result.weakest(config.weakest_k, min_attempts=config.min_attempts)
    paths["weakest"] = out / "weakest.json"
    atomic_write_text(paths["weakest"], json.dumps(weakest, indent=1, ensure_ascii=False))
    paths["weakest_md"] = out / "weakest.md"
    atomic_write_text(paths["weakest_md"], weakest_markdown(weakest))
    paths["png"] = out / "tree.png"
    fig = plot_tree(result.profile)
    fig.savefig(paths["png"], dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    paths["html"] = out / "tree.html"
    atomic_write_text(paths["html"], tree_html(result.profile, title=f"Skill profile: {_model_of(result)}"))
    paths["summary"] = out / "summary.json"
    atomic_write_text(paths["summary"], json.dumps(summary(result), indent=1))
    return paths


def _model_of(result: ProfileResult) -> str:
    return result.attempts[0].model if result.attempts else "student"


def summary(result: ProfileResult) -> dict[str, Any]:
    tokens = [a.n_tokens for a in result.attempts if a.n_tokens is not None]
    return {
        "model": _model_of(result),
        "problems": len({a.unique_id for a in result.attempts}),
        "attempts": len(result.attempts),
        "accuracy": round(result.accuracy, 6),
        "status_counts": result.status_counts(),
        "mean_tokens": round(sum(tokens) / len(tokens), 2) if tokens else None,
        "truncated": sum(a.finish_reason == "length" for a in result.attempts),
        "generated_now": result.generated,
        "resumed": result.resumed,
        "unmatched_chains": result.profile.n_unmatched_chains,
        **result.profile.tier_counts(),
    }


# ---------------------------------------------------------------------------- MLflow
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]+")


def metric_name(chain: str) -> str:
    """An MLflow-safe metric key for a chain ('a->b' -> 'skill_acc/a/b')."""
    parts = [_METRIC_UNSAFE.sub("_", p).strip() or "_" for p in chain.split("->")]
    return "skill_acc/" + "/".join(parts)


def log_profile_to_mlflow(
    result: ProfileResult,
    config: ProfileConfig,
    problems: Sequence[TaggedProblem],
    *,
    paths: dict[str, Path],
    engine_kind: str = "",
    pool_source: str | None = None,
) -> str:
    """Log params, per-skill metrics, datasets and artifacts into a ``profile`` stage run; returns its id."""
    import mlflow
    from skillcore.tracking import log_dataset, log_json, log_metrics_table, stage_run

    params = {
        "model": _model_of(result),
        "engine": engine_kind,
        "samples_per_problem": config.samples_per_problem,
        "sampling": config.sampling.model_dump(),
        "n_problems": len(problems),
        "tree_hash": result.profile.tree.content_hash()[:16],
    }
    with stage_run("profile", params=params) as run:
        summ = summary(result)
        mlflow.log_metrics(
            {
                "accuracy": summ["accuracy"],
                "attempts": summ["attempts"],
                "truncated": summ["truncated"],
                **{f"verdicts/{k}": v for k, v in summ["status_counts"].items()},
            }
        )
        frame = result.profile.to_frame()
        judged = frame[frame["attempts"] > 0]
        mlflow.log_metrics(
            {metric_name(c): float(a) for c, a in zip(judged["chain"], judged["accuracy"], strict=True)}
        )
        log_dataset(problems, name="profile_pool", context="profiling", source=pool_source)
        log_dataset(result.attempts, name="attempts", context="attempts", artifact=True)
        log_dataset(result.verdicts, name="verdicts", context="verdicts", artifact=True)
        log_json(result.profile.to_dict(), "profile/profile.json")
        log_json(summ, "profile/summary.json")
        log_metrics_table(frame, "profile/nodes.json")
        for key in ("weakest", "weakest_md", "png", "html"):
            mlflow.log_artifact(str(paths[key]), artifact_path="profile")
        return str(run.info.run_id)


def run_profile(
    model: str,
    tree: SkillTree | str | Path,
    pool: Sequence[TaggedProblem] | str | Path,
    *,
    out_dir: str | Path,
    engine: str = "hf",
    engine_opts: dict[str, Any] | None = None,
    config: ProfileConfig | None = None,
    log_mlflow: bool = True,
    progress: bool = True,
    on_mismatch: OnMismatch = "error",
    shard: tuple[int, int] | None = None,
    workers: int = 1,
) -> tuple[ProfileResult, dict[str, Path], str | None]:
    """The whole profiling stage in-process: build the engine, profile, write reports, log to MLflow.

    Returns the result, the report paths and the MLflow run id (None without logging). This is what the
    ``distill profile`` CLI and the pipeline call; the BentoML service wraps the same steps. ``workers``
    > 1 answers the shards first in that many processes, one torch thread each (``distill.parallel``).
    """
    from distill.engines import make_engine

    config = config or ProfileConfig()
    skill_tree = tree if isinstance(tree, SkillTree) else SkillTree.load(tree)
    problems = list(pool) if not isinstance(pool, str | Path) else load_pool(pool)
    if workers > 1 and shard is None:
        from distill.parallel import answer_in_shards

        answer_in_shards(
            run_profile,
            workers,
            progress=progress,
            model=model,
            tree=skill_tree,
            pool=problems,
            out_dir=out_dir,
            engine=engine,
            engine_opts=engine_opts,
            config=config,
            on_mismatch=on_mismatch,
        )
    with make_engine(engine, model, **(engine_opts or {})) as gen:
        result = profile_student(
            gen,
            skill_tree,
            problems,
            out_dir=out_dir,
            config=config,
            progress=progress,
            on_mismatch=on_mismatch,
            shard=shard,
        )
    paths = write_reports(result, config)
    run_id = None
    if log_mlflow:
        source = str(pool) if isinstance(pool, str | Path) else None
        run_id = log_profile_to_mlflow(
            result, config, problems, paths=paths, engine_kind=engine, pool_source=source
        )
    return result, paths, run_id
