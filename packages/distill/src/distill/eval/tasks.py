"""Benchmarks as registered tasks (in the style of lm-evaluation-harness).

A :class:`BenchmarkTask` says where a benchmark lives (a Hugging Face dataset id, config and split, or a
local file) and how its rows become :class:`skillcore.PoolProblem` records: which columns hold the
question, the reference solution, the answer and the id, which rows to keep, and how the answer is read
(MATH's comes from the last ``\\boxed{}`` of its solution, OlympiadBench's from a one-element list).

The paper's five benchmarks (AIME24, AIME25, AMC23, MATH Level 5, OlympiadBench) and MATH-500 are
registered in :data:`TASKS`. The offline world's suites (``<dir>/benchmarks/<suite>.jsonl``, written in
skillcore's native fields with skill chains) are tasks too: :func:`world_task`, :func:`world_tasks`,
or :func:`local_task` for any native JSONL.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from skillcore.io import read_jsonl
from skillcore.records import PoolProblem, TaggedProblem, stable_id

from distill.judge import extract_answer

log = logging.getLogger(__name__)

RowFilter = Callable[[Mapping[str, Any]], bool]
AnswerFn = Callable[[Mapping[str, Any]], Any]

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
DEFAULT_REPEATS = 8  # samples per problem: the paper reports avg@8


class TaskError(ValueError):
    """A benchmark's rows cannot be read as problems; the message names the source and the row."""


class UnknownTaskError(KeyError):
    """No task of that name is registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would show the message as a quoted repr
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class BenchmarkTask:
    """Where a benchmark lives and how one of its rows becomes a problem.

    ``answer_fn`` (given the whole row) replaces reading the ``answer`` column; ``where`` keeps rows whose
    column equals the value (or is one of the values, for a tuple/list/set); ``row_filter`` is any
    further predicate. ``source`` is the default local file or folder (for tasks with no hub dataset).
    """

    name: str
    dataset: str | None = None  # Hugging Face dataset id
    config: str | None = None
    split: str = "test"
    question: str = "problem"
    answer: str = "answer"
    solution: str | None = "solution"
    id_column: str | None = None  # None: skillcore.records.stable_id of the question
    where: Mapping[str, Any] = field(default_factory=dict, hash=False)
    row_filter: RowFilter | None = None
    answer_fn: AnswerFn | None = None
    default_repeats: int = DEFAULT_REPEATS
    source: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a task needs a non-empty name")
        if self.default_repeats < 1:
            raise ValueError(f"task {self.name}: default_repeats must be >= 1, got {self.default_repeats}")
        if self.dataset is None and self.source is None:
            raise ValueError(f"task {self.name}: give a hub dataset id or a local source")

    @property
    def required_columns(self) -> list[str]:
        """Columns every row must carry (the answer_fn checks its own)."""
        cols = [self.question, *self.where]
        if self.answer_fn is None:
            cols.append(self.answer)
        if self.id_column is not None:
            cols.append(self.id_column)
        return list(dict.fromkeys(cols))

    def keeps(self, row: Mapping[str, Any]) -> bool:
        for column, wanted in self.where.items():
            value = row[column]
            if isinstance(wanted, tuple | list | set | frozenset):
                if value not in wanted:
                    return False
            elif value != wanted:
                return False
        return self.row_filter is None or bool(self.row_filter(row))


# ------------------------------------------------------------------------------------ answer readers
def answer_text(value: Any) -> str:
    """An answer value as text: integral floats lose their ``.0`` (AMC23 stores answers as floats)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value).strip()


def boxed_answer(row: Mapping[str, Any]) -> str:
    """MATH: the ``answer`` column where there is one, else the last ``\\boxed{}`` of ``solution``."""
    given = row.get("answer")
    if given is not None and str(given).strip():
        return answer_text(given)
    if "solution" not in row:
        raise KeyError("solution")
    boxed = extract_answer(str(row["solution"] or ""))
    if boxed is None:
        raise ValueError("the solution has no \\boxed{} answer")
    return boxed


