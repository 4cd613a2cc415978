"""The openai backend: answer parsing; a scripted OpenAI-compatible server on loopback that plays a model
that can tag (full chains down the tree, structured-output downgrades, parse retries, a model that never
answers validly, transport retries, deadlines); and a real server (`transformers serve` with the tiny
Qwen3 student), whose tags are not good: that test proves transport, structured-output requests, parsing
of bad output, dropping of names that are not children, retries and failover."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from skillcore import SkillTree
from skilltag.backends.openai_chat import (
    OpenAIBackend,
    OpenAIConfig,
    build_messages,
    parse_choice,
    response_schema,
)
from skilltag.cache import TagCache
from skilltag.engine import BackendUnavailable, DeadlineExceeded, TaggingEngine
from skilltag.testing import (
    Reply,
    ScriptedModel,
    completion,
    error,
    free_port,
    read_request,
    small_problems,
)

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
        # reasoning whose opening tag was in the prompt (Qwen3 thinking templates): the answer follows it
        ('I need {x}... maybe ["Geometry"]\n</think>\n{"skills": ["Algebra"]}', ["Algebra"], [], True),
        ('<think>still thinking about {"skills": ["Algebra"]}', [], [], False),  # cut off mid-thought
        # the first JSON value amid prose with braces
        ('For {x} I pick {"skills": ["Geometry"]}, not {"skills": ["Algebra"]}.', ["Geometry"], [], True),
        ('Options {a, b}: ["Number theory"] then.', ["Number theory"], [], True),
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


def tagger(script: dict[str, dict[tuple[str, ...], str]]) -> Reply:
    """A model that answers ``script[question][node path]`` (the question found by its start)."""

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        asked = read_request(body)
        for start, by_path in script.items():
            if asked.question.startswith(start):
                return completion(by_path[asked.path])
        return error(400, f"no script for {asked.question!r}")

    return reply


def backend_for(*urls: str, **settings: Any) -> OpenAIBackend:
    config: dict[str, Any] = {"model": "scripted", "backoff_base": 0.01, "max_concurrency": 4}
    config.update(settings)
    return OpenAIBackend(OpenAIConfig(base_urls=urls, **config))


def problem(uid: str, question: str, solution: str = "") -> dict[str, Any]:
    return {"unique_id": uid, "question": question, "solution": solution, "expected_answer": "0"}


LINEAR = "Solve for x: 4x + 7 = 31."
BOTH = "Solve x^2 - 5x + 6 = 0 and compute gcd(84, 36)."
CIRCLE = "What is the area of a circle with radius 3?"
NOTHING = "Write a poem about autumn."
NONSENSE = "Integrate x^2 from 0 to 1."

TAGGER = {
    LINEAR: {
        (): '{"skills": ["Algebra"]}',
        ("Algebra",): '```json\n{"skills": ["linear  equations"]}\n```',  # case and spacing differ
    },
    BOTH: {
        (): '{"skills": ["Number theory", "Algebra", "Calculus"]}',  # Calculus is no child: dropped
        ("Algebra",): '<think>linear? no</think>\n{"skills": ["Quadratic equations"]}',
        ("Number theory",): 'Sure: {"skills": ["Greatest common divisor"]} is what it needs.',
    },
    CIRCLE: {
        (): '{"skills": ["Geometry", "Geometry"]}',  # a repeated name counts once
        ("Geometry",): '["Circle area"]',  # a bare list
    },
    NOTHING: {(): '{"skills": []}'},  # a valid answer choosing nothing
    NONSENSE: {(): '{"skills": ["Calculus"]}'},  # only names that are not children
}


def test_scripted_model_tags_full_chains(tree: SkillTree) -> None:
    model = ScriptedModel(tagger(TAGGER))
    with model as url:
        backend = backend_for(url)
        engine = TaggingEngine(tree, backend)
        problems = [
            problem("lin", LINEAR, "Subtract 7 to get 4x = 24, so x = 6."),
            problem("both", BOTH),
            problem("circle", CIRCLE),
            problem("nothing", NOTHING),
            problem("nonsense", NONSENSE),
        ]
        results = engine.tag(problems)
        backend.close()
    assert {r.id: r.chains for r in results} == {
        "lin": [["Algebra", "Linear equations"]],
        "both": [["Algebra", "Quadratic equations"], ["Number theory", "Greatest common divisor"]],
        "circle": [["Geometry", "Circle area"]],
        "nothing": [],
        "nonsense": [],
    }
    assert all(r.backend == "openai" and r.scores is None for r in results)
    # every node was asked once, with that node's children listed and enforced by the schema
    assert len(model.asked) == 5 + 1 + 2 + 1  # roots, then Algebra (lin, both), NT (both), Geometry
    for asked in model.asked:
        node = tree.find(asked.path)
        assert node is not None
        children = [c.name for c in node.children]
        assert asked.skills == children
        assert asked.body["response_format"]["type"] == "json_schema"
        schema = asked.body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["skills"]["items"]["enum"] == children
        assert asked.body["model"] == "scripted" and asked.body["seed"] == 0
        assert asked.body["temperature"] == 0.3
        assert asked.body["chat_template_kwargs"] == {"enable_thinking": False}
        if asked.path:
            assert (
                f"known to need skills in: {' -> '.join(asked.path)}."
                in asked.body["messages"][-1]["content"]
            )
    c = backend.counters
    assert c["requests"] == 9 and c["retries"] == 0 and c["structured_fallbacks"] == 0
    assert c["invalid_names"] == 2  # Calculus twice
    assert c["empty_choices"] == 2  # "nothing" (chose none) and "nonsense" (no valid name)
    assert c["unparsed_answers"] == 0 and c["unanswered_nodes"] == 0
    assert engine.stats.untagged == 2


def rejects(*modes: str, status: int = 400, barrier: threading.Barrier | None = None) -> Reply:
    """A server without structured output: requests with response_format of ``modes`` are refused."""
    answer = tagger(TAGGER)

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mode = body.get("response_format", {}).get("type")
        if mode in modes:
            if barrier is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()  # hold the first rejections until all of them are in flight
            if status == 422:  # FastAPI-style validation of an unknown field
                return 422, {"detail": "Unexpected fields in the request: {'response_format'}"}
            return error(400, f"response_format type {mode!r} is not supported by this server")
        return answer(body)

    return reply


def test_structured_output_downgrade_to_json_object(tree: SkillTree) -> None:
    """Concurrent requests rejected for json_schema step down once, to json_object (not past it)."""
    barrier = threading.Barrier(4, timeout=10)
    model = ScriptedModel(rejects("json_schema", barrier=barrier))
    with model as url:
        backend = backend_for(url, max_concurrency=4)
        problems = [problem("lin", LINEAR), problem("both", BOTH), problem("circle", CIRCLE)]
        problems.append(problem("lin2", LINEAR + " (again)"))
        results = TaggingEngine(tree, backend).tag(problems)
        backend.close()
    assert [r.chains for r in results] == [
        [["Algebra", "Linear equations"]],
        [["Algebra", "Quadratic equations"], ["Number theory", "Greatest common divisor"]],
        [["Geometry", "Circle area"]],
        [["Algebra", "Linear equations"]],
    ]
    assert backend.structured == "json_object"
    assert backend.counters["structured_fallbacks"] == 1
    modes = [a.mode for a in model.asked]
    assert modes[:4] == ["json_schema"] * 4  # the four first requests were in flight together
    assert set(modes[4:]) == {"json_object"}  # json_object works here: never dropped to none


@pytest.mark.parametrize("status", [400, 422])
def test_structured_output_downgrade_to_none(tree: SkillTree, status: int) -> None:
    model = ScriptedModel(rejects("json_schema", "json_object", status=status))
    with model as url:
        backend = backend_for(url, max_concurrency=1)
        results = TaggingEngine(tree, backend).tag([problem("both", BOTH)])
        backend.close()
    assert results[0].chains == [
        ["Algebra", "Quadratic equations"],
        ["Number theory", "Greatest common divisor"],
    ]
    assert backend.structured == "none" and backend.counters["structured_fallbacks"] == 2
    assert [a.mode for a in model.asked] == ["json_schema", "json_object", "none", "none", "none"]
    assert "response_format" not in model.asked[-1].body


def test_other_bad_requests_fail_clearly(tree: SkillTree) -> None:
    model = ScriptedModel(lambda body: error(400, "This model's maximum context length is 32 tokens"))
    with model as url:
        backend = backend_for(url)
        with pytest.raises(BackendUnavailable, match=r"rejected the request.*maximum context length"):
            TaggingEngine(tree, backend).tag([problem("lin", LINEAR)])
        backend.close()
    assert backend.structured == "json_schema"  # no downgrade for an unrelated rejection
    assert len(model.asked) == 1


def first_unparseable(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Prose on the first try (seed 0), a valid answer on the retry (seed 1)."""
    if body.get("seed") == 0:
        return completion("The problem clearly needs algebra, I would say.")
    return tagger(TAGGER)(body)


