"""Engine for any OpenAI-compatible chat server (``vllm serve``, ``transformers serve``, hosted APIs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from tqdm.auto import tqdm

from distill.engines.base import (
    EngineError,
    Generation,
    GenerationEngine,
    Prompt,
    SamplingConfig,
    as_messages,
    check_stop,
)

log = logging.getLogger(__name__)


class OpenAIEngine(GenerationEngine):
    """One chat-completions request per sample, at most ``concurrency`` in flight.

    The ``openai`` client retries connection errors, 429 and 5xx responses ``max_retries`` times with
    exponential back-off, and each request times out after ``timeout_s``. A request that still fails
    raises ``EngineError`` (profiling is resumable, so a rerun continues where it stopped). Thinking is
    switched through ``chat_template_kwargs`` (understood by vLLM and transformers serve); reasoning a
    server returns separately (``reasoning_content``) is put back inside ``<think>...</think>``.
    """

    kind = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str = "EMPTY",
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        from openai import OpenAI

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model_name = model
        self.base_url = base_url
        self._identity = {"model": model, "base_url": base_url}
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def request_kwargs(self, prompt: Prompt, params: SamplingConfig, sample_index: int) -> dict[str, Any]:
        """The keyword arguments of one ``chat.completions.create`` call."""
        extra: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": params.enable_thinking}}
        if params.top_k is not None:
            extra["top_k"] = params.top_k
        extra.update(self.extra_body)
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": as_messages(prompt),
            "temperature": params.temperature,
            "max_tokens": params.max_new_tokens,
            "extra_body": extra,
        }
        if not params.greedy:
            kwargs["top_p"] = params.top_p
        if params.seed is not None:  # distinct, reproducible seed per sample
            kwargs["seed"] = params.seed + sample_index
        return kwargs

    def _one(self, prompt: Prompt, params: SamplingConfig, sample_index: int) -> Generation:
        try:
            reply = self.client.chat.completions.create(**self.request_kwargs(prompt, params, sample_index))
        except Exception as exc:
            raise EngineError(f"request to {self.base_url} failed after retries: {exc}") from exc
        if not reply.choices:
            raise EngineError(f"{self.base_url} returned no choices")
        choice = reply.choices[0]
        text = choice.message.content or ""
        reasoning = getattr(choice.message, "reasoning_content", None) or getattr(
            choice.message, "reasoning", None
        )
        if isinstance(reasoning, str) and reasoning and "<think>" not in text:
            text = f"<think>\n{reasoning}\n</think>\n\n{text}"
        usage = getattr(reply, "usage", None)
        n_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return Generation(text=text, n_tokens=n_tokens, finish_reason=str(choice.finish_reason or "stop"))

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingConfig | None = None,
        *,
        progress: bool = True,
        stop: threading.Event | None = None,
    ) -> list[list[Generation]]:
        params = params or SamplingConfig()
        out: list[list[Generation | None]] = [[None] * params.n for _ in prompts]
        bar = tqdm(
            total=len(prompts) * params.n, desc="generating (openai)", disable=not progress, unit="seq"
        )
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        futures: dict[Future[Generation], tuple[int, int]] = {
            pool.submit(self._one, prompt, params, s): (i, s)
            for i, prompt in enumerate(prompts)
            for s in range(params.n)
        }
        pending = set(futures)
        finished = False
        try:
            while pending:
                check_stop(stop)
                # wake up now and then to look at ``stop``; requests in flight are not waited for
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    i, s = futures[future]
                    out[i][s] = future.result()
                    bar.update()
            finished = True
        finally:
            bar.close()
            pool.shutdown(wait=finished, cancel_futures=True)
        return [[g for g in gens if g is not None] for gens in out]

    def close(self) -> None:
        self.client.close()
