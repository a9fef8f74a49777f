"""verified-digits' part of test_time_compute: right answers and precision against LM calls.

The set: word problems with known answers from `plans._problems` with seed 1 (the
plan's checks were designed looking at samples of the seed-0 set, so this one is
unseen). Points:
- `single`: one LM pass with the plan's own prompt, its 'Answer: N' read, no checks;
- `vote` at N samples: the plan with `solve` drawing N samples once (no second
  round), voting among those that pass the checks, at least two agreeing (N >= 2);
- `plan`: the plan as shipped (8 samples, 8 more when no two agree).
Quality is the share of problems whose answer is right (whatever the run's status);
`extra` has the share of runs that ended `succeeded` and the precision of
`succeeded` (of those, the share whose answer is right).
"""

from __future__ import annotations

import asyncio
import time

from _compute import Point, mean_compute, run_all

from plans._problems import make_problems
from plans.verified_digits import AGREE, EXAMPLE, SYSTEM, parse_solution, plan
from reasoner import Engine, Run
from reasoner.context import derive_seed

PLAN = "verified-digits"


async def _single(engine: Engine, questions: list[str], answers: list[int], seed: int) -> Point:
    """One LM pass per question, with the seed of the plan's first sample."""
    lm = engine.generators["lm"]

    async def once(question: str) -> tuple[int | None, int]:
        generation = await lm.generate([*EXAMPLE, {"role": "user", "content": question}],
                                       system=SYSTEM, max_new_tokens=128, temperature=0.7,
                                       seed=derive_seed(seed, "solve", 0, 1))
        try:
            return parse_solution(generation.text).answer, generation.completion_tokens
        except ValueError:
            return None, generation.completion_tokens

    clock = time.perf_counter()
    answered = await asyncio.gather(*(once(q) for q in questions))
    wall = time.perf_counter() - clock
    right = sum(got == answer for (got, _), answer in zip(answered, answers, strict=True))
    tokens = sum(t for _, t in answered) / len(questions)
    return Point(PLAN, "single", 1, right / len(questions), 1.0, tokens, wall_s=wall)


def _answer(run: Run) -> int | None:
    solve = run.steps["solve"]
    return solve.output.answer if solve.output is not None else None


def _point(method: str, setting: int, runs: list[Run], answers: list[int], wall: float) -> Point:
    right = [_answer(run) == answer for run, answer in zip(runs, answers, strict=True)]
    succeeded = [run.status == "succeeded" for run in runs]
    kept = sum(succeeded)
    calls, tokens = mean_compute(runs)
    return Point(PLAN, method, setting, sum(right) / len(runs), calls, tokens, wall_s=wall,
                 extra={"succeeded": kept / len(runs),
                        "precision": (sum(r and s for r, s in zip(right, succeeded, strict=True))
                                      / kept) if kept else float("nan")})


async def measure(engine: Engine, count: int, samples: list[int], jobs: int,
                  seed: int = 0) -> list[Point]:
    problems = make_problems(count, seed=1)
    questions = [p.question for p in problems]
    answers = [p.answer for p in problems]
    inputs = [{"question": q} for q in questions]
    points = [await _single(engine, questions, answers, seed)]
    for n in samples:
        variant = plan.with_options("solve", samples=n, retries=0, agree=min(AGREE, n))
        runs, wall = await run_all(engine, variant, inputs, concurrency=jobs, seed=seed)
        points.append(_point("vote", n, runs, answers, wall))
        print(f"  {PLAN} vote N={n}: {points[-1].quality:.0%} right", flush=True)
    runs, wall = await run_all(engine, plan, inputs, concurrency=jobs, seed=seed)
    points.append(_point("plan", plan.steps["solve"].options.samples, runs, answers, wall))
    return points
