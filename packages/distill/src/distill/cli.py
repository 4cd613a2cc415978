"""``distill`` command line: profile a student, judge answers, show the weakest skills, fine-tune (skill-aware
SFT), evaluate on benchmarks, register and promote a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from skillcore.cli_options import TreeDuplicatesOpt, TreeRawLevelsOpt, load_tree_or_exit

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="skilldistill: generation, judging, profiling, SFT, evaluation, registry",
)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=flag)
        out[key.strip()] = value.strip()
    return out


def _shard(value: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` (shard I of N, from 0)."""
    if value is None:
        return None
    index, sep, count = value.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise typer.BadParameter(f"expected I/N with 0 <= I < N, got {value!r}", param_hint="--shard")
    return int(index), int(count)


SHARD_HELP = "answer only shard I of N (e.g. 0/8, one per GPU) into the same --out; rerun without it to merge"
WORKERS_HELP = "hf on CPU: answer in N processes side by side, one torch thread each"


def _say_store() -> None:
    from skillcore.tracking import tracking_store

    typer.echo(tracking_store().describe(), err=True)


def _engine_opts(
    engine: str, base_url: str | None, batch_size: int, device: str, concurrency: int, tp: int
) -> dict[str, Any]:
    if engine == "hf":
        return {"batch_size": batch_size, "device": device}
    if engine == "openai":
        if not base_url:
            raise typer.BadParameter("--base-url is required with --engine openai")
        return {"base_url": base_url, "concurrency": concurrency}
    if engine == "vllm":
        return {"tensor_parallel_size": tp}
    raise typer.BadParameter(f"unknown engine {engine!r} (hf, openai, vllm)")


