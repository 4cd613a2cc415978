"""The openai backend: answer parsing, and a real OpenAI-compatible server (`transformers serve` with the
tiny Qwen3 student). The student's tags are not good; the test proves transport, structured-output
requests, parsing of bad output, dropping of names that are not children, retries and failover."""

from __future__ import annotations

from pathlib import Path

import pytest
from skillcore import SkillTree
from skilltag.backends.openai_chat import (
    OpenAIBackend,
    OpenAIConfig,
    build_messages,
    parse_choice,
    response_schema,
)
from skilltag.engine import TaggingEngine
from skilltag.testing import free_port, small_problems

NAMES = ["Algebra", "Geometry", "Number theory"]


@pytest.mark.parametrize(
    ("answer", "names", "invalid", "parsed"),
    [
        ('{"skills": ["Algebra", "Geometry"]}', ["Algebra", "Geometry"], [], True),
        ('```json\n{"skills": ["geometry ", "Calculus"]}\n```', ["Geometry"], ["Calculus"], True),
        ('<think>hmm {"skills": ["Calculus"]}</think>\n["Number theory"]', ["Number theory"], [], True),
        ('Sure! {"skills": ["Algebra", 3, "Algebra"]} hope that helps', ["Algebra"], ["3"], True),
        ('{"answer": ["Geometry"]}', ["Geometry"], [], True),
        ('"Algebra"', ["Algebra"], [], True),
        ("__import__('os').system('echo pwned')", [], [], False),
        ("", [], [], False),
        ("\\boxed{7}", [], [], False),
    ],
)
def test_parse_choice(answer: str, names: list[str], invalid: list[str], parsed: bool) -> None:
    got = parse_choice(answer, NAMES)
    assert (got.names, got.invalid, got.parsed) == (names, invalid, parsed)


def test_prompt_and_schema_list_the_children() -> None:
    messages = build_messages(
        "Solve 2x = 4.", ("Algebra",), [("Linear equations", "ax + b = c"), ("Quadratic equations", "")]
    )
    user = messages[-1]["content"]
    assert (
        "Solve 2x = 4." in user
        and "- Linear equations: ax + b = c" in user
        and "- Quadratic equations" in user
    )
    assert "Algebra" in user and "Choose all that apply" in user
    assert response_schema(NAMES)["properties"]["skills"]["items"]["enum"] == NAMES


def test_openai_backend_against_transformers_serve(tiny_student_dir: Path, tree: SkillTree) -> None:
    from distill.testing import openai_server

    dead = f"http://127.0.0.1:{free_port()}/v1"  # a second endpoint that is down: round-robin must retry
    with openai_server(tiny_student_dir) as url:
        backend = OpenAIBackend(
            OpenAIConfig(
                base_urls=(dead, url),
                model=str(tiny_student_dir),
                max_tokens=24,
                max_retries=4,
                backoff_base=0.01,
                max_concurrency=4,
                request_timeout=120,
            )
        )
        results = TaggingEngine(tree, backend).tag(small_problems(3))
        backend.close()
    assert [r.id for r in results] == ["q0", "q1", "q2"]
    for r in results:
        assert r.backend == "openai" and r.scores is None
        assert all(tree.is_valid_chain(c) for c in r.chains)  # whatever it said, only real chains survive
    c = backend.counters
    assert c["requests"] >= 3 + c["retries"] - c["structured_fallbacks"]
    assert c["transport_errors"] >= 1 and c["retries"] >= 1  # the dead endpoint was hit and retried
    # the tiny student is no tagger: its answers were unparseable, named non-children, or chose nothing
    assert c["unparsed_answers"] + c["invalid_names"] + c["empty_choices"] >= 1
    print(dict(c))
