"""The three engines: hf on the tiny student, openai against a real `transformers serve`, vllm's arguments."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
from distill.engines import (
    EngineError,
    GenerationStopped,
    SamplingConfig,
    make_engine,
    question_prompts,
    render_chat,
)
from distill.engines.vllm_engine import llm_kwargs, sampling_kwargs, vllm_unavailable_reason
from distill.judge import extract_answer
from distill.testing import openai_server
from pydantic import ValidationError

QUESTIONS = [
    "What is the 4th term of the geometric sequence 2, 4, 8, ...?",
    "Compute 1/3 + 1/3 as a fraction in lowest terms.",
    "Count the positive divisors of 12.",
]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=48, n=1)


@pytest.fixture(scope="module")
def hf_engine(tiny_student_dir: Path):  # type: ignore[no-untyped-def]
    engine = make_engine("hf", str(tiny_student_dir), batch_size=2, device="cpu")
    yield engine
    engine.close()


def test_sampling_config_validation() -> None:
    assert SamplingConfig().enable_thinking is True
    assert SamplingConfig(temperature=0).greedy
    with pytest.raises(ValidationError):
        SamplingConfig(n=0)
    with pytest.raises(ValidationError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValidationError):
        SamplingConfig(max_tokens=5)  # type: ignore[call-arg]  # unknown field


def test_render_uses_chat_template_with_thinking_switch(hf_engine) -> None:  # type: ignore[no-untyped-def]
    tok = hf_engine.tokenizer
    on = render_chat(tok, question_prompts(["1+1?"])[0], enable_thinking=True)
    off = render_chat(tok, question_prompts(["1+1?"])[0], enable_thinking=False)
    assert on.startswith("<|im_start|>user\nPlease reason step by step")
    assert "Question: 1+1?" in on and on.endswith("<|im_start|>assistant\n")
    assert off.endswith("<think>\n\n</think>\n\n")


def test_hf_engine_batched_matches_one_by_one(hf_engine) -> None:  # type: ignore[no-untyped-def]
    prompts = question_prompts(QUESTIONS)
    batched = hf_engine.generate(prompts, GREEDY, progress=False)
    assert [len(g) for g in batched] == [1, 1, 1]
    for prompt, gens in zip(prompts, batched, strict=True):
        alone = hf_engine.generate([prompt], GREEDY, progress=False)[0][0]
        # left padding + attention mask: a prompt's greedy answer does not depend on its batch-mates
        assert gens[0].text == alone.text
        assert 0 < gens[0].n_tokens <= GREEDY.max_new_tokens
        assert gens[0].finish_reason in {"stop", "length"}
        assert (gens[0].finish_reason == "length") == (gens[0].n_tokens == GREEDY.max_new_tokens)


def test_hf_engine_samples_n_with_seed(hf_engine) -> None:  # type: ignore[no-untyped-def]
    params = SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=7)
    first = hf_engine.generate(question_prompts(QUESTIONS[:2]), params, progress=False)
    again = hf_engine.generate(question_prompts(QUESTIONS[:2]), params, progress=False)
    assert [len(g) for g in first] == [3, 3]
    assert [[x.text for x in g] for g in first] == [[x.text for x in g] for g in again]
    assert len({x.text for x in first[0]}) > 1  # sampling, not three copies


def test_openai_engine_against_transformers_serve(tiny_student_dir: Path, hf_engine) -> None:  # type: ignore[no-untyped-def]
    prompts = question_prompts(QUESTIONS)
    expected = hf_engine.generate(prompts, GREEDY, progress=False)
    with openai_server(tiny_student_dir) as base_url:
        engine = make_engine("openai", str(tiny_student_dir), base_url=base_url, concurrency=3, timeout_s=120)
        got = engine.generate(prompts, GREEDY, progress=False)
        two = engine.generate(prompts[:1], SamplingConfig(n=2, max_new_tokens=16), progress=False)
        engine.close()
    assert [len(g) for g in got] == [1, 1, 1] and len(two[0]) == 2
    for mine, theirs in zip(expected, got, strict=True):
        assert theirs[0].n_tokens == mine[0].n_tokens
        assert theirs[0].finish_reason == mine[0].finish_reason
        assert extract_answer(theirs[0].text) == extract_answer(mine[0].text)
        # the server splits the thinking out (and drops it when empty); the engine puts it back in tags
        assert _flat(theirs[0].text) == _flat(mine[0].text)
    assert any(extract_answer(g[0].text) for g in expected)  # the trained student does answer


def _flat(text: str) -> str:
    return " ".join(text.replace("<think>", " ").replace("</think>", " ").split())


class StopAfterPolls(threading.Event):
    """A stop event that turns set once it has been looked at ``polls`` times (generation polls it once
    per token), counting every look."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks > self.polls


