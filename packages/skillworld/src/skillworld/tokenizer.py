"""A small byte-level BPE tokenizer for the world, with Qwen3's special tokens and chat template.

Digits are split one per token before BPE (as in Qwen's pre-tokenizer), and a digit is the same token
wherever it stands, so copying numbers and column arithmetic stay learnable. The chat template is TRL's copy of the original Qwen3 template, read from the installed
package when the tokenizer is built, so rendering, ``enable_thinking`` and TRL's assistant-only loss
masking behave as they do for a real Qwen3 tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

from skillcore.prompts import question_messages
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
DEFAULT_VOCAB_SIZE = 1024


def qwen3_chat_template() -> str:
    """The original Qwen3 chat template as shipped by the installed TRL."""
    try:
        from trl.chat_template_utils import qwen3_chat_template as template

        return str(template)
    except ImportError:  # older TRL layouts: read the file directly
        return resources.files("trl").joinpath("chat_templates/qwen3.jinja").read_text(encoding="utf-8")


def chat_text(question: str, solution: str) -> tuple[str, str]:
    """Raw (prompt, completion) strings a Qwen3-formatted training example consists of (no template)."""
    return question_messages(question)[0]["content"], solution


def _corpus(n_texts: int, seed: int) -> Iterator[str]:
    from skillworld.world import generate_pool, generate_textbook, leaf_names, world_tree

    for problem in generate_pool(n_texts, seed=seed):
        prompt, completion = chat_text(problem.question, problem.solution)
        yield f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n{completion}{IM_END}\n"
    # Textbook passages name every skill in natural text, so skill names are whole tokens or a few (the
    # ``Skills:`` chains of skill-aware targets then cost no byte-level spelling).
    uniform = dict.fromkeys(leaf_names(), 1.0)
    yield from generate_textbook(max(len(uniform) * 4, n_texts // 4), seed, uniform, {1: 1.0, 2: 1.0, 3: 1.0})
    for node in world_tree().nodes:
        yield f"{node.name}. {node.description}\n"
    yield qwen3_chat_template()


def build_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE, *, n_texts: int = 6_000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """Train the BPE on world text and wrap it as a Hugging Face fast tokenizer with Qwen3's conventions."""
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 (256 bytes + specials + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(n_texts, seed), trainer=trainer)
    # Qwen3 marks <think> and </think> as added, non-special tokens: they survive skip_special_tokens.
    tok.add_tokens(
        [
            AddedToken(THINK_OPEN, special=False, normalized=False),
            AddedToken(THINK_CLOSE, special=False, normalized=False),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = qwen3_chat_template()
    return fast


def render_chat(
    tokenizer: Any,
    question: str,
    solution: str | None = None,
    *,
    enable_thinking: bool = True,
) -> str:
    """The chat-formatted text of a question (generation prompt) or a question plus teacher solution."""
    messages: list[dict[str, str]] = list(question_messages(question))
    if solution is not None:
        messages.append({"role": "assistant", "content": solution})
    text = tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=solution is None,
        enable_thinking=enable_thinking,
    )
    assert isinstance(text, str)
    return text
