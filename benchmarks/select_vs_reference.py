"""Selection from files, whole process: ``skillselect select`` against the paper's reference script.

One 100K-problem pool on the SkillMix-sized tree of ``bench_select.py`` (118 leaves, depth 4; 1-3 chains a
problem, skewed leaf popularity), written in both formats:

- the project's: ``tree.json`` (nested names/children), ``pool.jsonl`` (skillcore ``TaggedProblem`` rows:
  unique_id, question, solution, expected_answer, metadata, chains) and ``verdicts.jsonl`` (one skillcore
  ``Verdict`` a problem: student-correct when most of ``bench_select``'s attempts were correct);
- the reference's (``reverse_mapping_with_score.py`` of the paper's public code): the same tree file, a QA
  file (unique_id, question, solution, expected_answer, ``<attempt_model>_judge``: the same verdict as a
  bool) and a mapping file (unique_id, question, ``mapped_chains``: the same chains), joined on the
  question text by the script (every question here is distinct).

Both commands read their files, select K = 1,000 with the paper's weights (T = 1, w_max = 1000, leaf drawn
by weight, then a problem in it) and write their outputs: ours the selected rows (``--out``) and the report
folder (``--report-dir``: per-leaf CSV, summary, ids, the target-vs-selected figure), or the selected rows
only (``ours --out only``); the reference the selected rows, its tree with accuracies and verdicts (JSON),
its HTML view and a copy of the joined QA file. ``--before DIR`` times an older checkout too (its
``packages/skillselect/src`` and ``packages/skillcore/src`` first on ``PYTHONPATH``, e.g. a ``git worktree``
of HEAD), which must select the same rows byte for byte. Wall time of each whole process (start to exit),
peak RSS and CPU seconds (``os.wait4``); one unmeasured warm-up run of each first (page cache, byte-code),
then ``--runs`` rounds in which each command goes first in turn. The reference's selection differs from
ours (it draws with Python's ``random`` and iterates sets); ours is checked to be the same in every run.

    .venv/bin/python benchmarks/select_vs_reference.py --reference /path/to/reverse_mapping_with_score.py
    .venv/bin/python benchmarks/select_vs_reference.py --before /tmp/head   # git worktree add /tmp/head HEAD
    .venv/bin/python benchmarks/select_vs_reference.py            # ours only (no reference given)

The reference script is not part of this repository: fetch it from the paper's public code yourself. It
imports ``jsonlines`` (unused by it) besides pandas, numpy and tqdm; ``--reference-python`` picks the
interpreter that runs it (default: this one), ``--reference-path`` adds a folder to its ``PYTHONPATH``
(e.g. one where ``pip install --target DIR jsonlines`` put that package).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_select import make_inputs  # noqa: E402  (the benchmarks folder is not a package)

from conftest import sample_conditions  # noqa: E402

N_LEAVES = 118
K = 1000
ATTEMPT_MODEL = "Qwen/Qwen3-4B"
PROSE = (
    "let the sum of the roots be equal to the product so we find that x squared minus three x plus two "
    "factors as x minus one times x minus two hence both roots are positive integers and the answer follows"
)
WORDS = PROSE.split()


def _text(rng: np.random.Generator, prefix: str, chars: int) -> str:
    """About ``chars`` characters of words (5 characters a word with its space, on average)."""
    return " ".join([prefix, *(WORDS[int(i)] for i in rng.integers(len(WORDS), size=max(1, chars // 5)))])


def write_inputs(
    folder: Path, n: int, *, question_chars: int, solution_chars: int, seed: int = 0
) -> dict[str, Any]:
    """Write the tree, the project's pool and verdicts, and the reference's QA and mapping files."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(N_LEAVES, n_problems=n, seed=seed)
    tree = inputs["tree"]
    tree.save(folder / "tree.json")
    rng = np.random.default_rng(seed + 1)
    correct = (2 * np.asarray(inputs["correct"]) > np.asarray(inputs["attempts"])).tolist()
    judge = f"{ATTEMPT_MODEL}_judge"
    with (
        open(folder / "pool.jsonl", "w", encoding="utf-8") as pool,
        open(folder / "verdicts.jsonl", "w", encoding="utf-8") as verdicts,
        open(folder / "qa.jsonl", "w", encoding="utf-8") as qa,
        open(folder / "mapping.jsonl", "w", encoding="utf-8") as mapping,
    ):
        for i, uid in enumerate(inputs["ids"]):
            question = _text(rng, f"Problem {i}:", question_chars)
            solution = "<think>" + _text(rng, f"Work {i}:", solution_chars) + f"</think> The answer is {i}."
            answer = str(i)
            chains = inputs["chains"][i]
            row = {
                "unique_id": uid,
                "question": question,
                "solution": solution,
                "expected_answer": answer,
                "metadata": inputs["meta"][i],
                "chains": chains,
            }
            pool.write(json.dumps(row, ensure_ascii=False) + "\n")
            status = "correct" if correct[i] else "wrong"
            verdict = {"unique_id": uid, "sample_index": 0, "status": status, "expected_answer": answer}
            verdicts.write(json.dumps(verdict) + "\n")
            qa_row = {
                "unique_id": uid,
                "question": question,
                "solution": solution,
                "expected_answer": answer,
                judge: correct[i],
            }
            qa.write(json.dumps(qa_row, ensure_ascii=False) + "\n")
            mapping.write(
                json.dumps({"unique_id": uid, "question": question, "mapped_chains": chains}) + "\n"
            )
    sizes = {name: (folder / name).stat().st_size for name in ("pool.jsonl", "verdicts.jsonl", "qa.jsonl")}
    return {"n": n, "n_chains": sum(map(len, inputs["chains"])), "bytes": sizes}


