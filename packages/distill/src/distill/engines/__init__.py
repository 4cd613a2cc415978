"""Generation engines behind one interface: ``hf`` (transformers), ``openai`` (any compatible server), ``vllm``.

>>> engine = make_engine("hf", "path/to/student", batch_size=8)
>>> outs = engine.generate(question_prompts(["1+1?"]), SamplingConfig(n=2, max_new_tokens=256))
"""

from __future__ import annotations

from typing import Any, Literal

from distill.engines.base import (
    EngineError,
    Generation,
    GenerationEngine,
    GenerationStopped,
    Message,
    Prompt,
    SamplingConfig,
    as_messages,
    question_prompts,
    render_chat,
)

EngineKind = Literal["hf", "openai", "vllm"]
ENGINE_KINDS: tuple[str, ...] = ("hf", "openai", "vllm")


def make_engine(kind: str, model: str, **opts: Any) -> GenerationEngine:
    """Build an engine. ``model``: a HF id, a local directory or a ``models:/`` URI (the served model's
    name for ``openai``, which also needs ``base_url=...``)."""
    if kind == "hf":
        from distill.engines.hf import HFEngine

        return HFEngine(model, **opts)
    if kind == "openai":
        from distill.engines.openai_engine import OpenAIEngine

        if "base_url" not in opts:
            raise ValueError("the openai engine needs base_url=... (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIEngine(model, **opts)
    if kind == "vllm":
        from distill.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **opts)
    raise ValueError(f"unknown engine kind {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")


__all__ = [
    "ENGINE_KINDS",
    "EngineError",
    "EngineKind",
    "Generation",
    "GenerationEngine",
    "GenerationStopped",
    "Message",
    "Prompt",
    "SamplingConfig",
    "as_messages",
    "make_engine",
    "question_prompts",
    "render_chat",
]
