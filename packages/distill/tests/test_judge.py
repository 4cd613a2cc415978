"""Answer extraction and judging: every answer form, right and wrong, timeouts, threads."""

from __future__ import annotations

import threading

import pytest
from distill.judge import (
    JudgeItem,
    MathJudge,
    choice_letter,
    compare_answers,
    extract_answer,
    judge_batch,
    judge_response,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then later \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
        ("set \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("space form \\boxed 5.", "5"),
        ("fbox \\fbox{7}", "7"),
        ("spaced brace \\boxed {9}", "9"),
        ("truncated last box \\boxed{3} and \\boxed{\\frac{1}{", "3"),
        ("no box at all: 42", None),
        ("empty \\boxed{}", None),
        ("\\boxedfoo{3} is not a box", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_choice_letter_forms() -> None:
    assert choice_letter("(C)", gold=True) == "C"
    assert choice_letter("\\text{(B)}", gold=True) == "B"
    assert choice_letter("C) 12", gold=False) == "C"
    assert choice_letter("12", gold=True) is None
    assert choice_letter("Ea", gold=False) is None


def test_a_gold_is_a_choice_only_when_marked_or_declared() -> None:
    for marked in ("(C)", "\\text{(C)}", "\\textbf{(C)}", "(c)", "C", "\\text{C}"):
        assert choice_letter(marked, gold=True) == "C", marked
    for expression in ("c", "e", "\\text{e}", "(C) Plane", "\\text{(C) Plane}", "C.", "F"):
        assert choice_letter(expression, gold=True) is None, expression
    for form in ("e", "(e)", "E", "\\text{e}", "e.", "\\text{(E)}"):  # declared: every letter form
        assert choice_letter(form, gold=True, declared=True) == "E", form
    assert choice_letter("12", gold=True, declared=True) is None


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("C", "C"),
        ("c", "C"),
        ("(C)", "C"),
        ("\\text{(C)}", "C"),
        ("C.", "C"),
        ("C) 12", "C"),
        ("(C) Plane", "C"),
        ("\\text{(C) Plane}", "C"),
        ("C: 12", "C"),
        ("(C) f(E)", "C"),  # a function's argument is no second label
        ("C or D", None),  # a hedge names no choice
        ("(C) or (D)", None),
        ("C) 12, D) 15", None),
        ("C Plane", None),  # no label punctuation: not a choice
        ("e + 1", None),
        ("(C),", None),
        ("C.5", None),
        ("12", None),
    ],
)
def test_the_choice_a_prediction_names(prediction: str, letter: str | None) -> None:
    assert choice_letter(prediction, gold=False) == letter


# (prediction, expected answer, declared multiple choice, verdict): issue #15
CHOICE_CASES = [
    # a gold "e" is Euler's number, not choice (E)
    ("\\exp(1)", "e", False, "correct"),
    ("e", "e", False, "correct"),
    ("2.718281828", "e", False, "correct"),
    ("e^{1}", "e", False, "correct"),
    ("2.718", "e", False, "wrong"),
    ("e + 1", "e", False, "wrong"),  # read as choice E before the fix
    ("(E)", "e", False, "correct"),  # math-verify: (E) is e in parentheses
    ("c", "c", False, "correct"),
    ("b", "c", False, "wrong"),
    # a trailing list separator never makes a wrong answer right
    ("3", "3,", False, "wrong"),
    ("3,", "3", False, "wrong"),
    ("3;", "3", False, "wrong"),
    ("3,", "3,", False, "correct"),
    ("3.", "3", False, "correct"),  # a decimal point, not a separator
    ("\\{1, 2\\}", "\\{1,2\\}", False, "correct"),
    # a choice with the option's text
    ("\\text{(C) Plane}", "\\text{(C)}", False, "correct"),  # the label names the choice
    ("\\text{(C)}", "\\text{(C) Plane}", False, "wrong"),  # the gold is not a bare choice
    ("\\text{(D) Plane}", "\\text{(C)}", False, "wrong"),
    # a real choice
    ("C", "(C)", False, "correct"),
    ("(C)", "(C)", False, "correct"),
    ("\\text{(C)}", "(C)", False, "correct"),
    ("c", "(C)", False, "correct"),
    ("D", "(C)", False, "wrong"),
    ("C or D", "(C)", False, "wrong"),
    ("(C) or (D)", "(C)", False, "wrong"),
    ("\\text{Plane}", "(C)", False, "wrong"),
    # declared choices: any letter form of the gold is a choice, lowercase included
    ("E", "e", True, "correct"),
    ("(E)", "e", True, "correct"),
    ("\\exp(1)", "e", True, "wrong"),
    ("2.718281828", "e", True, "wrong"),
    ("\\text{(B)}", "b", True, "correct"),
    ("12.0", "12", True, "correct"),  # a numeric gold stays numeric
]


@pytest.mark.parametrize(("prediction", "expected", "declared", "verdict"), CHOICE_CASES)
def test_choices_and_separators_inline(prediction: str, expected: str, declared: bool, verdict: str) -> None:
    assert compare_answers(prediction, expected, timeout=None, multiple_choice=declared) == verdict
    response = f"So \\boxed{{{prediction}}}"
    assert judge_response(response, expected, multiple_choice=declared).status == verdict


def test_choices_and_separators_through_the_workers(judge: MathJudge) -> None:
    items = [
        JudgeItem(
            unique_id=f"c{i}",
            response=f"\\boxed{{{pred}}}",
            expected_answer=gold,
            multiple_choice=declared,
        )
        for i, (pred, gold, declared, _) in enumerate(CHOICE_CASES)
    ]
    assert [v.status for v in judge.judge(items)] == [case[3] for case in CHOICE_CASES]
    # the same verdicts on a repeat (deterministic) and with inline judging
    assert [v.status for v in judge.judge(items)] == [case[3] for case in CHOICE_CASES]
    assert [v.status for v in MathJudge(workers=0).judge(items)] == [case[3] for case in CHOICE_CASES]


# (boxed prediction, expected answer, verdict)
CASES = [
    ("\\frac{1}{2}", "0.5", "correct"),  # fraction vs decimal
    ("0.5", "\\frac12", "correct"),
    ("\\dfrac{3}{4}", "3/4", "correct"),
    ("0.75", "0.7", "wrong"),
    ("\\frac{2}{3}", "\\frac{3}{2}", "wrong"),
    ("1,000", "1000", "correct"),  # thousands separator
    ("3.0", "3", "correct"),
    ("2\\sqrt{3}", "\\sqrt{12}", "correct"),  # LaTeX expressions
    ("\\sqrt{2}", "\\sqrt{3}", "wrong"),
    ("\\pi", "\\pi", "correct"),
    ("50\\%", "50", "correct"),  # percentages
    ("50\\%", "0.5", "correct"),
    ("40\\%", "50\\%", "wrong"),
    ("(1,2]", "(1,2]", "correct"),  # intervals
    ("[1,2]", "(1,2]", "wrong"),
    ("(-\\infty, 3)", "(-\\infty,3)", "correct"),
    ("\\{2, 1\\}", "\\{1,2\\}", "correct"),  # sets, order-free
    ("\\{1, 3\\}", "\\{1,2\\}", "wrong"),
    ("C", "C", "correct"),  # multiple-choice letters
    ("\\text{(C)}", "(C)", "correct"),
    ("E", "C", "wrong"),
    ("D) 17", "D", "correct"),
    ("x = 3", "3", "correct"),
    ("\\text{no solution}", "\\text{no solution}", "correct"),
    ("12", "13", "wrong"),
]


@pytest.fixture(scope="module")
def judge() -> MathJudge:
    with MathJudge(workers=2, timeout_s=4) as j:
        yield j


def test_every_answer_form(judge: MathJudge) -> None:
    items = [
        JudgeItem(unique_id=f"q{i}", response=f"Reasoning... \\boxed{{{pred}}}", expected_answer=gold)
        for i, (pred, gold, _) in enumerate(CASES)
    ]
    verdicts = judge.judge(items)
    got = [(v.extracted_answer, v.expected_answer, v.status) for v in verdicts]
    assert got == [(p, g, s) for p, g, s in CASES]
    assert [v.unique_id for v in verdicts] == [f"q{i}" for i in range(len(CASES))]


def test_no_answer_and_sample_index(judge: MathJudge) -> None:
    items = [
        JudgeItem(unique_id="a", sample_index=3, response="I think it is 4", expected_answer="4"),
        JudgeItem(unique_id="a", sample_index=4, response="\\boxed 4", expected_answer="4"),
    ]
    v = judge.judge(items)
    assert [(x.sample_index, x.status, x.extracted_answer) for x in v] == [
        (3, "no_answer", None),
        (4, "correct", "4"),
    ]


def test_pathological_expression_times_out_without_hanging(judge: MathJudge) -> None:
    items = [
        JudgeItem(unique_id="slow", response="\\boxed{9^{9^{9^{9}}}}", expected_answer="5"),
        JudgeItem(unique_id="fine", response="\\boxed{5}", expected_answer="5"),
    ]
    v = judge.judge(items)
    assert [x.status for x in v] == ["timeout", "correct"]
    # the judge keeps working after a timeout (the worker was kept or replaced)
    assert judge.judge([JudgeItem(unique_id="x", response="\\boxed{2}", expected_answer="2")])[0].correct


def test_judge_from_worker_thread(judge: MathJudge) -> None:
    out: list[str] = []

    def run() -> None:
        out.extend(
            v.status
            for v in judge.judge(
                [
                    JudgeItem(unique_id="t1", response="\\boxed{\\frac{1}{4}}", expected_answer="0.25"),
                    JudgeItem(unique_id="t2", response="\\boxed{9^{9^{9^{9}}}}", expected_answer="1"),
                ]
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert out == ["correct", "timeout"]


def test_inline_judging_and_helpers() -> None:
    assert judge_response("\\boxed{\\frac{1}{2}}", "0.5").status == "correct"
    assert judge_response("nothing", "0.5").status == "no_answer"
    verdicts = judge_batch(
        [JudgeItem(unique_id="i", response="\\boxed{3}", expected_answer="4")], workers=0, timeout_s=2
    )
    assert verdicts[0].status == "wrong"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        MathJudge(timeout_s=0)
    with pytest.raises(ValueError, match="workers"):
        MathJudge(workers=-1)


@pytest.mark.timeout(120)  # a hang guard: the deadline itself is proven by the "timeout" verdict
def test_hard_deadline_replaces_a_stuck_worker() -> None:
    """A worker that stops answering (here: SIGSTOPped) is killed at the deadline and replaced."""
    import os
    import signal

    with MathJudge(workers=1, timeout_s=1.5) as judge:
        judge.judge([JudgeItem(unique_id="warm", response="\\boxed{\\frac{1}{2}}", expected_answer="0.5")])
        stuck = judge._pool[0].process
        os.kill(stuck.pid, signal.SIGSTOP)
        verdicts = judge.judge(
            [
                JudgeItem(unique_id="a", response="\\boxed{\\frac{1}{2}}", expected_answer="0.5"),
                JudgeItem(unique_id="b", response="\\boxed{\\frac{3}{4}}", expected_answer="0.75"),
            ]
        )
        assert [v.status for v in verdicts] == ["timeout", "correct"]
        assert stuck.poll() is not None  # killed
        assert judge._pool[0].process.pid != stuck.pid


def test_a_math_verify_failure_is_an_error_not_a_wrong_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A comparison math-verify cannot make must not look like a wrong answer (a weak skill)."""
    import math_verify

    def broken(*args: object, **kwargs: object) -> bool:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(math_verify, "verify", broken)
    with caplog.at_level("WARNING", logger="distill.judge"):
        assert compare_answers("\\frac{1}{2}", "0.5", timeout=None) == "error"
    assert "math-verify failed" in caplog.text
    # textually equal answers never reach math-verify, so they stay correct
    assert compare_answers("0.5", "0.5", timeout=None) == "correct"
    verdicts = MathJudge(workers=0).judge(
        [JudgeItem(unique_id="q", response="\\boxed{\\frac{1}{2}}", expected_answer="0.5")]
    )
    assert verdicts[0].status == "error"


def nested_frac(depth: int) -> str:
    """``\\frac{\\frac{...{1}...}{1}}{1}``: equal to 1 at any depth."""
    text = "1"
    for _ in range(depth):
        text = "\\frac{" + text + "}{1}"
    return text


def test_nesting_depth() -> None:
    from distill.judge import nesting_depth

    assert nesting_depth("1") == 0
    assert nesting_depth("\\frac{1}{2}") == 1
    assert nesting_depth("((x)) + [1, {2}]") == 2
    assert nesting_depth(nested_frac(200)) == 200
    assert nesting_depth(")))(") == 1


@pytest.mark.parametrize("depth", [150, 200, 500])
def test_deep_nesting_is_an_error_every_time(judge: MathJudge, depth: int) -> None:
    """Deep nesting timed out on a first call and was ``wrong`` on repeats (math-verify's parser hit its
    recursion limit and fell back to the raw text): now ``error``, first call and repeats alike."""
    answer = nested_frac(depth)
    assert [compare_answers(answer, "1", timeout=None) for _ in range(3)] == ["error"] * 3
    item = JudgeItem(unique_id="deep", response=f"\\boxed{{{answer}}}", expected_answer="1")
    assert [judge.judge([item])[0].status for _ in range(3)] == ["error"] * 3
    assert compare_answers(nested_frac(50), "1", timeout=None) == "correct"  # moderate nesting still works


def test_a_swallowed_parse_failure_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """math-verify catches its parser's exceptions and compares the raw text instead (a wrong answer):
    a recursion error inside the parser must come out as ``error``."""
    import math_verify.parser as mv_parser

    real = mv_parser.latex2sympy

    def fails(latex: str, **kwargs: object) -> object:
        if "17" in latex:
            raise RecursionError("maximum recursion depth exceeded")
        return real(latex, **kwargs)

    monkeypatch.setattr(mv_parser, "latex2sympy", fails)
    assert [compare_answers("\\sqrt{17}", "4", timeout=None) for _ in range(2)] == ["error", "error"]
    assert compare_answers("\\sqrt{16}", "4", timeout=None) == "correct"


TOWER = "\\boxed{2^{2^{2^{2^{2^{2}}}}}}"  # math-verify works on it until its timeout


@pytest.mark.timeout(120)
def test_budget_answers_the_rest_timeout() -> None:
    with MathJudge(workers=1, timeout_s=4) as judge:
        judge.judge([JudgeItem(unique_id="warm", response="\\boxed{\\frac{1}{2}}", expected_answer="0.5")])
        items = [JudgeItem(unique_id=f"t{i}", response=TOWER, expected_answer="5") for i in range(4)]
        items.append(JudgeItem(unique_id="same", response="\\boxed{5}", expected_answer="5"))
        verdicts = judge.judge(items, budget_s=0.5)
        assert [v.status for v in verdicts] == ["timeout"] * 4 + ["correct"]  # never "wrong"
        ok = judge.judge([JudgeItem(unique_id="after", response="\\boxed{0.25}", expected_answer="\\frac14")])
        assert ok[0].status == "correct"  # the worker was not lost
        with pytest.raises(ValueError, match="budget_s"):
            judge.judge(items, budget_s=0)


@pytest.mark.timeout(180)
def test_a_small_batch_is_not_queued_behind_a_slow_one() -> None:
    """No lock across calls: a one-item batch sent while a slow batch runs finishes before it."""
    with MathJudge(workers=2, timeout_s=4) as judge:
        judge.judge(
            [JudgeItem(unique_id="warm", response="\\boxed{\\frac{1}{2}}", expected_answer="0.5")] * 2
        )
        slow_items = [JudgeItem(unique_id=f"s{i}", response=TOWER, expected_answer=str(i)) for i in range(8)]
        slow_out: list[str] = []
        started = threading.Event()

        def slow() -> None:
            started.set()
            slow_out.extend(v.status for v in judge.judge(slow_items))

        thread = threading.Thread(target=slow)
        thread.start()
        started.wait()
        while not judge._batches:  # the slow batch is in flight
            threading.Event().wait(0.01)
        small = judge.judge(
            [JudgeItem(unique_id="q", response="\\boxed{\\frac{3}{4}}", expected_answer="0.75")]
        )
        assert small[0].status == "correct"
        assert thread.is_alive()  # the slow batch is still being judged
        thread.join(120)
        assert slow_out == ["timeout"] * 8
        # the same slow input again: the remembered verdict, at once and the same
        again = judge.judge(slow_items[:1])
        assert again[0].status == "timeout"
