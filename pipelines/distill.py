"""End-to-end skill-aware distillation: data -> student -> tag -> profile -> select (-> train, eval).

    python pipelines/distill.py --registry-model NAME [options]

Every stage is a library call, run under one MLflow parent run with a nested run per stage, and writes
its outputs under ``--workdir`` so a rerun resumes where the last one stopped. Without ``--pool`` the
offline world is generated; without ``--student`` the tiny Qwen3 student is bootstrapped and registered
(``qwen3-tiny-base``). ``--tagger grpc://host:port`` and ``--profiler http://host:port`` use running
services instead of the in-process cores.

The train/eval/register stage (skill-aware SFT, benchmarks, ``--registry-model``) is not built yet: the
pipeline says so at the end and records the selected training sets it would train on.
"""

from __future__ import annotations

import json
import logging
import os
import random
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
    """The student to profile: a model reference, or the offline tiny Qwen3 (bootstrapped once, registered)."""
    if student is not None:
        ctx.record("student", model=student)
        return student
    from skillworld.bootstrap import DEFAULT_ALIAS, DEFAULT_REGISTERED_NAME, bootstrap

    result = bootstrap(ctx.stage_dir("student"), registered_name=DEFAULT_REGISTERED_NAME)
    uri = result.model_uri or f"models:/{DEFAULT_REGISTERED_NAME}@{DEFAULT_ALIAS}"
    ctx.record("student", model=uri, bootstrapped=not result.skipped, seconds=round(result.seconds, 1))
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
    if engine == "openai" and not engine_url:
        raise typer.BadParameter("--engine openai needs --engine-url http://host:port/v1")
    from distill.profiling import ProfileConfig, run_profile

    engine_opts: dict[str, dict[str, Any]] = {
        "hf": {"batch_size": batch_size},
        "openai": {"base_url": engine_url},
    }
    opts = engine_opts.get(engine, {})
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
        log_selection(selection, dataset_name=f"selected-{name}")
        out[name] = target / "selected.jsonl"
        ctx.record(f"select:{name}", k=len(selection.unique_ids), **_short(selection.summary))
    return out


# --------------------------------------------------------------------------------------- helpers
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
    k: Annotated[int, typer.Option(min=1, help="Training examples to select (paper: 1000)")] = 500,
    strategy: Annotated[str, typer.Option(help="Selection strategy")] = "skill",
    baseline: Annotated[list[str] | None, typer.Option(help="Baseline strategies to select too")] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", "-T", min=0.0, help="Weight temperature T")
    ] = 0.5,
    w_max: Annotated[float, typer.Option(min=1.0, help="Weight cap w_max")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed for every stage")] = 0,
) -> None:
    """Run every stage that exists, end to end, under one MLflow parent run."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if pool is None and student is None:  # the offline default must never reach a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from skillcore import PRESETS
    from skillcore.tracking import log_json, pipeline_run, resolve_tracking_uri

    if pool_format not in PRESETS:
        raise typer.BadParameter(f"--pool-format must be one of {', '.join(PRESETS)}")
    if pool is not None and tree is None:
        raise typer.BadParameter("--pool needs --tree (the skill tree to tag against)")
    if tree is not None:
        from skillcore import SkillTree

        SkillTree.load(tree)  # fail early, before any run is opened, on a bad tree
    ctx = Context(workdir=workdir or Path("runs") / registry_model, seed=seed)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    typer.secho(f"tracking store: {resolve_tracking_uri()}   workdir: {ctx.workdir}", fg="green")
    params = {
        "registry_model": registry_model,
        "k": k,
        "strategy": strategy,
        "T": temperature,
        "w_max": w_max,
        "profile_limit": profile_limit,
        "seed": seed,
        "engine": engine,
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
        typer.secho(
            f"[train] not built yet: skill-aware SFT, benchmark evaluation and registration as "
            f"{registry_model!r} come with the SFT/eval stage. Selected sets: "
            + ", ".join(f"{n}={p}" for n, p in selected.items()),
            fg="yellow",
        )
        log_json(ctx.stages, "pipeline/stages.json")
        summary_path = ctx.workdir / "summary.json"
        summary_path.write_text(
            json.dumps({"run_id": run.info.run_id, "stages": ctx.stages}, indent=1, default=str)
        )
    typer.secho(f"done: MLflow run {run.info.run_id}; summary in {summary_path}", fg="green")


if __name__ == "__main__":
    sys.exit(app())
