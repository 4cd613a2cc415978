"""benchmarks/profile_fraction.py on a tiny generated, fully profiled pool: it runs as a script, writes its
JSON and markdown, agrees with skillselect's own helper, and refuses a partial profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from skillcore.io import write_jsonl
from skillselect import Pool, SelectConfig, profile_fraction_rows
from skillselect.testing import random_records, small_tree

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_fraction.py"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_profile_fraction_script(tmp_path):
    tagged, verdicts = random_records(300, seed=11, judged_share=1.0)  # every problem judged
    tree = small_tree()
    tree.save(tmp_path / "tree.json")
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    files = ["--pool", "pool.jsonl", "--verdicts", "verdicts.jsonl", "--tree", "tree.json"]
    done = run(
        [*files, "-T", "0.5", "--w-max", "10", "--fractions", "0.05,0.2", "--seeds", "3", "--out", "o"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "o" / "profile_fraction.json").read_text())
    assert result["full"]["n_judged"] == result["full"]["n_pool"] == 300
    assert [(r["fraction"], r["seed"]) for r in result["rows"]] == [
        (f, s) for f in (0.05, 0.2) for s in range(3)
    ]
    # the figures are skillselect's own, for the same settings
    _, rows = profile_fraction_rows(
        Pool.from_records(tagged, verdicts),
        tree,
        SelectConfig(temperature=0.5, w_max=10),
        fractions=(0.05, 0.2),
        seeds=range(3),
    )
    assert [r["tv"] for r in result["rows"]] == pytest.approx([r["tv"] for r in rows], abs=1e-12)
    summary = {s["fraction"]: s for s in result["summary"]}
    assert summary[0.05]["n_judged"] == 15 and summary[0.2]["n_judged"] == 60  # 5% and 20% of 300
    assert summary[0.05]["tv_max"] == pytest.approx(max(r["tv"] for r in rows[:3]))
    assert summary[0.2]["tv_mean"] == pytest.approx(sum(r["tv"] for r in rows[3:]) / 3)
    assert summary[0.05]["tv_mean"] > 0  # 15 judged problems do not give the full target
    table = (tmp_path / "o" / "profile_fraction.md").read_text()
    assert table == done.stdout and "| 5% | 15 | 3 |" in table and "| 20% | 60 | 3 |" in table
    # a partial profile is refused unless asked for
    write_jsonl(tmp_path / "half.jsonl", [v for v in verdicts if v.unique_id < "q0150"])
    refused = run(["--pool", "pool.jsonl", "--verdicts", "half.jsonl", "--tree", "tree.json"], tmp_path)
    assert (
        refused.returncode == 2 and "150 of 300 pool problems with a chain have no verdict" in refused.stderr
    )
