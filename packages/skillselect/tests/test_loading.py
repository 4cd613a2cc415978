"""Pool.load reads files column by column (skillselect.loading): the same pool, the same selections and the
same errors as building every row's record (Pool.from_records on the validated records)."""

import json
import math
import re
from collections import Counter

import pytest
from skillcore.io import JsonlError, write_jsonl
from skillcore.records import TaggedProblem, Verdict
from skillselect import Pool, PoolError, loading, select
from skillselect.testing import LEAVES, random_records


def row(uid: str) -> str:
    return json.dumps({"unique_id": uid, "question": "q", "expected_answer": "1", "chains": [["Counting"]]})


def assert_same_pool(loaded: Pool, expected: Pool) -> None:
    assert loaded.unique_ids == expected.unique_ids
    assert loaded.chains == expected.chains
    assert loaded.metadata == expected.metadata
    for name in ("attempts", "correct"):
        got, want = getattr(loaded, name), getattr(expected, name)
        assert (got is None and want is None) or (got.dtype == want.dtype and got.tolist() == want.tolist())
    assert loaded.n_unmatched_verdicts == expected.n_unmatched_verdicts
    assert loaded.chain_codes.distinct == expected.chain_codes.distinct
    assert loaded.chain_codes.code.tolist() == expected.chain_codes.code.tolist()
    assert loaded.chain_codes.problem.tolist() == expected.chain_codes.problem.tolist()
    assert loaded.records is not None and expected.records is not None
    assert len(loaded.records) == len(expected.records)
    assert list(loaded.records) == list(expected.records)
    assert [loaded.row(i) for i in range(loaded.n)] == [expected.row(i) for i in range(expected.n)]


def test_column_checks_know_the_records_fields():
    # a field added to TaggedProblem or Verdict switches the fast checks off: bring loading.py along
    assert loading.COLUMN_CHECKS == {"TaggedProblem": True, "Verdict": True}


def per_row_refused(*args):
    raise AssertionError("a clean block was read the per-row way")


@pytest.mark.parametrize("block_rows", [4096, 7])
def test_load_gives_the_pool_and_selections_of_the_records(tree, tmp_path, monkeypatch, block_rows):
    monkeypatch.setattr(loading, "BLOCK_ROWS", block_rows)
    tagged, verdicts = random_records(250, seed=11, judged_share=0.7)
    verdicts.append(Verdict(unique_id="not-in-pool", status="correct"))
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    with monkeypatch.context() as m:  # clean files: no row goes the per-row way
        m.setattr(loading, "_validate", per_row_refused)
        loaded = Pool.load(tmp_path / "pool.jsonl", tmp_path / "verdicts.jsonl")
    assert_same_pool(loaded, Pool.from_records(tagged, verdicts))
    # the counts, worked out here from the verdicts
    attempts, correct = (
        Counter(v.unique_id for v in verdicts),
        Counter(v.unique_id for v in verdicts if v.correct),
    )
    assert loaded.attempts is not None and loaded.correct is not None
    assert loaded.attempts.tolist() == [attempts[r.unique_id] for r in tagged]
    assert loaded.correct.tolist() == [correct[r.unique_id] for r in tagged]
    assert loaded.n_unmatched_verdicts == 1
    reference = Pool.from_records(tagged, verdicts)
    for options in (
        {"strategy": "skill", "w_max": 10.0},
        {"strategy": "skill-match", "correct_portion": 0.5},
        {"strategy": "difficulty", "difficulty_field": "pass_rate", "candidates": "judged"},
        {"strategy": "balanced", "exclude_ids": ["q0003"]},
    ):
        got = select(loaded, tree, k=40, seed=5, **options)
        want = select(reference, tree, k=40, seed=5, **options)
        assert got.unique_ids == want.unique_ids
        assert got.records() == want.records()
    no_verdicts = Pool.load(tmp_path / "pool.jsonl")
    assert no_verdicts.attempts is None and no_verdicts.correct is None
    assert_same_pool(no_verdicts, Pool.from_records(tagged))


