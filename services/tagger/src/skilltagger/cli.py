"""``skilltagger``: tag a pool in bulk (resumable, tracked in MLflow) or serve the gRPC API."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from skillcore import (
    JsonlAppender,
    JsonlError,
    PoolProblem,
    SkillTreeError,
    iter_rows,
    map_record,
    read_jsonl,
)
from skillcore.cli_options import TreeDuplicatesOpt, TreeRawLevelsOpt
from skilltag.quality import tag_stats

app = typer.Typer(help="Skill tagging: attribute problems to skill chains.", no_args_is_help=True)

WORLD = "world"
TREE_HELP = "skill tree file (JSON/YAML), or 'world' for the offline world's tree"
TreeOpt = Annotated[str, typer.Option(help=TREE_HELP)]
BackendOpt = Annotated[str, typer.Option(help="embedding (offline default) or openai")]
ExemplarsOpt = Annotated[
    str | None, typer.Option(help="tagged JSONL; single-skill rows become exemplars (embedding backend)")
]
UrlOpt = Annotated[
    list[str] | None, typer.Option("--openai-url", help="OpenAI-compatible base URL (repeatable)")
]
ModelOpt = Annotated[str, typer.Option("--openai-model", help="model name for the openai backend")]
ConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--openai-concurrency",
        min=1,
        help="chat requests in flight per tagger process (openai backend; a 32B vLLM server wants 100+)",
    ),
]


ThreadsOpt = Annotated[int, typer.Option(min=0, help="torch threads for the embedding model (0: default)")]


@contextmanager
def _tree_file(tree: str) -> Iterator[Path]:
    """The tree file for the engine: TREE itself, or for 'world' the offline world's tree written to a
    temporary file (the engine reads it once, when it is built)."""
    if tree == WORLD:
        from skillworld import world_tree

        with tempfile.TemporaryDirectory(prefix="skilltagger-") as folder:
            path = Path(folder) / "world-tree.json"
            world_tree().save(path)
            yield path
        return
    path = Path(tree)
    if not path.is_file():
        raise typer.BadParameter(
            f"skill tree file not found: {path} (or pass '{WORLD}')", param_hint="--tree"
        )
    yield path


@contextmanager
def _tree_errors() -> Iterator[None]:
    """A malformed tree (duplicate sibling names included, the message naming the flag that merges them)
    is a usage error, exit code 2."""
    try:
        yield
    except SkillTreeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tree") from exc


def _engine(
    tree: str,
    backend: str,
    cache: str | None,
    exemplars: str | None,
    urls: list[str] | None,
    model: str,
    threads: int = 0,
    tree_duplicates: str = "error",
    tree_raw_levels: str = "instances",
    concurrency: int = 16,
) -> Any:
    """The tagging engine for the CLI's options (a tree file, or 'world'); tree errors exit 2."""
    from skilltag.factory import EngineSettings, build_engine

    with _tree_file(tree) as path, _tree_errors():
        return build_engine(
            EngineSettings(
                tree=path,
                tree_duplicates=tree_duplicates,
                tree_raw_levels=tree_raw_levels,
                backend=backend,
                cache=cache,
                exemplars=exemplars,
                openai_urls=urls or [],
                openai_model=model,
                openai_options={"max_concurrency": concurrency} if backend == "openai" else {},
                embedding_options={"threads": threads or None} if backend == "embedding" else {},
            )
        )


