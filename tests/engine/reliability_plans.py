"""Plans the reliability tests run in real CLI processes (`reliability_plans:NAME`).

Every step appends "<node> <generation> <attempt>" to the file in $FAULT_LOG as it
starts (one write(2) on an O_APPEND descriptor, so a kill -9 never leaves half
a line) and sleeps $FAULT_DELAY seconds, so a test can kill the process at
any moment and later count which steps ran again.
"""

from __future__ import annotations

import asyncio
import math
import os
import random

from pydantic import BaseModel

from reasoner import Plan
from reasoner.search import Budget, Found, Search, Started


class Task(BaseModel):
    n: int


class Num(BaseModel):
    v: int
    generation: int = 0


class Item(BaseModel):
    k: int


async def _started(ctx) -> None:  # noqa: ANN001
    log = os.environ.get("FAULT_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{ctx.step} {ctx.generation} {ctx.attempt}\n".encode())
        finally:
            os.close(fd)
    await asyncio.sleep(float(os.environ.get("FAULT_DELAY", "0")))


def _draw(ctx, bound: int = 100) -> int:  # noqa: ANN001
    return random.Random(ctx.seed).randrange(bound)


# ------------------------------------------------------------------ fault plan
# start -> hop0..hop9 -> draft -> 6 branches (fan-out) -----------------------\
#                            \-> judge (fails until draft is regenerated: a backtrack)
#                                  -> grow (spawns 6 leaves at run time) -> total (fan-in)
faulty = Plan("faulty", input=Task, description="Fan-out, a backtrack and run-time expansion.")
HOPS, BRANCHES, LEAVES = 10, 6, 6


@faulty.step
async def start(ctx, task: Task) -> Num:
    await _started(ctx)
    return Num(v=task.n + _draw(ctx))


async def _hop(ctx, previous: Num) -> Num:  # noqa: ANN001
    await _started(ctx)
    return Num(v=previous.v + _draw(ctx))


for _i in range(HOPS):
    faulty.add_step(_hop, name=f"hop{_i}", inputs={"previous": f"hop{_i - 1}" if _i else "start"})


async def _draft(ctx, previous: Num) -> Num:  # noqa: ANN001
    await _started(ctx)
    return Num(v=previous.v + _draw(ctx), generation=ctx.generation)


faulty.add_step(_draft, name="draft", inputs={"previous": f"hop{HOPS - 1}"})


async def _branch(ctx, draft: Num) -> Num:
    await _started(ctx)
    return Num(v=draft.v * 2 + _draw(ctx, 10))


for _i in range(BRANCHES):
    faulty.add_step(_branch, name=f"branch{_i}", inputs={"draft": "draft"})


@faulty.step(retries=1, backtrack=False)
async def judge(ctx, draft: Num) -> Num:
    await _started(ctx)
    if draft.generation == 0:
        raise ValueError("the first draft is never good enough")
    return Num(v=draft.v + _draw(ctx))


@faulty.template
async def leaf(ctx, item: Item) -> Num:
    await _started(ctx)
    return Num(v=item.k * 10 + _draw(ctx, 10))


@faulty.step(backtrack=False)
async def grow(ctx, judge: Num) -> Num:
    await _started(ctx)
    for k in range(LEAVES):
        ctx.spawn(leaf, f"leaf{k}", Item(k=k))
    return judge


async def _total(ctx, grow: Num, branches: list[Num]) -> Num:  # noqa: ANN001
    await _started(ctx)
    leaves = ctx.expansion("grow").values()
    return Num(v=grow.v + sum(b.v for b in branches) + sum(x.v for x in leaves))  # type: ignore[attr-defined]


faulty.add_step(_total, name="total",
                inputs={"grow": "grow", "branches": [f"branch{i}" for i in range(BRANCHES)]})


# ------------------------------------------------------------ non-finite floats
class Measure(BaseModel):
    value: float
    spread: list[float]
    maybe: float | None = None


class Summary(BaseModel):
    finite: bool


non_finite = Plan("non-finite", input=Task, description="Outputs holding NaN and infinities.")


@non_finite.step
async def measure(ctx, task: Task) -> Measure:
    await _started(ctx)
    return Measure(value=math.nan, spread=[math.inf, -math.inf, 0.5], maybe=None)


@non_finite.step
async def summarize(ctx, measure: Measure) -> Summary:
    await _started(ctx)
    return Summary(finite=math.isfinite(measure.value))


# ------------------------------------------------------- sampling and search
# start -> pick (6 samples at once, a vote) -> climb (a best-first search, a level a node)
sampled = Plan("sampled", input=Task, description="A voted step of 6 samples, then a search.")


class Climb(BaseModel):
    n: int
    goal: int


async def _pick_sample(ctx, start: Num) -> Num:  # noqa: ANN001
    await _started(ctx)
    await asyncio.sleep(float(os.environ.get("FAULT_DELAY", "0")) * (ctx.attempt % 3))
    return Num(v=start.v + _draw(ctx, 3))


def _closeness(ctx, state: Climb) -> float:  # noqa: ANN001
    return -abs(state.goal - state.n) + _draw(ctx, 10) / 100


async def _logged_moves(ctx, state: Climb) -> list[Climb]:  # noqa: ANN001
    await _started(ctx)
    return [state.model_copy(update={"n": state.n + step}) for step in (1, 2, 3)]


async def _begin(ctx, task: Task) -> Num:  # noqa: ANN001
    await _started(ctx)
    return Num(v=task.n + _draw(ctx))


sampled.add_step(_begin, name="begin")
sampled.add_step(_pick_sample, name="pick", inputs={"start": "begin"}, samples=6,
                 select="vote", vote=lambda out: out.v)
climb = Search(sampled, "climb", state=Climb, propose=_logged_moves, value=_closeness,
               goal=lambda s: s.n == s.goal, strategy="best", uses=())


async def _search(ctx, pick: Num) -> Started:  # noqa: ANN001
    await _started(ctx)
    return climb.start(ctx, [Climb(n=0, goal=pick.v % 20 + 12)], Budget(levels=40))


def _found(ctx, search: Started) -> Found[Climb]:  # noqa: ANN001
    return climb.result(ctx, "search")


sampled.add_step(_search, name="search")
sampled.add_step(_found, name="found")
