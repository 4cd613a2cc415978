"""Transformers ``generate`` engine: length-sorted batches, left padding, KV cache, CPU or GPU."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from distill.engines.base import (
    EngineError,
    Generation,
    GenerationEngine,
    Prompt,
    SamplingConfig,
    check_stop,
    render_chat,
)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available")
    return device


class HFEngine(GenerationEngine):
    """Batched ``model.generate``.

    Rows (prompt x sample) are sorted by prompt length so each batch pads little; ``batch_size`` rows
    run together with the KV cache on. Results come back in prompt order.
    """

    kind = "hf"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        model_obj: Any = None,
        tokenizer: Any = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from distill.models import model_fingerprint, resolve_model

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        path = resolve_model(model) if model_obj is None or tokenizer is None else model
        self._identity = model_fingerprint(model, path)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        if model_obj is None:
            torch_dtype: Any = dtype
            if dtype == "auto":  # float32 on CPU (bf16 matmuls are slow there), the saved dtype on GPU
                torch_dtype = torch.float32 if self.device == "cpu" else "auto"
            elif isinstance(dtype, str):
                torch_dtype = getattr(torch, dtype)
            model_obj = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        self.model = model_obj.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = _eos_ids(self.model, self.tokenizer)

    def render(self, prompts: Sequence[Prompt], params: SamplingConfig) -> list[str]:
        return [render_chat(self.tokenizer, p, enable_thinking=params.enable_thinking) for p in prompts]

    def generation_kwargs(self, params: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": not params.greedy,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_ids,
            "use_cache": True,
        }
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
        else:  # unset the sampling knobs a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingConfig | None = None,
        *,
        progress: bool = True,
        stop: threading.Event | None = None,
    ) -> list[list[Generation]]:
        import torch

        params = params or SamplingConfig()
        texts = self.render(prompts, params)
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        rows = [(i, s) for i in range(len(texts)) for s in range(params.n)]
        rows.sort(key=lambda r: -len(encoded[r[0]]))  # longest first: memory trouble shows up early
        out: list[list[Generation | None]] = [[None] * params.n for _ in texts]
        kwargs = self.generation_kwargs(params)
        if stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnEvent(stop)])
        if params.seed is not None:
            torch.manual_seed(params.seed)
        bar = tqdm(total=len(rows), desc=f"generating ({self.kind})", disable=not progress, unit="seq")
        try:
            for start in range(0, len(rows), self.batch_size):
                check_stop(stop)
                batch = rows[start : start + self.batch_size]
                ids = [encoded[i] for i, _ in batch]
                padded = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
                input_ids = padded["input_ids"].to(self.device)
                with torch.inference_mode():
                    generated = self.model.generate(
                        input_ids=input_ids, attention_mask=padded["attention_mask"].to(self.device), **kwargs
                    )
                check_stop(stop)  # the batch was cut short: drop it
                new_tokens = generated[:, input_ids.shape[1] :].tolist()
                for (i, s), tokens in zip(batch, new_tokens, strict=True):
                    out[i][s] = self._to_generation(tokens)
                bar.update(len(batch))
        finally:
            bar.close()
        return [[g for g in gens if g is not None] for gens in out]

    def _to_generation(self, tokens: list[int]) -> Generation:
        end = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if end is None else tokens[:end]
        text = str(self.tokenizer.decode(kept, skip_special_tokens=True))
        # like vLLM and OpenAI-style usage, the end-of-sequence token counts as generated
        n_tokens = len(tokens) if end is None else end + 1
        return Generation(text=text, n_tokens=n_tokens, finish_reason="length" if end is None else "stop")


class StopOnEvent(StoppingCriteria):
    """Ends every row of a ``generate`` call at the next token once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise EngineError("the model has no end-of-sequence token id")
    return sorted(ids)
