"""Skill-aware formatting: TRL prompt-completion rows rendered with four chat templates (Qwen3's, a
DeepSeek-R1-Distill-style one, Llama-3's and SmolLM2's, written here as jinja strings), where the Skills
block goes for each, golden strings of the tokens TRL trains on, the check's refusals, and the options
(depth slice, display names, empty chains)."""

from __future__ import annotations

import shutil
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
    skills_block,
    template_info,
)
from skillcore import PoolProblem, TaggedProblem
from skillcore.prompts import question_prompt
from skillworld.bootstrap import shipped_student_dir
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
ANSWER = "gcd(84, 36) = 12.\n\nThe answer is \\boxed{12}."
SKILLS = (
    "Skills:\nNumber theory->Divisibility->Greatest common divisor\n"
    "Number theory->Divisibility->Euclid's algorithm\n"
)

# DeepSeek-R1-Distill's template, shortened: an assistant message keeps only what follows its last
# </think>, and the generation prompt opens the thinking block
R1_DISTILL = (
    "{{ bos_token if bos_token else '' }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<｜User｜>' + message['content'] }}{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
# Llama-3-Instruct's template (its BOS written out): no thinking block, every message trimmed
LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = '<|begin_of_text|>' + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# SmolLM2-Instruct's template: ChatML without a thinking block, and a default system message
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATES = {"qwen3": None, "r1-distill": R1_DISTILL, "llama3": LLAMA3, "smollm2": SMOLLM2}

# what each template's student is trained on for PROBLEM, skill-aware: (prompt, completion), whole
GOLDEN = {
    "qwen3": (USER, "<think>\n" + SKILLS + "\n" + REASONING + "</think>\n\n" + ANSWER + "<|im_end|>"),
    # the generation prompt opened the thinking block: the completion starts inside it
    "r1-distill": (
        f"<｜User｜>{question_prompt(Q)}<｜Assistant｜><think>\n",
        SKILLS + "\n" + REASONING + "</think>\n\n" + ANSWER + "<｜end▁of▁sentence｜>",
    ),
    # no thinking block: the Skills block opens the answer, the teacher's trace follows as written
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{question_prompt(Q)}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        SKILLS + "\n" + SOL + "<|eot_id|>",
    ),
    "smollm2": (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{question_prompt(Q)}<|im_end|>\n<|im_start|>assistant\n",
        SKILLS + "\n" + SOL + "<|im_end|>",
    ),
}


def student_with(template: str | None, folder: Path) -> Path:
    """The shipped tiny student with another chat template (None: its own, Qwen3's)."""
    shutil.copytree(shipped_student_dir(), folder)
    if template is not None:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("templates")
    return {name: student_with(template, root / name) for name, template in TEMPLATES.items()}


@pytest.fixture(scope="module")
def tokenizers(students: dict[str, Path]) -> dict[str, object]:
    return {name: AutoTokenizer.from_pretrained(folder) for name, folder in students.items()}


