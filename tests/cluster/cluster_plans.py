"""The plan the Ray tests run, imported by reference (`cluster_plans:relay`) on every worker.

Each step calls a generator, appends "<step> <n>" to the job's `log` file
when it starts (so a test counts how often each step really ran) and sleeps
the job's `delay` (so a test can kill an actor mid-run). `draft` fails its
check on some seeds, so retries happen; `digits` stores an image blob.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from reasoner import Image, Plan, checks


class Job(BaseModel):
    n: int
    log: str = ""
    delay: float = 0.0


class Text(BaseModel):
    text: str


class Digits(BaseModel):
    image: Image
    labels: list[int]


async def _executed(job: Job, step: str) -> None:
    if job.log:
        with open(job.log, "a") as handle:
            handle.write(f"{step} {job.n}\n")
    await asyncio.sleep(job.delay)


relay = Plan("relay", input=Job, description="Text, digits and a summary, through every generator.")


@relay.step(retries=3)
async def draft(ctx, job: Job) -> Text:  # noqa: ANN001
    await _executed(job, "draft")
    reply = await ctx.lm.generate(f"count to {job.n}", max_new_tokens=16, seed=ctx.seed)
    return Text(text=reply.text)


@draft.check
def numbered(out: Text) -> checks.Result:
    number = int(out.text.split()[1])  # the fake LM answers "reply <seed % 1000> to: ..."
    return checks.Result(passed=number % 3 != 0, score=1.0 if number % 3 else 0.0,
                         reason=f"drew {number}")


@relay.step
async def digits(ctx, job: Job, draft: Text) -> Digits:  # noqa: ANN001
    await _executed(job, "digits")
    images = await ctx.gan.generate([job.n % 10, (job.n + 1) % 10], seed=ctx.seed)
    reading = await ctx.classifier.classify(images)
    return Digits(image=images[0], labels=[int(label) for label in reading.labels])


@relay.step
async def echo(ctx, job: Job, draft: Text) -> Text:  # noqa: ANN001
    await _executed(job, "echo")
    score = await ctx.embedder.similarity(draft.text, f"count to {job.n}")
    return Text(text=f"{draft.text} ({score:.3f})")


@relay.step
async def summary(job: Job, digits: Digits, echo: Text) -> Text:
    await _executed(job, "summary")
    return Text(text=f"{echo.text}; digits {digits.labels}")
