"""Skill-aware formatting: golden rendered strings with the world's tokenizer (Qwen3's template), the
options (depth slice, display names, empty chains), and the loss mask TRL builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from distill.formatting import (
    EmptySkillsError,
    FormatConfig,
    assistant_target,
    check_rendered,
    format_examples,
    load_display_names,
    names_right,
    parse_skills_block,
    render_example,
    skills_block,
)
from skillcore import PoolProblem, TaggedProblem
from skillcore.prompts import question_prompt
from transformers import AutoTokenizer

Q = "Compute the greatest common divisor of 84 and 36."
SOL = (
    "<think>\n84 = 2 * 36 + 12\n36 = 3 * 12 + 0\n</think>\n\ngcd(84, 36) = 12.\n\nThe answer is \\boxed{12}."
)
CHAINS = [
    ["Number theory", "Divisibility", "Greatest common divisor"],
    ["Number theory", "Divisibility", "Euclid's algorithm"],
    ["Number theory", "Divisibility", "Greatest common divisor"],  # a duplicate: named once
]
PROBLEM = TaggedProblem(unique_id="g1", question=Q, solution=SOL, expected_answer="12", chains=CHAINS)
USER = f"<|im_start|>user\n{question_prompt(Q)}<|im_end|>\n<|im_start|>assistant\n"
REASONING = "84 = 2 * 36 + 12\n36 = 3 * 12 + 0\n"
ANSWER = "gcd(84, 36) = 12.\n\nThe answer is \\boxed{12}.<|im_end|>\n"
SKILLS = (
    "Skills:\nNumber theory->Divisibility->Greatest common divisor\n"
    "Number theory->Divisibility->Euclid's algorithm\n"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_student_dir: Path):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(tiny_student_dir)  # the world tokenizer with Qwen3's template


def rendered(tokenizer, config: FormatConfig, problem: PoolProblem = PROBLEM) -> str:  # type: ignore[no-untyped-def]
    rows, _ = format_examples([problem], config)
    return render_example(tokenizer, rows[0]["messages"])


def test_golden_plain_and_skill_aware_in_think(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert rendered(tokenizer, FormatConfig()) == USER + "<think>\n" + REASONING + "</think>\n\n" + ANSWER
    assert (
        rendered(tokenizer, FormatConfig(skill_aware=True))
        == USER + "<think>\n" + SKILLS + "\n" + REASONING + "</think>\n\n" + ANSWER
    )
    # a teacher trace without a thinking block: the Skills block becomes the (otherwise empty) thought
    bare = PROBLEM.model_copy(update={"solution": "The answer is \\boxed{12}."})
    assert (
        rendered(tokenizer, FormatConfig(skill_aware=True), bare)
        == USER + "<think>\n" + SKILLS + "</think>\n\nThe answer is \\boxed{12}.<|im_end|>\n"
    )


def test_golden_paper_placement_vanishes_with_qwen3_and_is_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    config = FormatConfig(skill_aware=True, placement="before_think")
    rows, stats = format_examples([PROBLEM], config)
    assert rows[0]["messages"][-1]["content"] == SKILLS + "\n" + SOL  # the paper's target text...
    assert stats.with_skills == 1
    # ...which Qwen3's template renders exactly like plain SFT: the block before <think> is gone
    assert render_example(tokenizer, rows[0]["messages"]) == rendered(tokenizer, FormatConfig())
    with pytest.raises(ValueError, match="drops the Skills block"):
        check_rendered(tokenizer, rows)
    check_rendered(tokenizer, format_examples([PROBLEM], FormatConfig(skill_aware=True))[0])


def test_depth_slice_display_names_and_empty_chains(tmp_path: Path) -> None:
    names = tmp_path / "short.json"
    names.write_text('{"Greatest common divisor": "GCD", "Number theory": "NT"}')
    config = FormatConfig(skill_aware=True, max_depth=2, display_names=load_display_names(names))
    assert skills_block(CHAINS, config) == "Skills:\nNT->Divisibility"  # both chains agree above depth 3
    assert skills_block(
        CHAINS, FormatConfig(min_depth=3, display_names={"Greatest common divisor": "GCD"})
    ) == ("Skills:\nGCD\nEuclid's algorithm")
    # a slice below every chain leaves nothing: the header is dropped and counted, or refused
    deep = FormatConfig(skill_aware=True, min_depth=4)
    untagged = PoolProblem(unique_id="u1", question=Q, solution=SOL, expected_answer="12")
    rows, stats = format_examples([PROBLEM, untagged], deep)
    assert [r["messages"][-1]["content"] for r in rows] == [SOL, SOL]
    assert stats.dropped_headers == 2 and stats.with_skills == 0
    with pytest.raises(EmptySkillsError, match="g1: no skill chain left"):
        format_examples([PROBLEM], deep.model_copy(update={"on_empty": "error"}))
    with pytest.raises(ValueError, match="below min_depth"):
        FormatConfig(min_depth=3, max_depth=2)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping names to short names"):
        load_display_names(tmp_path / "bad.json")


def test_loss_mask_covers_exactly_the_assistant_turn(
    tiny_student_dir: Path, tmp_path: Path, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    from distill.sft import SFTSettings, build_trainer

    rows, _ = format_examples([PROBLEM], FormatConfig(skill_aware=True))
    trainer, _ = build_trainer(tiny_student_dir, rows, SFTSettings(max_length=1024), tmp_path, progress=False)
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    prompt = [t for t, lab in zip(ids, labels, strict=True) if lab == -100]
    full = render_example(tokenizer, rows[0]["messages"])
    assert tokenizer.decode(ids) == full
    # the prompt (user turn and the assistant header) is excluded; the Skills block, the reasoning, the
    # answer and the end-of-turn token are trained
    assert tokenizer.decode(prompt) == USER
    assert tokenizer.decode(trained).startswith("<think>\nSkills:\nNumber theory->")
    assert tokenizer.decode(trained).rstrip("\n") == full[len(USER) :].rstrip("\n")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in trained


GCD = ["Number theory", "Divisibility", "Greatest common divisor"]
EUCLID = ["Number theory", "Divisibility", "Euclid's algorithm"]


def test_parse_reads_back_what_the_targets_write() -> None:
    for placement in ("think", "before_think"):
        target, named = assistant_target(PROBLEM, FormatConfig(skill_aware=True, placement=placement))
        assert named and parse_skills_block(target) == [GCD, EUCLID]  # the duplicate chain was written once
    # the block as the whole thought (a trace without reasoning), and a depth slice of one level
    bare = PROBLEM.model_copy(update={"solution": "The answer is \\boxed{12}."})
    assert parse_skills_block(assistant_target(bare, FormatConfig(skill_aware=True))[0]) == [GCD, EUCLID]
    sliced = assistant_target(PROBLEM, FormatConfig(skill_aware=True, min_depth=3))[0]
    assert parse_skills_block(sliced) == [["Greatest common divisor"], ["Euclid's algorithm"]]
    assert parse_skills_block(assistant_target(PROBLEM, FormatConfig())[0]) is None  # plain target


@pytest.mark.parametrize(
    ("response", "chains"),
    [
        ("", None),
        ("<think>\n84 = 2 * 36 + 12\n</think>\n\n\\boxed{12}", None),  # no block
        ("<think>\nLet me see.\nSkills:\nA->B\n", None),  # a header not at the start is not the block
        ("<think>\nSkils:\nA->B\n", None),  # a garbled header: no block
        ("<think>\nSkills:\n</think>\n\n12", []),  # a header naming nothing
        ("<think>\nSkills:\n\nA->B\n", []),
        ("  <think>\n\nSkills:\n A -> B \n\nC->D", [["A", "B"]]),  # stops at the blank line; names stripped
        ("Skills: A->B\nC->D</think>\n\nE->F", [["A", "B"], ["C", "D"]]),  # inline chain; ends at </think>
        # garbled lines are kept as written; a reasoning line without a blank line ends the block
        (
            "<think>\nSkills:\nNumber thery->->Divisibility\nGreatest comon divisor\n84 = 2 * 36 + 12\n",
            [["Number thery", "", "Divisibility"], ["Greatest comon divisor"]],
        ),
        ("<think>\nSkills:\nA->\nFirst I add them.\nA->B", [["A", ""]]),  # a sentence ends it
        ("<think>\nSkills:\nA->B\n\\frac{1}{2}\n", [["A", "B"]]),
        ("<think>\nSkills:\n2D geometry\nx = 3\n", [["2D geometry"]]),  # digits may be in a name
    ],
)
def test_parse_skills_block_of_hand_written_responses(response: str, chains: list[list[str]] | None) -> None:
    assert parse_skills_block(response) == chains


def test_names_right_rule() -> None:
    truth = [GCD, ["Number theory", "Counting", "Divisors"]]
    assert names_right([GCD], truth)  # a whole chain
    assert names_right([["x"], ["Number theory", "Counting", "Divisors"]], truth)  # any chain of the block
    assert names_right([["Divisors"]], truth)  # the leaf named alone
    assert not names_right([["Algebra", "Divisibility", "Greatest common divisor"]], truth)  # wrong parent
    assert not names_right([["Number theory", "Divisibility"]], truth)  # a partial path
    assert not names_right([["Number theory"]], truth)  # a single name that is not a leaf
    assert not names_right([["number theory", "divisibility", "greatest common divisor"]], truth)  # case
    assert not names_right([EUCLID], truth) and not names_right([], truth) and not names_right(None, truth)
    assert not names_right([GCD], [])  # a problem without chains is never named right
    # compared with the chains as the targets write them: the depth slice and display names
    config = FormatConfig(skill_aware=True, max_depth=2, display_names={"Number theory": "NT"})
    assert names_right([["NT", "Divisibility"]], truth, config)
    assert names_right([["Divisibility"]], truth, config)
    assert not names_right([GCD], truth, config)
