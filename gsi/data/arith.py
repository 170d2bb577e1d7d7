"""`dataset=arith`: multi-step arithmetic generated from a seed, with worked solutions and a step checker.

A problem adds (or subtracts) a one-digit operand, 2-6 times (the default range), to a two-digit start value, the
operand drawn anew for every operation ("Compute 47+8+3+5."); its worked solution has one operation per step, steps
separated by the step delimiter, and ends with the boxed answer:

    47+8=55

    55+3=58

    58+5=63

    \\boxed{63}

Every value of the chain stays in 10..99, so many steps carry or borrow into the tens digit: an error is local to
one step and `check_steps` (which also reads mixed operators such as "Compute 47+8-3.") says which step went wrong.
Difficulty is the number of operations: every step must find its own operand in the problem, so a model's
chance of a whole solution falls with the length. (One operand repeated, toy v4, made the first step the only
hard one: pi_B's accuracy did not fall with the length. Mixed operators as well as operands were too hard for
the toy models within a CPU-minutes budget: 83% after 1,500 steps against 100% for one operator.)

The problem space is split in two by a hash of the problem's start and first operation ("Compute 47+8"): the
held-out side (`split="test"`, the dataset) and the training side (`split="train"`, what gsi/models/toy.py trains
on), so no seed ever gives a test problem that the toy models were trained on, and `capacity` can count the
held-out problems without listing them.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from gsi.config.access import get
from gsi.data.registry import DatasetSpec, Problem, register

DELIMITER = "\n\n"
LOW, HIGH = 10, 99  # every value of the chain
MAX_OPERAND = 9

_STEP = re.compile(r"^\s*(\d+)\s*([+\-])\s*(\d+)\s*=\s*(-?\d+)\s*$")
_BOXED = re.compile(r"^\s*\\boxed\{\s*(-?\d+)\s*\}\s*$")


@dataclass(frozen=True)
class ArithProblem:
    start: int
    ops: tuple[tuple[str, int], ...]  # ("+", 8), ("-", 3), ...

    @property
    def text(self) -> str:
        return "Compute " + str(self.start) + "".join(f"{o}{v}" for o, v in self.ops) + "."

    def values(self) -> list[int]:
        out = [self.start]
        for o, v in self.ops:
            out.append(out[-1] + v if o == "+" else out[-1] - v)
        return out

    @property
    def split(self) -> str:
        """'train' or 'test' (`split_of` its start and first operation)."""
        return split_of(self.start, *self.ops[0])

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> list[str]:
        vals = self.values()
        steps = [f"{vals[k]}{o}{v}={vals[k + 1]}" for k, (o, v) in enumerate(self.ops)]
        return steps + [f"\\boxed{{{self.answer}}}"]

    @property
    def solution(self) -> str:
        return DELIMITER.join(self.steps())


def split_of(start: int, op: str, operand: int) -> str:
    """'train' or 'test' for the problems that begin with this start and first operation: a fixed hash of
    "Compute 47+8", so the two sides never share a problem (and every continuation of a start and first operation
    is on one side, which is what lets `capacity` count the held-out side without listing it)."""
    key = f"Compute {start}{op}{operand}"
    return "test" if hashlib.sha256(key.encode()).digest()[0] % 2 else "train"


def random_problem(rng: random.Random, n_ops: int) -> ArithProblem:
    """n_ops operations of one operator (+ or -), each with its own operand (a digit from 2), on a two-digit
    start, the chain within 10..99."""
    while True:
        start, o = rng.randint(LOW, HIGH), rng.choice("+-")
        p = ArithProblem(start, tuple((o, rng.randint(2, MAX_OPERAND)) for _ in range(n_ops)))
        if all(LOW <= x <= HIGH for x in p.values()):
            return p


def generate(n: int, *, seed: int, min_ops: int = 2, max_ops: int = 4, split: str = "test") -> list[ArithProblem]:
    """`n` distinct problems of `split`, their number of operations uniform in [min_ops, max_ops]."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
    rng = random.Random(f"arith/{split}/{seed}/{min_ops}/{max_ops}")
    out, seen = [], set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 10_000:
            raise ValueError(f"cannot find {n} distinct {split} problems with {min_ops}..{max_ops} operations")
        p = random_problem(rng, rng.randint(min_ops, max_ops))
        if p.text in seen or p.split != split:
            continue
        seen.add(p.text)
        out.append(p)
    return out


def parse_problem(text: str) -> ArithProblem:
    m = re.fullmatch(r"Compute (\d+)((?:[+\-]\d+)+)\.", text.strip())
    if not m:
        raise ValueError(f"not an arith problem: {text!r}")
    ops = tuple((o, int(v)) for o, v in re.findall(r"([+\-])(\d+)", m.group(2)))
    return ArithProblem(int(m.group(1)), ops)


def is_answer_step(step: str) -> bool:
    """Is this the boxed-answer step ("\\boxed{61}"), not one that computes?"""
    return bool(_BOXED.match(step))


def check_steps(problem: ArithProblem | str, steps: Sequence[str]) -> list[bool]:
    """Is each step correct given the steps before it?

    Step k (0-based) of a solution must be the k-th operation of the problem applied to the value the previous
    step wrote (the start value for k = 0), with the right result; the step after the last operation must box
    the value the previous step wrote. Anything else (a wrong result, a skipped or repeated operation, a wrong
    copy, an early or extra answer, free text) is wrong. A step after a wrong one is judged on what is written
    before it, so only the step that goes wrong is wrong.
    """
    p = parse_problem(problem) if isinstance(problem, str) else problem
    verdicts, prev = [], p.start
    for k, step in enumerate(steps):
        m = _STEP.match(step)
        if k < len(p.ops):
            ok = False
            if m:
                a, o, v, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                ok = a == prev and (o, v) == p.ops[k] and c == (a + v if o == "+" else a - v)
                prev = c
            verdicts.append(ok)
        elif k == len(p.ops):
            b = _BOXED.match(step)
            verdicts.append(bool(b) and int(b.group(1)) == prev)
        else:
            verdicts.append(False)
    return verdicts


