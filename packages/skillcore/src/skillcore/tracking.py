"""MLflow helpers: the one place that resolves the tracking store, opens runs, logs datasets and files.

The store: ``MLFLOW_TRACKING_URI``, else a URI set in the process, else the project setting
(``[tool.skilldistill] tracking_uri`` and ``artifact_root`` in the nearest ``pyproject.toml`` at or above the
current folder, relative paths anchored at that file), else MLflow's default. Every command says which
(``tracking_store().describe()``).

Every stage logs through these, so runs from the CLI, the services and the pipeline look the same in the
MLflow UI: a parent run per pipeline invocation, a nested run per stage, each dataset a stage consumes
or produces logged with ``mlflow.log_input`` (name, digest, context).

A run journal (``run_journal``) keeps the ids of the runs a call has open in a file (a pipeline keeps it in
its workdir): a call killed with -9 cannot end its runs, and the next call on that file ends them as KILLED
with a note (``end_dead_runs``). A fresh SQLite store is created under a file lock beside it, so two first
calls on a new store do not race to create its tables.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from pydantic import BaseModel

DEFAULT_EXPERIMENT = "skilldistill"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


PROJECT_FILE = "pyproject.toml"


@dataclass(frozen=True)
class TrackingStore:
    """Which MLflow store this process uses, and what decided it."""

    uri: str
    source: (
        str  # "MLFLOW_TRACKING_URI", "set in this process", "<file> [tool.skilldistill]", "MLflow default"
    )
    artifact_root: str | None = None  # where new experiments keep artifacts (project setting only)

    def describe(self) -> str:
        return f"tracking store: {self.uri} (from {self.source})"


def project_settings(start: str | Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the current folder) with a
    ``[tool.skilldistill]`` table, and that table."""
    import tomllib

    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            try:
                table = (
                    tomllib.loads(candidate.read_text(encoding="utf-8")).get("tool", {}).get("skilldistill")
                )
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if isinstance(table, dict):
                return candidate, table
    return None


def _anchor(value: str, root: Path) -> str:
    """A relative SQLite path or folder in the project file is relative to the project's folder, so every
    command of the project opens the same store wherever it runs from."""
    if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        return f"sqlite:///{(root / value.removeprefix('sqlite:///')).resolve()}"
    if "://" not in value and not Path(value).is_absolute():
        return str((root / value).resolve())
    return value


