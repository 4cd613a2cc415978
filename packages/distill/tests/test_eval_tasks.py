import json

import pandas as pd
import pytest
from distill.eval import tasks as tasks_mod
from distill.eval.tasks import (
    TASKS,
    WORLD_SUITES,
    BenchmarkTask,
    TaskError,
    UnknownTaskError,
    get_task,
    load_task,
    local_task,
    register_task,
    world_task,
    world_tasks,
)
from skillcore import JsonlError, PoolProblem, TaggedProblem, write_jsonl
from skillcore.records import stable_id


def write_rows(path, rows):
    """Rows as the hub serves them: .jsonl lines, a .json array, or .parquet through pandas."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ registry
def test_paper_benchmarks_are_registered_with_their_hub_ids():
    expected = {
        "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
        "aime25": ("math-ai/aime25", None, "test"),
        "amc23": ("math-ai/amc23", None, "test"),
        "math-l5": ("DigitalLearningGmbH/MATH-lighteval", "default", "test"),
        "olympiadbench": ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    }
    for name, (dataset, config, split) in expected.items():
        task = get_task(name)
        assert (task.dataset, task.config, task.split) == (dataset, config, split)
        assert task.default_repeats == 8


def test_get_task_unknown_lists_known_names():
    with pytest.raises(UnknownTaskError) as err:
        get_task("gsm8k")
    message = str(err.value)
    assert "gsm8k" in message
    for name in TASKS:
        assert name in message


def test_register_refuses_duplicates_unless_replace():
    task = BenchmarkTask(name="tmp-bench", dataset="someone/bench")
    try:
        register_task(task)
        with pytest.raises(ValueError, match="already registered"):
            register_task(BenchmarkTask(name="tmp-bench", dataset="other/bench"))
        assert get_task("tmp-bench").dataset == "someone/bench"
        register_task(BenchmarkTask(name="tmp-bench", dataset="other/bench"), replace=True)
        assert get_task("tmp-bench").dataset == "other/bench"
    finally:
        TASKS.pop("tmp-bench", None)


def test_task_validates_its_settings():
    with pytest.raises(ValueError, match="name"):
        BenchmarkTask(name=" ", dataset="a/b")
    with pytest.raises(ValueError, match="default_repeats"):
        BenchmarkTask(name="x", dataset="a/b", default_repeats=0)
    with pytest.raises(ValueError, match="hub dataset id or a local source"):
        BenchmarkTask(name="x")


# ------------------------------------------------------------------------------------------ public formats
def test_aime24_jsonl(tmp_path):
    path = write_rows(
        tmp_path / "aime24.jsonl",
        [
            {
                "id": 60,
                "problem": "Find x.",
                "solution": "So \\boxed{204}",
                "answer": "204",
                "url": "u1",
                "year": "2024",
            },
            {"id": 61, "problem": "Find y.", "solution": "...", "answer": "025", "url": "u2", "year": "2024"},
        ],
    )
    problems = load_task("aime24", path)
    assert [p.unique_id for p in problems] == ["60", "61"]
    assert [p.expected_answer for p in problems] == ["204", "025"]
    assert problems[0].solution == "So \\boxed{204}"
    assert problems[0].metadata == {"url": "u1", "year": "2024"}
    assert all(type(p) is PoolProblem for p in problems)


def test_aime25_parquet_has_no_solution(tmp_path):
    path = write_rows(
        tmp_path / "test.parquet",
        [{"problem": "P1", "answer": "70", "id": "0"}, {"problem": "P2", "answer": "588", "id": "1"}],
    )
    problems = load_task("aime25", path)
    assert [(p.unique_id, p.question, p.expected_answer, p.solution) for p in problems] == [
        ("0", "P1", "70", ""),
        ("1", "P2", "588", ""),
    ]


def test_amc23_float_answers_become_plain_numbers(tmp_path):
    path = write_rows(
        tmp_path / "amc.parquet",
        [
            {"id": 0, "question": "Q0", "answer": 27.0, "url": "a"},
            {"id": 1, "question": "Q1", "answer": 0.5, "url": "b"},
        ],
    )
    problems = load_task("amc23", path)
    assert [p.expected_answer for p in problems] == ["27", "0.5"]
    assert [p.unique_id for p in problems] == ["0", "1"]
    assert problems[1].metadata == {"url": "b"}


def test_math_level5_filters_and_reads_the_last_box(tmp_path):
    rows = [
        {
            "problem": "L5 a",
            "level": "Level 5",
            "type": "Algebra",
            "solution": "first \\boxed{1}, then \\boxed{\\frac{1}{2}}.",
        },
        {"problem": "L3", "level": "Level 3", "type": "Algebra", "solution": "\\boxed{3}"},
        {"problem": "L5 b", "level": "Level 5", "type": "Geometry", "solution": "so it is \\boxed{5\\pi}"},
        {"problem": "L?", "level": "Level ?", "type": "Geometry", "solution": "\\boxed{7}"},
    ]
    problems = load_task("math-l5", write_rows(tmp_path / "test.parquet", rows))
    assert [p.question for p in problems] == ["L5 a", "L5 b"]
    assert [p.expected_answer for p in problems] == ["\\frac{1}{2}", "5\\pi"]
    assert [p.unique_id for p in problems] == [stable_id("L5 a"), stable_id("L5 b")]
    assert problems[1].metadata == {"level": "Level 5", "type": "Geometry"}


def test_math_answer_column_wins_over_the_box(tmp_path):
    rows = [{"problem": "P", "level": "Level 5", "solution": "\\boxed{0.5}", "answer": "\\frac12"}]
    (problem,) = load_task("math-l5", write_rows(tmp_path / "m.jsonl", rows))
    assert problem.expected_answer == "\\frac12"


def test_math_without_box_is_an_error_naming_the_file(tmp_path):
    path = write_rows(tmp_path / "m.jsonl", [{"problem": "P", "level": "Level 5", "solution": "no box here"}])
    with pytest.raises(TaskError, match=r"m\.jsonl: row 1.*boxed"):
        load_task("math-l5", path)


def test_olympiadbench_keeps_single_answer_rows(tmp_path):
    base = {"context": None, "image_1": None, "unit": None, "answer_type": "Numerical", "language": "English"}
    rows = [
        {
            "id": 1606,
            "question": "Q single",
            "solution": ["step 1", "step 2"],
            "final_answer": ["$\\frac{1}{2}$"],
            "is_multiple_answer": False,
            **base,
        },
        {
            "id": 1607,
            "question": "Q multi",
            "solution": ["s"],
            "final_answer": ["$1$", "$2$"],
            "is_multiple_answer": True,
            **base,
        },
        {
            "id": 1608,
            "question": "Q flagged single but two",
            "solution": ["s"],
            "final_answer": ["3", "4"],
            "is_multiple_answer": False,
            **base,
        },
        {
            "id": 1609,
            "question": "Q plain",
            "solution": ["s"],
            "final_answer": [" 12 "],
            "is_multiple_answer": False,
            **base,
        },
    ]
    problems = load_task("olympiadbench", write_rows(tmp_path / "ob.parquet", rows))
    assert [p.unique_id for p in problems] == ["1606", "1609"]
    assert [p.expected_answer for p in problems] == ["\\frac{1}{2}", "12"]
    assert problems[0].solution == "step 1\n\nstep 2"
    meta = problems[0].metadata
    assert meta["is_multiple_answer"] is False and meta["answer_type"] == "Numerical"
    assert "final_answer" not in meta and "solution" not in meta
    json.dumps(meta)  # parquet's numpy values were made plain


def test_math500_json_array_and_json_lines(tmp_path):
    rows = [
        {
            "problem": "P1",
            "solution": "s1",
            "answer": "\\frac{14}{3}",
            "subject": "Algebra",
            "level": 4,
            "unique_id": "test/algebra/1.json",
        },
        {
            "problem": "P2",
            "solution": "s2",
            "answer": "3",
            "subject": "Geometry",
            "level": 2,
            "unique_id": "test/geometry/2.json",
        },
    ]
    as_array = load_task("math500", write_rows(tmp_path / "a" / "test.json", rows))
    lines = tmp_path / "b" / "test.json"
    write_rows(lines.with_suffix(".jsonl"), rows).rename(lines)
    as_lines = load_task("math500", lines)
    assert [p.model_dump() for p in as_array] == [p.model_dump() for p in as_lines]
    assert [p.unique_id for p in as_array] == ["test/algebra/1.json", "test/geometry/2.json"]
    assert as_array[0].metadata == {"subject": "Algebra", "level": 4}


def test_folder_reads_every_data_file_sorted_and_limit(tmp_path):
    write_rows(tmp_path / "b.parquet", [{"problem": "P3", "answer": "3", "id": "c"}])
    write_rows(
        tmp_path / "a.jsonl",
        [{"problem": "P1", "answer": "1", "id": "a"}, {"problem": "P2", "answer": "2", "id": "b"}],
    )
    (tmp_path / "notes.txt").write_text("not data")
    assert [p.unique_id for p in load_task("aime25", tmp_path)] == ["a", "b", "c"]
    assert [p.unique_id for p in load_task("aime25", tmp_path, limit=2)] == ["a", "b"]
    assert load_task("aime25", tmp_path, limit=0) == []


def test_hub_path_calls_load_dataset_with_the_task_coordinates(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, *, split):
        calls.append((name, config, split))
        return [
            {
                "id": 7,
                "question": "Q",
                "solution": ["s"],
                "final_answer": ["$4$"],
                "is_multiple_answer": False,
            }
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (problem,) = load_task("olympiadbench")
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]
    assert (problem.unique_id, problem.expected_answer) == ("7", "4")


# ------------------------------------------------------------------------------------------ bad input
def test_missing_column_names_file_and_column(tmp_path):
    path = write_rows(tmp_path / "bad.jsonl", [{"problem": "P", "id": 1}])
    with pytest.raises(TaskError, match=r"bad\.jsonl: row 1 lacks column\(s\) \['answer'\]"):
        load_task("aime24", path)
    assert issubclass(TaskError, ValueError)


def test_missing_filter_column_is_an_error_not_a_silent_drop(tmp_path):
    path = write_rows(tmp_path / "ob.jsonl", [{"id": 1, "question": "Q", "is_multiple_answer": False}])
    with pytest.raises(TaskError, match="final_answer"):
        load_task("olympiadbench", path)


def test_duplicate_ids_are_refused(tmp_path):
    path = write_rows(
        tmp_path / "d.jsonl",
        [{"problem": "P1", "answer": "1", "id": "x"}, {"problem": "P2", "answer": "2", "id": "x"}],
    )
    with pytest.raises(TaskError, match="duplicate unique_id 'x'"):
        load_task("aime25", path)


def test_hashed_ids_drop_a_repeated_question_but_refuse_a_conflicting_one(tmp_path):
    same = [{"problem": "P", "level": "Level 5", "solution": "\\boxed{2}"}] * 2
    assert len(load_task("math-l5", write_rows(tmp_path / "same.jsonl", same))) == 1
    conflict = [same[0], {"problem": "P", "level": "Level 5", "solution": "\\boxed{3}"}]
    with pytest.raises(TaskError, match="duplicate unique_id"):
        load_task("math-l5", write_rows(tmp_path / "conflict.jsonl", conflict))


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_task("aime25", tmp_path / "nope.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskError, match=r"no .* files"):
        load_task("aime25", empty)
    csv = tmp_path / "rows.csv"
    csv.write_text("problem,answer\n")
    with pytest.raises(TaskError, match="unsupported file type"):
        load_task("aime25", csv)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem": "P", "answer": "1", "id": "a"}\n{not json\n')
    with pytest.raises(JsonlError, match=r"broken\.jsonl:2"):
        load_task("aime25", broken)
    with pytest.raises(TaskError, match="empty answer"):
        load_task(
            "aime25", write_rows(tmp_path / "blank.jsonl", [{"problem": "P", "answer": " ", "id": "a"}])
        )
    with pytest.raises(ValueError, match="limit"):
        load_task("aime25", broken, limit=-1)


def test_invalid_chains_name_the_row(tmp_path):
    path = tmp_path / "native.jsonl"
    write_rows(path, [{"unique_id": "a", "question": "Q", "expected_answer": "1", "chains": [[]]}])
    with pytest.raises(TaskError, match=r"native\.jsonl: row 1: not a valid problem"):
        load_task(local_task("native", path))


# ------------------------------------------------------------------------------------------ world suites
def test_world_suite_names_match_the_world():
    from skillworld import SUITES

    assert set(WORLD_SUITES.values()) == set(SUITES)
    assert set(WORLD_SUITES) <= set(TASKS)


def test_world_suites_load_as_tagged_problems(tmp_path, world_benchmarks_small):
    for suite, rows in world_benchmarks_small.items():
        write_jsonl(tmp_path / "benchmarks" / f"{suite}.jsonl", rows)
    tasks = world_tasks(tmp_path)
    assert set(tasks) == set(WORLD_SUITES)
    for name, task in tasks.items():
        original = world_benchmarks_small[WORLD_SUITES[name]]
        loaded = load_task(task)
        assert all(isinstance(p, TaggedProblem) for p in loaded)
        assert [p.model_dump() for p in loaded] == [json.loads(p.model_dump_json()) for p in original]
        assert task.default_repeats == get_task(name).default_repeats
    assert world_task("math_l5", tmp_path).name == "math-l5"  # a suite's file stem works too
    with pytest.raises(UnknownTaskError, match="no world suite"):
        world_task("math500", tmp_path)


def test_local_task_native_rows_without_chains(tmp_path):
    path = write_rows(
        tmp_path / "mine.jsonl",
        [
            {
                "unique_id": "u1",
                "question": "Q",
                "solution": "S",
                "expected_answer": "3",
                "metadata": {"k": 1},
                "extra": 2,
            }
        ],
    )
    task = local_task("mine", path, default_repeats=4)
    (problem,) = load_task(task)
    assert type(problem) is PoolProblem
    assert problem.model_dump() == {
        "unique_id": "u1",
        "question": "Q",
        "solution": "S",
        "expected_answer": "3",
        "metadata": {"k": 1, "extra": 2},
    }
    assert task.default_repeats == 4 and task.dataset is None
    with pytest.raises(TaskError, match="has no hub dataset"):
        list(tasks_mod._hub_rows(task))
