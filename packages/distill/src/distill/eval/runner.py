"""Run a student on benchmark tasks: the shared rollout per benchmark, then the metrics.

``EvalConfig`` (loaded from the preset files in ``distill/presets/eval/``) beside ``evaluate`` (one job:
answer and score the given benchmarks) and ``run_evaluation`` (the in-process stage: build the engine,
evaluate, write reports, log to MLflow). Each benchmark's answers live in ``<out_dir>/<benchmark>/``
(``attempts.jsonl``, ``verdicts.jsonl``), so a killed evaluation resumes per benchmark and answers from
another model are never scored for this one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from skillcore import PoolProblem, write_jsonl
from skillcore.io import atomic_write_text

from distill.engines import GenerationEngine, SamplingConfig
from distill.eval.metrics import BenchmarkScore, average_scores, score_benchmark
from distill.rollout import Judge, OnMismatch, RolloutResult, rollout

log = logging.getLogger(__name__)

REPORT_FILE = "eval_report.json"


class EvalConfig(BaseModel):
    """How to evaluate. The defaults are the paper's: 8 samples per problem at temperature 0.6, up to
    16,384 new tokens, thinking on; avg@8 is the headline metric."""

    model_config = ConfigDict(extra="forbid")

    samples_per_problem: int | None = Field(
        default=None, ge=1, le=256, description="None: each task's default repeats (8 for the paper's)"
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=16384)
    )
    limit: int | None = Field(default=None, ge=1, description="only the first N problems of each benchmark")
    chunk_size: int = Field(default=64, ge=1)
    judge_timeout_s: float = Field(default=5.0, gt=0)
    judge_workers: int | None = Field(default=None, ge=0)
    n_resamples: int = Field(default=1000, ge=10, description="bootstrap resamples for the 95% intervals")
    seed: int = 0


def eval_preset_names() -> list[str]:
    folder = resources.files("distill").joinpath("presets/eval")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_eval_config(preset_or_path: str | Path, **overrides: Any) -> EvalConfig:
    """An ``EvalConfig`` from a preset name (``paper``, ``cpu-demo``) or a YAML file, then ``overrides``."""
    path = Path(preset_or_path)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        text = path.read_text(encoding="utf-8")
    elif str(preset_or_path) in eval_preset_names():
        text = resources.files("distill").joinpath(f"presets/eval/{preset_or_path}.yaml").read_text("utf-8")
    else:
        raise ValueError(
            f"unknown evaluation preset {str(preset_or_path)!r}: choose one of "
            f"{', '.join(eval_preset_names())} or give a YAML file"
        )
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{preset_or_path}: an evaluation settings file holds a mapping")
    sampling = {**data.pop("sampling", {}), **overrides.pop("sampling", {})}
    return EvalConfig.model_validate({**data, **overrides, "sampling": sampling})


@dataclass
class BenchmarkRun:
    """One benchmark's problems, answers, verdicts and score."""

    problems: list[PoolProblem]
    rollout: RolloutResult
    score: BenchmarkScore