def test_parse_retry_gets_a_valid_answer(tree: SkillTree) -> None:
    model = ScriptedModel(first_unparseable)
    with model as url:
        backend = backend_for(url)
        results = TaggingEngine(tree, backend).tag([problem("lin", LINEAR), problem("both", BOTH)])
        backend.close()
    assert [r.chains for r in results] == [
        [["Algebra", "Linear equations"]],
        [["Algebra", "Quadratic equations"], ["Number theory", "Greatest common divisor"]],
    ]
    nodes = 2 + 1 + 2  # roots, Algebra for lin, Algebra and Number theory for both
    c = backend.counters
    assert c["unparsed_answers"] == nodes and c["retries"] == nodes and c["requests"] == 2 * nodes
    assert c["unanswered_nodes"] == 0
    # a retry asks with the next seed: a seeded server would repeat an unparseable answer otherwise
    by_node: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for asked in model.asked:
        by_node.setdefault((asked.question, asked.path), []).append(asked.body["seed"])
    assert all(seeds == [0, 1] for seeds in by_node.values()) and len(by_node) == nodes


def test_a_model_that_never_answers_validly(tree: SkillTree, caplog: pytest.LogCaptureFixture) -> None:
    """Every try unparseable: the node gets no children (the problem is untagged), counted and logged,
    after exactly 1 + parse_retries requests; the batch itself does not fail."""
    model = ScriptedModel(lambda body: completion("I cannot decide. \\boxed{7}"))
    with model as url, caplog.at_level(logging.WARNING, logger="skilltag.backends.openai_chat"):
        backend = backend_for(url, parse_retries=2)
        engine = TaggingEngine(tree, backend)
        results = engine.tag([problem("lin", LINEAR), problem("both", BOTH)])
        backend.close()
    assert [r.chains for r in results] == [[], []]
    assert engine.stats.untagged == 2
    c = backend.counters
    assert c["requests"] == 6 and c["unparsed_answers"] == 6 and c["retries"] == 4
    assert c["unanswered_nodes"] == 2 and c["empty_choices"] == 0
    assert sorted(a.body["seed"] for a in model.asked) == [0, 0, 1, 1, 2, 2]
    assert "no parseable answer for node '(root)' after 3 tries" in caplog.text