def single_final_answer(row: Mapping[str, Any]) -> str:
    """OlympiadBench: ``final_answer`` is a list of strings; take its only element without the ``$``s."""
    if "final_answer" not in row:
        raise KeyError("final_answer")
    answers = _as_list(row["final_answer"])
    if len(answers) != 1:
        raise ValueError(f"expected exactly one final_answer, got {len(answers)}")
    return str(answers[0]).strip().strip("$").strip()


def has_single_final_answer(row: Mapping[str, Any]) -> bool:
    return len(_as_list(row["final_answer"])) == 1


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.tolist())
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


# ------------------------------------------------------------------------------------------ registry
TASKS: dict[str, BenchmarkTask] = {}


def register_task(task: BenchmarkTask, *, replace: bool = False) -> BenchmarkTask:
    """Add a task to :data:`TASKS`; a second task under a known name needs ``replace=True``."""
    if task.name in TASKS and not replace:
        raise ValueError(f"a task named {task.name!r} is already registered (pass replace=True)")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> BenchmarkTask:
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS)) or "(none)"
        raise UnknownTaskError(f"unknown benchmark task {name!r}; known tasks: {known}") from None


# Field names below are as they are on the hub (dataset cards' dataset_info features).
# HuggingFaceH4/aime_2024: id (int), problem, solution, answer, url, year; 30 rows, split "train".
register_task(
    BenchmarkTask(
        name="aime24",
        dataset="HuggingFaceH4/aime_2024",
        split="train",
        id_column="id",
        description="AIME 2024 I and II (30 problems)",
    )
)
# math-ai/aime25: problem, answer, id (str); one file test.jsonl, split "test".
register_task(
    BenchmarkTask(
        name="aime25",
        dataset="math-ai/aime25",
        split="test",
        solution=None,
        id_column="id",
        description="AIME 2025 I and II (30 problems)",
    )
)
# math-ai/amc23: id, question, answer (a number), url; 40 rows, split "test".
register_task(
    BenchmarkTask(
        name="amc23",
        dataset="math-ai/amc23",
        split="test",
        question="question",
        solution=None,
        id_column="id",
        description="AMC 12 2023 (40 problems)",
    )
)
# DigitalLearningGmbH/MATH-lighteval (config "default": all subjects): problem, level ("Level 1".."Level 5"),
# type, solution; no answer column and no id. Test split filtered to Level 5.
register_task(
    BenchmarkTask(
        name="math-l5",
        dataset="DigitalLearningGmbH/MATH-lighteval",
        config="default",
        split="test",
        answer_fn=boxed_answer,
        where={"level": "Level 5"},
        description="MATH test split, Level 5 problems; the answer is the solution's last \\boxed{}",
    )
)
# Hothan/OlympiadBench config OE_TO_maths_en_COMP (open-ended, text-only, maths, English, competition):
# id, question, solution (list of str), final_answer (list of str), is_multiple_answer, unit, answer_type, ...;
# split "train" (the only one). Rows with several answers are dropped.
register_task(
    BenchmarkTask(
        name="olympiadbench",
        dataset="Hothan/OlympiadBench",
        config="OE_TO_maths_en_COMP",
        split="train",
        question="question",
        answer="final_answer",
        id_column="id",
        where={"is_multiple_answer": False},
        row_filter=has_single_final_answer,
        answer_fn=single_final_answer,
        description="OlympiadBench, open-ended English maths, single-answer problems",
    )
)
# HuggingFaceH4/MATH-500: problem, solution, answer, subject, level (int), unique_id; split "test".
register_task(
    BenchmarkTask(
        name="math500",
        dataset="HuggingFaceH4/MATH-500",
        split="test",
        id_column="unique_id",
        description="MATH-500 (Lightman et al. 2023 subset of the MATH test split)",
    )
)


