"""Helpers shared by the tests (this library's and the tagging service's): a small hand-written tree,
problems for it, a free loopback port, the ``tree``/``tree_file`` fixtures (a conftest imports them), and
a scripted OpenAI-compatible chat server on loopback (``ScriptedModel``) with a model that tags right
(``knows_chains``)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from skillcore import SkillTree

SMALL_TREE: dict[str, Any] = {
    "name": "math",
    "children": [
        {
            "name": "Algebra",
            "description": "solving equations and manipulating expressions",
            "children": [
                {
                    "name": "Linear equations",
                    "description": "solve for x in a linear equation like 3x + 5 = 20",
                },
                {
                    "name": "Quadratic equations",
                    "description": "roots of x^2 + bx + c = 0, factoring, the quadratic formula",
                },
            ],
        },
        {
            "name": "Geometry",
            "description": "shapes, areas, angles and lengths",
            "children": [
                {
                    "name": "Circle area",
                    "description": "area and circumference of a circle with radius r, pi",
                },
                {"name": "Triangle angles", "description": "the angles of a triangle sum to 180 degrees"},
            ],
        },
        {
            "name": "Number theory",
            "description": "integers, divisibility and primes",
            "children": [
                {"name": "Greatest common divisor", "description": "gcd of two integers, Euclid's algorithm"},
                {"name": "Prime factorization", "description": "write an integer as a product of primes"},
            ],
        },
    ],
}

PROBLEMS: list[tuple[str, str, list[str]]] = [
    ("Solve for x: 4x + 7 = 31.", "Subtract 7 to get 4x = 24, so x = 6.", ["Algebra", "Linear equations"]),
    (
        "Find the roots of x^2 - 5x + 6 = 0.",
        "Factor as (x-2)(x-3) = 0, so x = 2 or x = 3.",
        ["Algebra", "Quadratic equations"],
    ),
    (
        "What is the area of a circle with radius 3?",
        "Area is pi r^2 = 9 pi.",
        ["Geometry", "Circle area"],
    ),
    (
        "Two angles of a triangle are 50 and 60 degrees. Find the third angle.",
        "The angles sum to 180, so 180 - 110 = 70 degrees.",
        ["Geometry", "Triangle angles"],
    ),
    (
        "Compute gcd(84, 36).",
        "Euclid: 84 = 2*36 + 12, 36 = 3*12, so the gcd is 12.",
        ["Number theory", "Greatest common divisor"],
    ),
    (
        "Write 360 as a product of prime powers.",
        "360 = 2^3 * 3^2 * 5.",
        ["Number theory", "Prime factorization"],
    ),
]


def small_tree() -> SkillTree:
    return SkillTree.from_dict(SMALL_TREE)


def small_problems(n: int = len(PROBLEMS), *, prefix: str = "q") -> list[dict[str, Any]]:
    """``n`` native pool rows cycling through PROBLEMS, each with a distinct question text."""
    rows = []
    for i in range(n):
        question, solution, chain = PROBLEMS[i % len(PROBLEMS)]
        suffix = f" (variant {i // len(PROBLEMS)})" if i >= len(PROBLEMS) else ""
        rows.append(
            {
                "unique_id": f"{prefix}{i}",
                "question": question + suffix,
                "solution": solution,
                "expected_answer": "0",
                "metadata": {"gold_chain": chain},
            }
        )
    return rows


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tree() -> SkillTree:
    return small_tree()


@pytest.fixture(scope="session")
def tree_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tree") / "small_tree.json"
    path.write_text(json.dumps(SMALL_TREE))
    return path


# ------------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible server on loopback: a real HTTP server in a thread that plays the external
# model. It answers /v1/chat/completions from a script (a function of the request), so a backend's
# happy path, downgrades, retries and give-ups are exercised over real HTTP with answers a real tagger
# would give. ``ScriptedModel.asked`` records every request the server saw.

Reply = Callable[[dict[str, Any]], "tuple[int, dict[str, Any]]"]


def completion(content: str) -> tuple[int, dict[str, Any]]:
    return 200, {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}


@dataclass
class Asked:
    """What one request asked: the problem's question, the node's path and the listed skills (and the
    whole problem text as the engine wrote it: the question, then any solution summary)."""

    question: str
    path: tuple[str, ...]
    skills: list[str]
    body: dict[str, Any]
    problem: str = ""

    @property
    def mode(self) -> str:
        return str(self.body.get("response_format", {}).get("type", "none"))


def read_request(body: dict[str, Any]) -> Asked:
    user = body["messages"][-1]["content"]
    problem = user.split("Problem (with a summary of its solution):\n", 1)[1].split("\n\n", 1)[0]
    question = problem.split("\nSolution: ", 1)[0]
    context = re.search(r"known to need skills in: (.+?)\.\n", user)
    path = tuple(context.group(1).split(" -> ")) if context else ()
    listed = user.split("\nSkills:\n", 1)[1].split("\n\n", 1)[0]
    skills = [line[2:].split(": ", 1)[0] for line in listed.splitlines()]
    return Asked(question, path, skills, body, problem)


class ScriptedModel:
    """``with ScriptedModel(reply) as url:`` serves ``reply(request body) -> (status, JSON)`` at ``url``."""

    def __init__(self, reply: Reply, *, delay_s: float = 0.0) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.asked: list[Asked] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> str:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(*error(404, f"no route {self.path}"))
                    return
                with model.lock:
                    model.asked.append(read_request(body))
                    model.in_flight += 1
                    model.max_in_flight = max(model.max_in_flight, model.in_flight)
                try:
                    time.sleep(model.delay_s)
                    status, payload = model.reply(body)
                finally:
                    with model.lock:
                        model.in_flight -= 1
                self._send(status, payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def knows_chains(problems: Iterable[Any], *, summary_chars: int = 400) -> Reply:
    """A model that tags right: at each node it names the children on the problem's known chains (a
    record's ``chains``, else ``metadata["gold_chain"]``), the problem found by the text the engine sends
    (``summary_chars`` as the engine's). Problems it does not know get a 400."""
    from skilltag.engine import ProblemInput, problem_text

    known: dict[str, list[tuple[str, ...]]] = {}
    for raw in problems:
        row = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
        chains = row.get("chains") or [(row.get("metadata") or {}).get("gold_chain") or []]
        text = problem_text(ProblemInput.from_record(row), summary_chars)
        known.setdefault(text, []).extend(tuple(c) for c in chains if c)

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        asked = read_request(body)
        chains = known.get(asked.problem)
        if chains is None:
            return error(400, f"no chains known for {asked.question!r}")
        depth = len(asked.path)
        names = [c[depth] for c in chains if len(c) > depth and c[:depth] == asked.path]
        return completion(json.dumps({"skills": list(dict.fromkeys(names))}))

    return reply
