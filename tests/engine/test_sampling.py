"""Sampled steps (`samples`, `select`, `vote`), best-effort steps and compute accounting."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from pydantic import BaseModel

from reasoner import Engine, Plan, PlanError, checks
from reasoner.report import render_run
from reasoner.run import read_run
from reasoner.store import SQLiteStore
from reasoner.summary import summarize_store
from reasoner.testing import FakeLM, assert_coherent, fake_generators


class Task(BaseModel):
    x: int


class Answer(BaseModel):
    value: int
    attempt: int = 0


def _value(seed: int) -> int:
    return random.Random(seed).randrange(100)


def sampled_plan(*, samples: int = 4, select: str = "best", vote=None,  # noqa: ANN001
                 passes=lambda out: out.value >= 20, retries: int = 0,  # noqa: ANN001
                 on_exhausted: str = "fail") -> Plan:
    """`draw` answers a number from its seed; its check scores it value/100."""
    plan = Plan("sampled", input=Task)

    @plan.step(samples=samples, select=select, vote=vote, retries=retries,
               on_exhausted=on_exhausted)
    async def draw(ctx, task: Task) -> Answer:
        return Answer(value=_value(ctx.seed), attempt=ctx.attempt)

    @draw.check
    def big_enough(out: Answer) -> checks.Result:
        return checks.Result(passed=passes(out), score=out.value / 100, reason=f"{out.value}")

    @plan.step
    async def after(draw: Answer) -> Answer:
        return Answer(value=draw.value + 1)

    return plan


async def test_best_keeps_the_highest_scoring_passing_sample_and_records_every_sample() -> None:
    run = await Engine(store=None).run(sampled_plan(), Task(x=1), seed=3)
    step = run.steps["draw"]
    assert run.status == "succeeded" and step.status == "succeeded"
    assert len(step.attempts) == 4 and len({a.seed for a in step.attempts}) == 4
    values = {a.attempt: _value(a.seed) for a in step.attempts}
    passing = {n: v for n, v in values.items() if v >= 20}
    best = max(passing, key=passing.get)
    assert step.standing is not None and step.standing.attempt == best
    assert run.output("draw").value == values[best] and run.output("after").value == values[best] + 1
    assert {a.attempt: a.status for a in step.attempts} == {
        n: "passed" if v >= 20 else "failed" for n, v in values.items()}
    assert step.checks[0].score == values[best] / 100  # the verdicts shown are the chosen one's


async def test_samples_of_a_round_run_at_once() -> None:
    plan = Plan("together", input=Task)
    started: list[int] = []
    all_in = asyncio.Event()

    @plan.step(samples=3, select="best")
    async def draw(ctx, task: Task) -> Answer:
        started.append(ctx.attempt)
        if len(started) == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)  # a sequential loop would time out here
        return Answer(value=ctx.attempt)

    run = await Engine(store=None).run(plan, Task(x=0))
    assert run.status == "succeeded" and sorted(started) == [1, 2, 3]


async def test_first_takes_the_first_sample_to_pass_and_cancels_the_rest() -> None:
    plan = Plan("first", input=Task)
    finished: list[int] = []

    @plan.step(samples=3, select="first")
    async def draw(ctx, task: Task) -> Answer:
        await asyncio.sleep({1: 5.0, 2: 0.0, 3: 5.0}[ctx.attempt])
        finished.append(ctx.attempt)
        return Answer(value=ctx.attempt)

    run = await asyncio.wait_for(Engine(store=None).run(plan, Task(x=0)), 3)
    assert run.output("draw").value == 2 and finished == [2]
    assert [a.attempt for a in run.steps["draw"].attempts] == [2]  # the cancelled left no record


async def test_vote_keeps_the_most_frequent_answer_and_records_its_share() -> None:
    plan = Plan("vote", input=Task)
    answers = {1: 7, 2: 9, 3: 7, 4: 5, 5: 7, 6: 9}

    @plan.step(samples=6, select="vote", vote=lambda out: out.value % 10)
    async def draw(ctx, task: Task) -> Answer:
        return Answer(value=answers[ctx.attempt] + 10 * ctx.attempt, attempt=ctx.attempt)

    @draw.check
    def not_five(out: Answer) -> checks.Result:
        return checks.Result(passed=out.value % 10 != 5, score=min(1.0, out.value / 100))

    run = await Engine(store=None).run(plan, Task(x=0))
    step = run.steps["draw"]
    assert run.output("draw").value == 57  # answer 7 (3 votes), best score among them
    assert step.confidence == pytest.approx(3 / 6)
    assert step.votes == {"7": 3, "9": 2}  # the failing sample does not vote
    assert run.coherence().steps[0].confidence == pytest.approx(0.5)
    assert run.to_json()["steps"]["draw"]["confidence"] == pytest.approx(0.5)
    page = render_run(run)
    assert "confidence 0.50 · votes: 7 ×3, 9 ×2" in page and "50% agree" in page


async def test_a_vote_tie_goes_to_the_answer_with_the_higher_score() -> None:
    plan = Plan("tie", input=Task)
    scores = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.3}
    keys = {1: "a", 2: "b", 3: "a", 4: "b"}

    @plan.step(samples=4, select="vote", vote=lambda out: keys[out.attempt])
    async def draw(ctx, task: Task) -> Answer:
        return Answer(value=ctx.attempt, attempt=ctx.attempt)

    @draw.check
    def scored(out: Answer) -> checks.Result:
        return checks.Result(passed=True, score=scores[out.attempt])

    run = await Engine(store=None).run(plan, Task(x=0))
    assert run.output("draw").attempt == 2 and run.steps["draw"].votes == {"a": 2, "b": 2}


def agreeing_plan(answers: dict[int, int], *, retries: int = 0,
                  on_exhausted: str = "fail") -> Plan:
    """`draw` answers `answers[attempt]`, 3 samples a round; 2 must agree."""
    plan = Plan("agree", input=Task)

    @plan.step(samples=3, select="vote", vote=lambda out: out.value, agree=2, retries=retries,
               on_exhausted=on_exhausted)
    async def draw(ctx, task: Task) -> Answer:
        return Answer(value=answers[ctx.attempt], attempt=ctx.attempt)

    @draw.check
    def not_zero(out: Answer) -> bool:
        return out.value != 0

    return plan


async def test_agree_fails_a_vote_whose_answer_only_one_sample_gives() -> None:
    run = await Engine(store=None).run(agreeing_plan({1: 4, 2: 5, 3: 0}), Task(x=0))
    step = run.steps["draw"]
    assert run.status == "failed" and step.status == "failed"
    assert step.votes == {"4": 1, "5": 1} and step.confidence == pytest.approx(1 / 3)
    assert "no answer has 2 agreeing samples of 3 (votes: 4 ×1, 5 ×1)" in (run.error or "")


async def test_a_retry_round_adds_its_samples_to_the_vote() -> None:
    run = await Engine(store=None).run(
        agreeing_plan({1: 4, 2: 5, 3: 0, 4: 6, 5: 5, 6: 0}, retries=1), Task(x=0))
    step = run.steps["draw"]
    assert run.status == "succeeded" and run.output("draw").value == 5
    assert step.votes == {"5": 2, "4": 1, "6": 1}
    assert step.confidence == pytest.approx(2 / 6)  # of every sample drawn


async def test_best_effort_after_no_agreement_keeps_the_vote_and_is_degraded() -> None:
    run = await Engine(store=None).run(
        agreeing_plan({1: 0, 2: 7, 3: 0}, on_exhausted="best"), Task(x=0))
    assert run.status == "degraded" and run.output("draw").value == 7
    assert run.steps["draw"].votes == {"7": 1}


@pytest.mark.parametrize(("options", "message"), [
    ({"samples": 4, "select": "best", "agree": 2}, "agree= counts agreeing samples"),
    ({"samples": 2, "select": "vote", "vote": str, "agree": 3}, "agree=3 can never be met"),
    ({"samples": 2, "select": "vote", "vote": str, "agree": 0}, "agree must be an integer >= 1"),
])
def test_agree_is_checked_when_the_plan_is_built(options: dict, message: str) -> None:
    plan = Plan("bad", input=Task)
    with pytest.raises(PlanError, match=message):
        plan.step(**options)(lambda task: task)


async def test_a_round_without_a_passing_sample_is_retried_then_fails() -> None:
    run = await Engine(store=None).run(
        sampled_plan(samples=3, retries=1, passes=lambda out: False), Task(x=0))
    step = run.steps["draw"]
    assert run.status == "failed" and step.status == "failed"
    assert [a.attempt for a in step.attempts] == [1, 2, 3, 4, 5, 6]
    assert (run.error or "").startswith("step 'draw' failed: no sample of 6 passed; last: big_enough")
    assert run.steps["after"].status == "skipped"


async def test_a_sampled_step_that_never_passes_backtracks_its_producer() -> None:
    plan = Plan("backtrack", input=Task, max_backtracks=1)

    @plan.step
    async def base(ctx, task: Task) -> Answer:
        return Answer(value=ctx.generation)

    @plan.step(samples=2, select="best", backtrack=False)
    async def judge(base: Answer) -> Answer:
        return base

    @judge.check
    def regenerated(out: Answer) -> bool:
        return out.value >= 1

    run = await Engine(store=None).run(plan, Task(x=0))
    assert run.status == "succeeded" and [b.target for b in run.backtracks] == ["base"]
    assert run.output("judge").value == 1


# ------------------------------------------------------------------ degraded steps
async def test_best_effort_keeps_the_best_attempt_marks_it_degraded_and_goes_on(
    tmp_path: Path,
) -> None:
    plan = sampled_plan(samples=1, retries=3, passes=lambda out: False, on_exhausted="best")
    engine = Engine(store=tmp_path / "runs.db")
    run = await engine.run(plan, Task(x=0), seed=5)
    step = run.steps["draw"]
    values = [_value(a.seed) for a in step.attempts]
    assert len(values) == 4 and step.status == "degraded" and run.status == "degraded"
    assert run.output("draw").value == max(values)
    assert run.output("after").value == max(values) + 1  # the run went on
    assert run.degraded == ["draw"] and run.error is None
    assert run.to_json()["steps"]["draw"]["status"] == "degraded"
    with pytest.raises(AssertionError, match="step 'draw' degraded"):
        assert_coherent(run)
    assert_coherent(run, allow_degraded=True)
    assert 'data-status="degraded"' in render_run(run)
    again = read_run(engine.store.load(run.run_id))  # the store says the same, plan-free
    assert again.status == "degraded" and again.steps["draw"].status == "degraded"
    assert again.output("draw").value == max(values)
    summary = summarize_store(engine.store)
    assert (summary.degraded, summary.succeeded, summary.failed) == (1, 0, 0)
    await engine.aclose()


async def test_backtracking_comes_before_a_best_effort() -> None:
    plan = Plan("order", input=Task, max_backtracks=1)

    @plan.step
    async def base(ctx, task: Task) -> Answer:
        return Answer(value=ctx.generation)

    @plan.step(on_exhausted="best", backtrack=False)
    async def judge(base: Answer) -> Answer:
        return base

    @judge.check
    def never(out: Answer) -> checks.Result:
        return checks.Result.fail("never good", score=0.1)

    run = await Engine(store=None).run(plan, Task(x=0))
    assert [b.target for b in run.backtracks] == ["base"]
    assert run.steps["judge"].status == "degraded" and run.output("judge").value == 1


async def test_a_best_effort_step_with_no_output_at_all_fails() -> None:
    plan = Plan("nothing", input=Task)

    @plan.step(retries=1, on_exhausted="best")
    async def broken(task: Task) -> Answer:
        raise ValueError("no output")

    run = await Engine(store=None).run(plan, Task(x=0))
    assert run.status == "failed" and run.steps["broken"].status == "failed"


def test_bad_sampling_options_are_refused_when_the_step_is_added() -> None:
    plan = Plan("bad", input=Task)

    async def draw(task: Task) -> Answer:
        return Answer(value=1)

    for options, message in [({"samples": 0}, "samples must be"),
                             ({"samples": 2, "select": "vote"}, "needs vote="),
                             ({"vote": len}, "needs select='vote'"),
                             ({"select": "most"}, "select must be"),
                             ({"on_exhausted": "skip"}, "on_exhausted must be")]:
        with pytest.raises(PlanError, match=message):
            plan.add_step(draw, **options)


# ------------------------------------------------------------------ compute
async def test_every_attempt_records_what_it_spent() -> None:
    plan = Plan("spend", input=Task)

    class Text(BaseModel):
        text: str

    @plan.step(uses=["lm", "gan"])
    async def write(ctx, task: Task) -> Text:
        first = await ctx.lm.generate("one two three", seed=ctx.seed)
        second = await ctx.lm.generate("four five", seed=ctx.seed + 1)
        await ctx.gan.generate([1, 2], seed=ctx.seed)
        return Text(text=first.text + second.text)

    @write.check
    async def judged(ctx, out: Text) -> bool:  # a check's calls count for the attempt too
        await ctx.lm.score("one", ["one"])
        return True

    lm = FakeLM(lambda prompt, seed: "a b c")
    run = await Engine(store=None, generators=fake_generators(lm=lm)).run(plan, Task(x=0))
    spent = run.steps["write"].attempts[0].compute
    assert spent.calls == {"lm": 3, "gan": 1}
    assert (spent.prompt_tokens, spent.generated_tokens) == (3 + 2, 3 + 3)
    assert run.compute.calls == {"lm": 3, "gan": 1}
    assert run.to_json()["compute"]["generated_tokens"] == 6


# ------------------------------------------------------------------ resuming
async def test_an_interrupted_sampled_step_resumes_without_redoing_committed_samples(
    tmp_path: Path,
) -> None:
    plan = Plan("resumable", input=Task)
    ran: list[int] = []
    hold = asyncio.Event()

    @plan.step(samples=4, select="vote", vote=lambda out: out.value % 3)
    async def draw(ctx, task: Task) -> Answer:
        ran.append(ctx.attempt)
        if ctx.attempt > 2:
            await hold.wait()  # samples 3 and 4 are still running when the run is stopped
        return Answer(value=_value(ctx.seed), attempt=ctx.attempt)

    engine = Engine(store=SQLiteStore(tmp_path / "runs.db"))
    job = asyncio.create_task(engine.run(plan, Task(x=0), run_id="r", seed=9))
    while sorted(ran) != [1, 2, 3, 4]:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # samples 1 and 2 commit
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    committed = {a.record.attempt for a in engine.store.load("r").attempts}
    assert committed == {1, 2}
    ran.clear()
    hold.set()
    resumed = await engine.resume("r", plan)
    assert sorted(ran) == [3, 4]  # only what was not committed ran again
    fresh = await Engine(store=None).run(plan, Task(x=0), seed=9)
    assert resumed.output("draw") == fresh.output("draw")
    assert resumed.steps["draw"].votes == fresh.steps["draw"].votes
    await engine.aclose()
