import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from skillcore.io import JsonlAppender, JsonlError, ReadStats, iter_rows, read_jsonl, write_jsonl
from skillcore.records import PoolProblem, TaggedProblem, Verdict, map_record, stable_id


def test_presets_map_public_formats():
    omr = {
        "problem": "What is 2+2?",
        "generated_solution": "<think>2+2=4</think> \\boxed{4}",
        "expected_answer": "4",
        "pass_rate_72b_tir": "0.5",
    }
    p = map_record(omr, "openmathreasoning")
    assert p.question == "What is 2+2?" and p.expected_answer == "4"
    assert p.unique_id == stable_id("What is 2+2?")
    assert p.metadata == {"pass_rate_72b_tir": "0.5"}
    math500 = {
        "problem": "q",
        "solution": "s",
        "answer": "\\frac12",
        "unique_id": "test/x/1.json",
        "level": 5,
    }
    m = map_record(math500, "math")
    assert (m.unique_id, m.expected_answer, m.metadata) == ("test/x/1.json", "\\frac12", {"level": 5})
    tagged = map_record({**math500, "chains": [["A", "B"]]}, "math")
    assert isinstance(tagged, TaggedProblem) and tagged.chains == [["A", "B"]]
    with pytest.raises(KeyError, match="answer"):
        map_record({"problem": "q"}, "math")


def test_record_validation():
    with pytest.raises(ValidationError):
        PoolProblem(unique_id="", question="q", expected_answer="1")
    with pytest.raises(ValidationError):
        TaggedProblem(unique_id="a", question="q", expected_answer="1", chains=[[]])
    with pytest.raises(ValidationError):
        Verdict(unique_id="a", status="maybe")
    assert Verdict(unique_id="a", status="correct").correct


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n[1]\n{"a": 3}\n')
    with pytest.raises(JsonlError) as err:
        list(read_jsonl(path))
    assert err.value.line_no == 3 and str(path) in str(err.value)
    stats = ReadStats()
    rows = list(read_jsonl(path, skip_bad=True, stats=stats))
    assert rows == [{"a": 1}, {"a": 3}]
    assert (stats.read, stats.skipped) == (2, 2)


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"x": 1}])

    def rows():
        yield {"x": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert list(read_jsonl(path)) == [{"x": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp files left behind


def test_appender_resumes_and_repairs_torn_line(tmp_path):
    path = tmp_path / "attempts.jsonl"
    with JsonlAppender(path) as out:
        out.write({"unique_id": "a", "v": 1})
        out.write(PoolProblem(unique_id="b", question="q", expected_answer="1"))
    with open(path, "a") as fh:
        fh.write('{"unique_id": "c", "v"')  # a crash mid-line
    again = JsonlAppender(path)
    assert again.done_ids == {"a", "b"}
    again.write({"unique_id": "c", "v": 3})
    again.close()
    assert [r["unique_id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_hf_loader_on_a_local_dataset(tmp_path):
    import datasets

    frame = pd.DataFrame(
        {"problem": ["1+1?", "2+3?"], "generated_solution": ["2", "5"], "expected_answer": ["2", "5"]}
    )
    folder = tmp_path / "owner" / "tiny_pool"
    folder.mkdir(parents=True)
    datasets.Dataset.from_pandas(frame).to_parquet(str(folder / "train.parquet"))
    rows = list(iter_rows(f"hf://{folder}:train"))
    assert [map_record(r, "openmathreasoning").expected_answer for r in rows] == ["2", "5"]
    with pytest.raises(ValueError, match="hf://"):
        list(iter_rows("hf://"))


@given(
    st.lists(
        st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text()), max_size=4)
    )
)
def test_jsonl_round_trip_property(rows):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        assert write_jsonl(path, rows) == len(rows)
        assert list(read_jsonl(path)) == [json.loads(json.dumps(r)) for r in rows]


def test_question_prompt_matches_paper_wording():
    from skillcore.prompts import question_messages

    msgs = question_messages("What is 1+1?")
    assert msgs == [
        {
            "role": "user",
            "content": "Please reason step by step, and put your final answer within \\boxed{}.\n\nQuestion: What is 1+1?",
        }
    ]


def test_hf_dataset_unreachable_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from skillcore.io import DatasetUnavailableError

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'owner/pool' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailableError, match=r"hf://owner/pool.*Couldn't reach"):
        list(iter_rows("hf://owner/pool"))
