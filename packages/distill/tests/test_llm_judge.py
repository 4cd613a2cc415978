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
