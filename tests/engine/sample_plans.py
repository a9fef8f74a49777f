"""Plans the store, resume and CLI tests load by reference (`sample_plans:counted`).

Each step appends its name to the file in $SAMPLE_LOG when it starts, so a
test can count how often each step really ran, and sleeps $SAMPLE_DELAY
seconds, so a test can kill the process mid-run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random

import numpy as np
from pydantic import BaseModel

from reasoner import Array, Image, Plan, Run, checks


class Task(BaseModel):
    n: int


class Num(BaseModel):
    v: int


class Picture(BaseModel):
    image: Image
    latent: Array
    caption: str


async def _executed(name: str) -> None:
    log = os.environ.get("SAMPLE_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(name + "\n")
    await asyncio.sleep(float(os.environ.get("SAMPLE_DELAY", "0")))


counted = Plan("counted", input=Task, description="A chain of seeded random steps.")


@counted.step
async def start(ctx, task: Task) -> Num:
    await _executed("start")
    return Num(v=random.Random(ctx.seed).randrange(1000) + task.n)


async def _hop(ctx, previous: Num, index: int = 0) -> Num:
    await _executed(f"hop{index}")
    return Num(v=previous.v + random.Random(ctx.seed).randrange(10))


for i in range(5):
    counted.add_step(
        functools.partial(_hop, index=i),
        name=f"hop{i}",
        inputs={"previous": f"hop{i - 1}" if i else "start"},
        retries=2,
    )


@counted.step
async def picture(ctx, hop4: Num) -> Picture:
    await _executed("picture")
    rng = np.random.default_rng(ctx.seed)
    return Picture(
        image=rng.random((28, 28), dtype=np.float32),
        latent=rng.standard_normal(16).astype(np.float32),
        caption=f"number {hop4.v}",
    )


@counted.step
async def odd_one_out(task: Task) -> Num:
    """Fails on odd n, to exercise failure exit codes."""
    await _executed("odd_one_out")
    if task.n % 2:
        raise ValueError(f"n={task.n} is odd")
    return Num(v=task.n)


@picture.check
def bright_enough(out: Picture) -> checks.Result:
    return checks.Result.at_least(float(out.image.mean()) / 255, 0.3, "mean brightness")


stubborn = Plan("stubborn", input=Task, description="One step whose clean-up, once cancelled, "
                "takes $SAMPLE_CLEANUP seconds (to test a second signal).")


@stubborn.step
async def linger(task: Task) -> Num:
    try:
        await _executed("linger")
    except asyncio.CancelledError:
        log = os.environ.get("SAMPLE_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write("cleanup\n")
        await asyncio.sleep(float(os.environ.get("SAMPLE_CLEANUP", "0")))
        raise
    return Num(v=task.n)



hedged = Plan("hedged", input=Task, description="A voted step, then one that never passes.")


@hedged.step(samples=5, select="vote", vote=lambda out: out.v % 2)
async def guess(ctx, task: Task) -> Num:
    return Num(v=random.Random(ctx.seed).randrange(1000) + task.n)


@hedged.step(retries=1, on_exhausted="best")
async def polish(ctx, guess: Num) -> Num:
    return Num(v=guess.v + random.Random(ctx.seed).randrange(10))


@polish.check
def perfect(out: Num) -> checks.Result:
    return checks.Result.fail(f"{out.v} is not perfect", score=(out.v % 10) / 10)


@hedged.headline
def kept(run: Run) -> str:
    return f"kept {run.output('polish').v} after {len(run.steps['polish'].attempts)} attempts"