def project_command(folder: Path, out: Path, *, report: bool) -> list[str]:
    """``skillselect select`` as the console script runs it (``python -m skillselect.cli``, so that an older
    checkout put first on ``PYTHONPATH`` runs the same way)."""
    cmd = [sys.executable, "-m", "skillselect.cli", "select", "--pool", str(folder / "pool.jsonl")]
    cmd += ["--verdicts", str(folder / "verdicts.jsonl"), "--tree", str(folder / "tree.json")]
    cmd += ["--k", str(K), "--strategy", "skill", "--seed", "0", "-T", "1", "--w-max", "1000"]
    cmd += ["--out", str(out / "selected.jsonl")]
    if report:
        cmd += ["--report-dir", str(out / "report")]
    return cmd


def reference_command(script: Path, python: str, folder: Path, out: Path) -> list[str]:
    return [
        python,
        str(script),
        "--skill_tree_path",
        str(folder / "tree.json"),
        "--qa_jsonl_path",
        str(folder / "qa.jsonl"),
        "--tree_mapping_path",
        str(folder / "mapping.jsonl"),
        "--output_path",
        str(out),
        "--sample_size",
        str(K),
        "--attempt_model",
        ATTEMPT_MODEL,
        "--temperature",
        "1",
    ]


class Runner:
    """Runs a command and measures it with ``os.wait4`` (wall, CPU, peak RSS of that process alone)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    def __call__(self, cmd: list[str]) -> dict[str, float]:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env, cwd=self.cwd
        )
        assert proc.stderr is not None
        err = proc.stderr.read()  # the reference prints little; ours one line
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-3000:]}")
        return {
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,
        }


def _with_path(env: dict[str, str], *folders: str) -> dict[str, str]:
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (*folders, env.get("PYTHONPATH")) if p)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="path to reverse_mapping_with_score.py")
    parser.add_argument("--reference-python", default=sys.executable, help="interpreter for the reference")
    parser.add_argument("--reference-path", default="", help="folder added to the reference's PYTHONPATH")
    parser.add_argument(
        "--before", type=Path, help="an older checkout (git worktree) to time beside this one, e.g. HEAD"
    )
    parser.add_argument("--n", type=int, default=100_000, help="pool size")
    parser.add_argument("--question-chars", type=int, default=300, help="about this long a question")
    parser.add_argument("--solution-chars", type=int, default=2000, help="about this long a solution")
    parser.add_argument("--runs", type=int, default=3, help="paired runs (after one warm-up of each)")
    parser.add_argument("--workdir", type=Path, help="keep the inputs and outputs here (default: a temp dir)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="select-vs-ref-"))
    data = work / "inputs"
    start = time.perf_counter()
    info = write_inputs(data, args.n, question_chars=args.question_chars, solution_chars=args.solution_chars)
    print(
        f"inputs: {info['n']:,} problems, {info['n_chains']:,} chains, {N_LEAVES} leaves; "
        + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in info["bytes"].items())
        + f" (written in {time.perf_counter() - start:.1f} s, {data})"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW")}
    env.setdefault("OMP_NUM_THREADS", "1")
    # name: (command, runner, where our selected rows land or None)
    commands: dict[str, tuple[list[str], Runner, Path | None]] = {
        "ours": (project_command(data, work / "ours", report=True), Runner(env, work), work / "ours"),
        "ours --out only": (
            project_command(data, work / "ours-out", report=False),
            Runner(env, work),
            work / "ours-out",
        ),
    }
    if args.before is not None:
        old = args.before.resolve()
        old_env = _with_path(env, *(str(old / "packages" / p / "src") for p in ("skillselect", "skillcore")))
        commands["before"] = (
            project_command(data, work / "before", report=True),
            Runner(old_env, work),
            work / "before",
        )
    if args.reference is not None:
        script = args.reference.resolve()
        ref_env = _with_path(env, args.reference_path) if args.reference_path else env
        commands["reference"] = (
            reference_command(script, args.reference_python, data, work / "reference"),
            Runner(ref_env, script.parent),
            None,
        )

    before = sample_conditions()
    print(
        f"machine: {before['cpu']} [{before['cpu_flags']}], {before['cores']} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; at start: other processes used "
        f"{before['others_cores']} cores, load {before['load_1m']} / {before['load_5m']} (1 / 5 min)"
    )
    for name, (cmd, run, _) in commands.items():  # warm-up: page cache, byte-code
        run(cmd)
        print(f"warm-up {name}: done")
    selected = (work / "ours" / "selected.jsonl").read_bytes()
    names = list(commands)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.runs):
        order = names[r % len(names) :] + names[: r % len(names)]  # each command goes first in turn
        for name in order:
            cmd, run, out = commands[name]
            times[name].append(run(cmd))
            if out is not None and (out / "selected.jsonl").read_bytes() != selected:
                raise SystemExit(f"{name}: a different selection from ours")
        line = ", ".join(
            f"{name} {times[name][-1]['wall_s']:.2f} s ({times[name][-1]['cpu_s']:.2f} s CPU, "
            f"{times[name][-1]['peak_rss_mib']:.0f} MiB)"
            for name in names
        )
        print(f"run {r + 1} ({' -> '.join(order)}): {line}")
    after = sample_conditions()
    print(
        f"at end: other processes used {after['others_cores']} cores, load {after['load_1m']} "
        f"/ {after['load_5m']}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    median: dict[str, float] = {}
    for name in names:
        walls = [t["wall_s"] for t in times[name]]
        median[name] = statistics.median(walls)
        print(f"{name}: median {median[name]:.2f} s, best {min(walls):.2f} s")
    ours_alike = [n for n in names if commands[n][2] is not None]
    n_rows = len(selected.splitlines())
    print(f"{', '.join(ours_alike)}: the same {n_rows:,} rows selected, byte for byte, every run")
    if "reference" in median:
        for name in ours_alike:
            print(f"{name} / reference: {median[name] / median['reference']:.2f} (medians)")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
