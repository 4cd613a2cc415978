"""`pipelines/distill.py --compare`: the arms x seeds on one pool, profile and student, into one MLflow
experiment, with the results table and the paired differences recomputed here from the saved answers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from skillcore import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_comparison_runs_each_arm_and_seed_over_shared_stages(tmp_path, tiny_student_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "cmp"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "distill.py"), "--registry-model", "cmp", "--workdir",
         str(workdir), "--student", str(tiny_student_dir), "--preset", "smoke", "--compare",
         "--arms", "skill-skill,skill-plain-paperw", "--seeds", "0,1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    stages = summary["stages"]
    arms = ("random-plain", "skill-skill", "skill-plain-paperw")  # the random baseline is always added

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(summary["run_id"])
    assert parent.info.run_name == "compare:cmp" and parent.data.params["arms"] == ",".join(arms)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    arm_runs = {r.info.run_name: r for r in runs if r.info.run_name.startswith("arm:")}
    assert set(arm_runs) == {f"arm:{a} s{s}" for a in arms for s in (0, 1)}
    # the shared stages ran once, under the parent: one profile, one base evaluation
    every = client.search_runs([parent.info.experiment_id])
    assert sum(r.data.tags.get("skilldistill.stage") == "profile" for r in every) == 1
    assert sum(r.info.run_name == "evaluate:base" for r in every) == 1
    assert not client.search_registered_models("name='cmp'")  # a comparison registers nothing

    # each arm run carries its settings and its scores, equal to its saved verdicts
    paperw = arm_runs["arm:skill-plain-paperw s1"]
    assert (
        paperw.data.params["select.w_max"] == "1000.0" and paperw.data.params["format.skill_aware"] == "False"
    )
    assert arm_runs["arm:skill-skill s0"].data.params["select.w_max"] == "10.0"
    per_problem: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for arm in arms:
        for seed in (0, 1):
            label = arm.removesuffix("-paperw")  # stage labels are strategy-variant; the arm names the run
            evaluation = stages[f"{arm} s{seed}/evaluate:{label}"]
            folder = Path(evaluation["dir"])
            scores = {}
            for bench in ("aime24", "aime25", "amc23", "math-l5", "olympiadbench"):
                scores[bench] = {
                    v["unique_id"]: float(v["status"] == "correct")
                    for v in read_jsonl(folder / bench / "verdicts.jsonl")
                }
            per_problem[(arm, seed)] = scores
            average = sum(sum(s.values()) / len(s) for s in scores.values()) / len(scores)
            metrics = arm_runs[f"arm:{arm} s{seed}"].data.metrics
            assert metrics["eval/average"] == pytest.approx(average, abs=1e-6)
    # a seed draws another selection and another training order
    assert stages["skill-skill s0/select:skill"]["key"] != stages["skill-skill s1/select:skill"]["key"]
    assert (
        stages["skill-skill s0/train:skill-skill"]["key"] != stages["skill-skill s1/train:skill-skill"]["key"]
    )

    # the paired differences against random SFT, recomputed from the per-problem answers
    with (workdir / "compare" / "paired.csv").open() as fh:
        paired = {row["arm"]: row for row in csv.DictReader(fh)}
    assert set(paired) == {"skill-skill", "skill-plain-paperw"}
    for arm in paired:
        diffs = defaultdict(list)
        for bench in per_problem[(arm, 0)]:
            for uid in per_problem[(arm, 0)][bench]:
                diffs[bench].append(
                    sum(
                        per_problem[(arm, s)][bench][uid] - per_problem[("random-plain", s)][bench][uid]
                        for s in (0, 1)
                    )
                    / 2
                )
        expected = sum(sum(d) / len(d) for d in diffs.values()) / len(diffs)
        row = paired[arm]
        assert float(row["difference"]) == pytest.approx(expected, abs=1e-9)
        assert float(row["low"]) <= float(row["difference"]) <= float(row["high"])
        assert row["vs"] == "random-plain" and row["seeds"] == "2"
    table = (workdir / "compare" / "results.md").read_text()
    assert all(f"| {arm} | 2 |" in table for arm in arms)
    assert (workdir / "compare" / "skill_gains.png").stat().st_size > 5_000
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/results.md", "compare/paired.csv", "compare/skill_gains.png"} <= artifacts
