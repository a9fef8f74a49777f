"""morph: one handwritten digit turning smoothly into another.

1. `endpoints`: the GAN draws the source and target digits in one style.
   Check: the classifier reads them back as source and target.
2. `encode`: the VAE encodes both endpoints into latents.
3. `frames`: latents (and the digit label the decoder is conditioned on) are
   interpolated and decoded into `frames` images. Checks: the first frame
   reads as `source` and the last as `target`; consecutive frames stay within
   a distance bound; the classifier's probability of `target` rises along
   the sequence with bounded dips. A failure backtracks into `endpoints`.

The distance bound: a path that changes evenly moves 1/(frames-1) of the
endpoint-to-endpoint distance per frame. A step may be up to `SMOOTHNESS`
times that share (the decoder changes fastest where the digit's identity
flips), plus `FLOOR` (so near-identical endpoints are not held to zero).
A step beyond it means most of the morph happened in a single jump.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field, model_validator

from reasoner import Array, Image, Plan, checks

SMOOTHNESS = 3.0
FLOOR = 0.02  # mean absolute pixel difference, images in [0, 1]
MAX_DIP = 0.15  # largest allowed drop of p(target) from one frame to the next
CONFIDENCE = 0.8


class MorphInput(BaseModel):
    source: int = Field(ge=0, le=9, description="the digit to start from")
    target: int = Field(ge=0, le=9, description="the digit to end at")
    frames: int = Field(8, ge=2, le=64, description="images in the sequence, both ends included")

    @model_validator(mode="after")
    def _different(self) -> MorphInput:
        if self.source == self.target:
            raise ValueError("source and target must be different digits")
        return self


class Endpoints(BaseModel):
    source: Image
    target: Image


class Latents(BaseModel):
    source: Array  # (z,)
    target: Array  # (z,)


class Frames(BaseModel):
    strip: Image  # (28, 28 * frames)
    distances: list[float]  # between consecutive frames
    bound: float
    target_probs: list[float]  # p(target) per frame
    readings: list[int]  # the digit the classifier reads in each frame


plan = Plan("morph", input=MorphInput, description=__doc__, max_backtracks=3, examples=[
    ("animate a 2 turning into a 5", {"source": 2, "target": 5, "frames": 8}),
    ("morph the digit seven into a one in 12 frames", {"source": 7, "target": 1, "frames": 12}),
])


def distance_bound(first: np.ndarray, last: np.ndarray, frames: int) -> float:
    """How far apart two consecutive frames may be (see the module docstring)."""
    return SMOOTHNESS * float(np.abs(last - first).mean()) / (frames - 1) + FLOOR


def split(strip: np.ndarray) -> np.ndarray:
    """(28, 28 * n) uint8 strip -> (n, 28, 28) float images in [0, 1]."""
    n = strip.shape[1] // 28
    return strip.reshape(28, n, 28).transpose(1, 0, 2).astype(np.float32) / 255.0


@plan.step(retries=4, uses=["gan", "classifier"])
async def endpoints(ctx, task: MorphInput) -> Endpoints:
    images = await ctx.gan.generate([task.source, task.target], seed=ctx.seed)  # (2, 28, 28)
    return Endpoints(source=images[0], target=images[1])


@endpoints.check
async def endpoints_read_back(ctx, task: MorphInput, out: Endpoints) -> checks.Result:
    images = np.stack([out.source, out.target]).astype(np.float32) / 255.0  # (2, 28, 28)
    reading = await ctx.classifier.classify(images)
    p = [float(reading.probs[0, task.source]), float(reading.probs[1, task.target])]
    if min(p) < CONFIDENCE:
        return checks.Result.fail(
            f"endpoints read as {int(reading.labels[0])} and {int(reading.labels[1])} "
            f"(p={p[0]:.2f}, {p[1]:.2f})", score=min(p))
    return checks.Result.ok(f"endpoints read back (min p={min(p):.2f})", score=min(p))


@plan.step(uses=["vae"], backtrack=False)
async def encode(ctx, task: MorphInput, endpoints: Endpoints) -> Latents:
    images = np.stack([endpoints.source, endpoints.target]).astype(np.float32) / 255.0
    latents = await ctx.vae.encode(images, [task.source, task.target])  # (2, z)
    return Latents(source=latents[0], target=latents[1])


@plan.step(uses=["vae", "classifier"])
async def frames(ctx, task: MorphInput, encode: Latents) -> Frames:
    images = await ctx.vae.interpolate(encode.source, encode.target, task.frames,
                                       task.source, task.target)  # (frames, 28, 28)
    images = np.rint(np.clip(images, 0, 1) * 255) / 255  # what the stored strip will hold
    reading = await ctx.classifier.classify(images.astype(np.float32))
    return Frames(
        strip=np.concatenate(list(images), axis=1),
        distances=[float(d) for d in np.abs(np.diff(images, axis=0)).mean(axis=(1, 2))],
        bound=distance_bound(images[0], images[-1], task.frames),
        target_probs=[float(p) for p in reading.probs[:, task.target]],
        readings=[int(v) for v in reading.labels],
    )


@frames.check
def ends_read_back(task: MorphInput, out: Frames) -> checks.Result:
    first, last = out.readings[0], out.readings[-1]
    if (first, last) != (task.source, task.target):
        return checks.Result.fail(f"frames run from {first} to {last}, not "
                                  f"{task.source} to {task.target}")
    return checks.Result.ok(f"frames run from {first} to {last}")


@frames.check
def smooth(out: Frames) -> checks.Result:
    worst = max(out.distances)
    score = max(0.0, 1.0 - worst / (2 * out.bound))
    if worst > out.bound:
        step = out.distances.index(worst)
        return checks.Result.fail(
            f"frames {step} -> {step + 1} differ by {worst:.3f} > bound {out.bound:.3f}", score)
    return checks.Result.ok(f"largest step {worst:.3f} <= bound {out.bound:.3f}", score)


@frames.check
def target_rises(out: Frames) -> checks.Result:
    p = out.target_probs
    dips = [p[i] - p[i + 1] for i in range(len(p) - 1)]
    worst = max(0.0, *dips)
    if p[-1] <= p[0]:
        return checks.Result.fail(f"p(target) does not rise: {p[0]:.2f} -> {p[-1]:.2f}")
    if worst > MAX_DIP:
        return checks.Result.fail(f"p(target) dips by {worst:.2f} > {MAX_DIP}", score=1 - worst)
    return checks.Result.ok(f"p(target) rises {p[0]:.2f} -> {p[-1]:.2f}, largest dip "
                            f"{worst:.2f}", score=1 - worst)
