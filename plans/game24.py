"""game24: reach exactly 24 from four numbers with + - * /, each number used once.

Three strategies behind the same input (`strategy`), `search` and `random` given the
same budget counted in proposals (`budget`: moves put forward, one legal move each),
so that they compare at equal proposals:
- `search` (default): a best-first Tree-of-Thoughts search through `reasoner.search`,
  one state expanded per level, a level a node. Moves are legal by construction:
  `legal_moves` enumerates a state's moves exactly, and the language model ranks them
  with one `choose` call whose options are the move lines "a op b = c (left: ...)"
  after a few-shot prompt; the `branch` best become children (one proposal each; by
  default about the square root of the budget over five, see `branching`). A
  state with two numbers left proposes all its moves instead (at most six, no LM
  call): the exact goal check then sees every way to finish it, for fewer proposals
  than it took to reach it. New states are valued by the LM's probabilities of the
  judgments " sure", " likely" and " impossible" after a value prompt, weighted
  1 / 0.05 / 0 as Tree-of-Thoughts weights sampled judgments (one scoring pass per
  state instead of three sampled generations), plus their depth, so that the search
  finishes the states it has opened, most promising first, before opening more. It
  goes on until a state is 24, nothing is left open, or the proposals are spent.
- `direct`: one LM pass that answers with an expression (one proposal).
- `random`: uniformly random legal moves from the start, from the start again after
  each dead end, one proposal per move, until 24 or the budget is spent.
`answer` checks the final expression exactly: it must equal 24 and use each input
number once. A puzzle left unsolved ends the run `failed`, naming what was spent.

`random_success` (the exact chance that random legal moves reach 24) measures how
hard a puzzle is; `hard_puzzles` draws the benchmark's hard set by it.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from reasoner import Context, Plan, Run, checks
from reasoner.arithmetic import ExpressionError, evaluate
from reasoner.search import Budget, Found, Search, Started

TARGET = Fraction(24)
JUDGMENTS = (" sure", " likely", " impossible")
WEIGHTS = (1.0, 0.05, 0.0)
HARD = 0.005  # hard_puzzles: random legal moves reach 24 less often than this

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


class Puzzle(BaseModel):
    numbers: list[int] = Field(min_length=4, max_length=4, description="four integers 1-13")
    strategy: Literal["search", "direct", "random"] = "search"
    branch: int | None = Field(None, ge=1, le=36, description="moves the LM picks per state "
                               "(search; default: enough to spend the budget)")
    budget: int = Field(24, ge=1, le=500, description="proposals: legal moves put forward "
                                                        "(search and random)")

    @field_validator("numbers")
    @classmethod
    def _in_range(cls, numbers: list[int]) -> list[int]:
        for i, n in enumerate(numbers):
            if not 1 <= n <= 13:
                raise ValueError(f"number {i + 1} is {n}; each must be from 1 to 13")
        return numbers


class State(BaseModel):
    numbers: list[str]  # exact rationals left, smallest first, as strings ("7", "7/2")
    exprs: list[str]  # the expression that made each number
    moves: list[str] = []  # the move lines that led here
    branch: int = 3  # moves the LM picks per state: the puzzle's, carried down

    @property
    def solved(self) -> bool:
        return len(self.numbers) == 1 and Fraction(self.numbers[0]) == TARGET


class Attempted(BaseModel):
    expression: str | None  # direct and random answer here; search answers in its levels
    calls: int
    proposals: int
    stop: str | None = None
    search: Started | None = None


class Answer(BaseModel):
    expression: str | None
    strategy: str
    calls: int  # LM calls for this puzzle
    proposals: int  # legal moves put forward (direct: its one expression)
    stop: str | None  # why it ended: "goal", "exhausted", or "proposals" (the budget spent)


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


def _moves(values: Sequence[Fraction]) -> list[tuple[tuple[Fraction, ...], int, str, int]]:
    """Every legal move on `values` as (numbers left, sorted; i, op, j for values[i] op values[j]).

    Each unordered pair once; + and * once, - and / in both orders; no division by
    zero; of moves that leave the same numbers, the first.
    """
    seen: set[tuple[Fraction, ...]] = set()
    found = []
    for i, j in itertools.combinations(range(len(values)), 2):
        rest = [v for k, v in enumerate(values) if k not in (i, j)]
        for a, op, b in ((i, "+", j), (i, "*", j), (i, "-", j), (j, "-", i), (i, "/", j),
                         (j, "/", i)):
            result = _apply(values[a], op, values[b])
            if result is None:
                continue
            left = tuple(sorted([*rest, result]))
            if left not in seen:
                seen.add(left)
                found.append((left, a, op, b))
    return found


def branching(puzzle: Puzzle) -> int:
    """The puzzle's `branch`, else the least k with 5k^2 >= budget: k moves from the start,
    k from each of those, up to six from each state of two numbers make about 7k^2
    proposals, so the search has room to spend its budget (but, with fewer moves after
    repeats, may still run out of open states: then it ends "exhausted")."""
    return puzzle.branch or math.ceil(math.sqrt(puzzle.budget / 5))


def start(puzzle: Puzzle) -> State:
    ordered = sorted(puzzle.numbers)
    return State(numbers=[str(n) for n in ordered], exprs=[str(n) for n in ordered],
                 branch=branching(puzzle))


def legal_moves(state: State) -> list[State]:
    """The state after each legal move (see `_moves`), its move line last in `moves`."""
    values = [Fraction(n) for n in state.numbers]
    children = []
    for _, i, op, j in _moves(values):
        result = _apply(values[i], op, values[j])
        assert result is not None  # _moves keeps defined moves only
        made = [(v, e) for k, (v, e) in enumerate(zip(values, state.exprs, strict=True))
                if k not in (i, j)]
        made.append((result, f"({state.exprs[i]} {op} {state.exprs[j]})"))
        made.sort(key=lambda pair: pair[0])  # stable: equal numbers keep their order
        numbers = [_text(v) for v, _ in made]
        line = (f"{_text(values[i])} {op} {_text(values[j])} = {_text(result)} "
                f"(left: {' '.join(numbers)})")
        children.append(State(numbers=numbers, exprs=[e for _, e in made],
                              moves=[*state.moves, line], branch=state.branch))
    return children


@functools.cache
def _success(values: tuple[Fraction, ...]) -> Fraction:
    if len(values) == 1:
        return Fraction(values[0] == TARGET)
    moves = _moves(values)
    return sum((_success(left) for left, *_ in moves), Fraction(0)) / len(moves)


def random_success(numbers: Sequence[int | Fraction]) -> float:
    """The exact probability that uniformly random legal moves from `numbers` reach 24.

    Every sequence of moves is enumerated (a few thousand per puzzle) with exact
    fractions, each move drawn uniformly from `legal_moves`, as the `random`
    strategy draws them. Zero means unsolvable.
    """
    return float(_success(tuple(sorted(Fraction(n) for n in numbers))))


def hard_puzzles(count: int, seed: int = 0, threshold: float = HARD) -> list[list[int]]:
    """`count` solvable puzzles that random legal moves solve with probability below
    `threshold` (see `random_success`), drawn by `seed` from every multiset of four
    numbers 1-13, in the order drawn. ValueError if there are fewer than `count`."""
    every = list(itertools.combinations_with_replacement(range(1, 14), 4))
    random.Random(seed).shuffle(every)
    hard = [list(p) for p in itertools.islice(
        (p for p in every if 0 < random_success(p) < threshold), count)]
    if len(hard) < count:
        raise ValueError(f"only {len(hard)} puzzles have 0 < random_success < {threshold}")
    return hard


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


# ----------------------------------------------------------------- the steps
async def propose(ctx: Context, state: State) -> list[State]:
    """The state's `branch` legal moves the LM ranks highest; with two numbers left, all."""
    children = legal_moves(state)
    if len(state.numbers) <= 2 or len(children) <= state.branch:
        return children
    prompt = f"{RULES}\n{PROPOSE_EXAMPLE}\nInput: {' '.join(state.numbers)}\nPossible next steps:"
    by_line = {child.moves[-1]: child for child in children}
    ranked = await ctx.lm.choose(prompt, list(by_line))
    return [by_line[choice.text] for choice in ranked.choices[:state.branch]]


