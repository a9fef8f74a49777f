"""`reasoner.search`: beam and best-first search whose levels are nodes of the run, or run
in one step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from reasoner import Engine, Plan, PlanError
from reasoner.report import render_run
from reasoner.run import read_run
from reasoner.search import Budget, Found, Search, Started
from reasoner.store import SQLiteStore
from reasoner.testing import FakeLM, fake_generators


class Target(BaseModel):
    start: int
    goal: int
    lm_calls: int = 100
    proposals: int | None = None


class Number(BaseModel):
    n: int
    goal: int
    path: list[str] = []


def number_plan(strategy: str = "beam", beam: int = 2, expanded: list[int] | None = None,
                delay: float = 0.0, dead=None) -> tuple[Plan, Search[Number]]:  # noqa: ANN001
    """Reach `goal` from `start` with +1 and *2; the value is closeness to the goal.

    Each proposal asks the (fake) LM once, so the budget in LM calls is exercised.
    """
    plan = Plan(f"numbers-{strategy}", input=Target)

    async def propose(ctx, state: Number) -> list[Number]:  # noqa: ANN001
        await ctx.lm.generate(f"moves from {state.n}", seed=ctx.seed)
        if expanded is not None:
            expanded.append(state.n)
        await asyncio.sleep(delay)
        return [state.model_copy(update={"n": state.n + 1, "path": [*state.path, "+1"]}),
                state.model_copy(update={"n": state.n * 2, "path": [*state.path, "*2"]})]

    def value(ctx, state: Number) -> float:  # noqa: ANN001
        return -abs(state.goal - state.n)

    search = Search(plan, "level", state=Number, propose=propose,
                    goal=lambda s: s.n == s.goal, value=value,
                    strategy=strategy, beam=beam, key=lambda s: s.n, dead=dead)

    @plan.step(uses=["lm"])
    async def solve(ctx, target: Target) -> Started:  # noqa: ANN001
        return search.start(ctx, [Number(n=target.start, goal=target.goal)],
                            Budget(lm_calls=target.lm_calls, proposals=target.proposals))

    @plan.step
    def answer(ctx, solve: Started) -> Found[Number]:  # noqa: ANN001
        return search.result(ctx, "solve")

    return plan, search


def _engine(store=None) -> Engine:  # noqa: ANN001
    return Engine(store=store, generators=fake_generators(lm=FakeLM(lambda p, s: "ok")))


def inline_plan(search: Search[Number]) -> Plan:
    """The search of `number_plan`, run inside one step after an LM call of the step's own."""
    plan = Plan("numbers-inline", input=Target)

    @plan.step(uses=["lm"])
    async def solve(ctx, target: Target) -> Found[Number]:  # noqa: ANN001
        await ctx.lm.generate("before the search", seed=ctx.seed)  # not the search's spending
        return await search.run(ctx, [Number(n=target.start, goal=target.goal)],
                                Budget(lm_calls=target.lm_calls, proposals=target.proposals))

    return plan


@pytest.mark.parametrize("strategy", ["beam", "best"])
@pytest.mark.parametrize("target", [Target(start=1, goal=10), Target(start=5, goal=11),
                                    Target(start=1, goal=1000, lm_calls=4)])
async def test_a_search_run_in_one_step_finds_what_its_levels_find(
    strategy: str, target: Target,
) -> None:
    plan, search = number_plan(strategy=strategy)
    spawned = await _engine().run(plan, target)
    inline = await _engine().run(inline_plan(search), target)
    assert list(inline.steps) == ["solve"]  # no level is a node
    found = inline.output("solve")
    assert found == spawned.output("answer")
    assert found.spent.lm_calls == inline.steps["solve"].compute.calls["lm"] - 1


async def test_a_search_run_in_one_step_stops_at_its_budget() -> None:
    _, search = number_plan(strategy="best")
    found = (await _engine().run(inline_plan(search),
                                 Target(start=1, goal=1000, lm_calls=4))).output("solve")
    assert found.goal is None and found.stop == "lm_calls"
    assert (found.spent.lm_calls, found.levels) == (4, 4)
    found = (await _engine().run(inline_plan(search),
                                 Target(start=1, goal=1000, proposals=5))).output("solve")
    assert (found.stop, found.spent.proposals) == ("proposals", 6)  # over by one level at most


async def test_dead_children_count_as_proposed_but_are_never_valued_or_opened() -> None:
    expanded: list[int] = []
    plan, _ = number_plan(strategy="best", expanded=expanded, dead=lambda s: s.n > s.goal)
    run = await _engine().run(plan, Target(start=1, goal=10))  # +1 and *2 never come back down
    found = run.output("answer")
    assert found.goal is not None and found.goal.state.n == 10
    levels = [run.output(name) for name in run.steps if name.startswith("solve/")]
    assert max(expanded) <= 10 and all(c.state.n <= 10 for lv in levels for c in lv.children)
    assert 16 in [n * 2 for n in expanded]  # 8 proposed 16, which was dropped
    assert found.spent.proposals == 2 * len(levels)  # the dead ones were proposed all the same


