"""``skillworld`` command line: generate the world's data, bootstrap the tiny student, profile it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
