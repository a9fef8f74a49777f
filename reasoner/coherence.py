"""Step-wise coherence: how well each step and each edge of a run holds together.

- A step's score is the lowest score of its checks on the attempt that
  stands (0 when it failed); steps without checks carry no score.
- An edge (producer -> consumer) is scored by a metric that fits the data,
  measured once the run ends: text to text by sentence-embedding cosine,
  images to the digit labels they should show by the classifier's
  probability, images to images by closeness of their VAE latents. A plan
  may declare its own metric for an edge with `@plan.edge(producer, consumer)`.
- The run's coherence is the minimum and mean over steps and edges, and the
  weakest link among them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel

from reasoner.checks import Result

EdgeMetric = Callable[[Mapping[str, Any], BaseModel, BaseModel], Awaitable[float | Result]]


class EdgeScore(BaseModel):
    producer: str
    consumer: str
    metric: str
    score: float
    detail: str = ""


class StepScore(BaseModel):
    step: str
    status: str
    score: float | None  # None: no checks, or the step never ran
    attempts: int
    backtracks: int  # backtracks this step caused or received
    reasons: list[str]  # the verdicts behind the score


class Coherence(BaseModel):
    run_id: str
    steps: list[StepScore]
    edges: list[EdgeScore]
    min_step: float | None
    mean_step: float | None
    min_edge: float | None
    mean_edge: float | None
    weakest: str | None  # "step 'render'" or "edge 'outline' -> 'paragraph_1'"
    weakest_score: float | None


# --------------------------------------------------------------- field access
def _texts(model: BaseModel) -> list[str]:
    found = []
    for value in model.__dict__.values():
        if isinstance(value, str) and value.strip():
            found.append(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            found.extend(value)
    return found


def _images(model: BaseModel) -> np.ndarray | None:
    """All 2-D uint8 images of a model as (n, 28, 28) floats; strips are cut into digits."""
    found = []
    for value in model.__dict__.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 2:
                if item.shape[0] == 28 and item.shape[1] % 28 == 0:
                    found.extend(item.reshape(28, -1, 28).transpose(1, 0, 2))
    return np.stack(found).astype(np.float32) / 255.0 if found else None


def _labels(model: BaseModel) -> list[int] | None:
    labels = model.__dict__.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(v, int) for v in labels):
        return labels
    return None


# --------------------------------------------------------------- the metrics
async def _text(generators: Mapping[str, Any], a: BaseModel, b: BaseModel) -> tuple[float, str]:
    similarity = await generators["embedder"].similarity(" ".join(_texts(a)), " ".join(_texts(b)))
    return max(0.0, min(1.0, similarity)), "embedder cosine"


async def _label(
    generators: Mapping[str, Any], images: np.ndarray, labels: list[int]
) -> tuple[float, str]:
    reading = await generators["classifier"].classify(images)
    probs = [float(reading.probs[i, label]) for i, label in enumerate(labels)]
    return float(np.mean(probs)), f"classifier p(label) over {len(labels)} image(s)"


async def _latent(
    generators: Mapping[str, Any], a: np.ndarray, b: np.ndarray, la: list[int], lb: list[int]
) -> tuple[float, str]:
    za, zb = await asyncio.gather(generators["vae"].encode(a, la), generators["vae"].encode(b, lb))
    distance = float(np.linalg.norm(za.mean(0) - zb.mean(0))) / math.sqrt(za.shape[1])
    return math.exp(-distance), f"exp(-VAE latent distance {distance:.3f})"


async def score_edge(
    generators: Mapping[str, Any],
    producer: BaseModel,
    consumer: BaseModel,
    custom: EdgeMetric | None = None,
) -> tuple[str, float, str] | None:
    """(metric, score, detail) for one edge, or None when no metric fits its data."""
    if custom is not None:
        value = await custom(generators, producer, consumer)
        if isinstance(value, Result):
            return getattr(custom, "__name__", "custom"), value.score, value.reason
        return getattr(custom, "__name__", "custom"), float(value), ""
    images_p, images_c = _images(producer), _images(consumer)
    labels_c = _labels(consumer)
    if images_c is not None and labels_c is not None and len(labels_c) == len(images_c) and (
        images_p is None and "classifier" in generators
    ):
        return ("label", *await _label(generators, images_c, labels_c))
    if images_p is not None and images_c is not None and "vae" in generators:
        readers = generators.get("classifier")
        la, lb = _labels(producer), labels_c
        if (la is None or lb is None) and readers is not None:
            la = [int(v) for v in (await readers.classify(images_p)).labels]
            lb = [int(v) for v in (await readers.classify(images_c)).labels]
        if la is not None and lb is not None and (len(la), len(lb)) == (len(images_p), len(images_c)):
            return ("latent", *await _latent(generators, images_p, images_c, la, lb))
    if _texts(producer) and _texts(consumer) and "embedder" in generators:
        return ("text", *await _text(generators, producer, consumer))
    return None


def summarize(run_id: str, steps: list[StepScore], edges: list[EdgeScore]) -> Coherence:
    step_scores = [s.score for s in steps if s.score is not None]
    edge_scores = [e.score for e in edges]
    links = [(s.score, f"step {s.step!r}") for s in steps if s.score is not None]
    links += [(e.score, f"edge {e.producer!r} -> {e.consumer!r}") for e in edges]
    weakest = min(links, key=lambda link: link[0]) if links else None
    return Coherence(
        run_id=run_id, steps=steps, edges=edges,
        min_step=min(step_scores) if step_scores else None,
        mean_step=float(np.mean(step_scores)) if step_scores else None,
        min_edge=min(edge_scores) if edge_scores else None,
        mean_edge=float(np.mean(edge_scores)) if edge_scores else None,
        weakest=weakest[1] if weakest else None,
        weakest_score=weakest[0] if weakest else None,
    )
