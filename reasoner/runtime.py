"""What one execution needs from the world, handed to it in one small immutable bundle.

The Engine builds a `Runtime` once and passes it to every run it executes; a
Ray worker builds its own around a remote store and generator proxies. The
executor reads nothing else: not the Engine, not the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reasoner.coherence import EdgeMetric, applicable
from reasoner.events import EventBus
from reasoner.store import Store


@dataclass(frozen=True, slots=True)
class Runtime:
    store: Store  # where every attempt is written; `await store.synced()` makes it durable
    events: EventBus  # progress for listeners (CLI, tests, reports)
    generators: Mapping[str, Any]  # name -> handle, reached by steps as `ctx.<name>`
    limit: asyncio.Semaphore  # steps running at once, across every run sharing this runtime
    edge_metrics: tuple[EdgeMetric, ...] = ()  # tried in order on each edge when a run ends
    score_edges: bool = True  # measure edge coherence at all (plans' own metrics included)

    def __post_init__(self) -> None:  # a metric whose generators are missing can never score
        object.__setattr__(self, "edge_metrics", tuple(applicable(self.edge_metrics,
                                                                  self.generators)))