@app.command()
def tag(
    source: Annotated[str, typer.Argument(help="input JSONL or hf://owner/name[:split]")],
    output: Annotated[Path, typer.Argument(help="tagged JSONL (appended to; reruns resume)")],
    tree: Annotated[
        str | None,
        typer.Option(help=f"{TREE_HELP}; required unless --server (then checked against the service's)"),
    ] = None,
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    backend: BackendOpt = "embedding",
    cache: Annotated[str | None, typer.Option(help="SQLite tag cache (default: OUTPUT.cache.sqlite)")] = None,
    exemplars: ExemplarsOpt = None,
    openai_url: UrlOpt = None,
    openai_model: ModelOpt = "",
    openai_concurrency: ConcurrencyOpt = 16,
    server: Annotated[
        str | None, typer.Option(help="tag through a running service (grpc://host:port)")
    ] = None,
    mapping: Annotated[
        str, typer.Option(help="field mapping preset: native, math, openmathreasoning")
    ] = "native",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="tag only the first N input rows")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log an MLflow run")] = True,
    threads: ThreadsOpt = 0,
) -> None:
    """Tag every problem of SOURCE into OUTPUT; a killed run resumes where it stopped."""
    from skilltag.engine import TagResult, tagged_problem
    from tqdm import tqdm

    cache = cache or str(output) + ".cache.sqlite"
    tag_batch: Any
    if server:
        from skilltagger.client import TaggerClient

        client = TaggerClient.from_address(server, batch_size=batch_size)
        served = client.skill_tree()
        if tree is not None:
            from skilltag.factory import load_tree

            with _tree_file(tree) as path, _tree_errors():
                if load_tree(path, tree_duplicates, tree_raw_levels).content_hash() != served.tree_hash:
                    raise typer.BadParameter(
                        f"the service at {server} serves another tree", param_hint="--tree"
                    )
        tree_obj = served.tree
        tag_batch = client.tag
        describe: dict[str, Any] = {"server": server}
    else:
        if tree is None:
            raise typer.BadParameter(
                f"a skill tree is needed: a file (JSON/YAML) or '{WORLD}', unless --server",
                param_hint="--tree",
            )
        engine = _engine(
            tree,
            backend,
            cache,
            exemplars,
            openai_url,
            openai_model,
            threads,
            tree_duplicates,
            tree_raw_levels,
            openai_concurrency,
        )
        tree_obj = engine.tree
        tag_batch = engine.tag
        describe = engine.describe()

    def input_rows() -> Iterator[dict[str, Any]]:
        """The input's rows; an unreadable line (bad JSON, nested too deep) is a usage error (exit 2)."""
        lines = iter_rows(source)
        while True:
            try:
                yield next(lines)
            except StopIteration:
                return
            except JsonlError as exc:
                raise typer.BadParameter(str(exc), param_hint="INPUT") from exc

    def problems(done: set[Any]) -> Iterator[PoolProblem]:
        for i, raw in enumerate(input_rows()):
            if limit is not None and i >= limit:
                return
            try:  # tagging reads the question (and solution), not the expected answer
                record = map_record(raw, mapping, require_answer=False)
            except (KeyError, ValueError) as exc:
                raise typer.BadParameter(f"{source} row {i + 1}: {exc}", param_hint="INPUT") from exc
            if record.unique_id not in done:
                yield record

    n_new = n_cached = 0
    with JsonlAppender(output) as out:
        already = len(out.done_ids)
        bar = tqdm(desc="tagging", unit="problem", initial=already, file=sys.stderr)
        batch: list[PoolProblem] = []

        def flush() -> None:
            nonlocal n_new, n_cached
            results: list[TagResult] = tag_batch(batch)
            for record, result in zip(batch, results, strict=True):
                out.write(tagged_problem(record, result))
                n_cached += int(result.from_cache)
            out.flush()
            n_new += len(batch)
            bar.update(len(batch))
            batch.clear()

        for record in problems(out.done_ids):
            if record.unique_id in {b.unique_id for b in batch}:
                continue  # a duplicate id in the input: the first one wins
            batch.append(record)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        bar.close()

    rows = list(read_jsonl(output))
    stats = tag_stats(rows, tree_obj)
    stats.update({"resumed_with": already, "tagged_now": n_new, "from_cache_now": n_cached})
    stats_path = Path(str(output) + ".stats.json")
    stats_path.write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    if mlflow:
        from skillcore.tracking import tracking_store

        typer.echo(tracking_store().describe(), err=True)
        _log_mlflow(source, output, stats, describe)
    summary = {k: v for k, v in stats.items() if k != "coverage"}
    typer.echo(json.dumps(summary))


def _log_mlflow(source: str, output: Path, stats: dict[str, Any], describe: dict[str, Any]) -> None:
    import mlflow as mlf
    from skillcore.tracking import log_dataset, log_json, stage_run

    params = {
        "source": source,
        "output": str(output),
        **{k: v for k, v in describe.items() if k != "backend_config"},
    }
    with stage_run("tag", params=params):
        log_dataset(output, name=output.stem, context="tagged", artifact=True)
        log_json(stats, "tag_stats.json")
        cpp = stats["chains_per_problem"]
        mlf.log_metrics(
            {
                "n_problems": stats["n_problems"],
                "n_untagged": stats["n_untagged"],
                "chains_per_problem_mean": cpp["mean"],
                "chains_per_problem_max": cpp["max"],
                "leaves_covered": stats["leaves_covered"],
                "from_cache_now": stats["from_cache_now"],
            }
        )


