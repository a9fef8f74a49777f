"""The executor: scheduling, retries, backtracking, isolation, bounds, determinism."""

from __future__ import annotations

import asyncio
import random

import pytest
from pydantic import BaseModel

from reasoner import Engine, GeneratorMissingError, InputError, Plan, checks
from reasoner.events import Event


class Task(BaseModel):
    x: int


class Value(BaseModel):
    v: int


class Values(BaseModel):
    vs: list[int]


def chain_plan() -> Plan:
    plan = Plan("chain", input=Task)

    @plan.step
    async def a(task: Task) -> Value:
        return Value(v=task.x + 1)

    @plan.step
    async def b(a: Value) -> Value:
        return Value(v=a.v * 10)

    @plan.step
    async def c(b: Value, task: Task) -> Value:
        return Value(v=b.v + task.x)

    return plan


async def test_chain_passes_outputs_along() -> None:
    run = await Engine(store=None).run(chain_plan(), Task(x=2))
    assert run.status == "succeeded" and run.error is None
    assert run.output("c") == Value(v=32)
    assert [s.status for s in run.steps.values()] == ["succeeded"] * 3
    assert all(len(s.attempts) == 1 for s in run.steps.values())


async def test_diamond_joins_both_branches() -> None:
    plan = chain_plan()  # a -> b is the left branch; a second one joins it below

    @plan.step
    async def right(a: Value) -> Value:
        return Value(v=a.v * 2)

    @plan.step
    async def bottom(b: Value, right: Value) -> Values:
        return Values(vs=[b.v, right.v])

    run = await Engine().run(plan, {"x": 5})
    assert run.output("bottom").vs == [60, 12]


async def test_fan_out_fan_in_and_no_lock_step() -> None:
    """A slow branch does not hold up an unrelated fast chain (no supersteps).

    The slow branch waits until the fast chain behind one of its siblings has
    finished: an executor that ran the graph level by level would never get there.
    """
    plan = Plan("fan", input=Task)
    order: list[str] = []
    fast_chain_done = asyncio.Event()

    @plan.step
    async def root(task: Task) -> Value:
        return Value(v=task.x)

    async def branch(root: Value) -> Value:
        return Value(v=root.v)

    async def slow(root: Value) -> Value:
        order.append("slow started")
        await fast_chain_done.wait()
        order.append("slow finished")
        return Value(v=root.v + 30)

    async def hop(previous: Value) -> Value:
        order.append(f"hop{previous.v}")
        if previous.v == 2:
            fast_chain_done.set()
        return Value(v=previous.v + 1)

    async def gather(parts: list[Value]) -> Values:
        order.append("gather")
        return Values(vs=[p.v for p in parts])

    plan.add_step(slow)
    names = []
    for i in range(10):
        names.append(f"b{i}")
        plan.add_step(branch, name=names[-1])
    plan.add_step(hop, name="fast1", inputs={"previous": "b0"})
    plan.add_step(hop, name="fast2", inputs={"previous": "fast1"})
    plan.add_step(gather, inputs={"parts": [*names, "slow"]})

    async with asyncio.timeout(30):  # only a guard: a lock-step executor waits forever
        run = await Engine().run(plan, Task(x=1))
    assert run.status == "succeeded"
    assert run.output("gather").vs == [1] * 10 + [31]
    assert run.output("fast2").v == 3
    # The fast chain ran while the slow branch was in flight; gather waited for both.
    assert order.index("slow started") < order.index("hop1") < order.index("hop2")
    assert order.index("hop2") < order.index("slow finished") < order.index("gather")
    assert sorted(order) == ["gather", "hop1", "hop2", "slow finished", "slow started"]


async def test_runtime_expansion_grows_and_records_the_graph() -> None:
    plan = Plan("tree", input=Task)

    class Node(BaseModel):
        depth: int
        label: str

    @plan.template
    async def explore(ctx, node: Node) -> Value:
        if node.depth < 2:
            for branch in "ab":
                ctx.spawn(explore, branch, Node(depth=node.depth + 1, label=node.label + branch))
        return Value(v=len(node.label))

    @plan.step
    async def search(ctx, task: Task) -> Value:
        ctx.spawn("explore", "root", Node(depth=0, label="r"))
        return Value(v=0)

    @plan.step
    async def best(ctx, search: Value) -> Values:
        found = ctx.expansion("search")
        return Values(vs=sorted(v.v for v in found.values()))

    run = await Engine().run(plan, Task(x=0))
    assert run.status == "succeeded"
    assert run.output("best").vs == [1, 2, 2, 3, 3, 3, 3]
    assert "search/root/a/b" in run.steps
    assert run.steps["search/root/a"].parent == "search/root"
    assert run.steps["search/root/a/b"].template == "explore"


