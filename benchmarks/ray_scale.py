"""Jobs per second on the local backend and on Ray with one worker and with two.

The same jobs (a 4-step chain whose steps each call the language model and
then sleep a little, as steps waiting on a GPU do) run, with the same store
kind (a SQLite file) and the fake generators of `reasoner.testing`:
- locally: one process, one event loop;
- on Ray, one worker actor, then two: a local cluster this script starts
  (`ray.init(num_cpus=2)`), with a store actor and a generator host actor.
Setups take turns round by round, so machine noise hits them alike, and each
first runs warm-up jobs (actor start and first imports are not measured).
Prints jobs/s per setup (median over rounds) and the ratios to local; the
last line is one JSON object with every figure.

    python benchmarks/ray_scale.py [--jobs 64] [--rounds 3] [--concurrency 16] [--sleep 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
from pydantic import BaseModel

from reasoner import Engine, Plan, load_plan
from reasoner.testing import fake_generators

STEPS = 4
FAKES = "reasoner.testing:fake_generators"


class Job(BaseModel):
    n: int
    sleep: float


class Note(BaseModel):
    text: str


plan = Plan("ray-scale", input=Job, description="A chain of generator calls with short waits.")


@plan.step
async def s0(ctx, job: Job) -> Note:  # noqa: ANN001
    reply = await ctx.lm.generate(f"job {job.n}", max_new_tokens=8, seed=ctx.seed)
    await asyncio.sleep(job.sleep)
    return Note(text=reply.text)


async def _next(ctx, job: Job, previous: Note) -> Note:  # noqa: ANN001
    reply = await ctx.lm.generate(previous.text, max_new_tokens=8, seed=ctx.seed)
    await asyncio.sleep(job.sleep)
    return Note(text=reply.text)


for _i in range(1, STEPS):
    plan.add_step(_next, name=f"s{_i}", inputs={"previous": f"s{_i - 1}"})


async def _rate(engine: Engine, bench: Plan, jobs: list[Job], concurrency: int) -> float:
    started = time.perf_counter()
    runs = [run async for run in engine.map(bench, jobs, concurrency=concurrency)]
    elapsed = time.perf_counter() - started
    failed = [run.error for run in runs if run.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark runs failed, e.g. {failed[0]}")
    return len(runs) / elapsed


async def main(args: argparse.Namespace) -> dict[str, object]:
    # Workers import plans by reference, so use this file's plan as the module `ray_scale`,
    # as they will (Ray puts this script's folder on their path).
    bench = load_plan("ray_scale:ray-scale")
    jobs = [Job(n=n, sleep=args.sleep) for n in range(args.jobs)]
    warm = jobs[: args.concurrency]
    with tempfile.TemporaryDirectory() as folder:
        engines = {
            "local": Engine(Path(folder) / "local.db", generators=fake_generators(),
                            score_edges=False),
            "ray_1_worker": Engine(Path(folder) / "ray1.db", backend="ray", workers=1,
                                   generators=FAKES, score_edges=False),
            "ray_2_workers": Engine(Path(folder) / "ray2.db", backend="ray", workers=2,
                                    generators=FAKES, score_edges=False),
        }
        rates: dict[str, list[float]] = {name: [] for name in engines}
        try:
            for engine in engines.values():
                await _rate(engine, bench, warm, args.concurrency)
            for _ in range(args.rounds):
                for name, engine in engines.items():
                    rates[name].append(await _rate(engine, bench, jobs, args.concurrency))
        finally:
            for engine in engines.values():
                await engine.aclose()
    median = {name: statistics.median(found) for name, found in rates.items()}
    return {
        "jobs": args.jobs, "steps_per_job": STEPS, "sleep_s": args.sleep,
        "concurrency": args.concurrency, "rounds": args.rounds,
        "jobs_per_s": {name: round(rate, 2) for name, rate in median.items()},
        "ray_1_worker_vs_local": round(median["ray_1_worker"] / median["local"], 3),
        "ray_2_workers_vs_local": round(median["ray_2_workers"] / median["local"], 3),
        "ray_2_workers_vs_1": round(median["ray_2_workers"] / median["ray_1_worker"], 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="jobs in flight (map)")
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds each step waits")
    options = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        figures = asyncio.run(main(options))
    finally:
        ray.shutdown()
    for name, rate in figures["jobs_per_s"].items():  # type: ignore[attr-defined]
        print(f"{name:14} {rate:8.2f} jobs/s")
    print(f"ray, 1 worker / local:   {figures['ray_1_worker_vs_local']:.3f}x")
    print(f"ray, 2 workers / local:  {figures['ray_2_workers_vs_local']:.3f}x")
    print(f"ray, 2 workers / 1:      {figures['ray_2_workers_vs_1']:.3f}x")
    print(json.dumps(figures))
