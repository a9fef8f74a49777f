"""Success rate of the game24 strategies on the project's solvable puzzles.

50 puzzles (plans.game24.puzzles, seed 0), fixed seeds, three strategies behind
the same input: the Tree-of-Thoughts search, one direct LM pass, and random
legal moves with the same budget (in proposals). Prints the share solved and
LM calls per puzzle for each; the last line is one JSON object.

    python benchmarks/game24_eval.py [--puzzles 50] [--budget 24] [--jobs 25]
"""

from __future__ import annotations

import statistics

from _common import options, print_figures

from plans.game24 import plan, puzzles
from reasoner import default_engine


async def main(count: int, budget: int, jobs: int) -> dict[str, float]:
    chosen = puzzles(count, seed=0)
    engine = default_engine(None)
    figures: dict[str, float] = {"puzzles": count, "budget": budget}
    try:
        for strategy in ("search", "direct", "random"):
            inputs = [{"numbers": p, "strategy": strategy, "budget": budget} for p in chosen]
            runs = [r async for r in engine.map(plan, inputs, concurrency=jobs, seed=0)]
            solved = sum(r.status == "succeeded" for r in runs) / count
            # `solve` and every search level report the LM calls spent so far
            calls = statistics.mean(
                max(o.calls for n, o in r.outputs.items() if n != "answer") for r in runs)
            figures[f"{strategy}_solved"] = solved
            figures[f"{strategy}_lm_calls_per_puzzle"] = calls
            print(f"{strategy:7} solved {solved:5.0%}   LM calls per puzzle {calls:5.1f}", flush=True)
    finally:
        await engine.aclose()
    return figures


if __name__ == "__main__":
    args = options(__doc__, puzzles=50, budget=24, jobs=25)
    print_figures(main(args.puzzles, args.budget, args.jobs))
