"""The LLM judge over a real OpenAI-compatible HTTP endpoint (a small rule-following grader server)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from distill.judge import JudgeItem, LLMJudge


class Grader(BaseHTTPRequestHandler):
    """Answers chat completions like a grading model: CORRECT when the two answers match textually."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        ref = re.search(r"Reference answer:\n(.*?)\n\n", prompt, re.S).group(1)  # type: ignore[union-attr]
        got = re.search(r"Student's final answer:\n(.*?)\n\n", prompt, re.S).group(1)  # type: ignore[union-attr]
        reply = "maybe?" if got == "garbage" else ("CORRECT" if ref == got else "WRONG")
        out = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def grader_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Grader)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_llm_judge_statuses(grader_url: str) -> None:
    judge = LLMJudge(grader_url, "grader", concurrency=2, max_retries=0)
    items = [
        JudgeItem(unique_id="a", response="\\boxed{the empty set}", expected_answer="the empty set"),
        JudgeItem(unique_id="b", response="\\boxed{x > 2}", expected_answer="x < 2"),
        JudgeItem(unique_id="c", response="no box", expected_answer="1"),
        JudgeItem(unique_id="d", response="\\boxed{garbage}", expected_answer="1"),
    ]
    verdicts = judge.judge(items, questions=["q1", "q2", "q3", "q4"])
    assert [v.status for v in verdicts] == ["correct", "wrong", "no_answer", "error"]
    assert verdicts[0].extracted_answer == "the empty set"


def test_llm_judge_unreachable_is_error() -> None:
    judge = LLMJudge("http://127.0.0.1:9/v1", "grader", max_retries=0, timeout_s=2)
    v = judge.judge([JudgeItem(unique_id="a", response="\\boxed{1}", expected_answer="1")])
    assert v[0].status == "error"


def test_llm_judge_against_a_served_model(tiny_student_dir, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """A real model behind `transformers serve`: every request is answered (nothing logged as failed) and
    each reply is mapped by the same rule the served model's own greedy text gives. The tiny student is no
    grader; the mechanics are what is checked."""
    from distill.engines import SamplingConfig, make_engine
    from distill.judge import LLM_JUDGE_PROMPT
    from distill.testing import openai_server

    items = [
        JudgeItem(unique_id="a", response="\\boxed{4}", expected_answer="4", question="What is 2+2?"),
        JudgeItem(unique_id="b", response="\\boxed{5}", expected_answer="4", question="What is 2+2?"),
        JudgeItem(unique_id="c", response="no box", expected_answer="4", question="What is 2+2?"),
    ]
    with openai_server(tiny_student_dir) as base_url:
        judge = LLMJudge(base_url, str(tiny_student_dir), concurrency=2, max_retries=0, timeout_s=120)
        with caplog.at_level("ERROR", logger="distill.judge"):
            verdicts = judge.judge(items)
        engine = make_engine("openai", str(tiny_student_dir), base_url=base_url, timeout_s=120)
        replies = engine.generate(
            [
                LLM_JUDGE_PROMPT.format(question=i.question, expected=i.expected_answer, answer=a)
                for i, a in ((items[0], "4"), (items[1], "5"))
            ],
            SamplingConfig(temperature=0.0, max_new_tokens=8, enable_thinking=False),
            progress=False,
        )
        judge.close()
        engine.close()
    assert "request failed" not in caplog.text
    assert verdicts[2].status == "no_answer"

    def rule(text: str) -> str:
        text = text.split("</think>")[-1].strip().upper() if "</think>" in text else text.strip().upper()
        return "correct" if text.startswith("CORRECT") else "wrong" if text.startswith("WRONG") else "error"

    assert all(r[0].text.strip() for r in replies)  # it answered outside <think> (thinking is off)
    assert [v.status for v in verdicts[:2]] == [rule(r[0].text) for r in replies]
