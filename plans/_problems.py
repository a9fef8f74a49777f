"""Arithmetic word problems with known answers, made from templates by a seed.

Used to measure the verified-digits plan against a single LM pass, and as
ready-made inputs: `python -m plans._problems 50 --seed 0 > problems.jsonl`.
Not a plan: the leading underscore keeps plan lookup (`known_plans`) from importing it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

NAMES = ["Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Zoe"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "stamps"]


@dataclass(frozen=True)
class WordProblem:
    question: str
    answer: int


def _add(r: random.Random, name: str, item: str) -> WordProblem:
    a, b = r.randint(5, 60), r.randint(2, 40)
    return WordProblem(f"{name} has {a} {item}. {name} buys {b} more {item}. "
                       f"How many {item} does {name} have now?", a + b)


def _subtract(r: random.Random, name: str, item: str) -> WordProblem:
    a = r.randint(20, 90)
    b = r.randint(2, a - 1)
    return WordProblem(f"{name} had {a} {item} and gave {b} of them to a friend. "
                       f"How many {item} does {name} have left?", a - b)


def _multiply(r: random.Random, name: str, item: str) -> WordProblem:
    a, b = r.randint(2, 12), r.randint(2, 9)
    return WordProblem(f"A box holds {a} {item}. {name} has {b} full boxes. "
                       f"How many {item} does {name} have?", a * b)


def _divide(r: random.Random, name: str, item: str) -> WordProblem:
    b, each = r.randint(2, 8), r.randint(2, 12)
    return WordProblem(f"{name} shares {b * each} {item} equally among {b} friends. "
                       f"How many {item} does each friend get?", each)


def _two_steps(r: random.Random, name: str, item: str) -> WordProblem:
    a, b = r.randint(2, 6), r.randint(3, 12)
    c = r.randint(1, a * b - 1)
    return WordProblem(f"There are {a} bags with {b} {item} in each bag. {name} takes {c} {item}. "
                       f"How many {item} are left in the bags?", a * b - c)


TEMPLATES: list[Callable[[random.Random, str, str], WordProblem]] = [
    _add, _subtract, _multiply, _divide, _two_steps,
]


def make_problems(count: int, seed: int = 0) -> list[WordProblem]:
    """`count` problems cycling through the templates; the same seed gives the same list."""
    rng = random.Random(seed)
    return [TEMPLATES[i % len(TEMPLATES)](rng, rng.choice(NAMES), rng.choice(ITEMS))
            for i in range(count)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for problem in make_problems(args.count, args.seed):
        print(json.dumps({"question": problem.question}))
