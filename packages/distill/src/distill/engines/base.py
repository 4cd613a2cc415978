"""The generation interface shared by every engine."""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field
from skillcore.prompts import question_messages

Message: TypeAlias = Mapping[str, str]
# A prompt is a chat (list of {"role", "content"} messages) or a plain string (one user message).
Prompt: TypeAlias = str | Sequence[Message]


class EngineError(RuntimeError):
    """A generation engine could not be built or a request failed after its retries."""


class GenerationStopped(RuntimeError):
    """``generate`` (or a rollout) was asked to stop through its ``stop`` event before it finished.

    What was still being generated is dropped: a truncated answer is never judged or saved."""


def check_stop(stop: threading.Event | None, what: str = "generation") -> None:
    """Raise ``GenerationStopped`` when ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise GenerationStopped(f"{what} stopped")


class SamplingConfig(BaseModel):
    """How to sample. Defaults follow the paper's profiling setup (Qwen3 thinking mode, temperature 0.6)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=256, description="samples per prompt")
    temperature: float = Field(default=0.6, ge=0.0, le=5.0, description="0 means greedy")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, description="None: no top-k filter")
    max_new_tokens: int = Field(default=8192, ge=1)
    seed: int | None = Field(default=0, description="None: unseeded")
    enable_thinking: bool = Field(default=True, description="Qwen3 thinking mode (chat template flag)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


FinishReason: TypeAlias = Literal["stop", "length", "error"] | str


class Generation(BaseModel):
    """One sampled completion."""

    model_config = ConfigDict(extra="forbid")

    text: str
    n_tokens: int = Field(ge=0)
    finish_reason: FinishReason = "stop"


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [dict(m) for m in prompt]
    for m in messages:
        if "role" not in m or "content" not in m:
            raise ValueError(f"a chat message needs 'role' and 'content', got keys {sorted(m)}")
    return messages


def render_chat(tokenizer: Any, prompt: Prompt, *, enable_thinking: bool = True) -> str:
    """The prompt text the model sees: the tokenizer's chat template with the generation prompt."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise EngineError("the tokenizer has no chat template; use a chat/instruct model")
    text = tokenizer.apply_chat_template(
        as_messages(prompt), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return str(text)


def question_prompts(questions: Sequence[str]) -> list[list[dict[str, str]]]:
    """The paper's question prompt for each question, as chats."""
    return [question_messages(q) for q in questions]


class GenerationEngine(abc.ABC):
    """``generate(prompts, params)`` returns, for each prompt, ``params.n`` generations.

    ``stop``: when the event is set, ``generate`` gives up within moments (the hf engine at the next token,
    the openai engine without waiting for requests in flight, vllm between calls) and raises
    ``GenerationStopped``."""

    kind: str = ""
    model_name: str = ""
    # set by engines that know more about their model than its name (``distill.models.model_fingerprint``)
    _identity: dict[str, Any] | None = None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the model behind this engine (saved answers are reused only when it matches)."""
        return {"kind": self.kind, **(self._identity or {"model": self.model_name})}

    @abc.abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingConfig | None = None,
        *,
        progress: bool = True,
        stop: threading.Event | None = None,
    ) -> list[list[Generation]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""

    def __enter__(self) -> GenerationEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
