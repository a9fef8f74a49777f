"""game24: reach exactly 24 from four numbers with + - * /, each number used once.

Three strategies behind the same input (`strategy`):
- `search` (default): a breadth-first Tree-of-Thoughts beam search through
  `reasoner.search`, which grows the step graph a level at a time. Each level
  asks the language model to propose next moves ("a op b = c (left: ...)")
  for every state of its beam, verifies every proposal exactly (rational
  arithmetic, only numbers that are left; illegal ones are dropped and
  logged with the reason), values the new states, keeps the best `beam`, and
  goes on until a state is exactly 24 or the budget of LM calls is spent.
  States are valued by LM log-probability: one scoring pass gives the
  probabilities of the judgments " sure", " likely" and " impossible" after a
  value prompt, weighted 20 / 1 / 0.001 as Tree-of-Thoughts weights sampled
  judgments. One deterministic forward pass per state replaces three
  sampled generations, which matters on a CPU.
- `direct`: one LM pass that answers with an expression.
- `random`: random legal moves, with the same budget counted in proposals.
`answer` checks the final expression exactly: it must equal 24 and use each
input number once. A puzzle left unsolved ends the run `failed`.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from reasoner import Context, Plan, checks
from reasoner.arithmetic import MAX_LINE_CHARS, ExpressionError, evaluate
from reasoner.search import Budget, Found, Search, Started

TARGET = Fraction(24)
OPS = ("+", "-", "*", "/")
JUDGMENTS = (" sure", " likely", " impossible")
WEIGHTS = (20.0, 1.0, 0.001)

PROPOSE_EXAMPLE = """Input: 2 8 8 14
Possible next steps:
2 + 8 = 10 (left: 8 10 14)
8 / 2 = 4 (left: 4 8 14)
14 + 2 = 16 (left: 8 8 16)
2 * 8 = 16 (left: 8 14 16)
8 - 2 = 6 (left: 6 8 14)
14 - 8 = 6 (left: 2 6 8)
14 / 2 = 7 (left: 7 8 8)
14 - 2 = 12 (left: 8 8 12)"""
RULES = ("Use numbers and basic arithmetic operations (+ - * /). Each step, you are only "
         "allowed to choose two of the remaining numbers to obtain a new number.")
# A move is "a op b = c", each term -?[\d./]+ ("7/2" is a term, so "8/2" is 8 / 2). One
# nested-quantifier regex for it backtracked cubically on runs of "1/1/1/..."; `parse_move`
# finds the same leftmost, longest-first match with linear scans instead.
_MOVE_OPS = frozenset("-+*/×x÷")
_MOVE_OP = re.compile(r"[-+*/×x÷]")
_TERM_RUN = re.compile(r"[\d./]+")  # one class, nothing after it: no backtracking
_AFTER_EQUALS = re.compile(r"\s*(-?[\d./]+)")  # \s* stops at '-' or a term character


def _split_move(left: str) -> tuple[str, str, str] | None:
    """`left` (the text before an '=') as "a op b" ending at its end, a as long as it can be.

    a and b are digits, '.' and '/' after an optional '-', whitespace may surround op, and
    a starts as far left as it can: the match the old regex found, in one pass.
    """
    text = left.rstrip()
    runs = [(m.start(), m.end()) for m in _TERM_RUN.finditer(text)]
    if not runs or runs[-1][1] != len(text):
        return None
    last = runs[-1][0]  # b is the last run, or a '/' inside it splits the last run
    ops = set()  # the positions an operator may take right before b
    for b in (last, last - 1) if last and text[last - 1] == "-" else (last,):
        k = b
        while k and text[k - 1].isspace():
            k -= 1
        if k and text[k - 1] in _MOVE_OPS:
            ops.add(k - 1)

    def ends_with_b(o: int) -> bool:
        return o in ops or (last <= o < len(text) - 1 and text[o] == "/")

    for start, end in runs:
        op = end
        while op < len(text) and text[op].isspace():
            op += 1
        a_end = end
        if op == len(text) or not ends_with_b(op):  # a shorter a: split at a '/' inside it
            op = text.rfind("/", start + 1, end)
            while op > start and not ends_with_b(op):
                op = text.rfind("/", start + 1, op)
            if op <= start:
                continue
            a_end = op
        if start and text[start - 1] == "-":
            start -= 1
        return text[start:a_end], text[op], text[op + 1:].lstrip()
    return None


def parse_move(line: str) -> tuple[str, str, str, str] | None:
    """The first "a op b = c" in `line` as its four pieces of text, in linear time."""
    start = 0
    while (equals := line.find("=", start)) >= 0:
        if (_MOVE_OP.search(line, start, equals) is not None
                and (result := _AFTER_EQUALS.match(line, equals + 1)) is not None
                and (move := _split_move(line[start:equals])) is not None):
            return (*move, result.group(1))
        start = equals + 1
    return None


class Puzzle(BaseModel):
    numbers: list[int] = Field(min_length=4, max_length=4, description="four integers 1-13")
    strategy: Literal["search", "direct", "random"] = "search"
    beam: int = Field(3, ge=1, le=8, description="states kept per level (search)")
    budget: int = Field(24, ge=1, le=500, description="LM calls (search) or proposals (random)")

    @field_validator("numbers")
    @classmethod
    def _in_range(cls, numbers: list[int]) -> list[int]:
        for i, n in enumerate(numbers):
            if not 1 <= n <= 13:
                raise ValueError(f"number {i + 1} is {n}; each must be from 1 to 13")
        return numbers


class State(BaseModel):
    numbers: list[str]  # exact rationals left, as strings ("7", "7/2")
    exprs: list[str]  # the expression that made each number
    moves: list[str] = []

    def fractions(self) -> list[Fraction]:
        return [Fraction(n) for n in self.numbers]

    @property
    def solved(self) -> bool:
        return len(self.numbers) == 1 and Fraction(self.numbers[0]) == TARGET


class Attempted(BaseModel):
    expression: str | None  # direct and random answer here; search answers in its levels
    calls: int
    proposals: int
    search: Started | None = None


class Answer(BaseModel):
    expression: str | None
    strategy: str
    calls: int  # LM calls for this puzzle
    proposals: int


plan = Plan("game24", input=Puzzle, description=__doc__, max_backtracks=0, examples=[
    ("make 24 from 4 9 10 13", {"numbers": [4, 9, 10, 13]}),
    ("solve the 24 game with 1, 5, 5, 5 without search", {"numbers": [1, 5, 5, 5],
                                                           "strategy": "direct"}),
])


def _text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def start(puzzle: Puzzle) -> State:
    return State(numbers=[str(n) for n in puzzle.numbers], exprs=[str(n) for n in puzzle.numbers])


def move(state: State, i: int, op: str, j: int) -> State | None:
    """The state after combining numbers i and j, or None for division by zero."""
    values = state.fractions()
    result = _apply(values[i], op, values[j])
    if result is None:
        return None
    keep = [k for k in range(len(values)) if k not in (i, j)]
    numbers = [state.numbers[k] for k in keep] + [_text(result)]
    exprs = [state.exprs[k] for k in keep] + [f"({state.exprs[i]} {op} {state.exprs[j]})"]
    line = f"{_text(values[i])} {op} {_text(values[j])} = {_text(result)} (left: {' '.join(numbers)})"
    return State(numbers=numbers, exprs=exprs, moves=[*state.moves, line])


def verify_move(state: State, line: str) -> tuple[checks.Result, State | None]:
    """Check one proposed move exactly: legal arithmetic on numbers that are left."""
    if len(line) > MAX_LINE_CHARS:
        return checks.Result.fail(
            f"line is too long to verify ({len(line)} chars, cap {MAX_LINE_CHARS})"), None
    found = parse_move(line)
    if found is None:
        return checks.Result.fail("not of the form 'a op b = c'"), None
    try:
        a, b, claimed = (Fraction(found[k]) for k in (0, 2, 3))
    except (ValueError, ZeroDivisionError):
        return checks.Result.fail("a term is not a number"), None
    op = {"×": "*", "x": "*", "÷": "/"}.get(found[1], found[1])
    values = state.fractions()
    if a not in values:
        return checks.Result.fail(f"{_text(a)} is not among the numbers left"), None
    i = values.index(a)
    rest = [k for k, v in enumerate(values) if v == b and k != i]
    if not rest:
        return checks.Result.fail(f"{_text(b)} is not among the numbers left"), None
    result = _apply(a, op, b)
    if result is None or result != claimed:
        actual = "undefined" if result is None else _text(result)
        return checks.Result.fail(f"{_text(a)} {op} {_text(b)} is {actual}, not {_text(claimed)}"), None
    return checks.Result.ok("legal"), move(state, i, op, rest[0])


def reaches_24(numbers: list[int], expression: str | None) -> checks.Result:
    """The final answer: exactly 24, and each input number used exactly once."""
    if not expression:
        return checks.Result.fail("no expression reaches 24")
    try:
        value = evaluate(expression)
    except ExpressionError as exc:
        return checks.Result.fail(f"{expression!r} is not arithmetic: {exc}")
    used = sorted(int(n) for n in re.findall(r"\d+", expression))
    if used != sorted(numbers):
        return checks.Result.fail(f"{expression} uses {used}, not {sorted(numbers)}")
    if value != TARGET:
        return checks.Result.fail(f"{expression} = {_text(value)}, not 24")
    return checks.Result.ok(f"{expression} = 24")


def solvable(numbers: list[int]) -> bool:
    """Brute force over every order of moves, exactly."""

    def search(values: list[Fraction]) -> bool:
        if len(values) == 1:
            return values[0] == TARGET
        for i, j in itertools.permutations(range(len(values)), 2):
            for op in OPS:
                result = _apply(values[i], op, values[j])
                if result is not None:
                    rest = [v for k, v in enumerate(values) if k not in (i, j)]
                    if search([*rest, result]):
                        return True
        return False

    return search([Fraction(n) for n in numbers])


def puzzles(count: int, seed: int = 0) -> list[list[int]]:
    """`count` solvable puzzles, drawn by `seed` from every multiset of four numbers 1-13."""
    every = list(itertools.combinations_with_replacement(range(1, 14), 4))
    random.Random(seed).shuffle(every)
    return [list(p) for p in itertools.islice((p for p in every if solvable(list(p))), count)]


# ----------------------------------------------------------------- the steps
async def propose(ctx: Context, state: State) -> list[State]:
    """The LM's proposed moves from `state` that are legal; the others are logged."""
    if len(state.numbers) < 2:
        return []
    prompt = f"{RULES}\n{PROPOSE_EXAMPLE}\nInput: {' '.join(state.numbers)}\nPossible next steps:"
    generation = await ctx.lm.generate(prompt, max_new_tokens=96, temperature=0.7, seed=ctx.seed)
    legal = []
    for line in (text for text in generation.text.splitlines() if text.strip()):
        verdict, child = verify_move(state, line)
        if child is None:
            ctx.log.info("rejected %r: %s", line.strip(), verdict.reason)
        else:
            legal.append(child)
    return legal


