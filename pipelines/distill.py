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
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

# Run as a script, this file's folder heads sys.path and its name would shadow the `distill` library.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import typer

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

    def __init__(self, address: str, engine: Any) -> None:
        self.address, self.engine = address, engine
        self.identity = {"kind": "http", "address": address, "engine": engine.kind}

    def __call__(self, student: str, problems: list[Any], tree_path: Path, sampling: Any, out: Path, key: str) -> dict[str, Any]:  # fmt: skip
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


def make_tagger(cfg: Any, data: Any, st: Any) -> Any:
    from skillcore import SkillTree
    from skillpipe.stages import InProcessTagger

    if cfg.tag.tagger.startswith("grpc://"):
        return GrpcTagger(cfg.tag.tagger, SkillTree.load(data.path("tree")).content_hash())
    exemplars = data.path("exemplars") if "exemplars" in data.outputs else None
    return InProcessTagger(cfg.tag, data.path("tree"), exemplars, st.workdir / "tag" / "cache.sqlite")


def make_profiler(cfg: Any) -> Any:
    from skillpipe.stages import InProcessProfiler

    if cfg.profile.profiler.startswith(("http://", "https://")):
        return HttpProfiler(cfg.profile.profiler, cfg.engine)
    return InProcessProfiler(cfg.engine)


# --------------------------------------------------------------------------------------- the recipe
def run_pipeline(cfg: Any) -> dict[str, Any]:
    """Every stage, in order, under one MLflow parent run; returns the summary written to the workdir."""
    from skillcore.tracking import log_json, pipeline_run, tracking_store
    from skillpipe import stages

    st = stages.Stages(cfg.resolved_workdir(), seed=cfg.seed, notify=_print_stage)
    name = cfg.register.name
    with pipeline_run(
        f"distill:{name}", params=_run_params(cfg), tags={"skilldistill.pipeline": "distill"}
    ) as run:
        log_json(cfg.dump(), "pipeline/config.json")
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
        selected = stages.select(st, cfg.select, tagged, verdicts, data)[cfg.select.strategy]
        arm = f"{cfg.select.strategy}-{'skill' if cfg.format.skill_aware else 'plain'}"
        formatted = stages.format_examples(st, cfg.format, selected, student, arm)
        trained = stages.train(st, cfg.train, formatted, student, arm, cfg.format)
        base = stages.evaluate(st, cfg.evaluate, cfg.engine, bench, student.ref, student.fingerprint, "base")
        tuned = stages.evaluate(
            st, cfg.evaluate, cfg.engine, bench, str(trained.path("model")), trained.digest("model"), arm
        )
        stages.analysis(st, arm, data, bench, base, tuned, selected)
        lineage = {
            "skilldistill.base_model": student.ref,
            "skilldistill.strategy": cfg.select.strategy,
            "skilldistill.skill_aware": cfg.format.skill_aware,
            "skilldistill.preset": cfg.train.preset,
            "skilldistill.selection_run_id": selected.info["run_id"],
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
        reused = sorted(k for k, v in st.records.items() if v.get("reused") and "key" in v)
        import mlflow

        mlflow.set_tag("skilldistill.reused_stages", ",".join(reused)[:5000] or "-")
        log_json(st.records, "pipeline/stages.json")
        summary = {"run_id": run.info.run_id, "config": cfg.dump(), "stages": st.records}
        summary_path = st.workdir / "summary.json"
        summary_path.write_text(json.dumps(summary, indent=1, default=str))
    typer.secho(f"done: MLflow run {run.info.run_id}; summary in {summary_path}", fg="green")
    uri = tracking_store().uri
    ui = uri if uri.startswith("http") else f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000"
    typer.secho(f"compare runs in the MLflow UI: {ui}", fg="green")
    return summary


def _print_stage(name: str, info: dict[str, Any]) -> None:
    shown = {k: v for k, v in info.items() if k not in ("dir", "run_id") and not isinstance(v, dict | list)}
    if info.get("reused") and "key" in info:
        shown = {"reused": True, "key": info.get("key")}
    typer.secho(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in shown.items()), fg="cyan")


def _run_params(cfg: Any) -> dict[str, Any]:
    """The parent run's params: what the MLflow compare view should line up across calls."""
    return {
        "preset": cfg.preset, "registry_model": cfg.register.name, "student": cfg.student.model or "tiny-qwen3",
        "seed": cfg.seed, "select.strategy": cfg.select.strategy, "select.k": cfg.select.k,
        "select.temperature": cfg.select.temperature, "select.w_max": cfg.select.w_max,
        "format.skill_aware": cfg.format.skill_aware, "format.placement": cfg.format.placement,
        "train.preset": cfg.train.preset, "train.learning_rate": cfg.train.sft.learning_rate,
        "evaluate.preset": cfg.evaluate.preset, "evaluate.benchmarks": ",".join(cfg.evaluate.benchmarks),
        "engine": cfg.engine.kind, "profile.limit": cfg.profile.limit,
    }  # fmt: skip


# --------------------------------------------------------------------------------------- checks
def check_inputs(cfg: Any) -> None:
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
            SkillTree.load(cfg.data.tree)
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
    """A local path that is no model, an MLflow URI that resolves to nothing, a Hugging Face id that cannot
    be fetched (offline, or unknown)."""
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
) -> None:
    """Run every stage, end to end, under one MLflow parent run."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C: open MLflow runs end as KILLED, finished work stays for the next call
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from skillpipe import ConfigError, load_config
    from skillpipe.config import dotted, merge

    flags = {
        "register.name": registry_model, "workdir": str(workdir) if workdir else None, "student.model": student,
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
    from skillcore.tracking import resolve_tracking_uri, tracking_store
    from skillpipe.stages import PipelineInputError

    resolve_tracking_uri()
    typer.secho(f"{tracking_store().describe()}   workdir: {cfg.resolved_workdir()}", fg="green")
    try:
        run_pipeline(cfg)
    except PipelineInputError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


if __name__ == "__main__":
    sys.exit(app())