async def test_failed_attempts_resample_with_new_seeds() -> None:
    plan = Plan("retry", input=Task)

    @plan.step(retries=4)
    async def roll(ctx, task: Task) -> Value:
        if ctx.attempt == 1:
            return {"v": "not a number"}  # a ValidationError is a failed attempt too
        if ctx.attempt == 2:
            raise RuntimeError("flaky")
        return Value(v=ctx.attempt)

    @roll.check
    def fourth_time_lucky(out: Value) -> checks.Result:
        return checks.Result(passed=out.v >= 4, score=out.v / 4, reason=f"v={out.v}")

    run = await Engine().run(plan, Task(x=0), seed=11)
    step = run.steps["roll"]
    assert run.status == "succeeded" and run.output("roll").v == 4
    assert [a.status for a in step.attempts] == ["failed"] * 3 + ["succeeded"]
    assert "ValidationError" in step.attempts[0].error
    assert step.attempts[1].error == "RuntimeError: flaky" and "Traceback" in step.attempts[1].traceback
    assert step.attempts[2].checks[0].reason == "v=3" and not step.attempts[2].checks[0].passed
    assert len(set(step.seeds)) == 4


async def test_spent_retries_backtrack_into_the_parent() -> None:
    plan = Plan("backtrack", input=Task)
    calls = {"parent": 0, "child": 0}

    @plan.step
    async def parent(ctx, task: Task) -> Value:
        calls["parent"] += 1
        return Value(v=ctx.generation)

    @plan.step(retries=1)
    async def child(parent: Value) -> Value:
        calls["child"] += 1
        return Value(v=parent.v)

    @child.check
    def needs_new_parent(parent: Value, out: Value) -> checks.Result:
        return checks.Result(passed=parent.v >= 1, score=0.0, reason=f"parent generation {parent.v}")

    run = await Engine().run(plan, Task(x=0))
    assert run.status == "succeeded"
    assert calls == {"parent": 2, "child": 3}
    assert [(b.failed, b.target) for b in run.backtracks] == [("child", "parent")]
    assert [a.generation for a in run.steps["parent"].attempts] == [0, 1]
    assert [a.generation for a in run.steps["child"].attempts] == [0, 0, 1]


async def test_backtrack_budget_then_failure_while_independent_branch_finishes() -> None:
    plan = Plan("hopeless", input=Task, max_backtracks=2)

    @plan.step
    async def parent(task: Task) -> Value:
        return Value(v=1)

    @plan.step(retries=1)
    async def doomed(parent: Value) -> Value:
        raise ValueError("never works")

    @plan.step
    async def below(doomed: Value) -> Value:
        return doomed

    @plan.step
    async def independent(task: Task) -> Value:
        await asyncio.sleep(0.05)
        return Value(v=7)

    run = await Engine().run(plan, Task(x=0))
    assert run.status == "failed"
    assert run.error == "step 'doomed' failed: ValueError: never works"
    assert len(run.backtracks) == 2
    assert run.steps["doomed"].status == "failed"
    assert len(run.steps["doomed"].attempts) == 6  # 2 attempts in each of 3 generations
    assert run.steps["below"].status == "skipped"
    assert run.steps["independent"].status == "succeeded" and run.output("independent").v == 7


async def test_a_step_that_refuses_backtracking_is_passed_over() -> None:
    plan = Plan("skip-over", input=Task)

    @plan.step
    async def outline(ctx, task: Task) -> Value:
        return Value(v=ctx.generation)

    @plan.step(backtrack=False)
    async def middle(outline: Value) -> Value:
        return outline

    @plan.step
    async def leaf(middle: Value) -> Value:
        if middle.v == 0:
            raise ValueError("needs a new outline")
        return middle

    run = await Engine().run(plan, Task(x=0))
    assert run.status == "succeeded"
    assert [(b.failed, b.target) for b in run.backtracks] == [("leaf", "outline")]


async def test_failures_are_isolated_between_jobs() -> None:
    plan = Plan("picky", input=Task)

    @plan.step
    async def only_even(task: Task) -> Value:
        if task.x % 2:
            raise ValueError(f"{task.x} is odd")
        return Value(v=task.x)

    engine = Engine()
    runs = [run async for run in engine.map(plan, [Task(x=i) for i in range(10)], concurrency=4)]
    by_x = {run.input.x: run for run in runs}
    assert sorted(by_x) == list(range(10))
    assert all(by_x[i].status == ("succeeded" if i % 2 == 0 else "failed") for i in range(10))
    assert by_x[3].error == "step 'only_even' failed: ValueError: 3 is odd"


def random_plan() -> Plan:
    plan = Plan("random", input=Task)

    @plan.step(retries=5)
    async def draw(ctx, task: Task) -> Values:
        rng = random.Random(ctx.seed)
        return Values(vs=[rng.randrange(100) for _ in range(task.x)])

    @draw.check
    def has_a_big_one(out: Values) -> bool:
        return max(out.vs) > 80

    @plan.step
    async def total(ctx, draw: Values) -> Value:
        return Value(v=sum(draw.vs) + ctx.seed % 7)

    return plan


async def test_same_seed_same_run_other_seed_other_run() -> None:
    plan = random_plan()
    engine = Engine()
    first = await engine.run(plan, Task(x=4), seed=1)
    again = await engine.run(plan, Task(x=4), seed=1)
    other = await engine.run(plan, Task(x=4), seed=2)
    assert first.output("total") == again.output("total")
    assert first.steps["draw"].seeds == again.steps["draw"].seeds
    assert first.steps["draw"].seeds != other.steps["draw"].seeds
    assert first.output("draw") != other.output("draw")


