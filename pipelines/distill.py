"""End-to-end skill-aware distillation: data -> student -> tag -> profile -> select -> train -> evaluate -> register.

    python pipelines/distill.py --registry-model NAME [options]

Every stage is a library call, run under one MLflow parent run with a nested run per stage, and writes
its outputs under ``--workdir`` so a rerun resumes where the last one stopped. Without ``--pool`` the
offline world is generated; without ``--student`` the tiny Qwen3 student is bootstrapped and registered
(``qwen3-tiny-base``). ``--tagger grpc://host:port`` and ``--profiler http://host:port`` use running
services instead of the in-process cores.

After selection the student is fine-tuned on the ``--strategy`` selection (skill-aware targets unless
``--no-skill-aware``) through TRL with the ``--sft-preset`` settings, the base and the fine-tuned student
are evaluated on the benchmarks (the world's suites offline; AIME24/25, AMC23, MATH-L5 and OlympiadBench
otherwise) with the ``--eval-preset`` settings, per-skill gains are set against the selection's emphasis,
and the fine-tuned checkpoint is registered as ``--registry-model`` (alias ``candidate``; ``champion``
moves only to a better benchmark average).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

# Run as a script, this file's folder heads sys.path and its name would shadow the `distill` library.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import typer

log = logging.getLogger("skilldistill.pipeline")
app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@dataclass
class Context:
    workdir: Path
    seed: int
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, stage: str, **info: Any) -> None:
        self.stages[stage] = info
        typer.secho(f"[{stage}] " + ", ".join(f"{k}={v}" for k, v in info.items()), fg="cyan")


# --------------------------------------------------------------------------------------- stages
def stage_data(
    ctx: Context, pool: str | None, tree: str | None, pool_size: int, suite_size: int
) -> tuple[str, Path, str | None]:
    """The teacher pool, the skill tree and (offline world) labelled tagger exemplars."""
    from skillcore import write_jsonl
    from skillcore.tracking import log_dataset, stage_run

    if pool is not None and tree is not None:
        ctx.record("data", pool=pool, tree=tree, source="user")
        return pool, Path(tree), None

    from skillworld import generate_benchmarks, generate_pool, world_tree

    out = ctx.stage_dir("world")
    meta = {"pool_size": pool_size, "suite_size": suite_size, "seed": ctx.seed}
    meta_path = out / "meta.json"
    if not (meta_path.exists() and json.loads(meta_path.read_text()) == meta):
        with stage_run("data", params=meta):
            start = time.perf_counter()
            world_tree().save(out / "tree.json")
            problems = generate_pool(pool_size, ctx.seed, progress=True)
            # The tagger re-derives skills: the pool it sees carries no ground-truth chains.
            write_jsonl(out / "pool.jsonl", (p.model_dump(exclude={"chains"}) for p in problems))
            write_jsonl(
                out / "pool_truth.jsonl", ({"unique_id": p.unique_id, "chains": p.chains} for p in problems)
            )
            # Labelled exemplars for the embedding tagger: a separate draw, not the pool itself.
            write_jsonl(out / "exemplars.jsonl", generate_pool(1000, ctx.seed + 1, progress=False))
            (out / "benchmarks").mkdir(exist_ok=True)
            for name, rows in generate_benchmarks(ctx.seed, suite_size).items():
                write_jsonl(out / "benchmarks" / f"{name}.jsonl", rows)
            log_dataset(out / "pool.jsonl", name="teacher-pool", context="pool")
            meta_path.write_text(json.dumps(meta))
            ctx.record("data", pool_size=pool_size, seconds=round(time.perf_counter() - start, 1))
    else:
        ctx.record("data", pool_size=pool_size, resumed=True)
    return str(out / "pool.jsonl"), out / "tree.json", str(out / "exemplars.jsonl")


def stage_student(ctx: Context, student: str | None) -> str:
    """The student to profile: a model reference, or the offline tiny Qwen3 (the shipped base student,
    registered once)."""
    if student is not None:
        ctx.record("student", model=student)
        return student
    from skillworld.bootstrap import DEFAULT_ALIAS, DEFAULT_REGISTERED_NAME, bootstrap

    result = bootstrap(ctx.stage_dir("student"), registered_name=DEFAULT_REGISTERED_NAME)
    uri = result.model_uri or f"models:/{DEFAULT_REGISTERED_NAME}@{DEFAULT_ALIAS}"
    ctx.record(
        "student",
        model=uri,
        bootstrapped=not result.skipped,
        source="registry" if result.skipped else result.source,
        seconds=round(result.seconds, 1),
    )
    return uri


def stage_tag(
    ctx: Context,
    pool: str,
    tree_path: Path,
    tagger: str,
    exemplars: str | None,
    limit: int | None,
    pool_format: str = "native",
) -> Path:
    """Attribute every pool problem to skill chains (resumable: finished rows are kept)."""
    from skillcore import JsonlAppender, SkillTree, iter_rows, map_record
    from skillcore.tracking import log_dataset, log_json, stage_run
    from tqdm import tqdm

    tree = SkillTree.load(tree_path)
    out_path = ctx.stage_dir("tag") / "tagged.jsonl"
    rows = [map_record(r, pool_format) for r in _take(iter_rows(pool), limit)]
    with stage_run(
        "tag", params={"tagger": tagger, "n_problems": len(rows), "tree_hash": tree.content_hash()[:16]}
    ):
        with JsonlAppender(out_path) as out:
            todo = [r for r in rows if r.unique_id not in out.done_ids]
            with (
                TaggerSession(tagger, tree_path, exemplars, ctx) as tag_batch,
                tqdm(total=len(rows), initial=len(rows) - len(todo), desc="tagging", unit="problem") as bar,
            ):
                for start in range(0, len(todo), 256):
                    batch = todo[start : start + 256]
                    for problem, chains in zip(batch, tag_batch(batch), strict=True):
                        out.write({**problem.model_dump(), "chains": chains})
                    out.flush()
                    bar.update(len(batch))
        stats = _tag_stats(out_path, tree, ctx)
        import mlflow

        mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
        log_json(stats, "tag/stats.json")
        log_dataset(out_path, name="tagged-pool", context="tagged")
    ctx.record("tag", **{k: v for k, v in stats.items() if not isinstance(v, dict)})
    return out_path


class TaggerSession:
    """Yields a batch-tagging function: the in-process engine (embedding backend, SQLite cache) or a
    remote gRPC tagging service."""

    def __init__(self, address: str, tree_path: Path, exemplars: str | None, ctx: Context) -> None:
        from skillcore import SkillTree

        self.address, self.tree_path, self.exemplars, self.ctx = address, tree_path, exemplars, ctx
        self.tree = SkillTree.load(tree_path)
        self._close: Any = None

    def __enter__(self) -> Any:
        if self.address.startswith("grpc://"):
            from skilltagger.client import TaggerClient

            client = TaggerClient.from_address(self.address)
            client.wait_ready()
            remote_hash = client.skill_tree().tree_hash
            if remote_hash != self.tree.content_hash():
                raise typer.BadParameter(f"the tagging service at {self.address} serves another skill tree")
            self._close = client.close
            return lambda batch: [r.chains for r in client.tag(batch)]
        if self.address != "in-process":
            raise typer.BadParameter("--tagger must be 'in-process' or grpc://host:port")
        from skilltagger.factory import EngineSettings, build_engine

        settings = EngineSettings(
            tree=str(self.tree_path),
            cache=str(self.ctx.stage_dir("tag") / "cache.sqlite"),
            exemplars=self.exemplars,
        )
        engine = build_engine(settings)
        self._close = engine.cache.close if engine.cache is not None else None
        return lambda batch: [r.chains for r in engine.tag(batch)]

    def __exit__(self, *exc: object) -> None:
        if self._close is not None:
            self._close()


def _tag_stats(tagged_path: Path, tree: Any, ctx: Context) -> dict[str, Any]:
    """Coverage per leaf, chains per problem, and (offline world) leaf P/R/F1 against the ground truth."""
    from skillcore import read_jsonl
    from skilltagger.quality import leaf_prf, tag_stats

    rows = list(read_jsonl(tagged_path))
    full = tag_stats(rows, tree)
    stats: dict[str, Any] = {
        "problems": full["n_problems"],
        "untagged": full["n_untagged"],
        "mean_chains": round(full["chains_per_problem"]["mean"], 3),
        "leaves_covered": full["leaves_covered"],
        "chains_per_problem": full["chains_per_problem"]["histogram"],
        "coverage_per_leaf": full["coverage"],
    }
    truth_path = ctx.workdir / "world" / "pool_truth.jsonl"
    if truth_path.exists():
        truth = {r["unique_id"]: r["chains"] for r in read_jsonl(truth_path)}
        quality = leaf_prf([truth.get(r["unique_id"], []) for r in rows], [r["chains"] for r in rows])
        stats.update({f"leaf_{k}": round(v, 4) for k, v in quality.items() if k != "exact_set"})
    return stats


def stage_profile(
    ctx: Context,
    tagged: Path,
    tree_path: Path,
    student: str,
    profiler: str,
    limit: int,
    engine: str,
    max_new_tokens: int,
    batch_size: int,
    engine_url: str | None = None,
) -> Path:
    """The student answers a seeded sample of the tagged pool; verdicts and per-skill profile are saved."""
    from skillcore import SkillTree

    out = ctx.stage_dir("profile")
    problems = _sample_rows(tagged, limit, ctx.seed)
    from distill.engines import SamplingConfig

    sampling = SamplingConfig(temperature=0.6, max_new_tokens=max_new_tokens, seed=ctx.seed)
    if profiler.startswith(("http://", "https://")):
        # The service reads files under its allowed roots: the sample and tree go there by path.
        from skillcore import write_jsonl
        from skillprofiler.client import ProfilerClient

        sample_path = out / "pool_sample.jsonl"
        write_jsonl(sample_path, problems)
        with ProfilerClient(profiler) as client:
            answer = client.profile(
                model=student, pool=str(sample_path.resolve()), tree=str(tree_path.resolve()), engine=engine,
                sampling=sampling.model_dump(), profile_id=f"{ctx.workdir.name}-{ctx.seed}", batch_size=batch_size,
            )  # fmt: skip
        weakest = ", ".join(
            f"{w['chain'].split('->')[-1]} {w['accuracy'] or 0:.0%}" for w in answer["weakest"][:5]
        )
        ctx.record(
            "profile", problems=answer["problems"], accuracy=round(answer["accuracy"], 3), weakest=weakest
        )
        return Path(answer["out_dir"]) / "verdicts.jsonl"
    if profiler != "in-process":
        raise typer.BadParameter("--profiler must be 'in-process' or http://host:port")
    from distill.profiling import ProfileConfig, run_profile

    opts = _engine_opts(engine, batch_size, engine_url)
    result, _, _ = run_profile(
        student, SkillTree.load(tree_path), problems, out_dir=out, engine=engine, engine_opts=opts,
        config=ProfileConfig(sampling=sampling), on_mismatch="restart",  # the stage folder is this run's own
    )  # fmt: skip
    weakest = ", ".join(f"{r['chain'].split('->')[-1]} {r['accuracy']:.0%}" for r in result.weakest(5))
    ctx.record("profile", problems=len(problems), accuracy=round(result.accuracy, 3), weakest=weakest)
    return out / "verdicts.jsonl"


def stage_select(
    ctx: Context,
    tagged: Path,
    verdicts: Path,
    tree_path: Path,
    k: int,
    strategy: str,
    baselines: list[str],
    temperature: float,
    w_max: float,
) -> dict[str, Path]:
    """K training problems by the chosen strategy, plus each baseline for comparison."""
    from skillcore import SkillTree, Verdict, read_jsonl
    from skillselect import Pool, log_selection, select

    tree = SkillTree.load(tree_path)
    verdict_rows = [Verdict.model_validate(r) for r in read_jsonl(verdicts)]
    judged = {v.unique_id for v in verdict_rows}
    tagged_rows = [r for r in _tagged_records(tagged) if r.unique_id in judged]
    pool = Pool.from_records(tagged_rows, verdict_rows)
    out: dict[str, Path] = {}
    for name in [strategy, *[b for b in baselines if b != strategy]]:
        selection = select(
            pool, tree, k=k, strategy=name, seed=ctx.seed, temperature=temperature, w_max=w_max
        )
        target = ctx.stage_dir("select") / name
        selection.save(out=target / "selected.jsonl", report_dir=target)
        run_id = log_selection(selection, dataset_name=f"selected-{name}")
        (target / "select_run.json").write_text(json.dumps({"run_id": run_id}))
        out[name] = target / "selected.jsonl"
        ctx.record(f"select:{name}", k=len(selection.unique_ids), **_short(selection.summary))
    return out


def stage_train(
    ctx: Context,
    selected: Path,
    student: str,
    strategy: str,
    settings: Any,
    fmt: Any,
    preset: str,
) -> dict[str, Any]:
    """Skill-aware (or plain) SFT of the student on a selected set, through TRL; resumable.

    The output folder is named by a key of everything that decides the result (student weights, training
    settings, formatting, the examples): the same inputs reuse or resume it, a changed one trains anew."""
    import hashlib

    from distill.formatting import check_rendered, format_examples
    from distill.models import model_fingerprint, resolve_model
    from distill.sft import train_sft
    from skillcore import write_jsonl
    from skillcore.tracking import log_dataset, log_json, stage_run
    from transformers import AutoTokenizer

    problems = _tagged_records(selected)
    rows, stats = format_examples(problems, fmt)
    path = resolve_model(student)
    check_rendered(AutoTokenizer.from_pretrained(path), rows)  # the Skills block must survive the template
    variant = "skill" if fmt.skill_aware else "plain"
    identity = {
        "student": model_fingerprint(student, path),
        # what shapes the weights; not where, how fast, or how often progress is saved or logged
        "settings": settings.model_dump(mode="json", exclude=_NOT_IN_TRAIN_KEY),
        "format": fmt.model_dump(mode="json"),
        "examples": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    out = ctx.stage_dir("train") / f"{strategy}-{variant}-{key}"
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", rows)
    params = {
        "student": student, "strategy": strategy, "variant": variant, "preset": preset, "train_key": key,
        "n_examples": len(rows), **{f"sft.{k}": v for k, v in settings.model_dump().items() if k != "extra"},
        **{f"format.{k}": v for k, v in fmt.model_dump().items() if k != "display_names"},
    }  # fmt: skip
    with stage_run("train", params=params, run_name=f"train:{strategy}-{variant}") as run:
        dataset = log_dataset(out / "train.jsonl", name=f"train-{strategy}-{variant}", context="training")
        result = train_sft(student, rows, settings, out_dir=out)
        import mlflow

        mlflow.log_metrics(
            {
                "train_loss": result.train_loss,
                "train_seconds": result.seconds,
                "steps_per_second": result.steps_per_second,
                "tokens_per_second": result.tokens_per_second,
                "examples_with_skills": stats.with_skills,
                "dropped_skill_headers": stats.dropped_headers,
            }
        )
        log_json({"format": stats, "result": result}, "train/summary.json")
        run_id = run.info.run_id
    ctx.record(
        f"train:{strategy}-{variant}", preset=preset, steps=result.steps, loss=round(result.train_loss, 4),
        seconds=round(result.seconds, 1), reused=result.skipped, resumed=result.resumed_from is not None,
    )  # fmt: skip
    return {
        "model_dir": result.model_dir,
        "key": key,
        "variant": variant,
        "dataset_digest": dataset.digest,
        "run_id": run_id,
    }


_NOT_IN_TRAIN_KEY = {
    "threads",
    "device",
    "keep_checkpoints",
    "logging_steps",
    "save_steps",
    "save_total_limit",
}


def stage_evaluate(
    ctx: Context,
    label: str,
    model: str,
    benchmarks: dict[str, list[Any]],
    repeats: dict[str, int],
    config: Any,
    engine: str,
    engine_opts: dict[str, Any],
) -> Any:
    """The student on every benchmark (the shared rollout, resumable per benchmark), scored and logged."""
    from distill.eval import run_evaluation
    from skillcore.tracking import stage_run

    with stage_run(
        "evaluate",
        params={"model": model, "engine": engine, **_eval_params(config)},
        run_name=f"evaluate:{label}",
    ):
        report = run_evaluation(
            model, benchmarks, config, out_dir=ctx.stage_dir("evaluate") / label, engine=engine,
            engine_opts=engine_opts, repeats=repeats,
        )  # fmt: skip
    scores = ", ".join(f"{n} {r.score.avg_at_k.value:.1%}" for n, r in report.benchmarks.items())
    ctx.record(f"evaluate:{label}", average=round(report.headline, 4), benchmarks=scores)
    return report


def _eval_params(config: Any) -> dict[str, Any]:
    return {
        "samples_per_problem": config.samples_per_problem,
        "limit": config.limit,
        **{f"sampling.{k}": v for k, v in config.sampling.model_dump().items()},
    }


def stage_analysis(
    ctx: Context,
    label: str,
    tree_path: Path,
    before: Any,
    after: Any,
    selected: Path,
) -> dict[str, Any]:
    """Per-skill accuracy before vs after fine-tuning on the benchmarks, against the selection's share of
    each leaf: does the gain concentrate on the skills the selection emphasised?"""
    import matplotlib

    matplotlib.use("Agg")
    import mlflow
    from distill.eval import gain_correlation, gains_markdown, plot_gains, selection_share, skill_gains
    from skillcore import SkillTree, TaggedProblem
    from skillcore.tracking import log_metrics_table, stage_run

    tree = SkillTree.load(tree_path)
    problems, verdicts_before, verdicts_after = [], [], []
    for name, run in after.benchmarks.items():
        # ids are unique within a benchmark only: prefix them with the benchmark's name
        def rename(record: Any, bench: str = name) -> Any:
            return record.model_copy(update={"unique_id": f"{bench}/{record.unique_id}"})

        problems += [rename(p) for p in run.problems if isinstance(p, TaggedProblem) and p.chains]
        verdicts_after += [rename(v) for v in run.rollout.verdicts]
        verdicts_before += [rename(v) for v in before.benchmarks[name].rollout.verdicts]
    out = ctx.stage_dir("analysis") / label
    out.mkdir(parents=True, exist_ok=True)
    if not problems:
        ctx.record(f"analysis:{label}", skipped="no benchmark problem carries skill chains")
        return {}
    keep = {p.unique_id for p in problems}
    frame = skill_gains(
        tree, problems, [v for v in verdicts_before if v.unique_id in keep],
        [v for v in verdicts_after if v.unique_id in keep], selection_share(_tagged_records(selected)),
    )  # fmt: skip
    corr = gain_correlation(frame)
    frame.to_csv(out / "skill_gains.csv", index=False)
    (out / "skill_gains.md").write_text(gains_markdown(frame))
    figure = plot_gains(frame, title=f"Per-skill gain vs selection share ({label})")
    figure.savefig(out / "skill_gains.png", dpi=120, bbox_inches="tight")
    with stage_run("analysis", run_name=f"analysis:{label}"):
        mlflow.log_metrics({f"gain_{k}": float(v) for k, v in corr.items() if isinstance(v, int | float)})
        log_metrics_table(frame, "analysis/skill_gains.json")
        for name in ("skill_gains.csv", "skill_gains.md", "skill_gains.png"):
            mlflow.log_artifact(str(out / name), artifact_path="analysis")
    ctx.record(
        f"analysis:{label}", leaves=corr["n_leaves"], pearson=corr["pearson"], spearman=corr["spearman"]
    )
    return corr


def stage_register(
    ctx: Context,
    registry_model: str,
    trained: dict[str, Any],
    report: Any,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Register the fine-tuned checkpoint (alias ``candidate``) with its lineage and scores, and move
    ``champion`` to it only when its benchmark average beats the current champion's."""
    from distill.registry import (
        find_version,
        move_alias,
        promote_if_better,
        register_checkpoint,
        set_version_tags,
    )
    from skillcore.tracking import log_json, stage_run

    scores = {
        f"eval.{name}.avg_at_{r.score.k}": round(r.score.avg_at_k.value, 6)
        for name, r in report.benchmarks.items()
    }
    tags = {
        "skilldistill.train_key": trained["key"],
        **lineage,
        "eval.average": round(report.headline, 6),
        **scores,
    }
    with stage_run("register", params={"registry_model": registry_model}, run_name="register") as run:
        version = find_version(registry_model, {"skilldistill.train_key": trained["key"]})
        if version is None:
            version = register_checkpoint(trained["model_dir"], registry_model, tags=tags).version
            reused = False
        else:  # this very checkpoint is registered already: refresh its tags, move the alias back to it
            set_version_tags(registry_model, version, tags)
            move_alias(registry_model, "candidate", version)
            reused = True
        decision = promote_if_better(registry_model, version)
        log_json(
            {"version": version, "tags": tags, "promotion": decision.as_dict()}, "register/decision.json"
        )
        run_id = run.info.run_id
    is_champion = decision.promoted or decision.previous_version == version
    typer.secho(f"[register] {decision.reason}", fg="green" if is_champion else "yellow")
    base = lineage.get("eval.base_average")
    if base is not None and report.headline <= base:
        typer.secho(
            f"[register] the fine-tuned student ({report.headline:.1%}) does not beat the base student "
            f"({base:.1%}) on the benchmarks",
            fg="yellow",
        )
    ctx.record(
        "register", model=f"models:/{registry_model}/{version}", candidate=f"models:/{registry_model}@candidate",
        champion=is_champion, reused=reused, beats_base=base is None or report.headline > base, run_id=run_id,
    )  # fmt: skip
    return {"version": version, "promoted": decision.promoted, "reason": decision.reason}