@dataclass
class EvalReport:
    model: str
    engine: dict[str, Any]
    config: EvalConfig
    benchmarks: dict[str, BenchmarkRun]
    out_dir: Path

    @property
    def average(self) -> dict[str, float]:
        """Macro average over benchmarks of each metric (``avg_at_8``, ``pass_at_1``, ...)."""
        return average_scores({name: run.score for name, run in self.benchmarks.items()})

    @property
    def headline(self) -> float:
        """The paper's headline figure: avg@k averaged over the benchmarks."""
        k = next(iter(self.benchmarks.values())).score.k
        return self.average[f"avg_at_{k}"]

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "engine": self.engine,
            "config": self.config.model_dump(mode="json"),
            "average": self.average,
            "headline": self.headline,
            "benchmarks": {
                name: run.score.model_dump(mode="json", exclude={"problems"})
                for name, run in self.benchmarks.items()
            },
        }

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat MLflow metrics: ``eval/<benchmark>/avg_at_8`` (with ``_low``/``_high``), ``eval/average/...``."""
        out = {f"{prefix}/average/{key}": value for key, value in self.average.items()}
        for name, run in self.benchmarks.items():
            out.update({f"{prefix}/{name}/{key}": value for key, value in run.score.metrics().items()})
        return out


def evaluate(
    engine: GenerationEngine,
    benchmarks: Mapping[str, Sequence[PoolProblem]],
    config: EvalConfig,
    *,
    out_dir: str | Path,
    repeats: Mapping[str, int] | None = None,
    judge: Judge | None = None,
    progress: bool = True,
    on_mismatch: OnMismatch = "error",
    shard: tuple[int, int] | None = None,
) -> EvalReport:
    """Answer and score every benchmark (``repeats``: a benchmark's default samples per problem, used
    when ``config.samples_per_problem`` is None). ``shard=(i, n)`` answers and scores shard ``i`` of ``n``
    of each benchmark (``distill.rollout``); an unsharded call on the same folder then scores them all."""
    from distill.judge import MathJudge
    from distill.rollout import shard_of

    if not benchmarks:
        raise ValueError("no benchmarks to evaluate")
    out = Path(out_dir)
    runs: dict[str, BenchmarkRun] = {}
    own_judge = judge is None
    active: Judge = (
        judge
        if judge is not None
        else MathJudge(workers=config.judge_workers, timeout_s=config.judge_timeout_s)
    )
    try:
        for name, problems in benchmarks.items():
            chosen = list(problems)[: config.limit] if config.limit else list(problems)
            if shard is not None:
                chosen = [p for p in chosen if shard_of(p.unique_id, shard[1]) == shard[0]]
            if not chosen:
                raise ValueError(f"benchmark {name!r} has no problems")
            n = config.samples_per_problem or (repeats or {}).get(name, 1)
            sampling = config.sampling.model_copy(update={"n": n, "seed": config.seed})
            done = rollout(
                engine,
                chosen,
                sampling,
                out_dir=out / name,
                judge=active,
                chunk_size=config.chunk_size,
                progress=progress,
                desc=f"eval {name}",
                on_mismatch=on_mismatch,
                shard=shard,
            )
            score = score_benchmark(
                chosen, done.verdicts, n_resamples=config.n_resamples, seed=config.seed, name=name
            )
            runs[name] = BenchmarkRun(chosen, done, score)
            log.info(
                "%s: avg@%d %.3f over %d problems", name, score.k, score.avg_at_k.value, score.n_problems
            )
    finally:
        if own_judge:
            active.close()
    return EvalReport(engine.model_name, engine.fingerprint, config, runs, out)


def write_eval_report(report: EvalReport) -> dict[str, Path]:
    """``eval_report.json`` (scores, intervals, status counts), ``results.md`` and per-problem records
    ``<benchmark>/problems.jsonl``."""
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / REPORT_FILE, "markdown": out / "results.md"}
    atomic_write_text(paths["report"], json.dumps(report.summary(), indent=1))
    atomic_write_text(paths["markdown"], results_markdown(report))
    for name, run in report.benchmarks.items():
        write_jsonl(out / name / "problems.jsonl", run.score.problems)
    return paths


def results_markdown(report: EvalReport) -> str:
    """One row per benchmark (avg@k with its 95% interval, pass@1, pass@k, maj@k, unjudgeable answers)."""
    runs = list(report.benchmarks.items())
    k = runs[0][1].score.k
    columns = ["avg_at", "pass_at_1", "pass_at_k", "maj_at"] if k > 1 else ["avg_at"]
    heads = {
        "avg_at": f"avg@{k} (95% CI)",
        "pass_at_1": "pass@1",
        "pass_at_k": f"pass@{k}",
        "maj_at": f"maj@{k}",
    }
    lines = [
        "| benchmark | problems | " + " | ".join(heads[c] for c in columns) + " | errors |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for name, run in runs:
        s = run.score
        cis = {"avg_at": s.avg_at_k, "pass_at_1": s.pass_at_1, "pass_at_k": s.pass_at_k, "maj_at": s.maj_at_k}
        cells = [f"{cis['avg_at'].value:.1%} ({cis['avg_at'].low:.1%}-{cis['avg_at'].high:.1%})"]
        cells += [f"{cis[c].value:.1%}" for c in columns[1:]]
        errors = s.status_counts.get("error", 0) + s.status_counts.get("timeout", 0)
        lines.append(f"| {name} | {s.n_problems} | " + " | ".join(cells) + f" | {errors} |")
    avg = report.average
    keys = {
        "avg_at": f"avg_at_{k}",
        "pass_at_1": "pass_at_1",
        "pass_at_k": f"pass_at_{k}",
        "maj_at": f"maj_at_{k}",
    }
    lines.append("| **average** | | " + " | ".join(f"{avg[keys[c]]:.1%}" for c in columns) + " | |")
    return "\n".join(lines) + "\n"


def log_eval_to_mlflow(report: EvalReport, paths: Mapping[str, Path], *, prefix: str = "eval") -> None:
    """Metrics, the report files and each benchmark's problems (a dataset, context ``evaluation``) into
    the active run."""
    import mlflow
    from skillcore.tracking import log_dataset

    mlflow.log_metrics(report.metrics(prefix))
    for path in paths.values():
        mlflow.log_artifact(str(path), artifact_path=prefix)
    for name, run in report.benchmarks.items():
        log_dataset(run.problems, name=f"benchmark-{name}", context="evaluation")
        mlflow.log_artifact(str(report.out_dir / name / "problems.jsonl"), artifact_path=f"{prefix}/{name}")


def run_evaluation(
    model: str,
    benchmarks: Mapping[str, Sequence[PoolProblem]],
    config: EvalConfig,
    *,
    out_dir: str | Path,
    engine: str = "hf",
    engine_opts: Mapping[str, Any] | None = None,
    repeats: Mapping[str, int] | None = None,
    log_mlflow: bool = True,
    progress: bool = True,
    on_mismatch: OnMismatch = "restart",
    shard: tuple[int, int] | None = None,
    workers: int = 1,
) -> EvalReport:
    """The evaluation stage in-process: build the engine, evaluate, write reports, log to the active run
    (a standalone ``evaluate`` run when none is active). ``workers`` > 1 answers the shards first in that
    many processes side by side, one torch thread each (``distill.parallel``); this call then scores."""
    from distill.engines import make_engine

    if workers > 1 and shard is None:
        from distill.parallel import answer_in_shards

        answer_in_shards(
            run_evaluation,
            workers,
            progress=progress,
            model=model,
            benchmarks=benchmarks,
            config=config,
            out_dir=out_dir,
            engine=engine,
            engine_opts=engine_opts,
            repeats=repeats,
            on_mismatch=on_mismatch,
        )
    with make_engine(engine, model, **dict(engine_opts or {})) as gen:
        report = evaluate(
            gen,
            benchmarks,
            config,
            out_dir=out_dir,
            repeats=repeats,
            progress=progress,
            on_mismatch=on_mismatch,
            shard=shard,
        )
    paths = write_eval_report(report)
    if log_mlflow:
        import mlflow
        from skillcore.tracking import stage_run

        if mlflow.active_run() is not None:
            log_eval_to_mlflow(report, paths)
        else:
            with stage_run("evaluate", params={"model": model, "engine": engine}):
                log_eval_to_mlflow(report, paths)
    return report


def load_benchmarks(
    names: Sequence[str],
    *,
    world_dir: str | Path | None = None,
    sources: Mapping[str, str | Path] | None = None,
) -> tuple[dict[str, list[PoolProblem]], dict[str, int]]:
    """Problems and default repeats for registered benchmarks (``aime24``, ``math-l5``, ...).

    With ``world_dir`` the offline world's suites stand in for the registered benchmarks of the same name
    (``<world_dir>/benchmarks/<suite>.jsonl``); ``sources`` maps a benchmark to a local file or folder in
    its public format (otherwise its Hugging Face dataset is loaded).
    """
    from distill.eval.tasks import get_task, load_task, world_task

    problems: dict[str, list[PoolProblem]] = {}
    repeats: dict[str, int] = {}
    for name in names:
        task = world_task(name, world_dir) if world_dir is not None else get_task(name)
        problems[name] = load_task(task, (sources or {}).get(name))
        repeats[name] = task.default_repeats
    return problems, repeats