async def value(ctx: Context, state: State) -> float:
    """Depth, plus sure / likely / impossible weighted by the LM's probability of each."""
    prompt = (f"Evaluate if the numbers {' '.join(state.numbers)} can reach 24 with + - * / "
              f"(sure / likely / impossible).\nJudgment:")
    logprobs = await ctx.lm.score(prompt, list(JUDGMENTS))
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    judged = sum(w * p for w, p in zip(WEIGHTS, weights, strict=True)) / sum(weights)
    return len(state.moves) + judged


levels = Search(plan, "level", state=State, propose=propose, value=value,
                goal=lambda state: state.solved, key=lambda state: state.numbers,
                dead=lambda state: len(state.numbers) == 1 and not state.solved,
                strategy="best", width=1)


def _walk(puzzle: Puzzle, seed: int) -> Attempted:
    """Random legal moves, one proposal each, from the start again after each dead end."""
    rng, proposals = random.Random(seed), 0
    while proposals < puzzle.budget:
        state = start(puzzle)
        while len(state.numbers) > 1 and proposals < puzzle.budget:
            state = rng.choice(legal_moves(state))
            proposals += 1
        if state.solved:
            return Attempted(expression=state.exprs[0], calls=0, proposals=proposals,
                             stop="goal")
    return Attempted(expression=None, calls=0, proposals=proposals, stop="proposals")


