"""Step-wise coherence: how well each step and each edge of a run holds together.

- A step's score is the lowest score of its checks on the attempt that
  stands (0 when it failed); steps without checks carry no score.
- An edge (producer -> consumer) is scored once the run ends by the first
  metric that fits its data: the plan's own, declared with
  `@plan.edge(producer, consumer)`, else the engine's `edge_metrics` in order
  (the project's text and image metrics live in `reasoner.project`).
- The run's coherence is the minimum and mean over steps and edges, and the
  weakest link among them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from reasoner.checks import Result

EdgeMetric = Callable[[Mapping[str, Any], BaseModel, BaseModel], Awaitable[float | Result | None]]


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
    confidence: float | None = None  # a voted step's share of agreeing samples


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


async def score_edge(
    generators: Mapping[str, Any],
    producer: BaseModel,
    consumer: BaseModel,
    metrics: Sequence[EdgeMetric],
) -> tuple[str, float, str] | None:
    """(metric, score, detail) from the first metric that applies, or None when none does.

    A metric is `async def name(generators, producer_output, consumer_output)`
    returning a score in [0, 1], a `checks.Result` (its reason is the detail),
    or None when the data is not its kind. A metric may name the generators it
    needs in a `needs` attribute (see `applicable`).
    """
    for metric in metrics:
        value = await metric(generators, producer, consumer)
        if value is None:
            continue
        name = getattr(metric, "__name__", "custom")
        if isinstance(value, Result):
            return name, value.score, value.reason
        return name, float(value), ""
    return None


def applicable(metrics: Sequence[EdgeMetric], generators: Mapping[str, Any]) -> list[EdgeMetric]:
    """The metrics whose `needs` (generator names) the engine has: no others can score."""
    return [m for m in metrics if all(name in generators for name in getattr(m, "needs", ()))]


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