async def test_concurrency_bounds_hold_under_fan_out() -> None:
    plan = Plan("wide", input=Task)
    state = {"now": 0, "peak": 0}

    @plan.step
    async def root(task: Task) -> Value:
        return Value(v=0)

    async def busy(root: Value) -> Value:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return root

    for i in range(20):
        plan.add_step(busy, name=f"busy{i}")

    engine = Engine(max_concurrency=5)
    run = await engine.run(plan, Task(x=0), concurrency=3)
    assert run.status == "succeeded" and state["peak"] == 3

    state["peak"] = 0
    runs = [r async for r in engine.map(plan, [Task(x=i) for i in range(4)], concurrency=4)]
    assert all(r.status == "succeeded" for r in runs) and state["peak"] == 5


async def test_timeout_is_a_failed_attempt() -> None:
    plan = Plan("slow", input=Task)

    @plan.step(timeout=0.05, retries=1)
    async def sleepy(ctx, task: Task) -> Value:
        await asyncio.sleep(1.0 if ctx.attempt == 1 else 0)
        return Value(v=ctx.attempt)

    run = await Engine().run(plan, Task(x=0))
    assert run.output("sleepy").v == 2
    assert run.steps["sleepy"].attempts[0].error == "timed out after 0.05 s in the step"


async def test_cancelling_a_run_leaves_no_orphan_tasks(tmp_path) -> None:  # noqa: ANN001
    plan = Plan("hang", input=Task)
    started = asyncio.Event()

    @plan.step
    async def quick(task: Task) -> Value:
        return Value(v=1)

    async def hang(quick: Value) -> Value:
        started.set()
        await asyncio.sleep(60)
        return quick

    for i in range(5):
        plan.add_step(hang, name=f"hang{i}")

    engine = Engine(tmp_path / "runs.db")
    before = set(asyncio.all_tasks())
    job = asyncio.create_task(engine.run(plan, Task(x=0), run_id="r1"))
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert set(asyncio.all_tasks()) == before
    stored = engine.load("r1", plan)
    assert stored.status == "interrupted"  # recorded as such, and resumable
    assert stored.steps["quick"].status == "succeeded"
    assert {stored.steps[f"hang{i}"].status for i in range(5)} == {"pending"}


async def test_generators_reach_steps_through_ctx() -> None:
    class FakeLM:
        async def generate(self, prompt: str, seed: int) -> str:
            return f"{prompt}:{seed % 10}"

    class Text(BaseModel):
        text: str

    plan = Plan("lm", input=Task)

    @plan.step(uses=["lm"])
    async def write(ctx, task: Task) -> Text:
        return Text(text=await ctx.lm.generate(f"x={task.x}", seed=ctx.seed))

    @plan.step
    async def peek(ctx, write: Text) -> Text:
        return Text(text=str(ctx.gan))

    with pytest.raises(GeneratorMissingError, match="uses generator 'lm'.*it has: none"):
        await Engine().run(plan, Task(x=1))
    run = await Engine(generators={"lm": FakeLM()}).run(plan, Task(x=1))
    assert run.output("write").text.startswith("x=1:")
    assert run.steps["peek"].status == "failed"
    assert "generator 'gan', which this engine does not have (it has: lm)" in run.error


async def test_bad_input_names_the_field() -> None:
    with pytest.raises(InputError, match="field 'x': Input should be a valid integer"):
        await Engine().run(chain_plan(), {"x": "three"})
    with pytest.raises(InputError, match="field 'x': Field required"):
        await Engine().run(chain_plan(), {})


async def test_events_tell_the_story() -> None:
    plan = Plan("told", input=Task)

    @plan.step
    async def parent(ctx, task: Task) -> Value:
        return Value(v=ctx.generation)

    @plan.step(retries=1)
    async def child(parent: Value) -> Value:
        return parent

    @child.check
    def new_parent(out: Value) -> bool:
        return out.v > 0

    engine = Engine()
    events: list[Event] = []
    engine.subscribe(events.append)
    await engine.run(plan, Task(x=0))
    kinds = [(e.kind, e.step) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    for expected in [("check", "child"), ("attempt_failed", "child"), ("step_retried", "child"),
                     ("backtracked", "child"), ("step_succeeded", "parent")]:
        assert expected in kinds
    assert events[-1].data["status"] == "succeeded"


async def test_a_thousand_small_jobs(tmp_path) -> None:  # noqa: ANN001
    engine = Engine(tmp_path / "many.db")
    inputs = [Task(x=i) for i in range(1000)]
    seen = set()
    async for run in engine.map(chain_plan(), inputs, concurrency=200):
        assert run.status == "succeeded"
        assert run.output("c").v == (run.input.x + 1) * 10 + run.input.x
        seen.add(run.input.x)
    assert len(seen) == 1000
    assert len(engine.runs()) == 1000