def correct_step(p: ArithProblem, k: int, prev: int) -> str | None:
    """The text step k (0-based) should have, given that the step before it wrote `prev` (the start value for
    k = 0): the k-th operation applied to prev, then the boxed prev; None after that (any step there is wrong)."""
    if k < len(p.ops):
        o, v = p.ops[k]
        return f"{prev}{o}{v}={prev + v if o == '+' else prev - v}"
    return f"\\boxed{{{prev}}}" if k == len(p.ops) else None


def _slip(a: int, o: str, v: int, rng: random.Random) -> tuple[str, int]:
    """A wrong step for `a o v` (a carry/borrow slip, a digit slip, a wrong copy of a, a wrong operand), each as
    the written result would follow from it: (text, the value it writes)."""
    c = a + v if o == "+" else a - v
    kind = rng.choice(["carry", "carry", "digit", "copy", "operand"])
    if kind == "carry":
        c = c + rng.choice([-10, 10])
    elif kind == "digit":
        c = c + rng.choice([-2, -1, 1, 2])
    elif kind == "copy":
        a = a + rng.choice([-10, -1, 1, 10])
        c = a + v if o == "+" else a - v
    else:
        v = rng.choice([x for x in range(1, MAX_OPERAND + 1) if x != v])
        c = a + v if o == "+" else a - v
    return f"{a}{o}{v}={c}", c


def _boxed_slip(value: int, rng: random.Random) -> str:
    return f"\\boxed{{{value + rng.choice([-10, -1, 1, 10])}}}"


def corrupt(p: ArithProblem, rng: random.Random) -> tuple[list[str], list[bool]]:
    """A plausible wrong solution: one step with a carry/borrow slip, a digit slip, a wrong copy or a skipped
    operation; the steps after it follow correctly from what it wrote. Returns (steps, checker labels)."""
    k = rng.randrange(len(p.ops) + 1)
    return _written(p, rng, lambda j: j == k)


def corrupt_each(p: ArithProblem, rng: random.Random, rate: float = 0.5) -> tuple[list[str], list[bool]]:
    """A solution whose every step (the answer too) is wrong with probability `rate`, independently, each step
    following from what the one before it wrote: balanced labels at every step index."""
    return _written(p, rng, lambda j: rng.random() < rate)


def _written(p: ArithProblem, rng: random.Random, wrong) -> tuple[list[str], list[bool]]:
    steps, prev = [], p.start
    for j, (o, v) in enumerate(p.ops):
        if wrong(j):
            text, prev = _slip(prev, o, v, rng)
        else:
            text, prev = f"{prev}{o}{v}={prev + v if o == '+' else prev - v}", (prev + v if o == "+" else prev - v)
        steps.append(text)
    steps.append(_boxed_slip(prev, rng) if wrong(len(p.ops)) else f"\\boxed{{{prev}}}")
    return steps, check_steps(p, steps)


def capacity(min_ops: int, max_ops: int) -> int:
    """How many distinct held-out (split "test") problems have min_ops..max_ops operations: every chain
    random_problem can draw, counted without listing them (the split depends only on the start and the first
    operation; the continuations from a value are counted by dynamic programming over the values; milliseconds)."""
    # chains[k][x]: the chains of k more operations of one operator from value x that stay in LOW..HIGH
    total = 0
    for o, sign in (("+", 1), ("-", -1)):
        chains = [{x: 1 for x in range(LOW, HIGH + 1)}]
        for _ in range(max_ops - 1):
            prev = chains[-1]
            chains.append({x: sum(prev.get(x + sign * v, 0) for v in range(2, MAX_OPERAND + 1))
                           for x in range(LOW, HIGH + 1)})
        for start in range(LOW, HIGH + 1):
            for v in range(2, MAX_OPERAND + 1):
                first = start + sign * v
                if LOW <= first <= HIGH and split_of(start, o, v) == "test":
                    total += sum(chains[k - 1][first] for k in range(min_ops, max_ops + 1))
    return total


def load_problems(cfg: Any) -> tuple[list[Problem], str]:
    """The held-out problems the dataset config asks for (n_problems, min_ops, max_ops, seed), with reference
    answer and worked solution, and where they came from (for messages)."""
    seed = int(get(cfg, "seed", 0))
    problems = generate(int(get(cfg, "n_problems", 500)), seed=seed, min_ops=int(get(cfg, "min_ops", 2)),
                        max_ops=int(get(cfg, "max_ops", 6)), split="test")
    return ([Problem(id=f"arith-{seed}-{i}", problem=p.text, reference=str(p.answer), solution=p.solution)
             for i, p in enumerate(problems)], f"gsi.data.arith, dataset.seed={seed}")


def last_answer(steps: Sequence[str]) -> int | None:
    """The boxed integer of the last step, if it is one."""
    m = _BOXED.match(steps[-1]) if steps else None
    return int(m.group(1)) if m else None


register(DatasetSpec(
    name="arith", hub_path="", hub_config=None, split="test", local_file="",
    reference=lambda row: None, reference_fields=(), generate=load_problems,
    description="generated multi-step arithmetic (gsi/data/arith.py): no files",
))
