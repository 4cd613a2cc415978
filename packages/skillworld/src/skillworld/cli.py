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
        int, typer.Option("--n-problems", min=1, help="Chat problems in the training corpus")
    ] = _BOOT.n_problems,
    n_textbook: Annotated[
        int, typer.Option("--n-textbook", min=0, help="Textbook passages in the training corpus")
    ] = _BOOT.n_textbook,
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
    force: Annotated[
        bool, typer.Option("--force", help="Register a new version even if the registered model exists")
    ] = False,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Train from scratch even with the default settings (whose student ships with the package)",
        ),
    ] = False,
    model_json: Annotated[
        str, typer.Option("--model-json", help='Qwen3Config overrides as JSON, e.g. {"hidden_size": 128}')
    ] = "{}",
) -> None:
    """Put the tiny Qwen3 base student in --out, log it to MLflow and register it.

    With the default settings this is the student shipped with the package (verified against its
    digests); --retrain, or any other setting, trains one from scratch (11-13 minutes at one thread
    for the default corpus) and reports whether it matches the shipped one bit for bit."""
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
        n_textbook=n_textbook,
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
        out,
        config,
        retrain=retrain,
        register=register,
        registered_name=registered_name,
        alias=alias,
        force=force,
    )
    if result.skipped:
        typer.echo(
            f"{registered_name} is already registered ({result.model_uri}); nothing to do (use --force to retrain)"
        )
        return
    train = result.train
    if result.source == "shipped":
        typer.echo(f"copied the shipped base student (sha256 verified) to {out}")
    else:
        typer.echo(
            f"trained {train['steps']} steps ({train['examples_seen']} examples, {train['tokens_seen']} "
            f"tokens) in {train['seconds']:.0f}s, final loss {train['final_loss']:.3f}; saved to {out}"
        )
        if config == BootstrapConfig():
            from skillworld.bootstrap import ShippedStudentError, file_digests, verify_shipped

            try:
                shipped = verify_shipped()["sha256"]["model.safetensors"]
            except ShippedStudentError as exc:
                typer.echo(f"no shipped student to compare with: {exc}")
            else:
                typer.echo(
                    "the weights are bit for bit the shipped student's"
                    if file_digests(out)["model.safetensors"] == shipped
                    else "the weights differ from the shipped student's (another torch build or thread count?)"
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