def test_untagged_problems_are_not_cached(tree: SkillTree, tmp_path: Path) -> None:
    """A model that failed to answer leaves nothing in the tag cache: the next run asks again."""
    cache = tmp_path / "tags.sqlite"
    with ScriptedModel(lambda body: completion("I cannot decide.")) as url:
        backend = backend_for(url, parse_retries=0)
        first = TaggingEngine(tree, backend, TagCache(cache)).tag([problem("lin", LINEAR)])
        backend.close()
    assert first[0].chains == [] and len(TagCache(cache)) == 0
    with ScriptedModel(tagger(TAGGER)) as url:
        backend = backend_for(url)
        again = TaggingEngine(tree, backend, TagCache(cache)).tag([problem("lin", LINEAR)])
        backend.close()
    assert again[0].chains == [["Algebra", "Linear equations"]] and not again[0].from_cache
    assert len(TagCache(cache)) == 1


def test_a_node_that_never_answers_loses_only_its_chains(tree: SkillTree) -> None:
    script = {BOTH: dict(TAGGER[BOTH])}
    script[BOTH][("Number theory",)] = "<think>gcd or primes... I keep thinking"  # cut off mid-thought

    model = ScriptedModel(tagger(script))
    with model as url:
        backend = backend_for(url, parse_retries=1)
        results = TaggingEngine(tree, backend).tag([problem("both", BOTH)])
        backend.close()
    assert results[0].chains == [["Algebra", "Quadratic equations"]]
    assert backend.counters["unanswered_nodes"] == 1


def test_transport_failures_are_retried_round_robin(tree: SkillTree) -> None:
    down = ScriptedModel(lambda body: error(503, "overloaded"))
    up = ScriptedModel(tagger(TAGGER))
    with down as down_url, up as up_url:
        backend = backend_for(down_url, up_url, max_concurrency=1, max_retries=4)
        results = TaggingEngine(tree, backend).tag([problem("lin", LINEAR), problem("circle", CIRCLE)])
        backend.close()
    assert [r.chains for r in results] == [[["Algebra", "Linear equations"]], [["Geometry", "Circle area"]]]
    assert len(up.asked) == 4 and len(down.asked) == 4  # alternating endpoints: each answered node
    c = backend.counters  # followed one refusal
    assert c["transport_errors"] == 4 and c["retries"] == 4


def test_transport_failures_past_max_retries(tree: SkillTree) -> None:
    model = ScriptedModel(lambda body: error(500, "boom"))
    with model as url:
        backend = backend_for(url, max_retries=2)
        with pytest.raises(BackendUnavailable, match=r"failed 3 times.*InternalServerError"):
            TaggingEngine(tree, backend).tag([problem("lin", LINEAR)])
        backend.close()
    assert len(model.asked) == 3


def test_deadline_and_bounded_concurrency(tree: SkillTree) -> None:
    model = ScriptedModel(tagger(TAGGER), delay_s=0.2)
    with model as url:
        backend = backend_for(url, max_concurrency=2)
        engine = TaggingEngine(tree, backend)
        problems = [problem(f"l{i}", f"{LINEAR} (variant {i})") for i in range(6)]
        results = engine.tag(problems)
        assert all(r.chains == [["Algebra", "Linear equations"]] for r in results)
        assert model.max_in_flight == 2  # never more than max_concurrency requests at once
        asked = len(model.asked)
        with pytest.raises(DeadlineExceeded):
            engine.tag([problem("late", LINEAR + " late")], deadline=time.monotonic() + 0.05)
        assert len(model.asked) - asked <= 1  # the walk stopped at the root: no level after the deadline
        backend.close()