# --------------------------------------------------------------------------------------- helpers
PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math-l5", "olympiadbench")


def _check_student(student: str) -> None:
    """A bad model reference fails before any stage runs: a local path that is no model, an MLflow URI that
    resolves to nothing, a Hugging Face id that cannot be fetched (offline, or unknown)."""
    from distill.models import ModelRefError, is_mlflow_uri, resolve_model

    try:
        path = resolve_model(student)
    except ModelRefError as exc:
        raise typer.BadParameter(str(exc), param_hint="--student") from exc
    if is_mlflow_uri(student) or Path(path).is_dir():
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)  # a few KB: proves the hub id is reachable (or cached) and a model
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: only cached models load)" if offline else ""
        raise typer.BadParameter(
            f"cannot load the model {student!r} from the Hugging Face Hub{hint}: {str(exc).splitlines()[0]}; "
            "pass a local directory or a models:/ URI, or run where the Hub is reachable",
            param_hint="--student",
        ) from exc


def _parse_sources(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--benchmark-source takes NAME=PATH, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def _engine_opts(engine: str, batch_size: int, engine_url: str | None) -> dict[str, Any]:
    if engine == "openai":
        if not engine_url:
            raise typer.BadParameter("--engine openai needs --engine-url http://host:port/v1")
        return {"base_url": engine_url}
    return {"batch_size": batch_size} if engine == "hf" else {}


def _tag_benchmarks(
    ctx: Context, benchmarks: dict[str, list[Any]], tagger: str, tree_path: Path, exemplars: str | None
) -> dict[str, list[Any]]:
    """Benchmark problems with skill chains from the tagging engine (per-skill analysis of real benchmarks)."""
    from skillcore import TaggedProblem

    out: dict[str, list[Any]] = {}
    with TaggerSession(tagger, tree_path, exemplars, ctx) as tag_batch:
        for name, problems in benchmarks.items():
            chains = tag_batch(problems) if problems else []
            out[name] = [
                TaggedProblem(**p.model_dump(exclude={"chains"}), chains=c)
                for p, c in zip(problems, chains, strict=True)
            ]
    return out


def _take(rows: Any, limit: int | None) -> Any:
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield row


def _tagged_records(path: Path) -> list[Any]:
    from skillcore import TaggedProblem, read_jsonl

    return [TaggedProblem.model_validate(r) for r in read_jsonl(path)]


def _sample_rows(tagged: Path, limit: int, seed: int) -> list[Any]:
    rows = [r for r in _tagged_records(tagged) if r.chains]
    random.Random(seed).shuffle(rows)
    return sorted(rows[:limit], key=lambda r: r.unique_id)


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("l2_to_target", "n_leaves_selected", "n_selected_correct", "n_selected_wrong")
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items() if k in keys}