# ----------------------------------------------------------------------------------- native tasks
# The offline world writes each suite to <dir>/benchmarks/<suite>.jsonl; registered name -> suite file stem.
WORLD_SUITES: dict[str, str] = {
    "aime24": "aime24",
    "aime25": "aime25",
    "amc23": "amc23",
    "math-l5": "math_l5",
    "olympiadbench": "olympiadbench",
}


def local_task(
    name: str, path: str | Path, *, default_repeats: int = DEFAULT_REPEATS, **fields: Any
) -> BenchmarkTask:
    """A task over a local file or folder in skillcore's native fields (``fields`` override the mapping)."""
    settings: dict[str, Any] = {
        "question": "question",
        "answer": "expected_answer",
        "solution": "solution",
        "id_column": "unique_id",
        "split": "local",
    }
    settings.update(fields)
    return BenchmarkTask(name=name, source=str(path), default_repeats=default_repeats, **settings)


def world_task(name: str, world_dir: str | Path) -> BenchmarkTask:
    """The world's suite standing in for registered benchmark ``name`` (or a suite's file stem)."""
    suite = WORLD_SUITES.get(name, name)
    if suite not in WORLD_SUITES.values():
        raise UnknownTaskError(
            f"no world suite for {name!r}; known: {', '.join(WORLD_SUITES)} (files {sorted(WORLD_SUITES.values())})"
        )
    registered = next(key for key, value in WORLD_SUITES.items() if value == suite)
    repeats = TASKS[registered].default_repeats if registered in TASKS else DEFAULT_REPEATS
    path = Path(world_dir) / "benchmarks" / f"{suite}.jsonl"
    return local_task(registered, path, default_repeats=repeats, description=f"offline world suite {suite}")


def world_tasks(world_dir: str | Path) -> dict[str, BenchmarkTask]:
    """All five world suites as tasks, under the registered benchmarks' names."""
    return {name: world_task(name, world_dir) for name in WORLD_SUITES}


# ------------------------------------------------------------------------------------------ loading
def load_task(
    task_or_name: BenchmarkTask | str, source: str | Path | None = None, *, limit: int | None = None
) -> list[PoolProblem]:
    """The task's problems, filtered and mapped, in source order (rows with ``chains`` -> TaggedProblem).

    ``source``: None reads the task's own local ``source`` or else its hub dataset; a folder reads every
    ``*.jsonl``/``*.json``/``*.parquet`` in it (sorted by name); a file reads that file.
    """
    task = get_task(task_or_name) if isinstance(task_or_name, str) else task_or_name
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    chosen = source if source is not None else task.source
    sources = _hub_rows(task) if chosen is None else _local_rows(Path(chosen))
    problems: list[PoolProblem] = []
    seen: dict[str, tuple[str, str, str]] = {}  # unique_id -> (where, question, expected answer)
    n_repeated = 0
    for where, row_no, row in sources:
        if limit is not None and len(problems) >= limit:
            break
        missing = [col for col in task.required_columns if col not in row]
        if missing:
            raise TaskError(
                f"{where}: row {row_no} lacks column(s) {missing} needed by task {task.name}; "
                f"present: {sorted(row)}"
            )
        try:
            kept = task.keeps(row)
        except KeyError as exc:
            raise TaskError(
                f"{where}: row {row_no} lacks column {exc.args[0]!r} needed by task {task.name}"
            ) from None
        if not kept:
            continue
        problem = _to_problem(task, row, where, row_no)
        earlier = seen.get(problem.unique_id)
        if earlier is not None:
            same = earlier[1:] == (problem.question, problem.expected_answer)
            if task.id_column is None and same:  # a question listed twice: one problem, counted once
                n_repeated += 1
                continue
            raise TaskError(
                f"{where}: row {row_no}: duplicate unique_id {problem.unique_id!r} (first in {earlier[0]})"
            )
        seen[problem.unique_id] = (where, problem.question, problem.expected_answer)
        problems.append(problem)
    if n_repeated:
        log.warning("task %s: %d repeated question(s) skipped", task.name, n_repeated)
    return problems


