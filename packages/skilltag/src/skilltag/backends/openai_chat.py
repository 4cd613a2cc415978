"""The ``openai`` backend: any OpenAI-compatible chat endpoint (``vllm serve``, ``transformers serve``).

At each node the model sees the problem with a short solution summary and the list of child skills, and
is asked to choose all that apply, as a JSON object ``{"skills": [...]}``. Where the server supports it
the answer is constrained by a JSON schema whose items are the child names; a server that rejects
``response_format`` (400 or 422 naming it) gets the next weaker mode (schema -> JSON object -> none) for
the rest of the backend's life, one step per rejected mode however many requests were in flight.
Answers are parsed with ``json`` (never evaluated), after any reasoning block; names that are not
children are dropped and counted. An answer holding no JSON is asked again (``parse_retries`` times, each
retry with the next seed, so a seeded server does not repeat the same answer); a node whose answers never
parse gets no children (counted as ``unanswered_nodes``, with a warning), so the problem may end up with
fewer chains or none. Transport failures are retried with exponential backoff and jitter, spread
round-robin over several endpoints, within the caller's deadline; requests run with bounded concurrency.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from skillcore import SkillTree

from skilltag.engine import BackendUnavailable, Choice, DeadlineExceeded, NodeQuery

log = logging.getLogger(__name__)

Structured = Literal["json_schema", "json_object", "none"]
_WEAKER: dict[Structured, Structured] = {"json_schema": "json_object", "json_object": "none"}
_STRUCTURED_WORDS = ("response_format", "json_schema", "json_object")  # a rejection of structured output
PROMPT_VERSION = "v1"

SYSTEM_PROMPT = (
    "You are an expert mathematics teacher. You attribute problems to the skills needed to solve them, "
    "choosing from a given list of skills."
)

USER_TEMPLATE = """Problem (with a summary of its solution):
{problem}

{context}Which of the following skills are needed to solve this problem? Choose all that apply, at least one.

Skills:
{skills}