# --------------------------------------------------------------------------------------- CLI
@app.command()
def main(
    registry_model: Annotated[str, typer.Option(help="Registered-model name for the fine-tuned student")],
    workdir: Annotated[
        Path | None, typer.Option(help="Where stage outputs go (default runs/<registry-model>)")
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help="Teacher pool: JSONL or hf://owner/name[:split] (default: offline world)"),
    ] = None,
    tree: Annotated[str | None, typer.Option(help="Skill tree JSON/YAML (needed with --pool)")] = None,
    pool_format: Annotated[
        str, typer.Option(help="Pool field mapping: native, openmathreasoning or math (MATH/MATH-500)")
    ] = "native",
    student: Annotated[
        str | None, typer.Option(help="Student: HF id, directory or models:/ URI (default: tiny Qwen3)")
    ] = None,
    pool_size: Annotated[int, typer.Option(min=1, help="Offline world pool size")] = 5_000,
    suite_size: Annotated[int, typer.Option(min=1, help="Offline world problems per benchmark suite")] = 200,
    tag_limit: Annotated[int | None, typer.Option(min=1, help="Tag only the first N pool problems")] = None,
    tagger: Annotated[str, typer.Option(help="'in-process' or grpc://host:port")] = "in-process",
    exemplars: Annotated[
        str | None, typer.Option(help="Tagged JSONL of exemplar problems for the embedding tagger")
    ] = None,
    profiler: Annotated[str, typer.Option(help="'in-process' or http://host:port")] = "in-process",
    profile_limit: Annotated[
        int, typer.Option(min=1, help="Pool problems the student answers (paper: all)")
    ] = 2_000,
    engine: Annotated[str, typer.Option(help="Generation engine: hf, vllm or openai")] = "hf",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Answer length cap (paper: 8192)")] = 384,
    batch_size: Annotated[int, typer.Option(min=1, help="Generation batch size (hf engine)")] = 64,
    engine_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL for --engine openai (vllm serve, ...)")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Training examples to select (paper: 1000)")] = 1000,
    strategy: Annotated[str, typer.Option(help="Selection strategy")] = "skill",
    baseline: Annotated[list[str] | None, typer.Option(help="Baseline strategies to select too")] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", "-T", min=0.0, help="Weight temperature T")
    ] = 0.5,
    w_max: Annotated[float, typer.Option(min=1.0, help="Weight cap w_max")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed for every stage")] = 0,
    skill_aware: Annotated[
        bool, typer.Option(help="Training targets name their skill chains first (the paper's fine-tuning)")
    ] = True,
    placement: Annotated[
        str,
        typer.Option(help="Where the Skills block goes: think (Qwen3) or before_think (the paper's code)"),
    ] = "think",
    sft_preset: Annotated[
        str | None,
        typer.Option(
            help="SFT preset (paper, cpu-demo) or YAML file (default: cpu-demo offline, else paper)"
        ),
    ] = None,
    eval_preset: Annotated[
        str | None,
        typer.Option(help="Evaluation preset (paper, cpu-demo) or YAML file (default as --sft-preset)"),
    ] = None,
    benchmarks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated benchmarks (default: the five of the paper; offline: the world's)"
        ),
    ] = None,
    benchmark_source: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH: a benchmark from a local file or folder")
    ] = None,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N problems only")] = None,
) -> None:
    """Run every stage that exists, end to end, under one MLflow parent run."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C: open MLflow runs end as KILLED, finished work stays for the next call
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if pool is None and student is None:  # the offline default must never reach a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from skillcore import PRESETS
    from skillcore.tracking import log_json, pipeline_run, resolve_tracking_uri, tracking_store

    if pool_format not in PRESETS:
        raise typer.BadParameter(f"--pool-format must be one of {', '.join(PRESETS)}")
    if pool is not None and tree is None:
        raise typer.BadParameter("--pool needs --tree (the skill tree to tag against)")
    if tree is not None:
        from skillcore import SkillTree

        try:
            SkillTree.load(tree)  # fail early, before any run is opened, on a bad tree
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--tree") from exc
    if student is not None:
        _check_student(student)
    if engine == "vllm":
        from distill.engines.vllm_engine import vllm_unavailable_reason

        reason = vllm_unavailable_reason()
        if reason is not None:
            raise typer.BadParameter(
                f"{reason}; run with --engine hf (transformers) or --engine openai --engine-url <vllm serve URL>",
                param_hint="--engine",
            )
    from distill.eval import TASKS, load_eval_config
    from distill.formatting import FormatConfig
    from distill.sft import load_sft_settings

    default_preset = "cpu-demo" if student is None else "paper"  # the tiny offline student, or a real one
    sft_preset, eval_preset = sft_preset or default_preset, eval_preset or default_preset
    try:
        sft_settings = load_sft_settings(sft_preset, seed=seed)
        eval_config = load_eval_config(eval_preset, seed=seed, limit=eval_limit)
        fmt = FormatConfig(skill_aware=skill_aware, placement=placement)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    bench_names = (
        [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else list(PAPER_BENCHMARKS)
    )
    unknown = [b for b in bench_names if b not in TASKS]
    if unknown:
        raise typer.BadParameter(f"unknown benchmark(s) {unknown}; known: {', '.join(TASKS)}")
    sources = _parse_sources(benchmark_source or [])
    ctx = Context(workdir=workdir or Path("runs") / registry_model, seed=seed)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    resolve_tracking_uri()
    typer.secho(f"{tracking_store().describe()}   workdir: {ctx.workdir}", fg="green")
    params = {
        "registry_model": registry_model,
        "k": k,
        "strategy": strategy,
        "T": temperature,
        "w_max": w_max,
        "profile_limit": profile_limit,
        "seed": seed,
        "engine": engine,
        "skill_aware": skill_aware,
        "placement": placement,
        "sft_preset": sft_preset,
        "eval_preset": eval_preset,
        "benchmarks": ",".join(bench_names),
    }
    with pipeline_run(
        f"distill:{registry_model}", params=params, tags={"skilldistill.pipeline": "distill"}
    ) as run:
        pool_path, tree_path, world_exemplars = stage_data(ctx, pool, tree, pool_size, suite_size)
        student_ref = stage_student(ctx, student)
        tagged = stage_tag(
            ctx, pool_path, tree_path, tagger, exemplars or world_exemplars, tag_limit, pool_format
        )
        verdicts = stage_profile(
            ctx, tagged, tree_path, student_ref, profiler, profile_limit, engine, max_new_tokens, batch_size,
            engine_url,
        )  # fmt: skip
        selected = stage_select(
            ctx, tagged, verdicts, tree_path, k, strategy, baseline or ["random"], temperature, w_max
        )
        # train -> evaluate (base and fine-tuned) -> per-skill analysis -> register
        from distill.eval import load_benchmarks

        world_dir = ctx.workdir / "world" if pool is None else None
        bench_problems, repeats = load_benchmarks(bench_names, world_dir=world_dir, sources=sources)
        if world_dir is None:  # real benchmarks carry no chains: tag them like the pool, for the analysis
            bench_problems = _tag_benchmarks(
                ctx, bench_problems, tagger, tree_path, exemplars or world_exemplars
            )
        opts = _engine_opts(engine, batch_size, engine_url)
        trained = stage_train(ctx, selected[strategy], student_ref, strategy, sft_settings, fmt, sft_preset)
        base_report = stage_evaluate(
            ctx, "base", student_ref, bench_problems, repeats, eval_config, engine, opts
        )
        label = f"{strategy}-{trained['variant']}"
        tuned_report = stage_evaluate(
            ctx, label, trained["model_dir"], bench_problems, repeats, eval_config, engine, opts
        )
        stage_analysis(ctx, label, tree_path, base_report, tuned_report, selected[strategy])
        select_run = json.loads((selected[strategy].parent / "select_run.json").read_text())["run_id"]
        lineage = {
            "skilldistill.base_model": student_ref,
            "skilldistill.strategy": strategy,
            "skilldistill.skill_aware": skill_aware,
            "skilldistill.preset": sft_preset,
            "skilldistill.selection_run_id": select_run,
            "skilldistill.train_run_id": trained["run_id"],
            "skilldistill.train_dataset_digest": trained["dataset_digest"],
            "eval.base_average": round(base_report.headline, 6),
        }
        stage_register(ctx, registry_model, trained, tuned_report, lineage)
        log_json(ctx.stages, "pipeline/stages.json")
        summary_path = ctx.workdir / "summary.json"
        summary_path.write_text(
            json.dumps({"run_id": run.info.run_id, "stages": ctx.stages}, indent=1, default=str)
        )
    typer.secho(f"done: MLflow run {run.info.run_id}; summary in {summary_path}", fg="green")


if __name__ == "__main__":
    sys.exit(app())