@plan.step(uses=["lm"], backtrack=False)
async def solve(ctx: Context, puzzle: Puzzle) -> Attempted:
    if puzzle.strategy == "search":
        started = levels.start(ctx, [start(puzzle)], Budget(proposals=puzzle.budget))
        return Attempted(expression=None, calls=0, proposals=0, search=started)
    if puzzle.strategy == "random":
        return _walk(puzzle, ctx.seed)
    numbers = " ".join(map(str, puzzle.numbers))
    generation = await ctx.lm.generate(
        f"Use the numbers {numbers} and + - * / to make 24, using each number exactly "
        f"once. Reply with the expression only, like (10 - 4) * (13 - 9).",
        max_new_tokens=32, temperature=0.7, seed=ctx.seed)
    line = next((t for t in generation.text.splitlines() if re.search(r"\d", t)), "")
    expression = re.sub(r"[^\d+\-*/×÷x() .]", "", line.split("=")[0]).strip() or None
    return Attempted(expression=expression, calls=1, proposals=1)


@plan.step(backtrack=False)
async def answer(ctx: Context, puzzle: Puzzle, solve: Attempted) -> Answer:
    if solve.search is None:
        return Answer(expression=solve.expression, strategy=puzzle.strategy, calls=solve.calls,
                      proposals=solve.proposals, stop=solve.stop)
    return searched(levels.result(ctx, "solve"))


def searched(found: Found[State]) -> Answer:
    """The answer of a finished search: the goal's expression, what the search spent."""
    return Answer(expression=found.goal.state.exprs[0] if found.goal else None,
                  strategy="search", calls=found.spent.lm_calls,
                  proposals=found.spent.proposals, stop=found.stop)


@plan.headline
def expression_or_spending(run: Run) -> str:
    """"((13 - 9) * (10 - 4)) = 24, 8 proposals, 4 LM calls (search)", or what was spent."""
    out = run.steps["answer"].output
    if out is not None:  # only an expression that reaches 24 passes
        return (f"{out.expression} = 24, {out.proposals} proposals, {out.calls} LM calls "
                f"({out.strategy})")
    levels = [o for name, o in run.outputs.items() if name.startswith("solve/")]
    if levels:
        spent = max(levels, key=lambda level: level.level).spent
        proposals, calls = spent.proposals, spent.lm_calls
    elif (solve := run.steps["solve"].output) is not None:
        proposals, calls = solve.proposals, solve.calls
    else:
        return "no answer"
    return (f"no expression reaches 24 after {proposals} proposals, {calls} LM calls "
            f"({run.input.strategy})")


@answer.check
def exactly_24(puzzle: Puzzle, out: Answer) -> checks.Result:
    verdict = reaches_24(puzzle.numbers, out.expression)
    if out.expression is None and out.stop == "proposals":
        return checks.Result.fail(f"{verdict.reason}: the budget of {puzzle.budget} proposals "
                                  f"is spent ({out.proposals} proposed)")
    if out.expression is None and out.stop == "exhausted":
        return checks.Result.fail(f"{verdict.reason}: no state is left open after "
                                  f"{out.proposals} proposals")
    return verdict