@app.command()
def serve(
    tree: TreeOpt,
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    backend: BackendOpt = "embedding",
    host: Annotated[str, typer.Option(help="bind address (loopback unless told otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 50051,
    workers: Annotated[
        int, typer.Option(min=1, help="tagging threads (health and reflection are answered apart from them)")
    ] = 8,
    cache: Annotated[str | None, typer.Option(help="SQLite tag cache path (none: no cache)")] = None,
    exemplars: ExemplarsOpt = None,
    openai_url: UrlOpt = None,
    openai_model: ModelOpt = "",
    openai_concurrency: ConcurrencyOpt = 16,
    max_problems: Annotated[int, typer.Option(min=1, help="most problems in one call")] = 256,
    grace: Annotated[float, typer.Option(help="seconds in-flight calls get to finish on SIGTERM")] = 10.0,
    threads: ThreadsOpt = 0,
) -> None:
    """Serve SkillTagger (plus grpc.health.v1 and reflection) until SIGTERM/SIGINT, then drain."""
    from skilltagger.server import ServerLimits, TaggerServer

    engine = _engine(
        tree,
        backend,
        cache,
        exemplars,
        openai_url,
        openai_model,
        threads,
        tree_duplicates,
        tree_raw_levels,
        openai_concurrency,
    )
    server = TaggerServer(
        engine, host=host, port=port, workers=workers, limits=ServerLimits(max_problems_per_call=max_problems)
    ).start()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            typer.echo(f"signal {signum}: draining in-flight calls (grace {grace}s)", err=True)
            server.stop(grace)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    typer.echo(
        f"skilltagger serving on {server.address} (backend {engine.backend.name}, tree {engine.tree_hash[:12]})",
        err=True,
    )
    server.wait()
    typer.echo("skilltagger stopped", err=True)


@app.command()
def cascade(
    tree: TreeOpt,
    pool: Annotated[str, typer.Option(help="the pool: input JSONL or hf://owner/name[:split]")],
    out: Annotated[Path, typer.Option(help="tagged JSONL (the format of `tag`; rewritten whole)")],
    base_url: Annotated[
        list[str],
        typer.Option("--base-url", "--openai-url", help="the LLM's OpenAI-compatible base URL (repeatable)"),
    ],
    model: Annotated[str, typer.Option("--model", "--openai-model", help="the LLM's model name")],
    openai_concurrency: ConcurrencyOpt = 16,
    seed_size: Annotated[
        int, typer.Option(min=1, help="problems the LLM tags first (a seeded sample)")
    ] = 2_000,
    holdout: Annotated[
        int, typer.Option(min=0, help="of the seed: kept out of the exemplars to measure agreement")
    ] = 200,
    threshold: Annotated[
        float, typer.Option(help="cheap tagger's confidence below which a problem goes back to the LLM")
    ] = 0.65,
    per_leaf: Annotated[int, typer.Option(min=1, help="exemplars per leaf for the embedding tagger")] = 20,
    sample_seed: Annotated[int, typer.Option(help="seeds the choice of the seed sample")] = 0,
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    report: Annotated[Path | None, typer.Option(help="JSON report (default: OUT.cascade.json)")] = None,
    cache: Annotated[str | None, typer.Option(help="SQLite tag cache (default: OUT.cache.sqlite)")] = None,
    mapping: Annotated[
        str, typer.Option(help="field mapping preset: native, math, openmathreasoning")
    ] = "native",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    limit: Annotated[int | None, typer.Option(min=1, help="tag only the first N input rows")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log an MLflow run")] = True,
    threads: ThreadsOpt = 0,
) -> None:
    """Cascade tagging: the LLM tags a seed sample of the pool, its tags become the embedding tagger's
    exemplars, the embedding tagger tags the rest, and problems it is unsure of go back to the LLM.
    Writes OUT, OUT.exemplars.jsonl (the exemplars) and the report (LLM calls, agreement, fallbacks)."""
    from skilltag.cascade import CascadeConfig, embedding_from, run_cascade, summary, write_result
    from skilltag.factory import EngineSettings, build_engine

    try:
        config = CascadeConfig(
            seed_size=seed_size,
            holdout=holdout,
            threshold=threshold,
            per_leaf=per_leaf,
            sample_seed=sample_seed,
            batch_size=batch_size,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--holdout") from exc
    if not model:
        raise typer.BadParameter("the LLM's model name is needed", param_hint="--model")
    records: list[PoolProblem] = []
    for i, raw in enumerate(iter_rows(pool)):
        if limit is not None and i >= limit:
            break
        try:
            records.append(map_record(raw, mapping, require_answer=False))
        except (KeyError, ValueError) as exc:
            raise typer.BadParameter(f"{pool} row {i + 1}: {exc}", param_hint="--pool") from exc
    report_path = report or Path(str(out) + ".cascade.json")
    with _tree_file(tree) as path, _tree_errors():
        settings = EngineSettings(
            tree=path,
            tree_duplicates=tree_duplicates,
            tree_raw_levels=tree_raw_levels,
            backend="openai",
            cache=cache or str(out) + ".cache.sqlite",
            per_leaf=per_leaf,
            openai_urls=base_url,
            openai_model=model,
            openai_options={"max_concurrency": openai_concurrency},
            embedding_options={"threads": threads or None},
        )
        llm = build_engine(settings)
        try:
            result = run_cascade(
                records, llm, embedding_from(settings), config, str(out) + ".exemplars.jsonl"
            )
        finally:
            getattr(llm.backend, "close", lambda: None)()
    write_result(result, out, report_path)
    if mlflow:
        from skillcore.tracking import tracking_store

        typer.echo(tracking_store().describe(), err=True)
        _log_cascade_mlflow(pool, out, report_path, result.report)
    typer.echo(json.dumps(summary(result.report)))


def _log_cascade_mlflow(source: str, output: Path, report_path: Path, report: dict[str, Any]) -> None:
    import mlflow as mlf
    from skillcore.tracking import log_dataset, stage_run
    from skilltag.cascade import summary

    params = {"source": source, "output": str(output), "cascade": True, **report["config"]}
    with stage_run("tag", params=params):
        log_dataset(output, name=output.stem, context="tagged", artifact=True)
        mlf.log_artifact(str(report_path))
        figures = summary(report)  # the same headline figures the command prints
        mlf.log_metrics({k: float(v) for k, v in figures.items() if isinstance(v, int | float)})


if __name__ == "__main__":
    app()