def test_each_template_is_probed_and_gets_its_placement(tokenizers) -> None:  # type: ignore[no-untyped-def]
    facts = {name: template_info(tok) for name, tok in tokenizers.items()}
    assert {n: (f.thinking, f.opens_think, f.end_of_turn) for n, f in facts.items()} == {
        "qwen3": (True, False, "<|im_end|>"),
        "r1-distill": (True, True, "<｜end▁of▁sentence｜>"),
        "llama3": (False, False, "<|eot_id|>"),
        "smollm2": (False, False, "<|im_end|>"),
    }
    assert facts["qwen3"].drops == "drops text written before <think> in an assistant message"
    assert (
        facts["r1-distill"].drops is not None
        and "drops the reasoning before </think>" in facts["r1-distill"].drops
    )
    assert facts["llama3"].drops is None and facts["smollm2"].drops is None
    for name, tok in tokenizers.items():
        rows, stats = format_examples([PROBLEM], FormatConfig(skill_aware=True), tok)
        assert (rows[0]["prompt"], rows[0]["completion"]) == GOLDEN[name], name
        assert stats.placement == ("think" if name in ("qwen3", "r1-distill") else "answer"), name
        assert (
            stats.template_thinking == facts[name].thinking and stats.end_of_turn == facts[name].end_of_turn
        )
        # what was meant is kept beside what trains, and the Skills block reads back from the completion
        assert rows[0]["messages"][0]["content"] == question_prompt(Q)
        assert parse_skills_block(rows[0]["completion"]) == [GCD, EUCLID], name
        check_rendered(tok, rows)
        plain, plain_stats = format_examples([PROBLEM], FormatConfig(), tok)
        assert plain_stats.placement is None and SKILLS not in plain[0]["completion"]
        check_rendered(tok, plain)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_golden_trained_tokens_the_whole_target_and_nothing_of_the_prompt(
    name: str, students: dict[str, Path], tokenizers, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The labels TRL builds (distill.sft.build_trainer, completion-only loss): the prompt's tokens are all
    -100, every completion token is trained, and they decode to the golden strings."""
    from distill.sft import SFTSettings, build_trainer

    tok = tokenizers[name]
    rows, _ = format_examples([PROBLEM], FormatConfig(skill_aware=True), tok)
    trainer, _ = build_trainer(students[name], rows, SFTSettings(max_length=1024), tmp_path, progress=False)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    prompt = [t for t, lab in zip(ids, labels, strict=True) if lab == -100]
    trained = [lab for lab in labels if lab != -100]
    n_prompt = len(tok(GOLDEN[name][0], add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and -100 not in labels[n_prompt:]  # one cut, no holes
    assert trained == ids[n_prompt:] == tok(GOLDEN[name][1], add_special_tokens=False)["input_ids"]
    decode = lambda part: tok.decode(part, skip_special_tokens=False)  # noqa: E731
    assert (decode(prompt), decode(trained)) == GOLDEN[name]
    batch = trainer.data_collator([example])  # what the model is fed: the same labels
    assert batch["labels"][0].tolist() == labels


def test_qwen3_trains_what_its_template_renders(tokenizers) -> None:  # type: ignore[no-untyped-def]
    """With Qwen3's template the prompt-completion text is the conversation as the template renders it, for
    plain and skill-aware targets, and for a trace without a thinking block made skill-aware (the Skills
    block becomes the thought). A plain target without one is trained as written, where the template would
    add an empty thought."""
    tok = tokenizers["qwen3"]
    bare = PROBLEM.model_copy(update={"solution": "The answer is \\boxed{12}."})
    for problem, config in [
        (PROBLEM, FormatConfig()),
        (PROBLEM, FormatConfig(skill_aware=True)),
        (bare, FormatConfig(skill_aware=True)),
    ]:
        rows, _ = format_examples([problem], config, tok)
        full = tok.apply_chat_template(rows[0]["messages"], tokenize=False)
        assert rows[0]["prompt"] + rows[0]["completion"] + "\n" == full
    rows, _ = format_examples([bare], FormatConfig(skill_aware=True), tok)
    assert rows[0]["completion"] == "<think>\n" + SKILLS + "</think>\n\nThe answer is \\boxed{12}.<|im_end|>"
    rows, _ = format_examples([bare], FormatConfig(), tok)
    assert rows[0]["completion"] == "The answer is \\boxed{12}.<|im_end|>"


def test_the_papers_placement_on_request(tokenizers) -> None:  # type: ignore[no-untyped-def]
    paper = FormatConfig(skill_aware=True, placement="before_think")
    # Qwen3's template would drop a block before <think> from an assistant message; the completion keeps it
    rows, stats = format_examples([PROBLEM], paper, tokenizers["qwen3"])
    assert rows[0]["completion"] == SKILLS + "\n" + SOL + "<|im_end|>" and stats.placement == "before_think"
    check_rendered(tokenizers["qwen3"], rows)
    assert format_examples([PROBLEM], paper, tokenizers["llama3"])[1].placement == "before_think"
    # R1-Distill's generation prompt has already opened the thinking block: nothing can go before it
    with pytest.raises(ValueError, match="generation prompt already opens the thinking block"):
        format_examples([PROBLEM], paper, tokenizers["r1-distill"])


def old_path(tok, row: dict) -> dict:  # type: ignore[no-untyped-def]
    """The row as the conversational path trained it: the completion is what the chat template renders of
    the assistant message after the generation prompt (TRL's common-prefix rule), not the target."""
    full = tok.apply_chat_template(row["messages"], tokenize=False)
    prefix = 0
    while prefix < min(len(full), len(row["prompt"])) and full[prefix] == row["prompt"][prefix]:
        prefix += 1
    return {**row, "completion": full[prefix:].rstrip("\n")}


def test_the_check_refuses_what_a_template_drops_when_the_old_path_is_forced(tokenizers) -> None:  # type: ignore[no-untyped-def]
    tok = tokenizers["r1-distill"]
    rows, _ = format_examples([PROBLEM], FormatConfig(skill_aware=True), tok)
    forced = old_path(tok, rows[0])
    assert SKILLS not in forced["completion"] and "84 = 2 * 36" not in forced["completion"]
    with pytest.raises(ValueError, match=r"g1: what is trained differs from the target: the chat template "
                       r"drops the reasoning before </think>"):  # fmt: skip
        check_rendered(tok, [forced])
    # the paper's placement through Qwen3's template on the old path: the block vanished
    qwen = tokenizers["qwen3"]
    rows, _ = format_examples([PROBLEM], FormatConfig(skill_aware=True, placement="before_think"), qwen)
    forced = old_path(qwen, rows[0])
    assert forced["completion"] == "<think>\n" + REASONING + "</think>\n\n" + ANSWER + "<|im_end|>"
    with pytest.raises(ValueError, match="the chat template drops text written before <think>"):
        check_rendered(qwen, [forced])
    # templates that keep the message train the same text on the old path (the check passes)
    for name in ("llama3", "smollm2"):
        rows, _ = format_examples([PROBLEM], FormatConfig(skill_aware=True), tokenizers[name])
        check_rendered(tokenizers[name], [old_path(tokenizers[name], rows[0])])


def test_the_check_refuses_rows_that_do_not_train_their_target(tokenizers) -> None:  # type: ignore[no-untyped-def]
    from distill.sft import SFTSettings, train_sft

    tok = tokenizers["smollm2"]
    (row,), _ = format_examples([PROBLEM], FormatConfig(skill_aware=True), tok)
    with pytest.raises(ValueError, match="the completion is not the target and the end-of-turn token"):
        check_rendered(tok, [{**row, "completion": row["completion"].removesuffix("<|im_end|>")}])
    with pytest.raises(ValueError, match="not the chat template's generation prompt"):
        check_rendered(tok, [{**row, "prompt": row["prompt"].replace("SmolLM", "Smol")}])
    old = {"unique_id": "g1", "messages": row["messages"]}  # a conversational row of the old layout
    with pytest.raises(ValueError, match=r"needs prompt, completion and messages \(missing \['prompt'"):
        check_rendered(tok, [old])
    with pytest.raises(ValueError, match="examples need 'prompt' and 'completion' strings"):
        train_sft("unused", [old], SFTSettings(), out_dir="unused")


def test_depth_slice_display_names_and_empty_chains(tmp_path: Path, tokenizers) -> None:  # type: ignore[no-untyped-def]
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
    rows, stats = format_examples([PROBLEM, untagged], deep, tokenizers["qwen3"])
    assert [r["messages"][-1]["content"] for r in rows] == [SOL, SOL]
    assert stats.dropped_headers == 2 and stats.with_skills == 0
    with pytest.raises(EmptySkillsError, match="g1: no skill chain left"):
        format_examples([PROBLEM], deep.model_copy(update={"on_empty": "error"}), tokenizers["qwen3"])
    with pytest.raises(ValueError, match="below min_depth"):
        FormatConfig(min_depth=3, max_depth=2)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping names to short names"):
        load_display_names(tmp_path / "bad.json")


GCD = ["Number theory", "Divisibility", "Greatest common divisor"]
EUCLID = ["Number theory", "Divisibility", "Euclid's algorithm"]


def test_parse_reads_back_what_the_targets_write() -> None:
    for placement in ("think", "answer", "before_think"):
        target, named = assistant_target(PROBLEM, FormatConfig(skill_aware=True), placement)
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
