"""The question prompt shared by profiling, training and evaluation (the paper's wording).

Keeping one definition means the tiny student is trained, profiled and evaluated on exactly the prompt
real Qwen3 students see in the pipeline.
"""

from __future__ import annotations

QUESTION_PROMPT = (
    "Please reason step by step, and put your final answer within \\boxed{{}}.\n\nQuestion: {question}"
)


def question_prompt(question: str) -> str:
    return QUESTION_PROMPT.format(question=question)


def question_messages(question: str) -> list[dict[str, str]]:
    """Chat messages for a question (no system prompt, as in the paper)."""
    return [{"role": "user", "content": question_prompt(question)}]