async def test_beam_search_reaches_the_goal_and_records_every_level() -> None:
    plan, _ = number_plan()
    run = await _engine().run(plan, Target(start=1, goal=10))
    found = run.output("answer")
    assert run.status == "succeeded"
    assert found.goal is not None and found.goal.state.n == 10 and found.stop == "goal"
    levels = [name for name in run.steps if name.startswith("solve/")]
    assert levels == ["solve/" + "/".join(map(str, range(1, k + 1)))  # each level below the last
                      for k in range(1, len(levels) + 1)]
    assert found.levels == len(levels) and found.goal.depth == len(levels)
    assert found.spent.lm_calls == sum(  # every proposal asked the LM once
        run.steps[name].compute.calls["lm"] for name in levels)
    first = run.output("solve/1")
    assert [c.state.n for c in first.children] == [2]  # 1+1 and 1*2 are the same state
    # the path the goal carries is legal: replaying it from the start reaches the goal
    n = 1
    for move in found.goal.state.path:
        n = n + 1 if move == "+1" else n * 2
    assert n == 10


async def test_the_beam_keeps_the_best_valued_children() -> None:
    expanded: list[int] = []
    plan, _ = number_plan(beam=1, expanded=expanded)
    run = await _engine().run(plan, Target(start=3, goal=24))
    levels = [run.output(name) for name in run.steps if name.startswith("solve/")]
    for level in levels[:-1]:
        assert len(level.children) <= 2
        assert [c.value for c in level.children] == sorted(
            (c.value for c in level.children), reverse=True)
    assert expanded == [3, 6, 12]  # each level expands only the best child: 3 -> 6 -> 12 -> 24
    assert run.output("answer").goal.state.n == 24


async def test_best_first_returns_to_an_older_open_state() -> None:
    expanded: list[int] = []
    plan, _ = number_plan(strategy="best", expanded=expanded)
    run = await _engine().run(plan, Target(start=5, goal=11))
    # 5 -> {6, 10}; 10 is closest, its children {11 (goal)} end it. Best-first expands
    # one state per level, so the levels are exactly the states expanded.
    assert expanded == [5, 10]
    assert run.output("answer").goal.state.n == 11


async def test_the_budget_stops_the_search_and_says_which_measure() -> None:
    plan, _ = number_plan(strategy="best")
    run = await _engine().run(plan, Target(start=1, goal=1000, lm_calls=4))
    found = run.output("answer")
    assert found.goal is None and found.stop == "lm_calls"
    assert found.spent.lm_calls == 4 and found.levels == 4
    assert found.best is not None and found.best.state.n > 1
    run = await _engine().run(plan, Target(start=1, goal=1000, proposals=5))
    assert run.output("answer").stop == "proposals"
    assert run.output("answer").spent.proposals == 6  # a level may overshoot by one level


async def test_a_search_without_open_states_ends_exhausted() -> None:
    plan = Plan("dead-end", input=Target)
    search = Search(plan, "level", state=Number, propose=lambda ctx, s: [], goal=lambda s: False)

    @plan.step(uses=["lm"])
    async def solve(ctx, target: Target) -> Started:  # noqa: ANN001
        return search.start(ctx, [Number(n=target.start, goal=target.goal)], Budget(levels=5))

    @plan.step
    def answer(ctx, solve: Started) -> Found[Number]:  # noqa: ANN001
        return search.result(ctx, "solve")

    run = await _engine().run(plan, Target(start=1, goal=2))
    assert run.output("answer").stop == "exhausted" and run.output("answer").levels == 1


def test_bad_search_options_are_refused() -> None:
    plan = Plan("bad", input=Target)
    with pytest.raises(PlanError, match="strategy"):
        Search(plan, "level", state=Number, propose=lambda c, s: [], goal=lambda s: True,
               strategy="depth")  # type: ignore[arg-type]


async def test_levels_are_stored_shown_in_the_report_and_read_back_without_the_plan(
    tmp_path: Path,
) -> None:
    plan, _ = number_plan()
    engine = _engine(SQLiteStore(tmp_path / "runs.db"))
    run = await engine.run(plan, Target(start=1, goal=10))
    stored = read_run(engine.store.load(run.run_id))
    assert [n for n in stored.steps if n.startswith("solve/")] == [
        n for n in run.steps if n.startswith("solve/")]
    assert stored.to_json() == run.to_json()
    page = render_run(stored)
    assert 'data-step="solve/1/2"' in page
    await engine.aclose()


async def test_an_interrupted_search_resumes_at_its_level_without_redoing_finished_ones(
    tmp_path: Path,
) -> None:
    expanded: list[int] = []
    plan, _ = number_plan(strategy="best", expanded=expanded, delay=0.05)
    engine = _engine(SQLiteStore(tmp_path / "runs.db"))
    job = asyncio.create_task(engine.run(plan, Target(start=1, goal=40), run_id="r"))
    while len(expanded) < 3:
        await asyncio.sleep(0.005)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    done = [a.record.node for a in engine.store.load("r").attempts
            if a.record.node.startswith("solve/")]
    assert len(done) >= 2
    expanded.clear()
    resumed = await engine.resume("r", plan)
    fresh_expanded: list[int] = []
    fresh_plan, _ = number_plan(strategy="best", expanded=fresh_expanded)
    fresh = await _engine().run(fresh_plan, Target(start=1, goal=40), run_id="r")
    assert resumed.output("answer") == fresh.output("answer")
    assert expanded == fresh_expanded[len(done):]  # committed levels were not expanded again
    await engine.aclose()
