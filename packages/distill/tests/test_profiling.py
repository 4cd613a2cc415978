"""Profiling end to end: the tiny student on a world pool, resumability, reports, MLflow logging."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from distill.engines import (
    Generation,
    GenerationEngine,
    GenerationStopped,
    Prompt,
    SamplingConfig,
    make_engine,
)
from distill.engines.base import check_stop
from distill.profiling import (
    PoolError,
    ProfileConfig,
    ResumeMismatchError,
    check_pool,
    load_pool,
    log_profile_to_mlflow,
    metric_name,
    profile_student,
    weakest_report,
    write_reports,
)
from skillcore import SkillTree, TaggedProblem, Verdict, write_jsonl


def direct_leaf_accuracy(
    tree: SkillTree, problems: Sequence[TaggedProblem], verdicts: Sequence[Verdict]
) -> dict[str, float]:
    """Per-leaf accuracy computed the slow, obvious way: every problem tagged with the leaf."""
    per_problem: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in verdicts:
        per_problem[v.unique_id][0] += 1
        per_problem[v.unique_id][1] += int(v.correct)
    out: dict[str, float] = {}
    for leaf in tree.leaves():
        att = cor = 0
        for p in problems:
            if any(tuple(c) == leaf.path for c in p.chains):
                att += per_problem[p.unique_id][0]
                cor += per_problem[p.unique_id][1]
        if att:
            out[leaf.chain_text] = cor / att
    return out


class ScriptedStudent(GenerationEngine):
    """A stand-in student: answers with the teacher solution on problems whose index is in ``right``,
    with a wrong box otherwise; counts what it was asked (for the resume test)."""

    kind = "scripted"
    model_name = "scripted-student"

    def __init__(self, problems: Sequence[TaggedProblem], right: set[int]) -> None:
        self.by_question = {p.question: (i, p) for i, p in enumerate(problems)}
        self.right = right
        self.asked: list[str] = []

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingConfig | None = None,
        *,
        progress: bool = True,
        stop: threading.Event | None = None,
    ) -> list[list[Generation]]:
        check_stop(stop)
        params = params or SamplingConfig()
        out = []
        for prompt in prompts:
            content = prompt[0]["content"] if not isinstance(prompt, str) else prompt
            question = content.split("Question: ", 1)[1]
            i, p = self.by_question[question]
            self.asked.append(p.unique_id)
            gens = []
            for s in range(params.n):
                ok = i in self.right and not (s == 1 and i % 2 == 0)  # second samples of even problems miss
                text = p.solution if ok else "<think>hmm</think> \\boxed{-12345}"
                gens.append(Generation(text=text, n_tokens=len(text), finish_reason="stop"))
            out.append(gens)
        return out


def test_profile_tiny_student_end_to_end(
    tiny_student_dir: Path, world_tree: SkillTree, world_pool_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    problems = world_pool_small[:12]
    config = ProfileConfig(
        samples_per_problem=2,
        sampling=SamplingConfig(temperature=0.6, max_new_tokens=128, seed=0),
        chunk_size=12,
        judge_workers=1,
    )
    with make_engine("hf", str(tiny_student_dir), batch_size=16, device="cpu") as engine:
        result = profile_student(
            engine, world_tree, problems, out_dir=tmp_path / "run", config=config, progress=False
        )
    assert len(result.attempts) == len(result.verdicts) == 24
    assert {(v.unique_id, v.sample_index) for v in result.verdicts} == {
        (p.unique_id, s) for p in problems for s in (0, 1)
    }
    assert all(a.model == str(tiny_student_dir) and a.n_tokens is not None for a in result.attempts)
    direct = direct_leaf_accuracy(world_tree, problems, result.verdicts)
    got = {c: a for c, a in result.profile.leaf_accuracy().items() if a == a}
    assert got == pytest.approx(direct)
    assert set(got) == set(direct) and len(direct) >= 4
    # a depth-1 node counts each problem passing through it once, whatever its number of chains
    for node in world_tree.root.children:
        through = [p for p in problems if any(c[0] == node.name for c in p.chains)]
        assert result.profile.problems[node.index] == len(through)
        assert result.profile.attempts[node.index] == 2 * len(through)

    paths = write_reports(result, config)
    assert paths["png"].stat().st_size > 5_000
    page = paths["html"].read_text()
    assert page.count('class="leaf"') == world_tree.n_leaves and "correct," in page
    saved = json.loads(paths["weakest"].read_text())
    assert saved == weakest_report(result.profile, config.weakest_k)
    summary = json.loads(paths["summary"].read_text())
    assert summary["attempts"] == 24 and sum(summary["status_counts"].values()) == 24


def test_scripted_student_accuracies_and_resume(
    world_tree: SkillTree, world_pool_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    problems = world_pool_small[:20]
    right = {i for i in range(20) if i % 3 != 0}
    config = ProfileConfig(samples_per_problem=2, chunk_size=5, judge_workers=1)

    class Killed(Exception):
        pass

    def kill_after_two(done: int, total: int) -> None:
        if done >= 10:
            raise Killed

    first = ScriptedStudent(problems, right)
    with pytest.raises(Killed):
        profile_student(
            first,
            world_tree,
            problems,
            out_dir=tmp_path,
            config=config,
            progress=False,
            on_chunk=kill_after_two,
        )
    assert len(first.asked) == 10
    # a torn line at the end (killed mid-write) is cut off on resume
    with open(tmp_path / "attempts.jsonl", "a") as fh:
        fh.write('{"unique_id": "world-0-0000')

    second = ScriptedStudent(problems, right)
    result = profile_student(second, world_tree, problems, out_dir=tmp_path, config=config, progress=False)
    assert sorted(second.asked) == sorted(p.unique_id for p in problems[10:])  # only the unfinished ones
    assert result.resumed == 10 and result.generated == 10

    expected_correct = {
        (p.unique_id, s): (i in right and not (s == 1 and i % 2 == 0))
        for i, p in enumerate(problems)
        for s in (0, 1)
    }
    assert {(v.unique_id, v.sample_index): v.correct for v in result.verdicts} == expected_correct
    direct = direct_leaf_accuracy(world_tree, problems, result.verdicts)
    assert {c: a for c, a in result.profile.leaf_accuracy().items() if a == a} == pytest.approx(direct)
    assert 0 < result.accuracy < 1

    fresh = profile_student(
        ScriptedStudent(problems, right),
        world_tree,
        problems,
        out_dir=tmp_path / "fresh",
        config=config,
        progress=False,
    )
    assert (fresh.profile.correct == result.profile.correct).all()
    assert (fresh.profile.attempts == result.profile.attempts).all()


def test_a_stopped_profile_keeps_its_finished_chunks_and_resumes(
    world_tree: SkillTree, world_pool_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    problems = world_pool_small[:12]
    config = ProfileConfig(chunk_size=4, judge_workers=1)
    stop = threading.Event()

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 8:
            stop.set()

    first = ScriptedStudent(problems, right=set(range(12)))
    with pytest.raises(GenerationStopped, match="8 of 12 problems answered"):
        profile_student(
            first,
            world_tree,
            problems,
            out_dir=tmp_path,
            config=config,
            progress=False,
            on_chunk=stop_after_two_chunks,
            stop=stop,
        )
    assert len(first.asked) == 8
    assert len((tmp_path / "attempts.jsonl").read_text().splitlines()) == 8
    assert not (tmp_path / "profile.json").exists()  # no profile from a stopped run

    second = ScriptedStudent(problems, right=set(range(12)))
    result = profile_student(second, world_tree, problems, out_dir=tmp_path, config=config, progress=False)
    assert sorted(second.asked) == sorted(p.unique_id for p in problems[8:])
    assert result.resumed == 8 and result.accuracy == 1.0


def test_answers_of_another_model_or_sampling_are_not_resumed(
    world_tree: SkillTree, world_pool_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    problems = world_pool_small[:6]
    config = ProfileConfig(chunk_size=3, judge_workers=1)
    profile_student(
        ScriptedStudent(problems, {0, 1, 2}), world_tree, problems, out_dir=tmp_path, config=config
    )
    saved = (tmp_path / "attempts.jsonl").read_text()

    retrained = ScriptedStudent(problems, {3, 4, 5})
    retrained.model_name = "scripted-student-v2"
    with pytest.raises(
        ResumeMismatchError, match=re.escape("engine.model: 'scripted-student' -> 'scripted-student-v2'")
    ):
        profile_student(retrained, world_tree, problems, out_dir=tmp_path, config=config, progress=False)
    assert retrained.asked == [] and (tmp_path / "attempts.jsonl").read_text() == saved

    hotter = config.model_copy(update={"sampling": SamplingConfig(temperature=1.0)})
    with pytest.raises(ResumeMismatchError, match=re.escape("sampling.temperature: 0.6 -> 1.0")):
        profile_student(
            ScriptedStudent(problems, set()), world_tree, problems, out_dir=tmp_path, config=hotter
        )

    redone = profile_student(
        retrained,
        world_tree,
        problems,
        out_dir=tmp_path,
        config=config,
        progress=False,
        on_mismatch="restart",
    )
    assert redone.resumed == 0 and redone.generated == 6
    right_now = sorted(v.unique_id for v in redone.verdicts if v.correct)
    assert right_now == sorted(p.unique_id for p in problems[3:])  # the new model's answers only
    assert len((tmp_path / "attempts.jsonl").read_text().splitlines()) == 6
    # and the new run's answers resume under the new model
    again = profile_student(retrained, world_tree, problems, out_dir=tmp_path, config=config, progress=False)
    assert again.resumed == 6 and again.generated == 0

    # answers with no record of their model (an older folder) are not trusted either
    (tmp_path / "rollout_run.json").unlink()
    with pytest.raises(ResumeMismatchError, match="nothing records which model"):
        profile_student(retrained, world_tree, problems, out_dir=tmp_path, config=config, progress=False)


def test_log_profile_to_mlflow(
    world_tree: SkillTree, world_pool_small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    problems = world_pool_small[:12]
    config = ProfileConfig(chunk_size=6, judge_workers=0)
    result = profile_student(
        ScriptedStudent(problems, set(range(0, 12, 2))),
        world_tree,
        problems,
        out_dir=tmp_path / "p",
        config=config,
        progress=False,
    )
    paths = write_reports(result, config)
    run_id = log_profile_to_mlflow(result, config, problems, paths=paths, engine_kind="scripted")
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["accuracy"] == pytest.approx(0.5)
    leaf_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("skill_acc/")}
    direct = direct_leaf_accuracy(world_tree, problems, result.verdicts)
    assert {k: pytest.approx(v) for k, v in leaf_metrics.items() if k.count("/") == 2} == {
        metric_name(c): pytest.approx(a) for c, a in direct.items()
    }
    assert run.data.params["engine"] == "scripted" and run.data.tags["skilldistill.stage"] == "profile"
    artifacts = {f.path for f in MlflowClient().list_artifacts(run_id, "profile")}
    assert {
        "profile/profile.json",
        "profile/tree.png",
        "profile/tree.html",
        "profile/weakest.json",
    } <= artifacts
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert {"profiling", "attempts", "verdicts"} <= contexts


def test_load_pool_requires_chains(tmp_path: Path, world_pool_small) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "pool.jsonl"
    write_jsonl(good, world_pool_small[:3])
    assert [p.unique_id for p in load_pool(good)] == [p.unique_id for p in world_pool_small[:3]]
    bad = tmp_path / "untagged.jsonl"
    write_jsonl(bad, [{"unique_id": "a", "question": "q", "expected_answer": "1"}])
    with pytest.raises(ValueError, match="no 'chains'"):
        load_pool(bad)


def test_check_pool_refuses_empty_pools_and_unknown_chains(world_tree, world_pool_small) -> None:  # type: ignore[no-untyped-def]
    check_pool(world_pool_small[:10], world_tree)
    check_pool(world_pool_small[:10], world_tree.truncate(1))  # deeper chains match their prefix
    with pytest.raises(PoolError, match=r"pool\.jsonl: the pool has no problems"):
        check_pool([], world_tree, source="pool.jsonl")
    rows = [p.model_copy() for p in world_pool_small[:8]]
    for i in range(1, 8):
        rows[i] = rows[i].model_copy(update={"chains": [["Nope", f"n{i}"]]})
    with pytest.raises(PoolError) as refused:
        check_pool(rows, world_tree, shown=3)
    message = str(refused.value)
    assert "7 chain(s) are not paths of the skill tree" in message
    assert f"row 2 ({rows[1].unique_id}): 'Nope->n1'" in message and "row 4" in message
    assert "row 5" not in message  # only the first few are named


def test_metric_name_is_mlflow_safe() -> None:
    assert metric_name("Fractions->Adding fractions") == "skill_acc/Fractions/Adding fractions"
    assert metric_name("a (b)->c's+d") == "skill_acc/a _b_/c_s_d"


def test_bound_sampling_caps_max_new_tokens() -> None:
    from distill.engines import SamplingConfig
    from distill.profiling import GenerationLimitError, bound_sampling

    huge = SamplingConfig(max_new_tokens=10**12)
    with pytest.raises(
        GenerationLimitError, match=r"sampling.max_new_tokens 1000000000000 is over the cap of 1024"
    ):
        bound_sampling(huge, maximum=32768, context_length=1024)
    with pytest.raises(GenerationLimitError, match=r"cap of 32768 \(the configured maximum\)"):
        bound_sampling(huge, maximum=32768, context_length=None)
    with pytest.raises(GenerationLimitError, match="max_position_embeddings"):
        bound_sampling(SamplingConfig(max_new_tokens=2000), maximum=32768, context_length=1024)
    fits = SamplingConfig(max_new_tokens=512)
    assert bound_sampling(fits, maximum=32768, context_length=1024) is fits
    lowered = bound_sampling(SamplingConfig(), maximum=32768, context_length=1024)  # default 8192, unset
    assert lowered.max_new_tokens == 1024