async def value(ctx: Context, state: State) -> float:
    """Sure / likely / impossible, weighted by the LM's probabilities of each judgment."""
    if len(state.numbers) == 1:
        return 0.0  # not 24, or the goal check would have ended the search
    prompt = (f"Evaluate if the numbers {' '.join(state.numbers)} can reach 24 with + - * / "
              f"(sure / likely / impossible).\nJudgment:")
    logprobs = await ctx.lm.score(prompt, list(JUDGMENTS))
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    return sum(w * p for w, p in zip(WEIGHTS, weights, strict=True)) / sum(weights)


levels = Search(plan, "level", state=State, propose=propose, value=value,
                goal=lambda state: state.solved, key=lambda state: sorted(state.numbers),
                strategy="beam", beam=3)


@plan.step(uses=["lm"], backtrack=False)
async def solve(ctx: Context, puzzle: Puzzle) -> Attempted:
    if puzzle.strategy == "search":
        started = levels.start(ctx, [start(puzzle)], Budget(lm_calls=puzzle.budget),
                               beam=puzzle.beam)
        return Attempted(expression=None, calls=0, proposals=0, search=started)
    if puzzle.strategy == "direct":
        numbers = " ".join(map(str, puzzle.numbers))
        generation = await ctx.lm.generate(
            f"Use the numbers {numbers} and + - * / to make 24, using each number exactly "
            f"once. Reply with the expression only, like (10 - 4) * (13 - 9).",
            max_new_tokens=32, temperature=0.7, seed=ctx.seed)
        line = next((t for t in generation.text.splitlines() if re.search(r"\d", t)), "")
        expression = re.sub(r"[^\d+\-*/×÷x() .]", "", line.split("=")[0]).strip() or None
        return Attempted(expression=expression, calls=1, proposals=1)
    rng, proposals = random.Random(ctx.seed), 0
    while proposals < puzzle.budget:
        state = start(puzzle)
        while len(state.numbers) > 1 and proposals < puzzle.budget:
            i, j = rng.sample(range(len(state.numbers)), 2)
            proposals += 1
            state = move(state, i, rng.choice(OPS), j) or state
        if state.solved:
            return Attempted(expression=state.exprs[0], calls=0, proposals=proposals)
    return Attempted(expression=None, calls=0, proposals=proposals)


@plan.step(backtrack=False)
async def answer(ctx: Context, puzzle: Puzzle, solve: Attempted) -> Answer:
    if solve.search is None:
        return Answer(expression=solve.expression, strategy=puzzle.strategy, calls=solve.calls,
                      proposals=solve.proposals)
    found: Found[State] = levels.result(ctx, "solve")
    return Answer(expression=found.goal.state.exprs[0] if found.goal else None,
                  strategy=puzzle.strategy, calls=found.spent.lm_calls,
                  proposals=found.spent.proposals)


@answer.check
def exactly_24(puzzle: Puzzle, out: Answer) -> checks.Result:
    return reaches_24(puzzle.numbers, out.expression)