def tracking_store() -> TrackingStore:
    """The one rule for the tracking store: ``MLFLOW_TRACKING_URI``; else a URI already set in this process;
    else the project's ``[tool.skilldistill] tracking_uri`` (nearest ``pyproject.toml`` at or above the
    current folder); else MLflow's own default (``mlflow.db`` in the current folder)."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    env = os.environ.get("MLFLOW_TRACKING_URI")
    current = str(mlflow.get_tracking_uri()) if is_tracking_uri_set() else None
    # what resolve_tracking_uri chose (mlflow.set_tracking_uri also exports it as MLFLOW_TRACKING_URI)
    if _resolved is not None and current == _resolved.uri and env in (None, "", _resolved.uri):
        return _resolved
    if env:
        return TrackingStore(env, "MLFLOW_TRACKING_URI")
    if current is not None:
        return TrackingStore(current, "set in this process")
    found = project_settings()
    if found is not None and found[1].get("tracking_uri"):
        path, table = found
        root = path.parent
        artifacts = table.get("artifact_root")
        return TrackingStore(
            _anchor(str(table["tracking_uri"]), root),
            f"{path} [tool.skilldistill]",
            _anchor(str(artifacts), root) if artifacts else None,
        )
    return TrackingStore(str(mlflow.get_tracking_uri()), "MLflow default: mlflow.db in the current folder")


_resolved: TrackingStore | None = None


def resolve_tracking_uri() -> str:
    """Point MLflow at ``tracking_store()`` and return its URI (what every stage calls first). A local SQLite
    store is created (its tables, MLflow's migrations) under a file lock on its first use in this process."""
    global _resolved
    store = tracking_store()
    mlflow.set_tracking_uri(store.uri)
    _resolved = store
    _init_sqlite_store(store.uri)
    return store.uri


_initialised: set[str] = set()


def _init_sqlite_store(uri: str) -> None:
    """Two processes opening one new SQLite store both create its tables, and the second fails ("table
    experiments already exists"): the first open of a local SQLite store in each process waits on
    ``<db>.lock`` and opens the store (creating it when it is new) while holding it."""
    if uri in _initialised or not uri.startswith("sqlite:///"):
        return
    from skillcore.locks import ExclusiveLock

    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not str(db) or str(db) == ":memory:":
        return
    lock = ExclusiveLock(db.with_name(db.name + ".lock"), blocking=True, note=f"opening {uri}")
    try:
        lock.acquire()
    except OSError:  # a store in a folder this process cannot write: nothing to create, nothing to guard
        return
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # creates the tables of a new store, runs its migrations
        client.search_registered_models(max_results=1)
    finally:
        lock.release()
    _initialised.add(uri)


def use_experiment(name: str) -> None:
    """``mlflow.set_experiment``, creating the experiment under the project's artifact root when the
    project sets one (MLflow's default is ``./mlruns`` of whatever folder the command runs in)."""
    from mlflow.exceptions import MlflowException

    store = tracking_store()
    if mlflow.get_experiment_by_name(name) is None:
        location = Path(store.artifact_root).as_uri() if store.artifact_root else None
        with suppress(MlflowException):  # created concurrently: set_experiment below finds it
            mlflow.create_experiment(name, artifact_location=location)
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # the UI's model-training view, not the GenAI overview
        mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, "custom_model_development")


