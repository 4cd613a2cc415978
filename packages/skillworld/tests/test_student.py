"""Tokenizer (round trip, Qwen3 chat template in both thinking modes) and the tiny Qwen3 student."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from skillcore.prompts import question_prompt
from skillworld.student import count_parameters, generate_answers, init_student
from skillworld.tokenizer import build_tokenizer, qwen3_chat_template, render_chat
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

Q = "Compute the greatest common divisor of 84 and 36."
SOL = "<think>\n84 = 2 * 36 + 12\n36 = 3 * 12 + 0\nso gcd = 12\n</think>\n\ngcd(84, 36) = 12.\n\nThe answer is \\boxed{12}."
USER = f"<|im_start|>user\n{question_prompt(Q)}<|im_end|>\n"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "head_dim": 8}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tok = build_tokenizer(n_texts=2000)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)  # what every stage loads


def test_tokenizer_round_trip_and_specials(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = render_chat(tokenizer, Q, SOL)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [tid]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # digits are single tokens (column arithmetic stays learnable); <think> survives skip_special_tokens
    assert all(
        len(tokenizer.convert_tokens_to_string([t]).strip()) <= 1
        for t in tokenizer.tokenize("12345 + 678")
        if any(c.isdigit() for c in t)
    )
    assert tokenizer.decode(ids, skip_special_tokens=True).count("<think>") == 1
    assert 300 < len(tokenizer) <= 1100
    # odd input still round-trips (byte level)
    odd = "héllo ✓ \t 3/4 × ÷ ∑"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_chat_template_golden_strings(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert tokenizer.chat_template == qwen3_chat_template()
    assert render_chat(tokenizer, Q) == USER + "<|im_start|>assistant\n"
    assert (
        render_chat(tokenizer, Q, enable_thinking=False)
        == USER + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    full = USER + (
        "<|im_start|>assistant\n<think>\n84 = 2 * 36 + 12\n36 = 3 * 12 + 0\nso gcd = 12\n</think>\n\n"
        "gcd(84, 36) = 12.\n\nThe answer is \\boxed{12}.<|im_end|>\n"
    )
    assert render_chat(tokenizer, Q, SOL) == full
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert with_system == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_trl_recognises_template_for_assistant_only_loss(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from trl.chat_template_utils import get_training_chat_template, qwen3_training_chat_template

    assert get_training_chat_template(tokenizer) == qwen3_training_chat_template
    messages = [{"role": "user", "content": question_prompt(Q)}, {"role": "assistant", "content": SOL}]
    out = tokenizer.apply_chat_template(
        messages,
        chat_template=qwen3_training_chat_template,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked).startswith("<think>\n84 = 2")
    assert "\\boxed{12}" in tokenizer.decode(masked) and "Question:" not in tokenizer.decode(masked)


def test_init_student_saves_and_loads_through_auto_classes(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = init_student(tmp_path / "m", seed=3, tokenizer=tokenizer, **TINY)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert isinstance(model, Qwen3ForCausalLM) and model.config.model_type == "qwen3"
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == 32
    assert 10_000 < count_parameters(model) < 200_000
    again = init_student(tmp_path / "m2", seed=3, tokenizer=tokenizer, **TINY)
    other = AutoModelForCausalLM.from_pretrained(again)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="unknown Qwen3Config"):
        init_student(tmp_path / "bad", tokenizer=tokenizer, hiden_size=3)


def test_tiny_student_fixture_generates_r1_shape(tiny_student_dir: Path, world_benchmarks_small) -> None:  # type: ignore[no-untyped-def]
    tok = AutoTokenizer.from_pretrained(tiny_student_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_student_dir)
    assert isinstance(model, Qwen3ForCausalLM) and tok.chat_template == qwen3_chat_template()
    questions = [p.question for p in world_benchmarks_small["amc23"]][:12]
    outs = generate_answers(tiny_student_dir, questions, max_new_tokens=200)
    shaped = [o for o in outs if re.match(r"<think>\n.+\n</think>\n\n.*\\boxed\{", o, re.S)]
    assert len(outs) == 12 and len(shaped) >= 6, outs