def _to_problem(task: BenchmarkTask, row: Mapping[str, Any], where: str, row_no: int) -> PoolProblem:
    try:
        raw_answer = task.answer_fn(row) if task.answer_fn is not None else row[task.answer]
    except KeyError as exc:
        raise TaskError(
            f"{where}: row {row_no} lacks column {exc.args[0]!r} needed by task {task.name}"
        ) from None
    except ValueError as exc:
        raise TaskError(
            f"{where}: row {row_no}: cannot read the answer for task {task.name}: {exc}"
        ) from None
    if raw_answer is None or not answer_text(raw_answer):
        raise TaskError(f"{where}: row {row_no}: empty answer in column {task.answer!r}")
    question = str(row[task.question])
    uid = answer_text(row[task.id_column]) if task.id_column is not None else stable_id(question)
    solution_value = row.get(task.solution) if task.solution is not None else None
    if isinstance(solution_value, list | tuple | np.ndarray):
        solution = "\n\n".join(str(part) for part in _as_list(solution_value))
    else:
        solution = "" if solution_value is None else str(solution_value)
    used = {task.question, task.answer, task.solution, task.id_column, "metadata", "chains"}
    metadata = dict(_plain(row.get("metadata")) or {})
    for key, value in row.items():
        if key not in used:
            plain = _plain(value)
            if plain is not _DROP:
                metadata[key] = plain
    fields: dict[str, Any] = {
        "unique_id": uid,
        "question": question,
        "solution": solution,
        "expected_answer": answer_text(raw_answer),
        "metadata": metadata,
    }
    try:
        if row.get("chains") is not None:
            return TaggedProblem(**fields, chains=_plain(row["chains"]))
        return PoolProblem(**fields)
    except ValidationError as exc:
        raise TaskError(f"{where}: row {row_no}: not a valid problem: {exc}") from None


_DROP = object()  # a value that cannot travel as JSON (image bytes and the like): left out of metadata


def _plain(value: Any) -> Any:
    """Plain JSON-able Python (parquet gives numpy arrays and scalars, NaN for nulls)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray | list | tuple):
        items = [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
        return [v for v in items if v is not _DROP]
    if isinstance(value, Mapping):
        out = {str(k): _plain(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    return _DROP


# ------------------------------------------------------------------------------------------ sources
Row = tuple[str, int, dict[str, Any]]  # (where, 1-based row number, row)


def _hub_rows(task: BenchmarkTask) -> Iterator[Row]:
    if task.dataset is None:
        raise TaskError(f"task {task.name} has no hub dataset; pass a local source")
    import datasets

    where = f"hf:{task.dataset}" + (f"[{task.config}]" if task.config else "") + f":{task.split}"
    data = datasets.load_dataset(task.dataset, task.config, split=task.split)
    for i, row in enumerate(data, start=1):
        yield where, i, dict(row)


def _local_rows(path: Path) -> Iterator[Row]:
    if not path.exists():
        raise FileNotFoundError(f"benchmark source {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
        if not files:
            raise TaskError(f"{path}: no {'/'.join('*' + s for s in DATA_SUFFIXES)} files in this folder")
    else:
        if path.suffix not in DATA_SUFFIXES:
            raise TaskError(f"{path}: unsupported file type (expected {', '.join(DATA_SUFFIXES)})")
        files = [path]
    for file in files:
        for i, row in enumerate(_read_file(file), start=1):
            yield str(file), i, row


def _read_file(path: Path) -> Iterable[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return ({str(k): v for k, v in rec.items()} for rec in frame.to_dict(orient="records"))
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith(
            "["
        ):  # a JSON array of rows; else JSON lines (what datasets' to_json writes)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}: not valid JSON: {exc}") from None
            bad = next((i for i, row in enumerate(data, start=1) if not isinstance(row, dict)), None)
            if bad is not None:
                raise TaskError(f"{path}: item {bad} of the JSON array is not an object")
            return data
    return read_jsonl(path)