def test_hf_engine_stops_at_the_next_token(hf_engine) -> None:  # type: ignore[no-untyped-def]
    long = SamplingConfig(temperature=0.7, max_new_tokens=400, n=1, seed=0)
    stop = StopAfterPolls(polls=6)
    with pytest.raises(GenerationStopped):
        hf_engine.generate(question_prompts(QUESTIONS[:2]), long, progress=False, stop=stop)
    # 400 tokens would poll 400 times; it stopped right after the event turned set
    assert stop.looks <= stop.polls + 3
    already = threading.Event()
    already.set()
    with pytest.raises(GenerationStopped):
        hf_engine.generate(question_prompts(QUESTIONS[:1]), GREEDY, progress=False, stop=already)
    # an unset event changes nothing
    plain = hf_engine.generate(question_prompts(QUESTIONS[:1]), GREEDY, progress=False)
    assert (
        hf_engine.generate(question_prompts(QUESTIONS[:1]), GREEDY, progress=False, stop=threading.Event())
        == plain
    )


class HangingChatServer(http.server.ThreadingHTTPServer):
    """A stand-in for a remote model server that never finishes answering (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.answered = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                server.started.release()
                server.release.wait(60)
                body = json.dumps({"error": "released"}).encode()
                self.send_response(503)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True


def test_openai_engine_stops_without_waiting_for_requests_in_flight() -> None:
    server = HangingChatServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        engine = make_engine("openai", "m", base_url=url, max_retries=0, timeout_s=60, concurrency=2)
        stop = threading.Event()
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                engine.generate(["a", "b", "c"], SamplingConfig(max_new_tokens=4), progress=False, stop=stop)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        assert server.started.acquire(timeout=30) and server.started.acquire(timeout=30)  # 2 in flight
        stop.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], GenerationStopped)
        assert server.answered == 0  # it returned while both requests were still held by the server
        engine.close()
    finally:
        server.release.set()
        server.shutdown()


def test_openai_engine_unreachable_server_raises() -> None:
    engine = make_engine("openai", "m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    with pytest.raises(EngineError, match="failed after retries"):
        engine.generate(["hi"], SamplingConfig(max_new_tokens=4), progress=False)


def test_openai_request_kwargs() -> None:
    engine = make_engine("openai", "served-name", base_url="http://127.0.0.1:9/v1")
    kw = engine.request_kwargs("hello", SamplingConfig(seed=10, top_k=20, enable_thinking=False), 2)  # type: ignore[attr-defined]
    assert kw["model"] == "served-name" and kw["seed"] == 12 and kw["max_tokens"] == 8192
    assert kw["messages"] == [{"role": "user", "content": "hello"}]
    assert kw["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20}


def test_vllm_argument_building() -> None:
    kw = llm_kwargs("/m", tensor_parallel_size=2, max_model_len=9000)
    assert kw == {
        "model": "/m",
        "tensor_parallel_size": 2,
        "enable_prefix_caching": True,
        "gpu_memory_utilization": 0.9,
        "dtype": "auto",
        "seed": 0,
        "max_model_len": 9000,
    }
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        llm_kwargs("/m", tensor_parallel_size=0)
    sp = sampling_kwargs(SamplingConfig(n=8, temperature=0.6, top_p=0.95, max_new_tokens=8192, seed=3))
    assert sp == {"n": 8, "temperature": 0.6, "top_p": 0.95, "top_k": -1, "max_tokens": 8192, "seed": 3}
    greedy = sampling_kwargs(SamplingConfig(temperature=0, top_k=5, seed=None))
    assert greedy["top_p"] == 1.0 and greedy["top_k"] == 5 and "seed" not in greedy


def test_vllm_engine_refuses_clearly_without_gpu() -> None:
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("a GPU and vllm are present: the real run below covers this")
    with pytest.raises(EngineError, match="cannot run"):
        make_engine("vllm", "/nonexistent")


@pytest.mark.gpu
@pytest.mark.skipif(vllm_unavailable_reason() is not None, reason=f"vllm engine: {vllm_unavailable_reason()}")
def test_vllm_engine_real_run(tiny_student_dir: Path) -> None:
    engine = make_engine("vllm", str(tiny_student_dir), gpu_memory_utilization=0.3, max_model_len=1024)
    out = engine.generate(question_prompts(QUESTIONS), SamplingConfig(n=2, max_new_tokens=32), progress=False)
    assert [len(g) for g in out] == [2, 2, 2]
    assert all(0 < g.n_tokens <= 32 for gens in out for g in gens)


def test_make_engine_errors() -> None:
    with pytest.raises(ValueError, match="unknown engine kind"):
        make_engine("tgi", "x")
    with pytest.raises(ValueError, match="base_url"):
        make_engine("openai", "x")
