"""vLLM offline engine (``LLM`` + ``SamplingParams``). GPU only; vllm is imported lazily.

Install with ``pip install 'skilldistill-distill[gpu]'`` on a CUDA machine. The argument building
(``llm_kwargs``, ``sampling_kwargs``) is plain Python so it is tested on CPU machines.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from distill.engines.base import (
    EngineError,
    Generation,
    GenerationEngine,
    Prompt,
    SamplingConfig,
    check_stop,
    render_chat,
)


def vllm_unavailable_reason() -> str | None:
    """Why the vLLM engine cannot run here (None when it can)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (vLLM needs one)"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'skilldistill-distill[gpu]')"
    return None


def llm_kwargs(
    model_path: str,
    *,
    tensor_parallel_size: int = 1,
    enable_prefix_caching: bool = True,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    dtype: str = "auto",
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``."""
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prefix_caching": enable_prefix_caching,
        "gpu_memory_utilization": gpu_memory_utilization,
        "dtype": dtype,
        "seed": seed,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    kwargs.update(extra)
    return kwargs


def sampling_kwargs(params: SamplingConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams``."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": 1.0 if params.greedy else params.top_p,
        "top_k": params.top_k if params.top_k is not None else -1,
        "max_tokens": params.max_new_tokens,
    }
    if params.seed is not None:
        kwargs["seed"] = params.seed
    return kwargs


class VLLMEngine(GenerationEngine):
    kind = "vllm"

    def __init__(self, model: str, **opts: Any) -> None:
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise EngineError(f"the vllm engine cannot run: {reason}")
        import vllm

        from distill.models import model_fingerprint, resolve_model

        self.model_name = model
        path = resolve_model(model)
        self._identity = model_fingerprint(model, path)
        self.llm = vllm.LLM(**llm_kwargs(path, **opts))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingConfig | None = None,
        *,
        progress: bool = True,
        stop: threading.Event | None = None,
    ) -> list[list[Generation]]:
        import vllm

        # ``LLM.generate`` is one blocking call: ``stop`` is looked at before and after it, so a stop waits
        # for the call in flight (the rollout's ``chunk_size`` bounds how long that is)
        check_stop(stop)
        params = params or SamplingConfig()
        texts = [render_chat(self.tokenizer, p, enable_thinking=params.enable_thinking) for p in prompts]
        outputs = self.llm.generate(texts, vllm.SamplingParams(**sampling_kwargs(params)), use_tqdm=progress)
        check_stop(stop)
        return [
            [
                Generation(
                    text=c.text, n_tokens=len(c.token_ids), finish_reason=str(c.finish_reason or "stop")
                )
                for c in request.outputs
            ]
            for request in outputs
        ]
