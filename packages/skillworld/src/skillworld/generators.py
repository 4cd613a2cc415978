"""One problem generator per leaf skill of the world.

A generator draws operands with a ``random.Random``, computes the answer exactly (``int`` or
``fractions.Fraction``) and writes the teacher's steps one small operation per line, because the tiny
student only learns procedures that are written out. A generator may be *fed* the result of an earlier
part of a composed problem (``Fed``): it then uses that value as one operand and names it by its letter
in the question; it returns ``None`` when the value does not fit the skill.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from math import comb, gcd
from typing import Any

Value = Fraction


@dataclass(frozen=True)
class Fed:
    """The result of an earlier part, named ``name`` (a capital letter) in the question."""

    name: str
    value: int


@dataclass
class Part:
    """One skill application: its question sentence, exact value, written steps and operands."""

    leaf: str
    question: str
    value: Value
    steps: list[str]
    summary: str
    level: int
    args: dict[str, Any] = field(default_factory=dict)


Generator = Callable[[random.Random, int, "Fed | None"], "Part | None"]

HARD_LEAVES = frozenset({"Exact division", "Modular exponentiation", "Quadratic equations"})


def fmt(value: Value | int) -> str:
    """An exact value as a final answer: ``12``, ``-3``, ``\\frac{17}{12}``, ``-\\frac{1}{2}``."""
    v = Fraction(value)
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def frac_text(value: Value | int) -> str:
    """An exact value inside a trace step: ``12`` or ``17/12``."""
    v = Fraction(value)
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def signed_term(coef: int, var: str, first: bool = False) -> str:
    """``+ 3x`` / ``- 3x`` / ``x`` pieces of a polynomial written in text."""
    mag = "" if abs(coef) == 1 and var else str(abs(coef))
    if first:
        return f"{'-' if coef < 0 else ''}{mag}{var}"
    return f" {'-' if coef < 0 else '+'} {mag}{var}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _digits_of(level: int, rng: random.Random) -> int:
    return rng.randint(10 ** (level), 10 ** (level + 1) - 1)


def _op(fed: Fed | None, value: int) -> str:
    return fed.name if fed is not None else str(value)


# ============================================================================ Arithmetic
def gen_addition(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 0 <= fed.value <= 99999:
            return None
        a = fed.value
    else:
        a = _digits_of(level, rng)
    b = _digits_of(rng.randint(1, level), rng)
    sa, sb = _op(fed, a), str(b)
    q = rng.choice(
        (
            f"Add {sa} and {sb}.",
            f"What is {sa} + {sb}?",
            f"Find the sum of {sa} and {sb}.",
            f"Compute {sa} + {sb}.",
        )
    )
    steps = []
    da, db = str(a)[::-1], str(b)[::-1]
    carry, out = 0, ""
    for i in range(max(len(da), len(db))):
        terms = [int(d[i]) for d in (da, db) if i < len(d)] + ([carry] if carry else [])
        total = sum(terms)
        carry, digit = divmod(total, 10)
        out = str(digit) + out
        steps.append(f"{' + '.join(map(str, terms))} = {total} -> {out}" + (" carry 1" if carry else ""))
    if carry:
        out = "1" + out
        steps.append(f"carry 1 -> {out}")
    steps.append(f"so {a} + {b} = {a + b}")
    return Part(
        "Multi-digit addition", q, Fraction(a + b), steps, f"{a} + {b} = {a + b}", level, {"a": a, "b": b}
    )


def gen_subtraction(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 12 <= fed.value <= 99999:
            return None
        a = fed.value
        b = rng.randint(2, a - 1)
    else:
        a = max(12, _digits_of(level, rng))
        b = rng.randint(2 if level == 1 else 10 ** (level - 1), a - 1)
    sa = _op(fed, a)
    q = rng.choice(
        (
            f"Subtract {b} from {sa}.",
            f"What is {sa} - {b}?",
            f"Find the difference {sa} - {b}.",
            f"Compute {sa} minus {b}.",
        )
    )
    steps = []
    da, db = str(a)[::-1], str(b)[::-1]
    borrow, out = 0, ""
    for i in range(len(da)):
        top, bot = int(da[i]), int(db[i]) if i < len(db) else 0
        new_borrow = 1 if top - borrow < bot else 0
        eff = top + 10 * new_borrow
        digit = eff - borrow - bot
        out = str(digit) + out
        expr = f"{eff}" + (" - 1" if borrow else "") + (f" - {bot}" if i < len(db) else "")
        steps.append(f"{expr} = {digit} -> {out}" + (" borrow 1" if new_borrow else ""))
        borrow = new_borrow
    steps.append(f"so {a} - {b} = {a - b}")
    return Part(
        "Multi-digit subtraction", q, Fraction(a - b), steps, f"{a} - {b} = {a - b}", level, {"a": a, "b": b}
    )


def gen_multiplication(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 2 <= fed.value <= 999:
            return None
        a = fed.value
        b = rng.randint(3, 99 if level > 1 else 9)
    else:
        a = rng.randint(12, 99) if level < 3 else rng.randint(102, 999)
        b = rng.randint(3, 9) if level == 1 else rng.randint(12, 99)
    sa = _op(fed, a)
    q = rng.choice(
        (
            f"Multiply {sa} by {b}.",
            f"What is {sa} × {b}?",
            f"Find the product of {sa} and {b}.",
            f"Compute {sa} times {b}.",
        )
    )
    steps, partials = [], []
    for place, d in enumerate(str(b)[::-1]):
        factor = int(d) * 10**place
        if factor == 0:
            continue
        partials.append(a * factor)
        steps.append(f"{a} * {factor} = {a * factor}")
    if len(partials) > 1:
        steps.append(f"{' + '.join(map(str, partials))} = {a * b}")
    steps.append(f"so {a} * {b} = {a * b}")
    return Part(
        "Long multiplication", q, Fraction(a * b), steps, f"{a} * {b} = {a * b}", level, {"a": a, "b": b}
    )


def gen_order_of_operations(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None and not 0 <= fed.value <= 500:
        return None
    n_ops = level + 1
    while True:
        nums = [rng.randint(2, 12) for _ in range(n_ops + 1)]
        ops = [rng.choice("+-*") for _ in range(n_ops)]
        if "*" in ops and ("+" in ops or "-" in ops):
            break
    if fed is not None:
        nums[0] = fed.value
    shown = [_op(fed, nums[0]), *map(str, nums[1:])]
    expr = shown[0] + "".join(f" {o} {n}" for o, n in zip(ops, shown[1:], strict=True))
    q = rng.choice(
        (
            f"Evaluate {expr} using the order of operations.",
            f"Using the order of operations, compute {expr}.",
            f"Respecting operator precedence, what is {expr}?",
        )
    )
    steps = []
    # multiplications first: collapse runs of '*'
    terms, signs = [nums[0]], ["+"]
    for o, n in zip(ops, nums[1:], strict=True):
        if o == "*":
            prod = terms[-1] * n
            steps.append(f"{terms[-1]} * {n} = {prod}")
            terms[-1] = prod
        else:
            terms.append(n)
            signs.append(o)
    acc = terms[0]
    for s, t in zip(signs[1:], terms[1:], strict=True):
        new = acc + t if s == "+" else acc - t
        steps.append(f"{acc} {s} {t} = {new}")
        acc = new
    full = str(nums[0]) + "".join(f" {o} {n}" for o, n in zip(ops, nums[1:], strict=True))
    return Part(
        "Order of operations", q, Fraction(acc), steps, f"{full} = {acc}", level, {"nums": nums, "ops": ops}
    )


def gen_exact_division(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        divisors = [d for d in range(2, 20) if fed.value % d == 0 and fed.value // d >= 2]
        if not divisors:
            return None
        d = rng.choice(divisors)
        n = fed.value
        qv = n // d
    else:
        # A two-digit divisor and a quotient of three digits at level 1 (four, five above): the trace writes
        # the quotient without the long division, so it cannot be guessed from the operands. This is the
        # world's trap leaf; quotients up to 50 (the first generator) were guessed half the time.
        d = rng.randint(11, 19 if level == 1 else 49)
        qv = rng.randint(10 ** (level + 1), 10 ** (level + 2) - 1)
        n = qv * d
    sn = _op(fed, n)
    q = rng.choice(
        (f"Divide {sn} by {d}.", f"What is {sn} divided by {d}?", f"Compute the quotient {sn} ÷ {d}.")
    )
    steps = [f"{n} / {d} = {qv}", f"check: {d} * {qv} = {n}"]
    return Part("Exact division", q, Fraction(qv), steps, f"{n} / {d} = {qv}", level, {"n": n, "d": d})


# ============================================================================ Number theory
def gen_gcd(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 4 <= fed.value <= 5000:
            return None
        a = fed.value
        divs = [g for g in range(2, min(a, 30)) if a % g == 0] or [1]
        g = rng.choice(divs)
        b = g * rng.randint(2, max(2, 12 * level))
        if b == a:
            b += g
    else:
        g = rng.randint(1, 6 * level + 3)
        x, y = rng.randint(2, 4 + 5 * level), rng.randint(2, 4 + 5 * level)
        if x == y:
            y += 1
        a, b = g * x, g * y
    sa = _op(fed, a)
    q = rng.choice(
        (
            f"Compute the greatest common divisor of {sa} and {b}.",
            f"Find the greatest common divisor of {sa} and {b}.",
            f"What is the greatest common divisor of {sa} and {b}?",
            f"Find gcd({sa}, {b}).",
        )
    )
    hi, lo = max(a, b), min(a, b)
    steps = []
    while lo:
        qq, r = divmod(hi, lo)
        steps.append(f"{hi} = {qq} * {lo} + {r}")
        hi, lo = lo, r
    steps.append(f"so gcd = {hi}")
    return Part(
        "Greatest common divisor", q, Fraction(hi), steps, f"gcd({a}, {b}) = {hi}", level, {"a": a, "b": b}
    )


def gen_lcm(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    top = (9, 15, 24)[level - 1]
    for _ in range(30):
        a = fed.value if fed is not None else rng.randint(2, top)
        b = rng.randint(2, top)
        if fed is not None and not 2 <= a <= 40:
            return None
        if a == b:
            continue
        hi, lo = max(a, b), min(a, b)
        lcm = a * b // gcd(a, b)
        if lcm // hi <= 7:
            break
    else:
        return None
    sa = _op(fed, a)
    q = rng.choice(
        (
            f"Find the least common multiple of {sa} and {b}.",
            f"What is the least common multiple of {sa} and {b}?",
            f"Compute lcm({sa}, {b}).",
        )
    )
    multiples = [hi * k for k in range(1, lcm // hi + 1)]
    steps = [
        f"multiples of {hi}: {', '.join(map(str, multiples))}",
        f"{lcm} = {lcm // lo} * {lo}",
        f"so lcm = {lcm}",
    ]
    return Part(
        "Least common multiple", q, Fraction(lcm), steps, f"lcm({a}, {b}) = {lcm}", level, {"a": a, "b": b}
    )


def gen_digit_sum_remainder(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if fed.value < 10:
            return None
        n = fed.value
    else:
        n = rng.randint(10 ** (level + 1), 10 ** (level + 2) - 1)
    m = rng.choice((9, 9, 3))
    sn = _op(fed, n)
    q = rng.choice(
        (
            f"What is the remainder when {sn} is divided by {m}?",
            f"Find the remainder of {sn} upon division by {m}.",
            f"Compute {sn} mod {m}.",
        )
    )
    steps = []
    cur = n
    while cur >= 10:
        digits = [int(c) for c in str(cur)]
        steps.append(f"digit sum of {cur}: {' + '.join(map(str, digits))} = {sum(digits)}")
        cur = sum(digits)
    r = n % m
    if m == 9:
        steps.append(f"{cur} leaves remainder {r}")
    else:
        steps.append(f"{cur} = {cur // 3} * 3 + {r}")
    steps.append(f"so the remainder is {r}")
    return Part(
        "Remainders by digit sums", q, Fraction(r), steps, f"{n} mod {m} = {r}", level, {"n": n, "m": m}
    )


def gen_count_divisors(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    primes = (2, 3, 5, 7)
    if fed is not None:
        n = fed.value
        if not 2 <= n <= 2000:
            return None
        rest = n
        for p in primes:
            while rest % p == 0:
                rest //= p
        if rest != 1:
            return None
    else:
        limit = (60, 400, 2000)[level - 1]
        while True:
            n = 1
            for p in primes:
                n *= p ** rng.randint(0, 3 if p < 5 else 1)
            if 6 <= n <= limit:
                break
    sn = _op(fed, n)
    q = rng.choice(
        (
            f"How many positive divisors does {sn} have?",
            f"Count the positive divisors of {sn}.",
            f"Find the number of positive integer divisors of {sn}.",
        )
    )
    steps: list[str] = []
    exps: dict[int, int] = {}
    cur = n
    for p in primes:
        while cur % p == 0:
            steps.append(f"{cur} / {p} = {cur // p}")
            cur //= p
            exps[p] = exps.get(p, 0) + 1
    fact = " * ".join(f"{p}^{e}" for p, e in exps.items())
    count = 1
    for e in exps.values():
        count *= e + 1
    steps.append(f"{n} = {fact}")
    steps.append(f"{' * '.join(f'({e} + 1)' for e in exps.values())} = {count}")
    return Part("Counting divisors", q, Fraction(count), steps, f"{n} has {count} divisors", level, {"n": n})


def gen_modpow(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 2 <= fed.value <= 12:
            return None
        b = fed.value
    else:
        b = rng.randint(2, 9)
    m = rng.randint(5, 13)
    if b % m == 0:
        m += 1
    e = rng.randint(3, 4 + level)
    sb = _op(fed, b)
    q = rng.choice(
        (
            f"What is the remainder when {sb}^{e} is divided by {m}?",
            f"Compute {sb}^{e} mod {m}.",
            f"Find the remainder of {sb}^{e} modulo {m}.",
        )
    )
    r = b % m
    steps = [f"{b} = {r} mod {m}"] if b >= m else []
    cur = r
    for k in range(2, e + 1):
        prod = cur * r
        steps.append(f"{b}^{k} = {cur} * {r} = {prod} = {prod % m} mod {m}")
        cur = prod % m
    steps.append(f"so the remainder is {cur}")
    return Part(
        "Modular exponentiation",
        q,
        Fraction(cur),
        steps,
        f"{b}^{e} mod {m} = {cur}",
        level,
        {"b": b, "e": e, "m": m},
    )


# ============================================================================ Fractions
def _reduce_steps(num: int, den: int) -> tuple[list[str], Fraction]:
    g = gcd(num, den)
    value = Fraction(num, den)
    if g > 1:
        return [f"divide by {g}: {frac_text(value)}"], value
    return [], value


def gen_add_fractions(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        return None
    top = (5, 9, 12)[level - 1]
    b, d = rng.randint(2, top), rng.randint(2, top)
    a, c = rng.randint(1, b - 1 if level < 3 else 2 * b), rng.randint(1, d - 1 if level < 3 else 2 * d)
    sub = rng.random() < 0.3
    sign = "-" if sub else "+"
    q = rng.choice(
        (
            f"Compute {a}/{b} {sign} {c}/{d} as a fraction in lowest terms.",
            f"Subtract the fraction {c}/{d} from {a}/{b}."
            if sub
            else f"Add the fractions {a}/{b} and {c}/{d}.",
            f"What is {a}/{b} {sign} {c}/{d} in simplest form?",
        )
    )
    if b == d:
        num = a - c if sub else a + c
        steps = [f"same denominator {b}", f"{a} {sign} {c} = {num}", f"{num}/{b}"]
        den = b
    else:
        den = b * d
        n1, n2 = a * d, c * b
        num = n1 - n2 if sub else n1 + n2
        steps = [
            f"common denominator {b} * {d} = {den}",
            f"{a}/{b} = {n1}/{den}, {c}/{d} = {n2}/{den}",
            f"{n1} {sign} {n2} = {num}",
            f"{num}/{den}",
        ]
    red, value = _reduce_steps(num, den)
    steps += red
    return Part(
        "Adding fractions",
        q,
        value,
        steps,
        f"{a}/{b} {sign} {c}/{d} = {frac_text(value)}",
        level,
        {"a": a, "b": b, "c": c, "d": d, "op": sign},
    )


def gen_multiply_fractions(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        return None
    top = (6, 10, 15)[level - 1]
    a, b, c, d = (rng.randint(1, top) for _ in range(4))
    b, d = max(b, 2), max(d, 2)
    q = rng.choice(
        (
            f"Multiply the fractions {a}/{b} and {c}/{d}.",
            f"Compute the product ({a}/{b}) * ({c}/{d}) in lowest terms.",
            f"What is {a}/{b} times {c}/{d}?",
        )
    )
    num, den = a * c, b * d
    steps = [f"numerators: {a} * {c} = {num}", f"denominators: {b} * {d} = {den}", f"{num}/{den}"]
    red, value = _reduce_steps(num, den)
    steps += red
    return Part(
        "Multiplying fractions",
        q,
        value,
        steps,
        f"{a}/{b} * {c}/{d} = {frac_text(value)}",
        level,
        {"a": a, "b": b, "c": c, "d": d},
    )


def gen_simplify_fraction(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    primes = (2, 3, 5, 7)
    if fed is not None:
        if not 2 <= fed.value <= 3000:
            return None
        num = fed.value
        fs = [p for p in primes if num % p == 0]
        if not fs:
            return None
        den = rng.choice(fs) * rng.randint(2, 30)
        if den == num:
            den += rng.choice(fs)
    else:
        r, s = rng.randint(1, 12), rng.randint(2, 13)
        if r == s:
            s += 1
        k = 1
        for _ in range(level + 1):
            k *= rng.choice(primes)
        num, den = r * k, s * k
    sn = _op(fed, num)
    q = rng.choice(
        (
            f"Reduce the fraction {sn}/{den} to lowest terms.",
            f"Simplify the fraction {sn}/{den}.",
            f"Write {sn}/{den} in simplest form.",
        )
    )
    steps = []
    n, d = num, den
    for p in primes:
        while n % p == 0 and d % p == 0:
            n, d = n // p, d // p
            steps.append(f"divide by {p}: {n}/{d}")
    g = gcd(n, d)
    if g > 1:  # a common factor above 7
        n, d = n // g, d // g
        steps.append(f"divide by {g}: {n}/{d}")
    if not steps:
        steps.append(f"{num} and {den} share no factor")
    value = Fraction(num, den)
    return Part(
        "Simplifying fractions",
        q,
        value,
        steps,
        f"{num}/{den} = {frac_text(value)}",
        level,
        {"num": num, "den": den},
    )


def gen_percentage(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        base = fed.value
        if not 10 <= base <= 100000 or base % 10:
            return None
        pct = rng.randrange(10, 100, 10) if base % 20 else rng.randrange(5, 100, 5)
    else:
        pct = rng.randrange(10, 100, 10) if level < 3 else rng.randrange(5, 100, 5)
        base = (20 if pct % 10 else 10) * rng.randint(1, (10, 40, 90)[level - 1])
    sb = _op(fed, base)
    q = rng.choice((f"What is {pct}% of {sb}?", f"Find {pct} percent of {sb}.", f"Compute {pct}% of {sb}."))
    tenth = base // 10
    answer = base * pct // 100
    steps = [f"10% of {base} = {tenth}"]
    if pct % 10 == 0:
        steps.append(f"{pct}% = {pct // 10} * {tenth} = {answer}")
    else:
        steps.append(f"5% = {tenth} / 2 = {tenth // 2}")
        tens = pct // 10 * tenth
        steps.append(f"{pct}% = {pct // 10} * {tenth} + {tenth // 2} = {tens} + {tenth // 2} = {answer}")
    return Part(
        "Percentages",
        q,
        Fraction(answer),
        steps,
        f"{pct}% of {base} = {answer}",
        level,
        {"pct": pct, "base": base},
    )


# ============================================================================ Algebra
def gen_linear_equation(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    a = rng.randint(2, (5, 9, 15)[level - 1])
    x = rng.randint(1, (10, 20, 40)[level - 1])
    if fed is not None:
        c = fed.value
        b = c - a * x
        if b == 0 or abs(b) > 999:
            return None
    else:
        b = rng.randint(-30 * level, 30 * level) or 7
        c = a * x + b
    sc = _op(fed, c)
    eq = f"{a}x {'+' if b > 0 else '-'} {abs(b)} = {sc}"
    q = rng.choice((f"Solve for x: {eq}.", f"Find x such that {eq}.", f"If {eq}, what is x?"))
    rhs = c - b
    move = f"subtract {b}: {a}x = {c} - {b} = {rhs}" if b > 0 else f"add {-b}: {a}x = {c} + {-b} = {rhs}"
    steps = [move, f"divide by {a}: x = {rhs} / {a} = {x}"]
    return Part("Linear equations", q, Fraction(x), steps, f"x = {x}", level, {"a": a, "b": b, "c": c})


def gen_polynomial(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 1 <= fed.value <= 15:
            return None
        x = fed.value
    else:
        x = rng.randint(1, 9) if level < 3 else rng.choice([-1, 1]) * rng.randint(1, 12)
    a = rng.randint(1, 2 + level)
    b = rng.randint(-9, 9) or 2
    c = rng.randint(-9, 9) or -3
    poly = signed_term(a, "x^2", first=True) + signed_term(b, "x") + signed_term(c, "")
    sx = _op(fed, x)
    name = rng.choice("fgp")
    q = rng.choice(
        (
            f"Evaluate the polynomial {name}(x) = {poly} at x = {sx}.",
            f"Let {name}(x) = {poly}. Compute {name}({sx}).",
            f"Find the value of {poly} when x = {sx}.",
        )
    )
    sq = x * x
    t1, t2 = a * sq, b * x
    s1 = t1 + t2
    val = s1 + c
    steps = [f"x^2 = {sq}"]
    if a != 1:
        steps.append(f"{a} * {sq} = {t1}")
    steps.append(f"{b} * {x} = {t2}")
    steps.append(f"{t1} + {t2} = {s1}" if t2 >= 0 else f"{t1} - {-t2} = {s1}")
    steps.append(f"{s1} + {c} = {val}" if c >= 0 else f"{s1} - {-c} = {val}")
    return Part(
        "Evaluating polynomials",
        q,
        Fraction(val),
        steps,
        f"value = {val}",
        level,
        {"a": a, "b": b, "c": c, "x": x},
    )


def gen_linear_system(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    a, b = rng.randint(1, 2 + level), rng.randint(1, 2 + level)
    x = rng.randint(1, 6 * level + 4)
    if fed is not None:
        p = fed.value
        y = p - a * x
        if abs(p) > 999 or abs(y) > 999:
            return None
    else:
        y = rng.randint(-5 * level, 6 * level + 4)
        p = a * x + y
    qv = b * x - y
    sp = _op(fed, p)
    want = rng.choice("xy")
    ax, bx = ("" if a == 1 else str(a)) + "x", ("" if b == 1 else str(b)) + "x"
    q = rng.choice(
        (
            f"Solve the system {ax} + y = {sp} and {bx} - y = {qv}. What is {want}?",
            f"The numbers x and y satisfy {ax} + y = {sp} and {bx} - y = {qv}. Find {want}.",
        )
    )
    steps = [f"add the equations: {a + b}x = {p} + {qv} = {p + qv}", f"x = {p + qv} / {a + b} = {x}"]
    if want == "y":
        steps.append(f"y = {p} - {a} * {x} = {y}")
    val = x if want == "x" else y
    return Part(
        "Systems of linear equations",
        q,
        Fraction(val),
        steps,
        f"x = {x}, y = {y}",
        level,
        {"a": a, "b": b, "p": p, "q": qv, "want": want},
    )


def gen_quadratic(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        return None
    span = (6, 10, 15)[level - 1]
    while True:
        r1, r2 = rng.randint(-span // 2, span), rng.randint(-span // 2, span)
        if r1 != r2 and r1 + r2 != 0 and r1 * r2 != 0:
            break
    lo, hi = min(r1, r2), max(r1, r2)
    s, p = lo + hi, lo * hi
    eq = "x^2" + signed_term(-s, "x") + signed_term(p, "") + " = 0"
    want = rng.choice(("larger", "smaller"))
    q = rng.choice(
        (
            f"Find the {want} root of {eq}.",
            f"What is the {want} solution of the quadratic equation {eq}?",
            f"Solve {eq} and give the {want} root.",
        )
    )

    def factor(r: int) -> str:
        return f"(x - {r})" if r > 0 else f"(x + {-r})"

    steps = [
        f"two numbers with product {p} and sum {s}: {lo} and {hi}",
        f"{factor(lo)}{factor(hi)} = 0",
        f"roots {lo} and {hi}, the {want} is {hi if want == 'larger' else lo}",
    ]
    val = hi if want == "larger" else lo
    return Part(
        "Quadratic equations",
        q,
        Fraction(val),
        steps,
        f"roots {lo}, {hi}",
        level,
        {"s": s, "p": p, "want": want},
    )


# ============================================================================ Combinatorics
_THINGS = ("books", "people", "cards", "flags", "runners", "songs")


def gen_permutations(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 2 <= fed.value <= 9:
            return None
        n = fed.value
    else:
        n = rng.randint(3, 4 + level)
    k = n if rng.random() < 0.5 else rng.randint(2, min(n, 3))
    sn = _op(fed, n)
    thing = rng.choice(_THINGS)
    if k == n:
        q = rng.choice(
            (
                f"In how many ways can {sn} different {thing} be arranged in a row?",
                f"How many orderings of {sn} distinct {thing} are there?",
                f"Compute the factorial {sn}!.",
            )
        )
    else:
        q = rng.choice(
            (
                f"In how many ways can {k} of {sn} different {thing} be arranged in a row?",
                f"How many ordered selections of {k} from {sn} distinct {thing} are there?",
            )
        )
    factors = list(range(n, n - k, -1))
    steps = [" * ".join(map(str, factors))] if len(factors) > 2 else []
    acc = factors[0]
    for f in factors[1:]:
        if f == 1:
            continue
        steps.append(f"{acc} * {f} = {acc * f}")
        acc *= f
    return Part("Permutations", q, Fraction(acc), steps, f"P({n}, {k}) = {acc}", level, {"n": n, "k": k})


def gen_combinations(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 3 <= fed.value <= 12:
            return None
        n = fed.value
    else:
        n = rng.randint(4, 6 + 2 * level)
    k = rng.randint(2, min(4, n - 1))
    sn = _op(fed, n)
    q = rng.choice(
        (
            f"How many ways can a committee of {k} be chosen from {sn} people?",
            f"Compute the binomial coefficient C({sn}, {k}).",
            f"How many {k}-element subsets does a set with {sn} elements have?",
        )
    )
    tops = list(range(n, n - k, -1))
    bots = list(range(k, 0, -1))
    num, den = 1, 1
    steps = [f"C({n}, {k}) = ({' * '.join(map(str, tops))}) / ({' * '.join(map(str, bots))})"]
    for t in tops:
        num *= t
    for b in bots:
        den *= b
    steps.append(f"{' * '.join(map(str, tops))} = {num}")
    steps.append(f"{' * '.join(map(str, bots))} = {den}")
    steps.append(f"{num} / {den} = {num // den}")
    return Part(
        "Combinations", q, Fraction(comb(n, k)), steps, f"C({n}, {k}) = {comb(n, k)}", level, {"n": n, "k": k}
    )


_MENUS = (
    (
        "A café offers {0} drinks, {1} sandwiches and {2} desserts. How many different meals of one drink, one sandwich and one dessert are possible?",
        3,
    ),
    (
        "A student owns {0} shirts, {1} pairs of pants and {2} hats. How many different outfits of one of each can be made?",
        3,
    ),
    ("A code is one of {0} letters followed by one of {1} digits. How many different codes are possible?", 2),
    (
        "A trip goes from town P to town Q by one of {0} roads, then to town R by one of {1} roads. How many different routes are there?",
        2,
    ),
)


def gen_multiplication_principle(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None and not 1 <= fed.value <= 99:
        return None
    template, k = rng.choice(_MENUS)
    counts = [rng.randint(2, 4 + 3 * level) for _ in range(k)]
    if fed is not None:
        counts[0] = fed.value
    shown = [_op(fed, counts[0]), *map(str, counts[1:])]
    q = template.format(*shown)
    steps, acc = [], counts[0]
    for c in counts[1:]:
        steps.append(f"{acc} * {c} = {acc * c}")
        acc *= c
    return Part(
        "Multiplication principle",
        q,
        Fraction(acc),
        steps,
        f"{' * '.join(map(str, counts))} = {acc}",
        level,
        {"counts": counts},
    )


def gen_probability(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None:
        if not 1 <= fed.value <= 60:
            return None
        r = fed.value
    else:
        r = rng.randint(1, 5 * level + 3)
    b = rng.randint(1, 5 * level + 5)
    c1, c2 = rng.choice((("red", "blue"), ("green", "yellow"), ("white", "black")))
    box = rng.choice(("bag", "box", "jar"))
    sr = _op(fed, r)
    q = rng.choice(
        (
            f"A {box} holds {sr} {c1} and {b} {c2} marbles. One marble is drawn at random. What is the probability that it is {c1}?",
            f"A {box} contains {sr} {c1} balls and {b} {c2} balls. If one ball is picked at random, what is the probability that it is {c1}?",
        )
    )
    total = r + b
    steps = [f"total = {r} + {b} = {total}", f"P = {r}/{total}"]
    red, value = _reduce_steps(r, total)
    steps += red
    return Part(
        "Basic probability", q, value, steps, f"P = {frac_text(value)}", level, {"favorable": r, "other": b}
    )


# ============================================================================ Sequences
def gen_arithmetic_sequence(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    d = rng.randint(2, 3 + 3 * level) * (1 if rng.random() < 0.8 else -1)
    n = rng.randint(5, 10 + 15 * level)
    if fed is not None:
        if not -999 <= fed.value <= 999:
            return None
        a = fed.value
        q = f"An arithmetic sequence has first term {fed.name} and common difference {d}. What is its {ordinal(n)} term?"
        steps = []
    else:
        a = rng.randint(-5, 10 * level)
        terms = ", ".join(str(a + i * d) for i in range(3))
        q = rng.choice(
            (
                f"The arithmetic sequence {terms}, ... continues. What is its {ordinal(n)} term?",
                f"What is the {ordinal(n)} term of the arithmetic sequence {terms}, ...?",
            )
        )
        steps = [f"d = {a + d} - {a} = {d}"]
    jump = (n - 1) * d
    val = a + jump
    steps += [f"a_{n} = {a} + {n - 1} * {d}", f"{n - 1} * {d} = {jump}", f"{a} + {jump} = {val}"]
    return Part(
        "Arithmetic sequences", q, Fraction(val), steps, f"a_{n} = {val}", level, {"a": a, "d": d, "n": n}
    )


def gen_arithmetic_series(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None or rng.random() < 0.4:
        if fed is not None and not 2 <= fed.value <= 200:
            return None
        n = fed.value if fed is not None else rng.randint(5, 20 * level)
        sn = _op(fed, n)
        q = rng.choice(
            (f"Find the sum 1 + 2 + 3 + ... + {sn}.", f"What is the sum of the first {sn} positive integers?")
        )
        prod = n * (n + 1)
        steps = [f"sum = {n} * {n + 1} / 2", f"{n} * {n + 1} = {prod}", f"{prod} / 2 = {prod // 2}"]
        return Part(
            "Arithmetic series",
            q,
            Fraction(prod // 2),
            steps,
            f"sum = {prod // 2}",
            level,
            {"first": 1, "d": 1, "n": n},
        )
    a, d = rng.randint(1, 10), rng.randint(2, 2 + 2 * level)
    n = rng.randint(4, 6 + 4 * level)
    last = a + (n - 1) * d
    q = rng.choice(
        (
            f"Find the sum of the arithmetic series {a} + {a + d} + {a + 2 * d} + ... + {last}.",
            f"Compute {a} + {a + d} + {a + 2 * d} + ... + {last}, where the terms increase by {d}.",
        )
    )
    prod = (a + last) * n
    steps = [
        f"number of terms = ({last} - {a}) / {d} + 1 = {n}",
        f"sum = ({a} + {last}) * {n} / 2",
        f"{a + last} * {n} = {prod}",
        f"{prod} / 2 = {prod // 2}",
    ]
    return Part(
        "Arithmetic series",
        q,
        Fraction(prod // 2),
        steps,
        f"sum = {prod // 2}",
        level,
        {"first": a, "d": d, "n": n},
    )


def gen_geometric_sequence(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    r = rng.randint(2, 2 + level)
    n = rng.randint(4, 4 + level)
    if fed is not None:
        if not 1 <= fed.value <= 50:
            return None
        a = fed.value
        q = f"A geometric sequence has first term {fed.name} and common ratio {r}. What is its {ordinal(n)} term?"
        steps = []
    else:
        a = rng.randint(1, 3 + 2 * level)
        q = rng.choice(
            (
                f"The geometric sequence {a}, {a * r}, {a * r * r}, ... continues. What is its {ordinal(n)} term?",
                f"What is the {ordinal(n)} term of the geometric sequence {a}, {a * r}, {a * r * r}, ...?",
            )
        )
        steps = [f"r = {a * r} / {a} = {r}"]
    terms = [a * r**i for i in range(n)]
    steps.append(f"terms: {', '.join(map(str, terms))}")
    return Part(
        "Geometric sequences",
        q,
        Fraction(terms[-1]),
        steps,
        f"term {n} = {terms[-1]}",
        level,
        {"a": a, "r": r, "n": n},
    )


def gen_recursive_sequence(rng: random.Random, level: int, fed: Fed | None) -> Part | None:
    if fed is not None and not 0 <= fed.value <= 50:
        return None
    n = rng.randint(5, 5 + level)
    a1 = fed.value if fed is not None else rng.randint(1, 9)
    s1 = _op(fed, a1)
    if rng.random() < 0.5:
        a2 = rng.randint(1, 9)
        q = rng.choice(
            (
                f"A sequence has a_1 = {s1}, a_2 = {a2} and a_n = a_(n-1) + a_(n-2) for n >= 3. Find a_{n}.",
                f"Define a_1 = {s1}, a_2 = {a2} and each later term as the sum of the two before it. What is a_{n}?",
            )
        )
        vals, steps = [a1, a2], []
        for i in range(3, n + 1):
            vals.append(vals[-1] + vals[-2])
            steps.append(f"a_{i} = {vals[-2]} + {vals[-3]} = {vals[-1]}")
        kind, coef, const = "fib", 1, a2
    else:
        coef, const = rng.randint(2, 3), rng.randint(-3, 3) or 1
        n = min(n, 6)
        rule = f"a_n = {coef}a_(n-1) {'+' if const > 0 else '-'} {abs(const)}"
        q = rng.choice(
            (
                f"A sequence has a_1 = {s1} and {rule} for n >= 2. Find a_{n}.",
                f"Let a_1 = {s1} and {rule}. What is a_{n}?",
            )
        )
        vals, steps = [a1], []
        for i in range(2, n + 1):
            vals.append(coef * vals[-1] + const)
            sign = "+" if const > 0 else "-"
            steps.append(f"a_{i} = {coef} * {vals[-2]} {sign} {abs(const)} = {vals[-1]}")
        kind = "linear"
    return Part(
        "Recursive sequences",
        q,
        Fraction(vals[-1]),
        steps,
        f"a_{n} = {vals[-1]}",
        level,
        {"kind": kind, "a1": a1, "n": n, "coef": coef, "const": const},
    )


GENERATORS: dict[str, Generator] = {
    "Multi-digit addition": gen_addition,
    "Multi-digit subtraction": gen_subtraction,
    "Long multiplication": gen_multiplication,
    "Order of operations": gen_order_of_operations,
    "Exact division": gen_exact_division,
    "Greatest common divisor": gen_gcd,
    "Least common multiple": gen_lcm,
    "Remainders by digit sums": gen_digit_sum_remainder,
    "Counting divisors": gen_count_divisors,
    "Modular exponentiation": gen_modpow,
    "Adding fractions": gen_add_fractions,
    "Multiplying fractions": gen_multiply_fractions,
    "Simplifying fractions": gen_simplify_fraction,
    "Percentages": gen_percentage,
    "Linear equations": gen_linear_equation,
    "Evaluating polynomials": gen_polynomial,
    "Systems of linear equations": gen_linear_system,
    "Quadratic equations": gen_quadratic,
    "Permutations": gen_permutations,
    "Combinations": gen_combinations,
    "Multiplication principle": gen_multiplication_principle,
    "Basic probability": gen_probability,
    "Arithmetic sequences": gen_arithmetic_sequence,
    "Arithmetic series": gen_arithmetic_series,
    "Geometric sequences": gen_geometric_sequence,
    "Recursive sequences": gen_recursive_sequence,
}

# Leaves whose generator never takes an earlier result (they can only start a composed problem).
UNFED_LEAVES = frozenset({"Adding fractions", "Multiplying fractions", "Quadratic equations"})

__all__ = [
    "GENERATORS",
    "HARD_LEAVES",
    "UNFED_LEAVES",
    "Fed",
    "Generator",
    "Part",
    "fmt",
    "frac_text",
    "ordinal",
]
