"""End-to-end skill-aware distillation: data -> student -> tag -> profile -> select -> format -> train ->
evaluate -> analysis -> register.

    python pipelines/distill.py --registry-model NAME [--preset cpu-demo|paper | --config FILE]
                                [--student ... --pool ... --budget ...] [--set section.key=value ...]

The stages are library code (``skillpipe.stages``), cached by one rule (a key of each stage's config and its
inputs' digests; outputs under ``<workdir>/<stage>/<key>/``), configured by one tree loaded from a preset
file (``skillpipe/presets``) or the user's file, overridden by the flags below and ``--set``. This script
only composes them, under one MLflow parent run with a nested run per stage, and adapts the services:
``--tagger grpc://host:port`` and ``--profiler http://host:port`` replace the in-process cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

# Run as a script, this file's folder heads sys.path and its name would shadow the `distill` library.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import typer

if TYPE_CHECKING:
    from skillpipe import PipelineConfig, StageResult
    from skillpipe.compare import Arm
    from skillpipe.config import EngineSection
    from skillpipe.stages import BatchTagger, Profiler, Stages

RUN_JOURNAL = (
    "mlflow-runs.json"  # the MLflow runs this workdir's call has open (ended by the next call if it died)
)

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


# --------------------------------------------------------------------------------------- service adapters
class GrpcTagger:
    """The gRPC tagging service as a ``BatchTagger``; refuses a service that serves another tree."""

    def __init__(self, address: str, tree_hash: str) -> None:
        from skilltagger.client import TaggerClient

        self.client = TaggerClient.from_address(address)
        self.client.wait_ready()
        info = self.client.skill_tree()
        if info.tree_hash != tree_hash:
            self.client.close()
            raise typer.BadParameter(
                f"the tagging service at {address} serves another skill tree ({info.tree_hash[:12]}, "
                f"the pipeline's is {tree_hash[:12]})",
                param_hint="--tagger",
            )
        self.identity = {"kind": "grpc", "address": address, "backend": info.backend,
                         "backend_config_hash": info.backend_config_hash}  # fmt: skip

    def __enter__(self) -> Any:
        return lambda batch: [r.chains for r in self.client.tag(batch)]

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        self.client.close()


class HttpProfiler:
    """The BentoML profiling service as a ``Profiler``: it reads the sample and the tree by path (under
    its allowed roots) and writes verdicts in its own work dir; they are copied into the stage's folder."""

    def __init__(self, address: str, engine: EngineSection) -> None:
        self.address, self.engine = address, engine
        self.identity = {"kind": "http", "address": address, "engine": engine.kind}

    def __call__(
        self, student: str, problems: list[Any], tree_path: Path, sampling: Any, out: Path, key: str
    ) -> dict[str, Any]:
        from skillcore import write_jsonl
        from skillprofiler.client import ProfilerClient

        sample = out / "pool_sample.jsonl"
        write_jsonl(sample, problems)
        with ProfilerClient(self.address) as client:
            answer = client.profile(
                model=student, pool=str(sample.resolve()), tree=str(tree_path.resolve()), engine=self.engine.kind,
                sampling=sampling.model_dump(), profile_id=f"{out.parent.parent.name}-{key}",
                batch_size=self.engine.batch_size,
            )  # fmt: skip
        shutil.copyfile(Path(answer["out_dir"]) / "verdicts.jsonl", out / "verdicts.jsonl")
        weakest = ", ".join(
            f"{w['chain'].split('->')[-1]} {w['accuracy'] or 0:.0%}" for w in answer["weakest"][:5]
        )
        return {
            "accuracy": round(answer["accuracy"], 4),
            "weakest": weakest,
            "service_dir": answer["out_dir"],
        }


def make_tagger(cfg: PipelineConfig, data: StageResult, st: Stages) -> BatchTagger:
    from skillcore import SkillTree
    from skillpipe.stages import InProcessTagger

    if cfg.tag.tagger.startswith("grpc://"):
        return GrpcTagger(cfg.tag.tagger, SkillTree.load(data.path("tree")).content_hash())
    exemplars = data.path("exemplars") if "exemplars" in data.outputs else None
    return InProcessTagger(cfg.tag, data.path("tree"), exemplars, st.workdir / "tag" / "cache.sqlite")


def make_profiler(cfg: PipelineConfig) -> Profiler:
    from skillpipe.stages import InProcessProfiler

    if cfg.profile.profiler.startswith(("http://", "https://")):
        return HttpProfiler(cfg.profile.profiler, cfg.engine)
    return InProcessProfiler(cfg.engine)