Answer with a JSON object {{"skills": [...]}} listing the exact names of the chosen skills."""

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)


@dataclass(frozen=True)
class OpenAIConfig:
    base_urls: tuple[str, ...]  # e.g. ("http://127.0.0.1:8000/v1",); several are used round-robin
    model: str
    api_key: str = "EMPTY"
    temperature: float = 0.3  # the paper's setting
    max_tokens: int = 256
    structured: Structured = "json_schema"
    max_concurrency: int = 16
    max_retries: int = 4
    request_timeout: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    parse_retries: int = 1  # ask again (with the next seed) when an answer holds no JSON at all
    chat_template_kwargs: dict[str, Any] = field(default_factory=lambda: {"enable_thinking": False})
    seed: int | None = 0


def build_messages(
    problem: str, node_path: Sequence[str], children: Sequence[tuple[str, str]]
) -> list[dict[str, str]]:
    skills = "\n".join(f"- {name}: {desc}" if desc else f"- {name}" for name, desc in children)
    context = f"The problem is known to need skills in: {' -> '.join(node_path)}.\n\n" if node_path else ""
    user = USER_TEMPLATE.format(problem=problem, context=context, skills=skills)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def response_schema(names: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"skills": {"type": "array", "items": {"type": "string", "enum": list(names)}}},
        "required": ["skills"],
        "additionalProperties": False,
    }


@dataclass
class ParsedChoice:
    names: list[str]
    invalid: list[str]
    parsed: bool  # False when no JSON could be read at all


def parse_choice(text: str, names: Sequence[str]) -> ParsedChoice:
    """Read the chosen names from a model answer (JSON object or list, possibly fenced, amid prose, or
    after a reasoning block); keep names that match a child exactly or up to case and spacing."""
    text = (text or "").rsplit("</think>", 1)[-1]  # the answer follows the reasoning (opened or not)
    body = _FENCE.sub("", _THINK.sub("", text)).strip()  # an unclosed <think>: cut off, no answer
    value = _first_json(body)
    if value is None:
        return ParsedChoice([], [], parsed=False)
    if isinstance(value, dict):
        items = value.get("skills")
        if items is None:
            items = next((v for v in value.values() if isinstance(v, list)), [])
    elif isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = [value]
    else:
        return ParsedChoice([], [], parsed=False)
    if not isinstance(items, list):
        items = [items]
    exact = set(names)
    folded = {" ".join(n.split()).casefold(): n for n in names}
    chosen: list[str] = []
    invalid: list[str] = []
    for item in items:
        if not isinstance(item, str):
            invalid.append(json.dumps(item)[:80])
            continue
        name = item if item in exact else folded.get(" ".join(item.split()).casefold())
        if name is None:
            invalid.append(item[:80])
        elif name not in chosen:
            chosen.append(name)
    return ParsedChoice(chosen, invalid, parsed=True)


def _describe(exc: openai.APIStatusError, *, whole_body: bool = False) -> str:
    """The error's message and, where that carries no message of the server's (or ``whole_body``), the
    body the server sent."""
    text = str(exc)
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    if body is not None and (whole_body or not (isinstance(message, str) and message in text)):
        text += f" (body: {str(body)[:300]})"
    return text


def _first_json(body: str) -> Any:
    """The whole body as JSON, else the first JSON object in it, else the first JSON list; None if none."""
    try:
        return json.loads(body)
    except ValueError:
        pass
    for opener in "{[":
        start = body.find(opener)
        while start >= 0:
            try:
                value, _ = _DECODER.raw_decode(body, start)
            except ValueError:
                start = body.find(opener, start + 1)
                continue
            return value
    return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        if not config.base_urls:
            raise ValueError("the openai backend needs at least one endpoint URL")
        if config.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.cfg = config
        self.clients = [
            openai.OpenAI(base_url=url, api_key=config.api_key, max_retries=0, timeout=config.request_timeout)
            for url in config.base_urls
        ]
        self._next_client = itertools.cycle(range(len(self.clients)))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="openai-backend")
        self.structured: Structured = config.structured
        self.counters: Counter[str] = Counter()
        self.tree: SkillTree | None = None

    # ------------------------------------------------------------------ Backend protocol
    def config(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "model": c.model,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "structured": c.structured,
            "chat_template_kwargs": c.chat_template_kwargs,
            "seed": c.seed,
            "prompt": PROMPT_VERSION,
        }

    def bind(self, tree: SkillTree) -> None:
        self.tree = tree

    def start(self, texts: Sequence[str]) -> Sequence[str]:
        return texts

    def choose(
        self, state: Sequence[str], queries: Sequence[NodeQuery], deadline: float | None
    ) -> list[list[Choice]]:
        futures: list[Future[list[Choice]]] = [
            self._pool.submit(self._ask, state[q.problem], q.node, deadline) for q in queries
        ]
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) + 1.0
        done, pending = wait(futures, timeout=timeout, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed or pending:
            for f in futures:
                f.cancel()
            if failed:
                exc = failed[0].exception()
                assert exc is not None
                raise exc
            raise DeadlineExceeded("the deadline passed while waiting for the chat endpoint")
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            client.close()

    # ------------------------------------------------------------------ one node
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _client(self) -> openai.OpenAI:
        with self._lock:
            return self.clients[next(self._next_client)]

    def _ask(self, problem: str, node_index: int, deadline: float | None) -> list[Choice]:
        assert self.tree is not None, "bind() first"
        node = self.tree.nodes[node_index]
        names = [c.name for c in node.children]
        messages = build_messages(problem, node.path, [(c.name, c.description) for c in node.children])
        transport_failures = 0
        parse_failures = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("the deadline passed before the chat endpoint answered")
            mode = self.structured
            seed = None if self.cfg.seed is None else self.cfg.seed + parse_failures
            try:
                text = self._complete(messages, names, deadline, mode, seed)
            except (
                openai.APIConnectionError,
                openai.APITimeoutError,
                openai.RateLimitError,
                openai.InternalServerError,
            ) as exc:
                transport_failures += 1
                self._count("transport_errors")
                if transport_failures > self.cfg.max_retries:
                    raise BackendUnavailable(
                        f"{len(self.clients)} endpoint(s) failed {transport_failures} times; last: {type(exc).__name__}: {exc}"
                    ) from exc
                self._count("retries")
                self._sleep(transport_failures, deadline)
                continue
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self._downgrade_structured(exc, mode):
                    continue
                raise BackendUnavailable(f"the chat endpoint rejected the request: {_describe(exc)}") from exc
            except openai.APIStatusError as exc:
                raise BackendUnavailable(
                    f"the chat endpoint answered {exc.status_code}: {_describe(exc)}"
                ) from exc
            parsed = parse_choice(text, names)
            if not parsed.parsed:
                parse_failures += 1
                self._count("unparsed_answers")
                if parse_failures <= self.cfg.parse_retries:
                    self._count("retries")
                    continue
                self._count("unanswered_nodes")
                log.warning(
                    "no parseable answer for node %r after %d tries (last: %r): it gets no children",
                    " -> ".join(node.path) or "(root)",
                    parse_failures,
                    text[:200],
                )
                return []
            if parsed.invalid:
                self._count("invalid_names", len(parsed.invalid))
            if not parsed.names:
                self._count("empty_choices")
            return [Choice(node.children[names.index(n)].index, None) for n in parsed.names]

    def _complete(
        self,
        messages: list[dict[str, str]],
        names: list[str],
        deadline: float | None,
        mode: Structured,
        seed: int | None,
    ) -> str:
        timeout = self.cfg.request_timeout
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        kwargs: dict[str, Any] = {}
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "skill_choice", "schema": response_schema(names), "strict": True},
            }
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        extra_body: dict[str, Any] = {}
        if self.cfg.chat_template_kwargs:
            extra_body["chat_template_kwargs"] = self.cfg.chat_template_kwargs
        if seed is not None:
            kwargs["seed"] = seed
        self._count("requests")
        resp = self._client().chat.completions.create(
            model=self.cfg.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            timeout=timeout,
            extra_body=extra_body or None,
            **kwargs,
        )
        if not resp.choices:
            return ""
        return resp.choices[0].message.content or ""

    def _downgrade_structured(self, exc: openai.APIStatusError, mode: Structured) -> bool:
        """A server that rejected ``mode``'s response_format gets the next weaker mode (schema -> object ->
        none); True when the request should be sent again. Requests in flight with the same mode that are
        rejected too step down once, not once each."""
        message = _describe(exc, whole_body=True).lower()  # a FastAPI 422 names the field only there
        if mode == "none" or not any(word in message for word in _STRUCTURED_WORDS):
            return False
        with self._lock:
            if self.structured == mode:  # not yet stepped down by another request's rejection
                self.structured = _WEAKER[mode]
                self.counters["structured_fallbacks"] += 1
        return True

    def _sleep(self, attempt: int, deadline: float | None) -> None:
        delay = min(self.cfg.backoff_max, self.cfg.backoff_base * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # jitter so parallel retries spread out
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(delay)
