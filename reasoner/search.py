"""Search over states that grows the step graph: breadth-first beam search and best-first search.

A `Search` adds one template to a plan; every node of it is one level of a search:
1. it expands states: the whole beam (`strategy="beam"`), or the `width` best states
   still open (`strategy="best"`, best-first over everything generated so far);
2. `propose(ctx, state)` gives each expanded state's children; repeats are dropped;
3. `goal(state)`, an exact check, is asked of every child: one that passes ends the search;
   `dead(state)`, an exact check too, drops a child that can never lead to the goal
   (it counts as proposed, but is neither valued nor opened);
4. `value(ctx, state)` scores the other children (higher is better);
5. while the budget lasts and states are open, it spawns the next level.

The budget counts calls to one generator (`meter`, the language model by default), the
tokens it generated, proposals and levels, from the compute each level's attempts
recorded. A level starts only while budget is left, so a search may overshoot by what
one level spends. Because levels are nodes of the run, each is committed when it ends:
a killed search resumes at the level it was in, the report shows every level, and
`Search.result` reads the levels back:

    levels = Search(plan, "level", state=Board, propose=moves, goal=solved, value=judge)

    @plan.step(uses=["lm"])
    async def solve(ctx, puzzle: Puzzle) -> Started:
        return levels.start(ctx, [Board.first(puzzle)], Budget(lm_calls=40))

    @plan.step
    def answer(ctx, solve: Started) -> Found[Board]:
        return levels.result(ctx, "solve")

`Search.run` runs the same levels one after another inside the calling step
instead, spawning nothing, for a search that is one step of its own (a block).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from reasoner._exceptions import PlanError
from reasoner.context import Context
from reasoner.plan import Plan
from reasoner.records import Compute

S = TypeVar("S", bound=BaseModel)

Propose = Callable[[Context, Any], Awaitable[Sequence[Any]] | Sequence[Any]]
Value = Callable[[Context, Any], Awaitable[float] | float]


class Budget(BaseModel):
    """What a search may spend; None leaves a measure unbounded."""

    lm_calls: int | None = Field(None, ge=1, description="calls to the metered generator")
    generated_tokens: int | None = Field(None, ge=1)
    proposals: int | None = Field(None, ge=1, description="children proposed, repeats included")
    levels: int | None = Field(None, ge=1)


class Spent(BaseModel):
    """What a search has spent so far."""

    lm_calls: int = 0
    generated_tokens: int = 0
    proposals: int = 0
    levels: int = 0

    def over(self, budget: Budget) -> str | None:
        """The first measure that reached its budget, or None."""
        for measure in ("lm_calls", "generated_tokens", "proposals", "levels"):
            limit = getattr(budget, measure)
            if limit is not None and getattr(self, measure) >= limit:
                return measure
        return None


class Scored(BaseModel, Generic[S]):
    state: S
    value: float = 0.0
    depth: int = 0  # moves from the start


class Frontier(BaseModel, Generic[S]):
    """What one level starts from (the payload of its node)."""

    level: int
    open: list[Scored[S]]  # beam: the beam; best-first: every open state, best first
    seen: list[str] = []  # keys of every state generated so far
    spent: Spent = Spent()
    budget: Budget
    beam: int = Field(ge=1)  # states kept per level (beam)
    width: int = Field(ge=1)  # states expanded per level (best-first)


class Level(BaseModel, Generic[S]):
    """What one level did (the output of its node)."""

    level: int
    expanded: list[Scored[S]]
    children: list[Scored[S]]  # new states, valued, best first
    goal: Scored[S] | None = None
    spent: Spent  # the whole search's, up to and including this level
    stop: str | None = None  # why the search ended here: goal, exhausted or a budget measure


class Started(BaseModel):
    """What the step that starts a search may return: the search goes on in its levels."""

    search: str  # the template's name
    states: int
    budget: Budget


class Found(BaseModel, Generic[S]):
    """A finished search: the goal (or None), the best state valued, and what it cost."""

    goal: Scored[S] | None
    best: Scored[S] | None  # the highest-valued state generated, for when no goal was found
    levels: int
    spent: Spent
    stop: str | None


class Search(Generic[S]):
    """A search whose levels are nodes of a plan's run. See the module docstring."""

    def __init__(
        self,
        plan: Plan,
        name: str,
        *,
        state: type[S],
        propose: Propose,
        goal: Callable[[S], bool],
        value: Value | None = None,
        dead: Callable[[S], bool] | None = None,
        strategy: Literal["beam", "best"] = "beam",
        beam: int = 3,
        width: int = 1,
        key: Callable[[S], Hashable] | None = None,
        meter: str = "lm",
        uses: Sequence[str] = ("lm",),
        retries: int = 1,
    ) -> None:
        if strategy not in ("beam", "best"):
            raise PlanError(f"search {name!r}: strategy must be 'beam' or 'best', got {strategy!r}")
        if beam < 1 or width < 1:
            raise PlanError(f"search {name!r}: beam and width must be >= 1")
        self.name, self.state = name, state
        self._propose, self._goal, self._value, self._dead = propose, goal, value, dead
        self._strategy, self._beam, self._width = strategy, beam, width
        self._key = key or (lambda s: s.model_dump_json())
        self._meter = meter
        # The generic models made concrete for this state, so levels validate and store it.
        self._scored, self._found = Scored[state], Found[state]  # type: ignore[valid-type]
        self._frontier, self._level = Frontier[state], Level[state]  # type: ignore[valid-type]

        async def level(ctx: Context, frontier: Any) -> Any:
            done, following = await self._expand(ctx, frontier, ctx.spent(ctx.step))
            if following is not None:
                ctx.spawn(self.name, str(following.level), following)
            return done

        level.__annotations__ = {"ctx": Context, "frontier": self._frontier,
                                 "return": self._level}
        plan.add_step(level, name=name, template=True, uses=uses, retries=retries,
                      backtrack=False)

    def start(self, ctx: Context, states: Sequence[S], budget: Budget, *,
              beam: int | None = None, width: int | None = None) -> Started:
        """Spawn the first level from `states`, below the step that `ctx` belongs to.

        `beam` and `width` override the search's own for this run.
        """
        first = self._first(states, budget, beam, width)
        ctx.spawn(self.name, str(first.level), first)
        return Started(search=self.name, states=len(states), budget=budget)

    def result(self, ctx: Context, step: str) -> Found[S]:
        """The search started by `step`, read from its levels."""
        return self._result(sorted((out for out in ctx.expansion(step).values()
                                   if isinstance(out, self._level)), key=lambda lv: lv.level))

    async def run(self, ctx: Context, states: Sequence[S], budget: Budget, *,
                  beam: int | None = None, width: int | None = None) -> Found[S]:
        """The whole search inside the calling step, one level after another, nothing spawned.

        For a search that is a single step of its own (a block of a graph spec): the same
        levels and the same result as `start` then `result`, but they are not nodes, so an
        interrupted search starts over and the report shows only the step. What it spends
        is counted from `ctx.compute`, the calling attempt's, from the first level on.
        """
        frontier: Frontier[S] | None = self._first(states, budget, beam, width)
        levels: list[Level[S]] = []
        while frontier is not None:
            done, frontier = await self._expand(ctx, frontier, Compute())
            levels.append(done)
        return self._result(levels)

    def _first(self, states: Sequence[S], budget: Budget, beam: int | None,
               width: int | None) -> Frontier[S]:
        """What the first level starts from."""
        if not states:
            raise ValueError(f"search {self.name!r} needs at least one start state")
        return self._frontier(
            level=1, open=[self._scored(state=s) for s in states],
            seen=[str(self._key(s)) for s in states], budget=budget,
            beam=beam or self._beam, width=width or self._width)

    def _result(self, levels: Sequence[Level[S]]) -> Found[S]:
        """The search's result from its levels, in order."""
        generated = [c for lv in levels for c in lv.children]
        last = levels[-1] if levels else None
        return self._found(
            goal=next((lv.goal for lv in levels if lv.goal is not None), None),
            best=max(generated, key=lambda c: c.value, default=None),
            levels=len(levels), spent=last.spent if last else Spent(),
            stop=last.stop if last else None)

    # ---------------------------------------------------------------- one level
    async def _expand(self, ctx: Context, frontier: Frontier[S],
                      earlier: Compute) -> tuple[Level[S], Frontier[S] | None]:
        """One level: what it did, and the frontier of the next one (None: the search ends).

        `earlier` is what this level spent before this attempt (its failed attempts, as a node).
        """
        before = Compute.total([ctx.compute])  # a copy: the attempt's spending until now
        if self._strategy == "beam":
            expanded, rest = frontier.open, []
        else:
            expanded, rest = frontier.open[: frontier.width], frontier.open[frontier.width:]
        proposed = await asyncio.gather(*(_call(self._propose, ctx, s.state) for s in expanded))
        seen = set(frontier.seen)
        children: list[Scored[S]] = []
        for parent, states in zip(expanded, proposed, strict=True):
            for child in states:
                key = str(self._key(child))
                if key not in seen:
                    seen.add(key)
                    children.append(self._scored(state=child, depth=parent.depth + 1))
        goal = next((c for c in children if self._goal(c.state)), None)
        if self._dead is not None:
            children = [c for c in children if c is goal or not self._dead(c.state)]
        if goal is None and self._value is not None and children:
            values = await asyncio.gather(*(_call(self._value, ctx, c.state) for c in children))
            for child, value in zip(children, values, strict=True):
                child.value = float(value)
        children.sort(key=lambda c: -c.value)  # stable: ties keep the order proposed
        spent = self._spent(frontier, Compute.total([earlier, ctx.compute]), before,
                            sum(len(s) for s in proposed))
        if self._strategy == "beam":
            open_ = children[: frontier.beam]
        else:
            open_ = sorted([*rest, *children], key=lambda c: -c.value)
        stop = "goal" if goal else ("exhausted" if not open_ else spent.over(frontier.budget))
        following = None if stop is not None else self._frontier(
            level=frontier.level + 1, open=open_, seen=sorted(seen), spent=spent,
            budget=frontier.budget, beam=frontier.beam, width=frontier.width)
        return self._level(level=frontier.level, expanded=expanded, children=children,
                           goal=goal, spent=spent, stop=stop), following

    def _spent(self, frontier: Frontier[S], now: Compute, before: Compute,
               proposals: int) -> Spent:
        """The search's spending after this level: the earlier levels', and what the level
        added to the compute (`now` less `before`)."""
        previous = frontier.spent
        return Spent(
            lm_calls=previous.lm_calls + now.calls.get(self._meter, 0)
            - before.calls.get(self._meter, 0),
            generated_tokens=previous.generated_tokens + now.generated_tokens
            - before.generated_tokens,
            proposals=previous.proposals + proposals, levels=previous.levels + 1)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, awaited when it is a coroutine: propose and value may be either."""
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result
