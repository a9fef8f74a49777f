"""How often is the answer right: one language-model pass against the verified-digits plan.

50 word problems with known answers (plans._problems, seed 0), fixed seeds. The
single pass asks the model once, with the plan's own prompt, and reads its
'Answer: N'. The plan resamples the reasoning until every worked line holds
exactly (up to its retries), then draws, reads back and harmonizes the digits.
Prints both shares of correct answers and the mean attempts per step; the last
line is one JSON object with the figures.

    python benchmarks/verified_digits_eval.py [--problems 50] [--jobs 25]
"""

from __future__ import annotations

import asyncio
import statistics

from _common import options, print_figures

from plans._problems import make_problems
from plans.verified_digits import EXAMPLE, SYSTEM, parse_solution, plan
from reasoner import default_engine
from reasoner.context import derive_seed


async def main(count: int, jobs: int, seed: int) -> dict[str, float]:
    problems = make_problems(count, seed=0)
    engine = default_engine(None)
    try:
        lm = engine.generators["lm"]

        async def single_pass(question: str) -> int | None:
            generation = await lm.generate(
                [*EXAMPLE, {"role": "user", "content": question}], system=SYSTEM,
                max_new_tokens=128, temperature=0.7, seed=derive_seed(seed, "solve", 0, 1))
            try:
                return parse_solution(generation.text).answer
            except ValueError:
                return None

        singles = await asyncio.gather(*(single_pass(p.question) for p in problems))
        answers = {p.question: p.answer for p in problems}
        runs = [run async for run in engine.map(plan, [{"question": p.question} for p in problems],
                                                concurrency=jobs, seed=seed)]
    finally:
        await engine.aclose()
    right = [run for run in runs if run.status == "succeeded"
             and run.output("harmonize").answer == answers[run.input.question]]
    attempts = {step: statistics.mean(len(r.steps[step].attempts) for r in runs
                                      if r.steps[step].attempts)
                for step in ("solve", "render", "harmonize")
                if any(r.steps[step].attempts for r in runs)}
    single_right = sum(a == p.answer for a, p in zip(singles, problems, strict=True))
    figures = {
        "problems": count,
        "single_pass_correct": single_right / count,
        "plan_correct": len(right) / count,
        "plan_succeeded": sum(r.status == "succeeded" for r in runs) / count,
        **{f"mean_attempts_{step}": value for step, value in attempts.items()},
    }
    print(f"single LM pass correct: {figures['single_pass_correct']:.0%}")
    print(f"verified-digits correct: {figures['plan_correct']:.0%} "
          f"(runs that passed every check: {figures['plan_succeeded']:.0%})")
    print("mean attempts per step: " + ", ".join(f"{s} {v:.2f}" for s, v in attempts.items()))
    return figures


if __name__ == "__main__":
    args = options(__doc__, problems=50, jobs=25, seed=0)
    print_figures(main(args.problems, args.jobs, args.seed))
