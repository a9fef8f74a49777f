"""verified-digits jobs on one shared generator host: one at a time against 32 at once.

With `--inputs questions` every job runs the whole chain (language model,
arithmetic check, GAN, classifier, VAE); with `--inputs expressions` the answer
is computed exactly and the jobs exercise the image half of the chain only (on
two CPU cores, 64 LM-driven jobs one at a time take about an hour). At
concurrency 32 the host batches the model calls of all jobs into shared forward
passes; at concurrency 1 each call runs alone. Same jobs, same seeds, one
process, one host (warmed up first). Prints jobs/s for each and the ratio; the
last line is one JSON object with the figures.

    python benchmarks/chains.py [--jobs 64] [--inputs questions|expressions] [--device cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from plans._problems import make_problems
from plans.verified_digits import plan
from reasoner import default_engine


async def main(jobs: int, inputs: str, device: str | None) -> dict[str, float]:
    problems = [{"question": p.question} if inputs == "questions" else
                {"expression": str(p.answer * 37 + i)}
                for i, p in enumerate(make_problems(jobs, seed=1))]
    engine = default_engine(None, device=device)
    try:
        async for _ in engine.map(plan, problems[:2], concurrency=2):  # load every model
            pass
        figures: dict[str, float] = {}
        for concurrency in (1, 32):
            start = time.perf_counter()
            runs = [run async for run in engine.map(plan, problems, concurrency=concurrency)]
            elapsed = time.perf_counter() - start
            figures[f"jobs_per_s_at_{concurrency}"] = len(runs) / elapsed
            figures[f"succeeded_at_{concurrency}"] = sum(r.status == "succeeded" for r in runs)
            print(f"concurrency {concurrency:2d}: {len(runs)} jobs in {elapsed:7.1f} s = "
                  f"{figures[f'jobs_per_s_at_{concurrency}']:.3f} jobs/s, "
                  f"{int(figures[f'succeeded_at_{concurrency}'])} succeeded", flush=True)
        figures["speedup_32_over_1"] = figures["jobs_per_s_at_32"] / figures["jobs_per_s_at_1"]
        stats = engine.generators.host.stats()
        figures.update({f"mean_batch_{name}": s.mean_batch for name, s in stats.items()})
        print(f"32 at once / one at a time: {figures['speedup_32_over_1']:.2f}x")
        return figures
    finally:
        await engine.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--inputs", choices=["questions", "expressions"], default="questions")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    figures = asyncio.run(main(args.jobs, args.inputs, args.device))
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
