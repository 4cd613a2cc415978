"""``skillworld`` command line: generate the world's data, bootstrap the tiny student, profile it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from skillworld.bootstrap import BootstrapConfig

_BOOT = BootstrapConfig()
app = typer.Typer(
    help="The offline skill world: generated corpus, benchmarks and a tiny Qwen3 student.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """The offline skill world: generated corpus, benchmarks and a tiny Qwen3 student."""


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    pool_size: Annotated[int, typer.Option("--pool-size", min=0, help="Teacher pool size")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed")] = 0,
    suite_size: Annotated[
        int, typer.Option("--suite-size", min=1, help="Problems per benchmark suite")
    ] = 200,
) -> None:
    """Write tree.json, pool.jsonl and benchmarks/<suite>.jsonl."""
    from skillcore import write_jsonl

    from skillworld.world import generate_benchmarks, generate_pool, world_tree

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    world_tree().save(out / "tree.json")
    pool = generate_pool(pool_size, seed, progress=True)
    write_jsonl(out / "pool.jsonl", pool)
    suites = generate_benchmarks(seed, suite_size)
    (out / "benchmarks").mkdir(exist_ok=True)
    for name, rows in suites.items():
        write_jsonl(out / "benchmarks" / f"{name}.jsonl", rows)
    typer.echo(
        f"wrote {len(pool)} pool problems and {len(suites)} suites x {suite_size} to {out} "
        f"in {time.perf_counter() - start:.1f}s"
    )


@app.command()
def bootstrap(
    out: Annotated[Path, typer.Option("--out", help="Where the trained student is saved")] = Path(
        "artifacts/qwen3-tiny-base"
    ),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    n_problems: Annotated[
        int, typer.Option("--n-problems", min=1, help="Size of the skewed training mix")
    ] = _BOOT.n_problems,
    epochs: Annotated[float, typer.Option("--epochs", min=0.01)] = _BOOT.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = _BOOT.batch_size,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = _BOOT.lr,
    time_budget: Annotated[
        float | None, typer.Option("--time-budget", help="Stop training after this many seconds")
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="torch CPU threads while training")
    ] = _BOOT.threads or 1,
    registered_name: Annotated[str, typer.Option("--registered-name")] = "qwen3-tiny-base",
    alias: Annotated[str, typer.Option("--alias")] = "base",
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Log to MLflow and register")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Train even if the registered model exists")] = False,
    model_json: Annotated[
        str, typer.Option("--model-json", help='Qwen3Config overrides as JSON, e.g. {"hidden_size": 128}')
    ] = "{}",
) -> None:
    """Train the tiny Qwen3 student from scratch on a skewed mix; save, log to MLflow and register it."""
    import json

    from skillworld.bootstrap import bootstrap as run_bootstrap

    try:
        model_overrides = json.loads(model_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--model-json is not valid JSON: {exc}") from exc
    config = BootstrapConfig(
        model=model_overrides,
        seed=seed,
        n_problems=n_problems,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        time_budget_s=time_budget,
        threads=threads,
    )
    if register:
        from skillcore.tracking import tracking_store

        typer.echo(tracking_store().describe(), err=True)
    result = run_bootstrap(
        out, config, register=register, registered_name=registered_name, alias=alias, force=force
    )
    if result.skipped:
        typer.echo(
            f"{registered_name} is already registered ({result.model_uri}); nothing to do (use --force to retrain)"
        )
        return
    train = result.train
    typer.echo(
        f"trained {train['steps']} steps ({train['examples_seen']} examples, {train['tokens_seen']} tokens) "
        f"in {train['seconds']:.0f}s, final loss {train['final_loss']:.3f}; saved to {out}"
    )
    if result.model_uri:
        typer.echo(f"registered as {result.model_uri} (run {result.run_id}); total {result.seconds:.0f}s")


@app.command("baseline-profile")
def baseline_profile(
    model: Annotated[
        str, typer.Option("--model", help="Model directory or models:/name@alias")
    ] = "models:/qwen3-tiny-base@base",
    out: Annotated[Path, typer.Option("--out", help="Folder for attempts, verdicts and the report")] = Path(
        "artifacts/baseline-profile"
    ),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    suite_size: Annotated[int, typer.Option("--suite-size", min=1)] = 200,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 384,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0: greedy")] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
) -> None:
    """Evaluate the student on the five benchmark suites and print its per-leaf accuracy table."""
    from skillworld.baseline import format_table, run_baseline_profile

    report = run_baseline_profile(
        model,
        out,
        seed=seed,
        suite_size=suite_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
    )
    typer.echo(format_table(report))
    typer.echo(f"report: {out / 'baseline_report.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