# --------------------------------------------------------------------------------------- the recipe
def shared_stages(st: Stages, cfg: PipelineConfig) -> dict[str, Any]:
    """What every arm shares: the data, the student, the tags, the benchmarks, the profile."""
    from skillpipe import stages

    data = stages.data(st, cfg.data)
    student = stages.student(st, cfg.student.model)
    tagger = make_tagger(cfg, data, st)
    try:
        tagged = stages.tag(st, cfg.tag, data, tagger)
        bench = stages.benchmarks(st, cfg.evaluate, data, tagger)
    finally:
        getattr(tagger, "close", lambda: None)()
    verdicts = stages.profile(
        st, cfg.profile, tagged, data.digest("tree"), data.path("tree"), student, make_profiler(cfg)
    )
    return {"data": data, "student": student, "tagged": tagged, "bench": bench, "verdicts": verdicts}


def arm_stages(st: Stages, cfg: PipelineConfig, shared: dict[str, Any]) -> dict[str, Any]:
    """One arm: select -> format -> train -> evaluate the fine-tuned student."""
    from skillpipe import stages

    student = shared["student"]
    selected = stages.select(st, cfg.select, shared["tagged"], shared["verdicts"], shared["data"])
    chosen = selected[cfg.select.strategy]
    label = f"{cfg.select.strategy}-{'skill' if cfg.format.skill_aware else 'plain'}"
    formatted = stages.format_examples(st, cfg.format, chosen, student, label)
    trained = stages.train(st, cfg.train, formatted, student, label, cfg.format)
    tuned = stages.evaluate(
        st,
        cfg.evaluate,
        cfg.engine,
        shared["bench"],
        str(trained.path("model")),
        trained.digest("model"),
        label,
    )
    return {"label": label, "selected": chosen, "trained": trained, "tuned": tuned}


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Every stage, in order, under one MLflow parent run; returns the summary written to the workdir."""
    from skillcore.tracking import log_json, pipeline_run
    from skillpipe import stages

    st = stages.Stages(cfg.resolved_workdir(), seed=cfg.seed, notify=_print_stage)
    name = cfg.registry.name
    with pipeline_run(
        f"distill:{name}", params=_run_params(cfg), tags={"skilldistill.pipeline": "distill"}
    ) as run:
        log_json(cfg.dump(), "pipeline/config.json")
        shared = shared_stages(st, cfg)
        student = shared["student"]
        base = stages.evaluate(
            st, cfg.evaluate, cfg.engine, shared["bench"], student.ref, student.fingerprint, "base"
        )
        arm = arm_stages(st, cfg, shared)
        trained, tuned = arm["trained"], arm["tuned"]
        stages.analysis(
            st, arm["label"], shared["data"], shared["bench"], base, tuned, arm["selected"], fmt=cfg.format
        )
        lineage = {
            "skilldistill.base_model": student.ref,
            "skilldistill.strategy": cfg.select.strategy,
            "skilldistill.skill_aware": cfg.format.skill_aware,
            "skilldistill.preset": cfg.train.preset,
            "skilldistill.selection_run_id": arm["selected"].info["run_id"],
            "skilldistill.train_run_id": trained.info["run_id"],
            "skilldistill.train_dataset_digest": trained.info["dataset_digest"],
            "eval.base_average": base.info["average"],
        }
        outcome = stages.register(st, name, trained, tuned, lineage)
        if not outcome["beats_base"]:
            typer.secho(
                f"[register] the fine-tuned student ({tuned.info['average']:.1%}) does not beat the base "
                f"student ({base.info['average']:.1%}) on the benchmarks",
                fg="yellow",
            )
        summary = _finish(st, cfg, run)
    _where_to_look(run, st.workdir / "summary.json")
    return summary


def run_comparison(cfg: PipelineConfig, arms: list[Arm], seeds: list[int]) -> dict[str, Any]:
    """The arms x seeds on one pool, profile and student: one parent run, a nested run per arm and seed
    (params and eval metrics side by side in the MLflow compare view), the results table, the paired
    differences against random SFT and the per-skill gains as files and artifacts. Nothing is registered."""
    import mlflow
    from skillcore.tracking import pipeline_run
    from skillpipe import compare, stages

    st = stages.Stages(cfg.resolved_workdir(), seed=cfg.seed, notify=_print_stage)
    name = cfg.registry.name
    params = {**_run_params(cfg), "arms": ",".join(a.name for a in arms), "seeds": ",".join(map(str, seeds))}
    with pipeline_run(f"compare:{name}", params=params, tags={"skilldistill.pipeline": "compare"}) as run:
        from skillcore.tracking import log_json

        log_json(cfg.dump(), "pipeline/config.json")
        shared = shared_stages(st, cfg)
        student = shared["student"]
        base = stages.evaluate(
            st, cfg.evaluate, cfg.engine, shared["bench"], student.ref, student.fingerprint, "base"
        )
        problems, _ = stages.read_benchmarks(shared["bench"])
        chains = {b: {p.unique_id: p.chains for p in rows} for b, rows in problems.items()}

        def scores(result: Any) -> Any:
            return compare.problem_scores({b: stages.read_verdicts(result.dir / b) for b in problems})

        def naming(result: Any, fmt: Any) -> Any:
            from distill.eval import naming_report

            return naming_report(
                problems,
                {b: stages.read_attempts(result.dir / b) for b in problems},
                {b: stages.read_verdicts(result.dir / b) for b in problems},
                fmt=fmt,
            )

        runs = {}
        named = {}
        for seed in seeds:
            for arm in arms:
                acfg = arm_config(cfg, arm, seed)
                arm_params = {"arm": arm.name, "seed": seed, "select.strategy": arm.strategy,
                              "format.skill_aware": arm.skill_aware, "select.temperature": acfg.select.temperature,
                              "select.w_max": acfg.select.w_max, "select.k": acfg.select.k}  # fmt: skip
                with pipeline_run(f"arm:{arm.name} s{seed}", params=arm_params,
                                  tags={"skilldistill.compare": name, "skilldistill.arm": arm.name}):  # fmt: skip
                    st.prefix = f"{arm.name} s{seed}/"
                    done = arm_stages(st, acfg, shared)
                    st.prefix = ""
                    tuned = done["tuned"]
                    mlflow.log_metrics({"eval/average": tuned.info["average"], "eval/base_average": base.info["average"],
                                        **{f"eval/{b}": v for b, v in tuned.info["scores"].items()}})  # fmt: skip
                    report = naming(tuned, acfg.format)
                    mlflow.log_metrics(report.metrics(block_only=not arm.skill_aware))
                runs[(arm.name, seed)] = scores(tuned)
                named[(arm.name, seed)] = report.overall
        out = st.workdir / "compare"
        out.mkdir(parents=True, exist_ok=True)
        table = compare.results_table(runs)
        paired = compare.paired_table(runs)
        gains = compare.skill_gain_table(runs, scores(base), chains)
        naming_table = compare.naming_table(named, arms)
        table.to_csv(out / "results.csv", index=False)
        paired.to_csv(out / "paired.csv", index=False)
        gains.to_csv(out / "skill_gains.csv", index=False)
        naming_table.to_csv(out / "naming.csv", index=False)
        (out / "results.md").write_text(compare.results_markdown(table, paired, arms, naming_table))
        compare.plot_skill_gains(gains).savefig(out / "skill_gains.png", dpi=120, bbox_inches="tight")
        for file in (
            "results.md",
            "results.csv",
            "paired.csv",
            "skill_gains.csv",
            "skill_gains.png",
            "naming.csv",
        ):
            mlflow.log_artifact(str(out / file), artifact_path="compare")
        mlflow.log_metrics({f"compare/{r['arm']}/vs_random": r["difference"] for _, r in paired.iterrows()})
        mlflow.log_metrics({f"compare/{r['arm']}/naming_rate": r["rate"] for _, r in naming_table.iterrows()
                            if r["skill_aware"] and math.isfinite(r["rate"])})  # fmt: skip
        typer.echo((out / "results.md").read_text())
        summary = _finish(st, cfg, run)
    _where_to_look(run, st.workdir / "summary.json")
    return summary


def arm_config(cfg: PipelineConfig, arm: Arm, seed: int) -> PipelineConfig:
    """The pipeline config of one arm and seed: its selection and targets; the seed draws the selection and
    the training order (data, tags, profile and evaluation keep the config's own seed, so they are shared)."""
    select = cfg.select.model_copy(
        update={"strategy": arm.strategy, "seed": seed, "baselines": [], **arm.select}
    )
    return cfg.model_copy(
        update={
            "select": select,
            "format": cfg.format.model_copy(update={"skill_aware": arm.skill_aware}),
            "train": cfg.train.model_copy(update={"sft": cfg.train.sft.model_copy(update={"seed": seed})}),
        }
    )


def _finish(st: Stages, cfg: PipelineConfig, run: Any) -> dict[str, Any]:
    import mlflow
    from skillcore.tracking import log_json

    reused = sorted(k for k, v in st.records.items() if v.get("reused") and "key" in v)
    mlflow.set_tag("skilldistill.reused_stages", ",".join(reused)[:5000] or "-")
    log_json(st.records, "pipeline/stages.json")
    summary = {"run_id": run.info.run_id, "config": cfg.dump(), "stages": st.records}
    (st.workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _where_to_look(run: Any, summary_path: Path) -> None:
    from skillcore.tracking import tracking_store

    typer.secho(f"done: MLflow run {run.info.run_id}; summary in {summary_path}", fg="green")
    uri = tracking_store().uri
    ui = uri if uri.startswith("http") else f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000"
    typer.secho(f"compare runs in the MLflow UI: {ui}", fg="green")


def _print_stage(name: str, info: dict[str, Any]) -> None:
    shown = {k: v for k, v in info.items() if k not in ("dir", "run_id") and not isinstance(v, dict | list)}
    if info.get("reused") and "key" in info:
        shown = {"reused": True, "key": info.get("key")}
    typer.secho(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in shown.items()), fg="cyan")


def _run_params(cfg: PipelineConfig) -> dict[str, Any]:
    """The parent run's params: what the MLflow compare view should line up across calls."""
    return {
        "preset": cfg.preset, "registry_model": cfg.registry.name, "student": cfg.student.model or "tiny-qwen3",
        "seed": cfg.seed, "select.strategy": cfg.select.strategy, "select.k": cfg.select.k,
        "select.temperature": cfg.select.temperature, "select.w_max": cfg.select.w_max,
        "select.candidates": cfg.select.candidates,
        "format.skill_aware": cfg.format.skill_aware, "format.placement": cfg.format.placement,
        "train.preset": cfg.train.preset, "train.learning_rate": cfg.train.sft.learning_rate,
        "evaluate.preset": cfg.evaluate.preset, "evaluate.benchmarks": ",".join(cfg.evaluate.benchmarks),
        "engine": cfg.engine.kind, "profile.limit": cfg.profile.limit,
    }  # fmt: skip


# --------------------------------------------------------------------------------------- checks
def check_inputs(cfg: PipelineConfig) -> None:
    """Bad input fails here, before any run is opened or stage runs, with one message (exit 2)."""
    from distill.eval import TASKS
    from skillcore import PRESETS, SkillTree

    if cfg.data.pool_format not in PRESETS:
        raise typer.BadParameter(f"--set data.pool_format must be one of {', '.join(PRESETS)}")
    if (
        cfg.data.pool is not None
        and not cfg.data.pool.startswith("hf://")
        and not Path(cfg.data.pool).is_file()
    ):
        raise typer.BadParameter(f"pool file not found: {cfg.data.pool}", param_hint="--pool")
    if cfg.data.tree is not None:
        try:
            SkillTree.load(
                cfg.data.tree, duplicates=cfg.data.tree_duplicates, raw_levels=cfg.data.tree_raw_levels
            )
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--tree") from exc
    if cfg.data.exemplars is not None and not Path(cfg.data.exemplars).is_file():
        raise typer.BadParameter(
            f"exemplars file not found: {cfg.data.exemplars}", param_hint="--set data.exemplars"
        )
    if cfg.student.model is not None:
        _check_student(cfg.student.model)
    if cfg.engine.kind == "vllm":
        from distill.engines.vllm_engine import vllm_unavailable_reason

        reason = vllm_unavailable_reason()
        if reason is not None:
            raise typer.BadParameter(
                f"{reason}; run with --engine hf (transformers) or --engine openai --engine-url <vllm serve URL>",
                param_hint="--engine",
            )
    unknown = [b for b in cfg.evaluate.benchmarks if b not in TASKS]
    if unknown:
        raise typer.BadParameter(
            f"unknown benchmark(s) {unknown}; known: {', '.join(TASKS)}", param_hint="--benchmarks"
        )
    for flag, address, schemes in (("--tagger", cfg.tag.tagger, ("grpc://",)),
                                   ("--profiler", cfg.profile.profiler, ("http://", "https://"))):  # fmt: skip
        if address != "in-process" and not address.startswith(schemes):
            raise typer.BadParameter(
                f"must be 'in-process' or {schemes[0]}host:port, got {address!r}", param_hint=flag
            )


def _check_student(student: str) -> None:
    """A local path that is no model, a broken config.json, a Hugging Face id that cannot be fetched
    (offline and not cached, or unknown): one message before anything runs."""
    from distill.models import ModelRefError, check_model_ref

    try:
        check_model_ref(student, fetch=True)
    except ModelRefError as exc:
        raise typer.BadParameter(
            f"{exc}; pass a local directory or a models:/ URI, or run where the Hub is reachable",
            param_hint="--student",
        ) from exc


# --------------------------------------------------------------------------------------- CLI
@app.command()
def main(
    registry_model: Annotated[str, typer.Option(help="Registered-model name for the fine-tuned student")],
    preset: Annotated[str | None, typer.Option(help="Config preset: cpu-demo (default) or paper")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Your config file (YAML; 'base: <preset>' starts from a preset)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="section.key=value override (repeatable), e.g. select.w_max=5"),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Stage outputs (default runs/<registry-model>)")
    ] = None,
    student: Annotated[str | None, typer.Option(help="Student: HF id, directory or models:/ URI")] = None,
    pool: Annotated[str | None, typer.Option(help="Teacher pool: JSONL or hf://owner/name[:split]")] = None,
    tree: Annotated[str | None, typer.Option(help="Skill tree JSON/YAML (needed with --pool)")] = None,
    budget: Annotated[int | None, typer.Option(min=1, help="Training examples to select (K)")] = None,
    strategy: Annotated[str | None, typer.Option(help="Selection strategy (skill, random, ...)")] = None,
    skill_aware: Annotated[
        bool | None, typer.Option("--skill-aware/--no-skill-aware", help="Skills block in training targets")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="Generation engine: hf, vllm or openai")] = None,
    engine_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL for --engine openai")
    ] = None,
    benchmarks: Annotated[str | None, typer.Option(help="Comma-separated benchmarks")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for every stage")] = None,
    tagger: Annotated[str | None, typer.Option(help="'in-process' or grpc://host:port")] = None,
    profiler: Annotated[str | None, typer.Option(help="'in-process' or http://host:port")] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Run the arms x seeds comparison instead (registers nothing)")
    ] = False,
    arms: Annotated[
        str | None,
        typer.Option(help="Comparison arms, comma-separated (default: the paper's four + paper weights)"),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Comparison seeds, comma-separated")] = "0,1,2",
) -> None:
    """Run every stage, end to end, under one MLflow parent run."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C: open MLflow runs end as KILLED, finished work stays for the next call
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from skillpipe import ConfigError, load_config
    from skillpipe.config import dotted, merge

    flags = {
        "registry.name": registry_model, "workdir": str(workdir) if workdir else None, "student.model": student,
        "data.pool": pool, "data.tree": tree, "select.k": budget, "select.strategy": strategy,
        "format.skill_aware": skill_aware, "engine.kind": engine, "engine.url": engine_url,
        "evaluate.benchmarks": [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else None,
        "seed": seed, "tag.tagger": tagger, "profile.profiler": profiler,
    }  # fmt: skip
    overrides: dict[str, Any] = {}
    for key, value in flags.items():
        if value is not None:
            overrides = merge(overrides, dotted(key, value))
    try:
        cfg = load_config(preset=preset, config_file=config, overrides=overrides, sets=set_ or [])
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if cfg.data.pool is None and cfg.student.model is None:  # the offline default must never reach a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_inputs(cfg)
    if compare:
        from skillpipe.compare import parse_arms

        try:
            chosen, seed_list = parse_arms(arms), sorted({int(x) for x in seeds.split(",") if x.strip()})
            if not seed_list:
                raise ValueError("--seeds needs at least one seed")
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--arms/--seeds") from exc
    from skillcore.tracking import resolve_tracking_uri, tracking_store
    from skillpipe.stages import PipelineInputError

    workdir_path = cfg.resolved_workdir()
    with _hold_workdir(workdir_path):  # before the store is touched: a refused call changes nothing
        resolve_tracking_uri()
        typer.secho(f"{tracking_store().describe()}   workdir: {workdir_path}", fg="green")
        try:
            if compare:
                run_comparison(cfg, chosen, seed_list)
            else:
                run_pipeline(cfg)
        except PipelineInputError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc


@contextmanager
def _hold_workdir(workdir: Path) -> Iterator[None]:
    """One pipeline per workdir: hold its lock for the whole call, or stop (exit 2) naming who holds it.
    Runs that a dead call on this workdir left RUNNING in MLflow are ended as KILLED first, and said so."""
    from skillcore.tracking import end_dead_runs, run_journal
    from skillpipe.cache import LockHeld, workdir_lock

    try:
        lock = workdir_lock(workdir).acquire()
    except LockHeld as exc:
        typer.secho(f"error: {exc}; wait for it to finish or use another --workdir", fg="red", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # a read-only or unusable workdir
        typer.secho(f"error: cannot use the workdir {workdir}: {exc.strerror or exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    try:
        journal = workdir / RUN_JOURNAL
        for run_id, note in end_dead_runs(journal):
            typer.secho(f"[mlflow] run {run_id} was left RUNNING by {note}: marked KILLED", fg="yellow")
        with run_journal(journal):
            yield
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(app())
