"""How this project's models meet the model-agnostic engine: the one wiring module.

The engine core (plan, executor, store, context, checks, events, run, records)
knows steps, checks and stores, never a model or an image format. This module
is where the project's own pieces are plugged in:
- `ProjectGenerators`: the five handles of `reasoner.handles` (lm, gan, vae,
  classifier, embedder) behind one `generators.host.Host`, started on first use,
  so plans that never touch a model never import torch;
- `EDGE_METRICS`: the coherence metrics for this project's data, tried in order
  on each edge of a run (digit images read back by the classifier, image pairs
  compared in the VAE's latent space, texts compared by the embedder);
- `PLAN_PACKAGES`: where plans are found by name (the `plans` package).
`reasoner.engine.default_engine` puts them together for the CLI.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from reasoner.checks import Result
from reasoner.coherence import EdgeMetric
from reasoner.events import EventBus
from reasoner.handles import HANDLES

PLAN_PACKAGES = ("plans",)  # a module `plans/verified_digits.py` exposing `plan` is "verified-digits"
DIGIT = 28  # the side of one digit image; a strip of n digits is (28, 28 n)


class ProjectGenerators(Mapping[str, Any]):
    """This project's models behind one batching host, created on first use.

    The first `ctx.lm` (or `ctx.gan`, ...) starts the host on `device` (CUDA when
    present); until then nothing imports torch.
    """

    def __init__(self, device: str | None = None, events: EventBus | None = None) -> None:
        self.device = device
        self.events = events
        self.host: Any = None
        self._handles: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in HANDLES:
            raise KeyError(name)
        if self.host is None:
            from generators.host import Host

            self.host = Host(device=self.device)
            if self.events is not None:
                bus = self.events
                self.host.subscribe(lambda batch: bus.emit("batch", "", **vars(batch)))
            self._handles = self.host.handles()
        return self._handles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(HANDLES)

    def __len__(self) -> int:
        return len(HANDLES)

    async def aclose(self) -> None:
        if self.host is not None:
            await self.host.aclose()


# --------------------------------------------------------------- field access
def _texts(model: BaseModel) -> list[str]:
    found = []
    for value in model.__dict__.values():
        if isinstance(value, str) and value.strip():
            found.append(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            found.extend(value)
    return found


def _digits(model: BaseModel) -> np.ndarray | None:
    """All digit images of a model as (n, 28, 28) floats in [0, 1]; strips are cut into digits."""
    found = []
    for value in model.__dict__.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 2:
                if item.shape[0] == DIGIT and item.shape[1] % DIGIT == 0:
                    found.extend(item.reshape(DIGIT, -1, DIGIT).transpose(1, 0, 2))  # (n, 28, 28)
    return np.stack(found).astype(np.float32) / 255.0 if found else None


def _labels(model: BaseModel, count: int) -> list[int] | None:
    """The digits a model says its `count` images show (a `labels` field), if it says."""
    labels = model.__dict__.get("labels")
    if isinstance(labels, list) and len(labels) == count and all(isinstance(v, int) for v in labels):
        return labels
    return None


# ---------------------------------------------------------------- the metrics
async def label(generators: Mapping[str, Any], a: BaseModel, b: BaseModel) -> Result | None:
    """Digits drawn from a description: the classifier's probability of the labels asked for."""
    images = _digits(b)
    labels = None if images is None else _labels(b, len(images))
    if labels is None or _digits(a) is not None or "classifier" not in generators:
        return None
    reading = await generators["classifier"].classify(images)
    probs = [float(reading.probs[i, digit]) for i, digit in enumerate(labels)]
    return Result.ok(f"classifier p(label) over {len(labels)} image(s)",
                     score=min(1.0, float(np.mean(probs))))


async def latent(generators: Mapping[str, Any], a: BaseModel, b: BaseModel) -> Result | None:
    """Digits redrawn from digits: closeness of the two sets' mean VAE latents."""
    images_a, images_b = _digits(a), _digits(b)
    if images_a is None or images_b is None or "vae" not in generators:
        return None
    labels_a, labels_b = _labels(a, len(images_a)), _labels(b, len(images_b))
    if labels_a is None or labels_b is None:
        if "classifier" not in generators:
            return None
        reader = generators["classifier"]
        labels_a = [int(v) for v in (await reader.classify(images_a)).labels]
        labels_b = [int(v) for v in (await reader.classify(images_b)).labels]
    vae = generators["vae"]
    za, zb = await asyncio.gather(vae.encode(images_a, labels_a), vae.encode(images_b, labels_b))
    distance = float(np.linalg.norm(za.mean(0) - zb.mean(0))) / math.sqrt(za.shape[1])
    return Result.ok(f"exp(-VAE latent distance {distance:.3f})", score=math.exp(-distance))


async def text(generators: Mapping[str, Any], a: BaseModel, b: BaseModel) -> Result | None:
    """Text from text: sentence-embedding cosine, negative similarity counted as 0."""
    texts_a, texts_b = _texts(a), _texts(b)
    if not texts_a or not texts_b or "embedder" not in generators:
        return None
    similarity = await generators["embedder"].similarity(" ".join(texts_a), " ".join(texts_b))
    return Result.ok("embedder cosine", score=max(0.0, min(1.0, similarity)))


label.needs = ("classifier",)  # type: ignore[attr-defined]
latent.needs = ("vae",)  # type: ignore[attr-defined]
text.needs = ("embedder",)  # type: ignore[attr-defined]
EDGE_METRICS: tuple[EdgeMetric, ...] = (label, latent, text)
