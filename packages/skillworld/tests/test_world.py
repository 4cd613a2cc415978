"""The world's tree, generators, composer and datasets: determinism, exact answers, chains, disjointness."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Any

import pytest
import sympy
from math_verify import parse, verify
from skillcore import TaggedProblem, read_jsonl
from skillworld import SUITES, generate_benchmarks, generate_pool, leaf_names, side_of, world_tree
from skillworld.cli import app
from skillworld.generators import GENERATORS, HARD_LEAVES
from typer.testing import CliRunner

BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


@pytest.fixture(scope="module")
def pool() -> list[TaggedProblem]:
    return generate_pool(4000, seed=7)


@pytest.fixture(scope="module")
def suites() -> dict[str, list[TaggedProblem]]:
    return generate_benchmarks(seed=7, size=150)


def test_tree_shape_and_generators() -> None:
    tree = world_tree()
    categories = tree.root.children
    assert len(categories) == 6
    assert 20 <= tree.n_leaves <= 30
    assert all(node.description for node in tree.nodes)
    assert set(leaf_names()) == set(GENERATORS)
    assert set(GENERATORS) >= HARD_LEAVES
    # round trip through the public JSON format
    assert type(tree).from_dict(json.loads(tree.to_json())).content_hash() == tree.content_hash()


def test_pool_is_deterministic(pool: list[TaggedProblem]) -> None:
    again = generate_pool(4000, seed=7)
    assert [p.model_dump() for p in again] == [p.model_dump() for p in pool]
    other = generate_pool(200, seed=8)
    assert [p.question for p in other] != [p.question for p in pool[:200]]
    bench_again = generate_benchmarks(seed=7, size=150)
    assert bench_again == generate_benchmarks(seed=7, size=150)


def test_records_validate_and_chains_are_tree_paths(
    pool: list[TaggedProblem], suites: dict[str, list[TaggedProblem]]
) -> None:
    tree = world_tree()
    for problem in [*pool, *(p for rows in suites.values() for p in rows)]:
        TaggedProblem.model_validate(problem.model_dump())  # records are valid despite model_construct
        assert 1 <= len(problem.chains) <= 3
        assert all(tree.is_valid_chain(chain) for chain in problem.chains)
        assert [c[-1] for c in problem.chains] == problem.metadata["skills"]
        assert 1 <= problem.metadata["difficulty"] <= 5
        assert 0.0 <= problem.metadata["pass_rate"] <= 1.0
    assert len({p.unique_id for p in pool}) == len(pool)
    counts = {n: sum(p.metadata["n_skills"] == n for p in pool) for n in (1, 2, 3)}
    assert all(c > 100 for c in counts.values()), counts
    assert {leaf for p in pool for leaf in p.metadata["skills"]} == set(GENERATORS)


def test_solutions_have_r1_shape(pool: list[TaggedProblem]) -> None:
    for problem in pool:
        sol = problem.solution
        assert sol.startswith("<think>\n") and sol.count("<think>") == 1
        think, _, written = sol.partition("\n</think>\n\n")
        assert think and written.endswith("}.")
        assert len(BOXED.findall(written)) == 1 and "\\boxed" not in think
        assert len(sol) < 700


def _independent_value(leaf: str, args: dict[str, Any]) -> Fraction:
    """A second computation of each part's value from its operands, by other means than the generator."""
    a = args
    if leaf == "Multi-digit addition":
        return Fraction(a["a"] + a["b"])
    if leaf == "Multi-digit subtraction":
        return Fraction(a["a"] - a["b"])
    if leaf == "Long multiplication":
        return Fraction(a["a"] * a["b"])
    if leaf == "Order of operations":
        expr = str(a["nums"][0]) + "".join(f"{o}{n}" for o, n in zip(a["ops"], a["nums"][1:], strict=True))
        return Fraction(int(sympy.sympify(expr)))
    if leaf == "Exact division":
        assert a["n"] % a["d"] == 0
        return Fraction(a["n"], a["d"])
    if leaf == "Greatest common divisor":
        return Fraction(math.gcd(a["a"], a["b"]))
    if leaf == "Least common multiple":
        return Fraction(math.lcm(a["a"], a["b"]))
    if leaf == "Remainders by digit sums":
        return Fraction(a["n"] % a["m"])
    if leaf == "Counting divisors":
        return Fraction(int(sympy.divisor_count(a["n"])))
    if leaf == "Modular exponentiation":
        return Fraction(pow(a["b"], a["e"], a["m"]))
    if leaf == "Adding fractions":
        x, y = Fraction(a["a"], a["b"]), Fraction(a["c"], a["d"])
        return x + y if a["op"] == "+" else x - y
    if leaf == "Multiplying fractions":
        return Fraction(a["a"], a["b"]) * Fraction(a["c"], a["d"])
    if leaf == "Simplifying fractions":
        return Fraction(a["num"], a["den"])
    if leaf == "Percentages":
        return Fraction(a["base"] * a["pct"], 100)
    x, y = sympy.symbols("x y")
    if leaf == "Linear equations":
        (sol,) = sympy.solve(a["a"] * x + a["b"] - a["c"], x)
        return Fraction(str(sol))
    if leaf == "Evaluating polynomials":
        return Fraction(int(sympy.Poly([a["a"], a["b"], a["c"]], x).eval(a["x"])))
    if leaf == "Systems of linear equations":
        sol = sympy.solve([a["a"] * x + y - a["p"], a["b"] * x - y - a["q"]], [x, y])
        return Fraction(str(sol[x if a["want"] == "x" else y]))
    if leaf == "Quadratic equations":
        roots = sorted(int(r) for r in sympy.solve(x**2 - a["s"] * x + a["p"], x))
        return Fraction(roots[-1] if a["want"] == "larger" else roots[0])
    if leaf == "Permutations":
        return Fraction(math.perm(a["n"], a["k"]))
    if leaf == "Combinations":
        return Fraction(int(sympy.binomial(a["n"], a["k"])))
    if leaf == "Multiplication principle":
        return Fraction(math.prod(a["counts"]))
    if leaf == "Basic probability":
        return Fraction(a["favorable"], a["favorable"] + a["other"])
    if leaf == "Arithmetic sequences":
        return Fraction(list(range(a["a"], a["a"] + a["n"] * a["d"], a["d"]))[-1])
    if leaf == "Arithmetic series":
        return Fraction(sum(a["first"] + i * a["d"] for i in range(a["n"])))
    if leaf == "Geometric sequences":
        return Fraction(a["a"] * a["r"] ** (a["n"] - 1))
    if leaf == "Recursive sequences":
        vals = [a["a1"]] if a["kind"] == "linear" else [a["a1"], a["const"]]
        while len(vals) < a["n"]:
            vals.append(a["coef"] * vals[-1] + a["const"] if a["kind"] == "linear" else vals[-1] + vals[-2])
        return Fraction(vals[a["n"] - 1])
    raise AssertionError(f"no independent check for {leaf}")


