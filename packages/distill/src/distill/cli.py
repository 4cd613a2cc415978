"""``distill`` command line: profile a student, judge answers, show the weakest skills."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="skilldistill: generation, judging, profiling"
)


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
) -> None:
    """Run a student on a tagged pool, judge its answers and build the per-skill profile."""
    from skillcore import SkillTree

    from distill.engines import SamplingConfig
    from distill.profiling import ProfileConfig, ResumeMismatchError, load_pool, run_profile

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = _engine_opts(engine, base_url, batch_size, device, concurrency, tensor_parallel_size)
    skill_tree = SkillTree.load(tree)
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
            log_mlflow=mlflow_log,
            on_mismatch="restart" if restart else "error",
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
    k: int = 10,
    min_attempts: int = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """The k weakest leaf skills of a saved profile."""
    from skillcore import SkillProfile, SkillTree

    from distill.profiling import weakest_markdown, weakest_report

    prof = SkillProfile.load(profile_json, SkillTree.load(tree))
    rows = weakest_report(prof, k, min_attempts=min_attempts)
    typer.echo(json.dumps(rows, indent=1) if as_json else weakest_markdown(rows))


if __name__ == "__main__":
    app()
