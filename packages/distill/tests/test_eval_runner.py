"""Evaluation runs: the tiny student on world suites through the shared rollout, scores, resume, reports,
MLflow logging, presets, and the vLLM path (its arguments here, its real run on a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill.engines import make_engine
from distill.engines.vllm_engine import sampling_kwargs, vllm_unavailable_reason
from distill.eval import (
    EvalConfig,
    evaluate,
    load_benchmarks,
    load_eval_config,
    log_eval_to_mlflow,
    write_eval_report,
)
from skillcore import write_jsonl


@pytest.fixture
def world_dir(tmp_path: Path, world_benchmarks_small) -> Path:  # type: ignore[no-untyped-def]
    for name, rows in world_benchmarks_small.items():
        write_jsonl(tmp_path / "world" / "benchmarks" / f"{name}.jsonl", rows[:4])
    return tmp_path / "world"


def test_presets() -> None:
    paper = load_eval_config("paper")
    assert paper.samples_per_problem == 8 and paper.sampling.temperature == 0.6
    assert paper.sampling.max_new_tokens == 16384 and paper.sampling.enable_thinking
    demo = load_eval_config("cpu-demo", limit=5, sampling={"max_new_tokens": 64})
    assert demo.sampling.greedy and demo.limit == 5 and demo.sampling.max_new_tokens == 64
    with pytest.raises(ValueError, match="unknown evaluation preset 'papers'"):
        load_eval_config("papers")


def test_evaluate_tiny_student_on_world_suites(
    tiny_student_dir: Path, world_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    problems, repeats = load_benchmarks(["amc23", "math-l5"], world_dir=world_dir)
    assert [len(v) for v in problems.values()] == [4, 4] and repeats == {"amc23": 8, "math-l5": 8}
    config = EvalConfig(
        samples_per_problem=2,
        sampling={"temperature": 0.6, "max_new_tokens": 48},
        judge_workers=0,
        n_resamples=200,
    )
    with make_engine("hf", str(tiny_student_dir), device="cpu", batch_size=8) as engine:
        report = evaluate(engine, problems, config, out_dir=tmp_path / "eval", progress=False)
        assert set(report.benchmarks) == {"amc23", "math-l5"}
        for name, run in report.benchmarks.items():
            score = run.score
            assert score.n_problems == 4 and score.samples_per_problem == 2 and score.k == 2
            assert sum(score.status_counts.values()) == 8
            correct = sum(v.correct for v in run.rollout.verdicts)
            assert score.avg_at_k.value == pytest.approx(correct / 8)
            assert score.avg_at_k.low <= score.avg_at_k.value <= score.avg_at_k.high
            assert (tmp_path / "eval" / name / "verdicts.jsonl").is_file()
        metrics = report.metrics()
        assert metrics["eval/average/avg_at_2"] == pytest.approx(
            (
                report.benchmarks["amc23"].score.avg_at_k.value
                + report.benchmarks["math-l5"].score.avg_at_k.value
            )
            / 2
        )
        assert report.headline == metrics["eval/average/avg_at_2"]
        # a rerun resumes every benchmark from its saved answers
        again = evaluate(engine, problems, config, out_dir=tmp_path / "eval", progress=False)
        assert all(run.rollout.generated == 0 for run in again.benchmarks.values())
        assert again.average == report.average

    paths = write_eval_report(report)
    saved = json.loads(paths["report"].read_text())
    assert saved["average"] == report.average and saved["engine"]["path"] == str(tiny_student_dir.resolve())
    assert "| **average** |" in paths["markdown"].read_text()
    per_problem = (tmp_path / "eval" / "amc23" / "problems.jsonl").read_text().splitlines()
    assert len(per_problem) == 4 and {"unique_id", "c", "pass_at_k"} <= set(json.loads(per_problem[0]))

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("eval-runner-test")
    with mlflow.start_run() as run:
        log_eval_to_mlflow(report, paths)
    mlflow.set_tracking_uri(None)
    logged = MlflowClient(uri).get_run(run.info.run_id)
    assert logged.data.metrics["eval/amc23/avg_at_2"] == report.benchmarks["amc23"].score.avg_at_k.value
    assert "eval/math-l5/status/error" in logged.data.metrics
    assert {d.dataset.name for d in logged.inputs.dataset_inputs} == {"benchmark-amc23", "benchmark-math-l5"}


def test_vllm_sampling_for_the_papers_evaluation() -> None:
    paper = load_eval_config("paper")
    kwargs = sampling_kwargs(paper.sampling.model_copy(update={"n": paper.samples_per_problem}))
    assert kwargs == {"n": 8, "temperature": 0.6, "top_p": 0.95, "top_k": -1, "max_tokens": 16384, "seed": 0}


@pytest.mark.skipif(
    vllm_unavailable_reason() is not None, reason=f"vllm evaluation: {vllm_unavailable_reason()}"
)
def test_vllm_evaluation_real_run(tiny_student_dir: Path, world_dir: Path, tmp_path: Path) -> None:
    problems, _ = load_benchmarks(["amc23"], world_dir=world_dir)
    config = EvalConfig(samples_per_problem=2, sampling={"max_new_tokens": 64}, judge_workers=0)
    engine = make_engine("vllm", str(tiny_student_dir), gpu_memory_utilization=0.3, max_model_len=1024)
    report = evaluate(engine, problems, config, out_dir=tmp_path / "vllm", progress=False)
    assert report.benchmarks["amc23"].score.n_problems == 4
    assert sum(report.benchmarks["amc23"].score.status_counts.values()) == 8