def test_selected_rows_written_alike(tree, tmp_path):
    tagged, verdicts = random_records(120, seed=2)
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    loaded = Pool.load(tmp_path / "pool.jsonl", tmp_path / "verdicts.jsonl")
    select(loaded, tree, k=30, seed=1).save(out=tmp_path / "a.jsonl")
    select(Pool.from_records(tagged, verdicts), tree, k=30, seed=1).save(out=tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def records_of(text: str) -> list[TaggedProblem]:
    """The records the per-row path read: text-mode lines, blank ones skipped, json, the model."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [TaggedProblem.model_validate(json.loads(line)) for line in lines if line.strip()]


def test_lines_values_and_lax_rows_as_the_records_read_them(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "BLOCK_ROWS", 3)
    rows = [
        row("a"),
        "",
        "   \t",  # whitespace only: blank
        '{"unique_id": "b", "question": "q", "expected_answer": "1"}',  # optional fields left out
        '{"unique_id": "c", "question": "q", "expected_answer": "", "metadata": {"n": 123456789012345678901234567890, '
        '"deep": [{"m": -99999999999999999999}], "s": "\\ud800"}, "chains": [["Algebra", "Quadratic"]]}',
        '{"unique_id": "d", "question": "q\\u00e9", "expected_answer": "1", "metadata": {"pass_rate": 0.5}}',
    ]
    text = "\r\n".join(rows[:3]) + "\r" + "\n".join(rows[3:])  # CRLF, a lone CR, LF, no final line end
    (tmp_path / "pool.jsonl").write_bytes(text.encode("utf-8", "surrogatepass"))
    verdicts = [
        '{"unique_id": "a", "status": "correct"}',
        '{"unique_id": "a", "sample_index": "1", "status": "wrong"}',  # the model reads "1" as 1
        '{"unique_id": "b", "sample_index": 2.0, "status": "correct", "extracted_answer": null}',
        '{"unique_id": "c", "sample_index": true, "status": "correct", "expected_answer": "x"}',
        '{"unique_id": "zzz", "status": "error"}',
    ]
    (tmp_path / "verdicts.jsonl").write_text("\n".join(verdicts) + "\n\n")
    loaded = Pool.load(tmp_path / "pool.jsonl", tmp_path / "verdicts.jsonl")
    tagged = records_of(text)
    assert [r.unique_id for r in tagged] == ["a", "b", "c", "d"]
    big = tagged[2].metadata
    assert big["n"] == 123456789012345678901234567890 and big["deep"][0]["m"] == -99999999999999999999
    expected = Pool.from_records(tagged, [Verdict.model_validate(json.loads(v)) for v in verdicts])
    assert loaded.metadata is not None and loaded.attempts is not None and loaded.correct is not None
    assert loaded.metadata[2]["n"] == 123456789012345678901234567890  # not orjson's float
    assert_same_pool(loaded, expected)
    assert loaded.attempts.tolist() == [2, 1, 1, 0] and loaded.correct.tolist() == [1, 1, 1, 0]


def test_nan_read_as_json_reads_it(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text('{"unique_id": "a", "question": "q", "expected_answer": "1", "metadata": {"x": NaN}}\n')
    loaded = Pool.load(path)
    assert loaded.metadata is not None
    assert math.isnan(loaded.metadata[0]["x"]) and math.isnan(loaded.row(0)["metadata"]["x"])


def test_records_are_built_on_demand(tmp_path):
    tagged, _ = random_records(12, seed=4)
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    records = Pool.load(tmp_path / "pool.jsonl").records
    assert records is not None and not isinstance(records, list)
    assert records[3] == tagged[3] and records[-1] == tagged[-1] and records[2:5] == tagged[2:5]
    with pytest.raises(IndexError):
        records[12]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"unique_id": "a"}'], "row 1: not a TaggedProblem: question: Field required"),
        (
            [row("a"), "", '{"unique_id": "", "question": "q", "expected_answer": "1"}'],
            "row 2: not a TaggedProblem: unique_id: String should have at least 1 character",
        ),
        (
            [row("a"), '{"unique_id": "b", "question": 5, "expected_answer": "1"}'],
            "row 2: not a TaggedProblem: question: Input should be a valid string",
        ),
        (
            [
                row("a"),
                row("b"),
                '{"unique_id": "c", "question": "q", "expected_answer": "1", "chains": [[]]}',
            ],
            "row 3: not a TaggedProblem: chains: Value error, a chain must be a non-empty list of non-empty "
            "names, got []",
        ),
        (
            ['{"unique_id": "a", "question": "q", "expected_answer": "1", "chains": [["A", 3]]}'],
            "row 1: not a TaggedProblem: chains.0.1: Input should be a valid string",
        ),
        (
            ['{"unique_id": "a", "question": "q", "expected_answer": "1", "chains": [["A", ""]]}'],
            "row 1: not a TaggedProblem: chains: Value error, a chain must be a non-empty list of non-empty "
            "names, got ['A', '']",
        ),
        (
            ['{"unique_id": "a", "question": "q", "expected_answer": "1", "metadata": [1]}'],
            "row 1: not a TaggedProblem: metadata: Input should be a valid dictionary",
        ),
        (
            ['{"unique_id": "a", "question": "q", "expected_answer": "1", "solution": null}'],
            "row 1: not a TaggedProblem: solution: Input should be a valid string",
        ),
        (
            [row("a"), '{"unique_id": "b", "question": "q", "expected_answer": "1", "other": 1}'],
            "row 2: not a TaggedProblem: other: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_rows_named_as_before(tmp_path, monkeypatch, lines, message):
    monkeypatch.setattr(loading, "BLOCK_ROWS", 2)  # the bad row in a later block too
    path = write(tmp_path / "pool.jsonl", lines)
    with pytest.raises(PoolError, match=re.escape(f"{path}: {message}")):
        Pool.load(path)


def test_bad_lines_named_as_before(tmp_path):
    path = write(tmp_path / "pool.jsonl", [row("a"), "", '{"unique_id": "b", '])
    with pytest.raises(JsonlError, match=re.escape(f"{path}:3: Expecting property name enclosed in double")):
        Pool.load(path)
    path = write(tmp_path / "pool.jsonl", [row("a"), "[1, 2]"])
    with pytest.raises(JsonlError, match=re.escape(f"{path}:2: expected a JSON object, got list")):
        Pool.load(path)
    # the first problem in the file wins: a bad row before a bad line, and a bad line before a bad row
    path = write(tmp_path / "pool.jsonl", [row("a"), '{"unique_id": "b"}', "{oops"])
    with pytest.raises(PoolError, match="row 2: not a TaggedProblem: question: Field required"):
        Pool.load(path)
    path = write(tmp_path / "pool.jsonl", [row("a"), "{oops", '{"unique_id": "b"}'])
    with pytest.raises(JsonlError, match=re.escape(f"{path}:2: ")):
        Pool.load(path)
    (tmp_path / "latin1.jsonl").write_bytes(
        row("caf\xe9").replace("\\u00e9", "\xe9").encode("latin-1") + b"\n"
    )
    with pytest.raises(JsonlError, match=re.escape(f"{tmp_path / 'latin1.jsonl'}:1: 'utf-8' codec")):
        Pool.load(tmp_path / "latin1.jsonl")


def test_bad_verdicts_and_duplicates_named_as_before(tmp_path):
    pool = write(tmp_path / "pool.jsonl", [row("a"), row("b")])
    bad = [
        (
            '{"unique_id": "a", "status": "maybe"}',
            "row 2: not a Verdict: status: Input should be 'correct', 'wrong', 'no_answer', 'timeout' or 'error'",
        ),
        (
            '{"unique_id": "a", "status": "correct", "sample_index": -1}',
            "row 2: not a Verdict: sample_index: Input should be greater than or equal to 0",
        ),
        ('{"unique_id": "a", "status": "correct", "extra": 1}', "row 2: not a Verdict: extra: Extra inputs"),
        ('{"status": "correct"}', "row 2: not a Verdict: unique_id: Field required"),
    ]
    for line, message in bad:
        verdicts = write(tmp_path / "v.jsonl", ['{"unique_id": "b", "status": "wrong"}', line])
        with pytest.raises(PoolError, match=re.escape(f"{verdicts}: {message}")):
            Pool.load(pool, verdicts)
    verdicts = write(
        tmp_path / "v.jsonl",
        [
            '{"unique_id": "a", "status": "wrong"}',
            '{"unique_id": "b", "status": "wrong", "sample_index": 1}',
            '{"unique_id": "b", "status": "correct", "sample_index": 1}',
            '{"unique_id": "a", "status": "correct"}',
        ],
    )
    with pytest.raises(PoolError, match=re.escape("duplicate verdict for unique_id='b' sample_index=1")):
        Pool.load(pool, verdicts)
    twice = write(tmp_path / "twice.jsonl", [row("a"), row("b"), row("a")])
    with pytest.raises(PoolError, match=re.escape("1 duplicate unique_id(s) in the pool, e.g. ['a']")):
        Pool.load(twice)


def test_hf_dataset_pool(tmp_path, monkeypatch):
    import datasets

    tagged, verdicts = random_records(20, seed=9)
    folder = tmp_path / "owner" / "pool"
    folder.mkdir(parents=True)
    rows = [r.model_dump() for r in tagged]
    for row in rows:
        row["metadata"] = {"pass_rate": row["metadata"]["pass_rate"]}
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "train.parquet"))
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    monkeypatch.setattr(loading, "_validate", per_row_refused)
    loaded = Pool.load(f"hf://{folder}:train", tmp_path / "verdicts.jsonl")
    assert_same_pool(loaded, Pool.from_records(tagged, verdicts))
    assert {tuple(c) for cs in loaded.chains for c in cs} <= {tuple(leaf) for leaf in LEAVES}