def _flat_ints(obj: Any) -> set[int]:
    if isinstance(obj, bool):
        return set()
    if isinstance(obj, int):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(_flat_ints(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_flat_ints(v) for v in obj)) if obj else set()
    return set()


def test_every_answer_rechecked_independently(
    pool: list[TaggedProblem], suites: dict[str, list[TaggedProblem]]
) -> None:
    problems = [*pool, *(p for rows in suites.values() for p in rows)]
    verified: dict[tuple[str, str], bool] = {}
    for problem in problems:
        parts = problem.metadata["parts"]
        values = []
        for i, part in enumerate(parts):
            value = _independent_value(part["leaf"], part["args"])
            assert value == Fraction(part["value"]), (problem.question, part)
            if i > 0:  # a fed part really uses the previous result as an operand
                assert values[-1].denominator == 1 and int(values[-1]) in _flat_ints(part["args"])
                assert f"Call the result {'AB'[i - 1]}." in problem.question
            values.append(value)
        boxed = BOXED.findall(problem.solution)[-1]
        assert boxed == problem.expected_answer
        key = (boxed, problem.expected_answer)
        if key not in verified:  # math-verify agrees the boxed answer equals the exact value
            gold = parse(f"${values[-1].numerator}/{values[-1].denominator}$")
            verified[key] = verify(gold, parse(f"\\boxed{{{boxed}}}")) and verify(
                parse(f"${problem.expected_answer}$"), parse(f"\\boxed{{{boxed}}}")
            )
        assert verified[key], problem.model_dump()


def test_pool_and_benchmarks_disjoint(
    pool: list[TaggedProblem], suites: dict[str, list[TaggedProblem]]
) -> None:
    assert set(suites) == set(SUITES) == {"aime24", "aime25", "amc23", "math_l5", "olympiadbench"}
    bench_q = [p.question for rows in suites.values() for p in rows]
    assert len(bench_q) == len(set(bench_q)) == 5 * 150
    assert not set(bench_q) & {p.question for p in pool}
    assert all(side_of(q) == "benchmark" for q in bench_q)
    assert all(side_of(p.question) == "train" for p in pool)
    # suites differ in composition: aime24 is harder than amc23
    mean = {k: sum(p.metadata["difficulty"] for p in v) / len(v) for k, v in suites.items()}
    assert mean["aime24"] > mean["amc23"] + 1


def test_questions_name_their_skill(pool: list[TaggedProblem]) -> None:
    """Single-skill questions carry skill-specific wording (what the tagger's embeddings rely on)."""
    cues = {
        "Greatest common divisor": ("greatest common divisor", "gcd("),
        "Least common multiple": ("least common multiple", "lcm("),
        "Basic probability": ("probability",),
        "Combinations": ("committee", "binomial", "subsets"),
        "Geometric sequences": ("geometric",),
    }
    for problem in pool:
        leaf = problem.metadata["skills"][0]
        if problem.metadata["n_skills"] == 1 and leaf in cues:
            assert any(c in problem.question for c in cues[leaf]), problem.question


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        generate_pool(-1)
    with pytest.raises(ValueError, match="positive"):
        generate_benchmarks(0, size=0)


def test_cli_generate(tmp_path: Any) -> None:
    result = CliRunner().invoke(
        app, ["generate", "--out", str(tmp_path), "--pool-size", "300", "--seed", "3", "--suite-size", "20"]
    )
    assert result.exit_code == 0, result.output
    pool = [TaggedProblem.model_validate(r) for r in read_jsonl(tmp_path / "pool.jsonl")]
    assert [p.model_dump() for p in pool] == [p.model_dump() for p in generate_pool(300, 3)]
    assert world_tree().content_hash() == type(world_tree()).load(tmp_path / "tree.json").content_hash()
    for suite in SUITES:
        rows = list(read_jsonl(tmp_path / "benchmarks" / f"{suite}.jsonl"))
        assert len(rows) == 20