@app.command()
def profile(
    model: Annotated[str, typer.Option(help="HF id, local directory, or models:/name/version|@alias")],
    tree: Annotated[Path, typer.Option(help="skill tree JSON/YAML", exists=True, dir_okay=False)],
    pool: Annotated[str, typer.Option(help="tagged pool: JSONL path or hf://owner/name[:split]")],
    out: Annotated[Path, typer.Option(help="output folder (reuse it to resume)")],
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    engine: Annotated[str, typer.Option(help="hf | openai | vllm")] = "hf",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (engine openai)")] = None,
    k: Annotated[int, typer.Option(help="samples per problem")] = 1,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 8192,
    seed: int = 0,
    thinking: Annotated[bool, typer.Option(help="Qwen3 thinking mode")] = True,
    batch_size: Annotated[int, typer.Option(help="hf engine batch size")] = 16,
    device: Annotated[str, typer.Option(help="hf engine device: auto, cpu, cuda")] = "auto",
    concurrency: Annotated[int, typer.Option(help="openai engine concurrent requests")] = 8,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm engine GPUs")] = 1,
    chunk_size: Annotated[int, typer.Option(help="problems per saved chunk")] = 64,
    limit: Annotated[int | None, typer.Option(help="only the first N problems")] = None,
    mapping: Annotated[str, typer.Option(help="field mapping preset of the pool")] = "native",
    mlflow_log: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log the run to MLflow")] = True,
    top: Annotated[int, typer.Option(help="weakest skills to print")] = 10,
    restart: Annotated[
        bool, typer.Option(help="discard answers in --out that another model or sampling setup wrote")
    ] = False,
    shard: Annotated[str | None, typer.Option(help=SHARD_HELP)] = None,
    workers: Annotated[int, typer.Option(min=1, help=WORKERS_HELP)] = 1,
) -> None:
    """Run a student on a tagged pool, judge its answers and build the per-skill profile."""
    from distill.engines import SamplingConfig
    from distill.profiling import ProfileConfig, ResumeMismatchError, load_pool, run_profile

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = _engine_opts(engine, base_url, batch_size, device, concurrency, tensor_parallel_size)
    if mlflow_log:
        _say_store()
    skill_tree = load_tree_or_exit(tree, tree_duplicates, tree_raw_levels)
    try:
        problems = load_pool(pool, mapping=mapping, limit=limit)
    except (OSError, ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--pool") from exc
    config = ProfileConfig(
        samples_per_problem=k,
        sampling=SamplingConfig(
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            enable_thinking=thinking,
        ),
        chunk_size=chunk_size,
        weakest_k=top,
    )
    try:
        result, paths, run_id = run_profile(
            model,
            skill_tree,
            problems,
            out_dir=out,
            engine=engine,
            engine_opts=opts,
            config=config,
            log_mlflow=mlflow_log and shard is None,  # the merged profile is the one worth a run
            on_mismatch="restart" if restart else "error",
            shard=_shard(shard),
            workers=workers,
        )
    except ResumeMismatchError as exc:
        raise typer.BadParameter(f"{exc} (pass --restart to start over)", param_hint="--out") from exc
    if run_id:
        typer.echo(f"MLflow run: {run_id}")
    typer.echo(f"accuracy {result.accuracy:.3f} over {len(result.verdicts)} attempts; reports in {out}")
    typer.echo(paths["weakest_md"].read_text(encoding="utf-8"))


@app.command()
def judge(
    attempts: Annotated[
        Path, typer.Option(help="JSONL with unique_id, response (and sample_index)", exists=True)
    ],
    pool: Annotated[str, typer.Option(help="pool with expected answers: JSONL or hf://")],
    out: Annotated[Path, typer.Option(help="verdicts JSONL to write")],
    timeout_s: float = 5.0,
    workers: Annotated[int | None, typer.Option(help="judge processes (0 = inline)")] = None,
    mapping: str = "native",
) -> None:
    """Judge saved answers against a pool's expected answers."""
    from skillcore import read_jsonl, write_jsonl
    from skillcore.io import iter_rows
    from skillcore.records import map_record

    from distill.judge import JudgeItem, MathJudge

    expected = {p.unique_id: p.expected_answer for p in (map_record(r, mapping) for r in iter_rows(pool))}
    items = []
    for row in read_jsonl(attempts):
        uid = str(row["unique_id"])
        if uid not in expected:
            raise typer.BadParameter(f"{attempts}: unique_id {uid!r} is not in the pool")
        items.append(
            JudgeItem(
                unique_id=uid,
                sample_index=int(row.get("sample_index", 0)),
                response=str(row["response"]),
                expected_answer=expected[uid],
            )
        )
    with MathJudge(workers=workers, timeout_s=timeout_s) as j:
        verdicts = j.judge(items, progress=True)
    write_jsonl(out, verdicts)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    typer.echo(json.dumps(counts))


@app.command()
def weakest(
    profile_json: Annotated[
        Path, typer.Option("--profile", help="profile.json of a finished run", exists=True)
    ],
    tree: Annotated[Path, typer.Option(help="the skill tree the profile was built on", exists=True)],
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    k: int = 10,
    min_attempts: int = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """The k weakest leaf skills of a saved profile."""
    from skillcore import SkillProfile

    from distill.profiling import weakest_markdown, weakest_report

    prof = SkillProfile.load(profile_json, load_tree_or_exit(tree, tree_duplicates, tree_raw_levels))
    rows = weakest_report(prof, k, min_attempts=min_attempts)
    typer.echo(json.dumps(rows, indent=1) if as_json else weakest_markdown(rows))


@app.command()
def sft(
    model: Annotated[
        str, typer.Option(help="student: HF id, local directory, or models:/name/version|@alias")
    ],
    data: Annotated[
        Path, typer.Option(help="selected problems (JSONL with chains for skill-aware)", exists=True)
    ],
    out: Annotated[
        Path, typer.Option(help="output folder (reuse it to resume); the model lands in out/model")
    ],
    preset: Annotated[str, typer.Option(help="SFT preset (paper, cpu-demo) or YAML file")] = "paper",
    skill_aware: Annotated[bool, typer.Option(help="targets name their skill chains first")] = True,
    placement: Annotated[
        str,
        typer.Option(
            help="think (inside the template's thinking block, or the answer's start where it has none) "
            "or before_think (the paper's code)"
        ),
    ] = "think",
    min_depth: Annotated[int, typer.Option(min=1, help="first tree level of each chain")] = 1,
    max_depth: Annotated[int | None, typer.Option(min=1, help="last tree level of each chain")] = None,
    display_names: Annotated[
        Path | None, typer.Option(help="JSON {name: short name} for long skill names", exists=True)
    ] = None,
    on_empty: Annotated[str, typer.Option(help="no chain left: drop (the header) or error")] = "drop",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a setting: learning_rate=2e-5 (repeatable)")
    ] = None,
    mapping: str = "native",
    mlflow_log: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log the run to MLflow")] = True,
) -> None:
    """Fine-tune a student on selected problems through TRL (skill-aware targets by default)."""
    import yaml
    from pydantic import ValidationError
    from skillcore import TaggedProblem, iter_rows, write_jsonl
    from skillcore.records import map_record

    from distill.formatting import FormatConfig, check_rendered, format_examples, load_display_names
    from distill.models import ModelRefError, resolve_model
    from distill.sft import is_main_process, load_sft_settings, train_sft

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: yaml.safe_load(v) for k, v in _pairs(set_, "--set").items()}
    try:
        settings = load_sft_settings(preset, **overrides)
        fmt = FormatConfig.model_validate(
            {
                "skill_aware": skill_aware,
                "placement": placement,
                "min_depth": min_depth,
                "max_depth": max_depth,
                "on_empty": on_empty,
                "display_names": load_display_names(display_names) if display_names else {},
            }
        )
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        problems = [map_record(row, mapping) for row in iter_rows(data)]
        path = resolve_model(model)
    except (OSError, KeyError, ValueError, ModelRefError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if skill_aware and not any(isinstance(p, TaggedProblem) and p.chains for p in problems):
        raise typer.BadParameter(f"{data} has no skill chains: tag it first or pass --no-skill-aware")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        rows, stats = format_examples(problems, fmt, tokenizer)
        check_rendered(tokenizer, rows)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if mlflow_log and is_main_process():
        _say_store()
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_jsonl(out / "train.jsonl", rows)
    typer.echo(
        f"{stats.n_examples} examples, {stats.with_skills} with a Skills block ({stats.dropped_headers} dropped)"
        + (f", placed at {stats.placement}" if stats.placement else "")
    )
    if mlflow_log and is_main_process():  # one MLflow run however many ranks train
        import mlflow
        from skillcore.tracking import log_dataset, stage_run

        params = {
            "model": model,
            "preset": str(preset),
            **settings.model_dump(exclude={"extra"}),
            **stats.model_dump(),
        }
        with stage_run("train", params=params) as run:
            log_dataset(out / "train.jsonl", name="train", context="training")
            result = train_sft(model, rows, settings, out_dir=out)
            mlflow.log_metrics(
                {"train_loss": result.train_loss, "tokens_per_second": result.tokens_per_second}
            )
        typer.echo(f"MLflow run: {run.info.run_id}")
    else:
        result = train_sft(model, rows, settings, out_dir=out)
    ranks = f" on {result.world_size} processes" if result.world_size > 1 else ""
    state = "already trained" if result.skipped else f"{result.steps} steps{ranks} in {result.seconds:.0f}s"
    typer.echo(f"{state}, train loss {result.train_loss:.4f}; model in {result.model_dir}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="HF id, local directory, or models:/name/version|@alias")],
    out: Annotated[Path, typer.Option(help="output folder (reuse it to resume)")],
    benchmarks: Annotated[
        str, typer.Option(help="comma-separated: aime24, aime25, amc23, math-l5, olympiadbench, math500")
    ] = "aime24,aime25,amc23,math-l5,olympiadbench",
    preset: Annotated[str, typer.Option(help="evaluation preset (paper, cpu-demo) or YAML file")] = "paper",
    source: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH: a benchmark from a local file or folder (repeatable)")
    ] = None,
    world: Annotated[
        Path | None, typer.Option(help="offline world folder: its suites stand in for the benchmarks")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="first N problems of each benchmark")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="samples per problem (default: preset)")] = None,
    engine: Annotated[str, typer.Option(help="hf | openai | vllm")] = "hf",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (engine openai)")] = None,
    batch_size: Annotated[int, typer.Option(help="hf engine batch size")] = 16,
    device: Annotated[str, typer.Option(help="hf engine device: auto, cpu, cuda")] = "auto",
    concurrency: Annotated[int, typer.Option(help="openai engine concurrent requests")] = 8,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm engine GPUs")] = 1,
    mlflow_log: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log the run to MLflow")] = True,
    shard: Annotated[str | None, typer.Option(help=SHARD_HELP)] = None,
    workers: Annotated[int, typer.Option(min=1, help=WORKERS_HELP)] = 1,
    restart: Annotated[
        bool, typer.Option(help="discard answers in --out that another model or sampling setup wrote")
    ] = False,
) -> None:
    """Evaluate a model on benchmark tasks: avg@k, pass@k, maj@k with 95% intervals, per-problem records."""
    from distill.eval import load_benchmarks, load_eval_config, run_evaluation
    from distill.eval.tasks import TaskError, UnknownTaskError
    from distill.rollout import ResumeMismatchError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = _engine_opts(engine, base_url, batch_size, device, concurrency, tensor_parallel_size)
    names = [b.strip() for b in benchmarks.split(",") if b.strip()]
    try:
        config = load_eval_config(
            preset, limit=limit, **({"samples_per_problem": samples} if samples else {})
        )
        problems, repeats = load_benchmarks(names, world_dir=world, sources=_pairs(source, "--source"))
    except (UnknownTaskError, TaskError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        report = run_evaluation(
            model,
            problems,
            config,
            out_dir=out,
            engine=engine,
            engine_opts=opts,
            repeats=repeats,
            log_mlflow=mlflow_log and shard is None,  # the merged evaluation is the one worth a run
            on_mismatch="restart" if restart else "error",
            shard=_shard(shard),
            workers=workers,
        )
    except ResumeMismatchError as exc:
        raise typer.BadParameter(f"{exc} (pass --restart to start over)", param_hint="--out") from exc
    typer.echo((out / "results.md").read_text(encoding="utf-8"))
    typer.echo(f"headline (avg@k averaged over benchmarks): {report.headline:.4f}; report in {out}")


@app.command()
def register(
    model_dir: Annotated[
        Path, typer.Option(help="a saved checkpoint folder (e.g. the sft out/model)", exists=True)
    ],
    name: Annotated[str, typer.Option(help="registered model name")],
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE version tag (repeatable)")] = None,
    eval_report: Annotated[
        Path | None,
        typer.Option(help="eval_report.json: its scores become tags (eval.average, ...)", exists=True),
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="move @champion when eval.average beats the champion's")
    ] = True,
) -> None:
    """Register a checkpoint as a new version (alias candidate), then promote it if it is better."""
    from distill.registry import promote_if_better, register_checkpoint

    _say_store()
    tags: dict[str, Any] = _pairs(tag, "--tag")
    if eval_report is not None:
        report = json.loads(eval_report.read_text(encoding="utf-8"))
        tags["eval.average"] = report["headline"]
        for bench, score in report["benchmarks"].items():
            tags[f"eval.{bench}.avg_at_{score['k']}"] = score["avg_at_k"]["value"]
    registered = register_checkpoint(model_dir, name, tags=tags)
    typer.echo(f"registered {registered.uri} ({registered.alias_uri})")
    if promote:
        if "eval.average" not in tags:
            raise typer.BadParameter("--promote needs a score: pass --eval-report or --tag eval.average=...")
        typer.echo(promote_if_better(name, registered.version).reason)


if __name__ == "__main__":
    app()
