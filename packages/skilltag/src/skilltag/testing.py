"""Helpers shared by the tests (this library's and the tagging service's): a small hand-written tree,
problems for it, a free loopback port, and the ``tree``/``tree_file`` fixtures (a conftest imports them)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from skillcore import SkillTree

SMALL_TREE: dict[str, Any] = {
    "name": "math",
    "children": [
        {
            "name": "Algebra",
            "description": "solving equations and manipulating expressions",
            "children": [
                {
                    "name": "Linear equations",
                    "description": "solve for x in a linear equation like 3x + 5 = 20",
                },
                {
                    "name": "Quadratic equations",
                    "description": "roots of x^2 + bx + c = 0, factoring, the quadratic formula",
                },
            ],
        },
        {
            "name": "Geometry",
            "description": "shapes, areas, angles and lengths",
            "children": [
                {
                    "name": "Circle area",
                    "description": "area and circumference of a circle with radius r, pi",
                },
                {"name": "Triangle angles", "description": "the angles of a triangle sum to 180 degrees"},
            ],
        },
        {
            "name": "Number theory",
            "description": "integers, divisibility and primes",
            "children": [
                {"name": "Greatest common divisor", "description": "gcd of two integers, Euclid's algorithm"},
                {"name": "Prime factorization", "description": "write an integer as a product of primes"},
            ],
        },
    ],
}

PROBLEMS: list[tuple[str, str, list[str]]] = [
    ("Solve for x: 4x + 7 = 31.", "Subtract 7 to get 4x = 24, so x = 6.", ["Algebra", "Linear equations"]),
    (
        "Find the roots of x^2 - 5x + 6 = 0.",
        "Factor as (x-2)(x-3) = 0, so x = 2 or x = 3.",
        ["Algebra", "Quadratic equations"],
    ),
    (
        "What is the area of a circle with radius 3?",
        "Area is pi r^2 = 9 pi.",
        ["Geometry", "Circle area"],
    ),
    (
        "Two angles of a triangle are 50 and 60 degrees. Find the third angle.",
        "The angles sum to 180, so 180 - 110 = 70 degrees.",
        ["Geometry", "Triangle angles"],
    ),
    (
        "Compute gcd(84, 36).",
        "Euclid: 84 = 2*36 + 12, 36 = 3*12, so the gcd is 12.",
        ["Number theory", "Greatest common divisor"],
    ),
    (
        "Write 360 as a product of prime powers.",
        "360 = 2^3 * 3^2 * 5.",
        ["Number theory", "Prime factorization"],
    ),
]


def small_tree() -> SkillTree:
    return SkillTree.from_dict(SMALL_TREE)


def small_problems(n: int = len(PROBLEMS), *, prefix: str = "q") -> list[dict[str, Any]]:
    """``n`` native pool rows cycling through PROBLEMS, each with a distinct question text."""
    rows = []
    for i in range(n):
        question, solution, chain = PROBLEMS[i % len(PROBLEMS)]
        suffix = f" (variant {i // len(PROBLEMS)})" if i >= len(PROBLEMS) else ""
        rows.append(
            {
                "unique_id": f"{prefix}{i}",
                "question": question + suffix,
                "solution": solution,
                "expected_answer": "0",
                "metadata": {"gold_chain": chain},
            }
        )
    return rows


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tree() -> SkillTree:
    return small_tree()


@pytest.fixture(scope="session")
def tree_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tree") / "small_tree.json"
    path.write_text(json.dumps(SMALL_TREE))
    return path
