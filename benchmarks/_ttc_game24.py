"""game24's part of `test_time_compute.py`: solved share against proposals on hard puzzles.

The set is `plans.game24.hard_puzzles(count, seed=0)`: solvable puzzles that uniformly
random legal moves solve with probability below `plans.game24.HARD`. The search and
random legal moves run at each budget of proposals (legal moves put forward), so they
compare at equal proposals; one direct LM pass is the single-pass baseline. Each point's
`extra` holds the set's mean `random_success` and the solved share random legal moves
would get on average at that budget, computed exactly (the sampled `random` points
are noisy on a set this hard).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from _compute import Point, mean_compute, run_all

from plans.game24 import hard_puzzles, plan, random_success
from reasoner import Engine, Run


def proposals(run: Run) -> int:
    """What the run proposed, read where it is recorded whether or not it solved the puzzle:
    the last search level's spending, else the `solve` step's count."""
    outputs = run.outputs
    spent = [out.spent.proposals for name, out in outputs.items() if name.startswith("solve/")]
    return max(spent) if spent else outputs["solve"].proposals


async def _point(engine: Engine, chosen: Sequence[list[int]], method: str, setting: int,
                 jobs: int, hardness: float) -> Point:
    """One method at one setting over the whole set."""
    inputs = [{"numbers": p, "strategy": method, "budget": setting} for p in chosen]
    # the solved share random legal moves get on average at this budget, exactly: a
    # walk is three moves, each walk reaches 24 with probability random_success
    random_expected = statistics.mean(1 - (1 - random_success(p)) ** (setting // 3)
                                      for p in chosen)
    runs, wall = await run_all(engine, plan, inputs, concurrency=jobs, seed=0)
    calls, tokens = mean_compute(runs)
    return Point(plan="game24", method=method, setting=setting,
                 quality=sum(run.status == "succeeded" for run in runs) / len(runs),
                 lm_calls=calls, generated_tokens=tokens,
                 proposals=statistics.mean(proposals(run) for run in runs), wall_s=wall,
                 extra={"puzzles": len(chosen), "mean_random_success": hardness,
                        "random_expected": random_expected})


async def measure(engine: Engine, count: int = 50, budgets: Sequence[int] = (12, 36, 100),
                  jobs: int = 16) -> list[Point]:
    """Search and random legal moves at each budget of proposals, and one direct pass."""
    chosen = hard_puzzles(count, seed=0)
    hardness = statistics.mean(random_success(p) for p in chosen)
    points = [await _point(engine, chosen, "direct", 1, jobs, hardness)]
    for budget in budgets:
        for method in ("search", "random"):
            points.append(await _point(engine, chosen, method, budget, jobs, hardness))
    return points