@contextmanager
def pipeline_run(
    run_name: str,
    *,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open the parent run of a pipeline invocation (or a stage run nested under an active run)."""
    resolve_tracking_uri()
    use_experiment(experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    nested = mlflow.active_run() is not None
    with (
        mlflow.start_run(run_name=run_name, nested=nested, tags=dict(tags or {})) as run,
        _journaled(run),
        _killed_on_stop(),
    ):
        if params:
            mlflow.log_params(_flat_params(params))
        yield run


@contextmanager
def stage_run(
    stage: str,
    *,
    params: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A run for one stage (tagged ``skilldistill.stage``; named ``run_name`` or the stage): nested under
    the active pipeline run, or standalone when there is none."""
    tags = {"skilldistill.stage": stage}
    if mlflow.active_run() is None:
        with pipeline_run(run_name or stage, experiment=experiment, tags=tags, params=params) as run:
            yield run
        return
    with (
        mlflow.start_run(run_name=run_name or stage, nested=True, tags=tags) as run,
        _journaled(run),
        _killed_on_stop(),
    ):
        if params:
            mlflow.log_params(_flat_params(params))
        yield run


@contextmanager
def _killed_on_stop() -> Iterator[None]:
    """End the active run as KILLED when the work is stopped (Ctrl-C, or SIGTERM turned into SystemExit),
    so it does not stay RUNNING forever; MLflow itself would mark it FAILED."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        mlflow.end_run("KILLED")
        raise


# ------------------------------------------------------------------------------ runs left by a dead process
_journal: Path | None = None
KILLED_NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI


@contextmanager
def run_journal(path: str | Path) -> Iterator[Path]:
    """Within the block, every run opened through ``pipeline_run``/``stage_run`` is listed in ``path`` (JSON)
    while it is open. The caller holds ``path`` alone (a pipeline holds its workdir's lock)."""
    global _journal
    previous, _journal = _journal, Path(path)
    try:
        yield _journal
    finally:
        _journal = previous


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_journal(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    from skillcore.io import atomic_write_text

    atomic_write_text(path, json.dumps(entries, indent=1))


@contextmanager
def _journaled(run: Any) -> Iterator[None]:
    path = _journal
    if path is None:
        yield
        return
    import socket
    import time

    run_id = run.info.run_id
    entries = _read_journal(path)
    entries[run_id] = {
        "name": run.info.run_name,
        "tracking_uri": str(mlflow.get_tracking_uri()),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_journal(path, entries)
    try:
        yield
    finally:  # ended (finished, failed or killed): no longer the journal's business
        entries = _read_journal(path)
        if entries.pop(run_id, None) is not None:
            _write_journal(path, entries)


def end_dead_runs(path: str | Path) -> list[tuple[str, str]]:
    """End as KILLED, with a note, every run the journal at ``path`` lists that is still RUNNING: call it
    holding what the journal belongs to (a workdir's lock), so the process that opened them is gone.
    Returns (run id, who left it) for each run ended; empties the journal."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    journal = Path(path)
    entries = _read_journal(journal)
    ended: list[tuple[str, str]] = []
    for run_id, entry in entries.items():
        who = (
            f"pid {entry.get('pid', '?')} on {entry.get('host', '?')} (started {entry.get('started', '?')}), "
            "which ended without closing it"
        )
        try:
            client = MlflowClient(tracking_uri=entry.get("tracking_uri") or None)
            if client.get_run(run_id).info.status != "RUNNING":
                continue
            client.set_tag(
                run_id,
                KILLED_NOTE_TAG,
                f"Marked KILLED by a later call on {journal.parent}: it was left RUNNING by {who}.",
            )
            client.set_terminated(run_id, "KILLED")
        except MlflowException:  # the store or the run is gone: nothing to end
            continue
        ended.append((run_id, f"{entry.get('name') or 'a run'} of {who}"))
    if entries:
        _write_journal(journal, {})
    return ended


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def rows_frame(rows: Iterable[Mapping[str, Any] | BaseModel]) -> pd.DataFrame:
    """A DataFrame of records; nested values (chains, metadata) become JSON strings for MLflow."""
    dicts = [r.model_dump() if isinstance(r, BaseModel) else dict(r) for r in rows]
    frame = pd.DataFrame(dicts)
    for col in frame.columns:
        if frame[col].map(lambda v: isinstance(v, dict | list)).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v, ensure_ascii=False))
    return frame


def log_dataset(
    data: pd.DataFrame | Iterable[Mapping[str, Any] | BaseModel] | str | Path,
    *,
    name: str,
    context: str,
    source: str | None = None,
    targets: str | None = None,
    artifact: bool = False,
) -> mlflow.data.pandas_dataset.PandasDataset:
    """Log a dataset as a run input (``mlflow.log_input``) with its name, digest and context.

    ``data`` may be a DataFrame, records, or a JSONL path. With ``artifact=True`` the rows are also
    stored as ``datasets/<name>.jsonl`` under the run so the exact data can be downloaded later.
    """
    from skillcore.io import read_jsonl

    if isinstance(data, str | Path):
        source = source or str(Path(data).resolve())
        frame = rows_frame(read_jsonl(data))
    elif isinstance(data, pd.DataFrame):
        frame = data
    else:
        frame = rows_frame(data)
    from_pandas = mlflow.data.from_pandas  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        # A local path matches two equivalent source types, and integer columns draw a schema hint:
        # both are noise here.
        warnings.filterwarnings("ignore", message="The specified dataset source", category=UserWarning)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema", category=UserWarning)
        dataset = from_pandas(frame, source=source, name=name, targets=targets)
    mlflow.log_input(dataset, context=context)
    if artifact:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.jsonl"
            frame.to_json(path, orient="records", lines=True, force_ascii=False)
            mlflow.log_artifact(str(path), artifact_path="datasets")
    return dataset


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON-serialisable object (or pydantic model) as a run artifact."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    mlflow.log_dict(obj, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure (PNG/SVG by extension) or a plotly figure (HTML)."""
    mlflow.log_figure(figure, artifact_file)


def log_metrics_table(frame: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_table(frame, artifact_file=artifact_file)
