"""Events the executor emits while runs progress, and the bus that delivers them.

Listeners are plain callables run synchronously on the event loop, so a
listener must be quick (update a progress bar, append to a list). With no
listeners, emitting costs one attribute check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "run_started",  # a run began (or resumed)
    "step_started",  # a step's attempt loop began
    "check",  # one check returned a verdict
    "attempt_failed",  # an attempt raised, timed out or failed a check
    "step_retried",  # the failed attempt will be resampled with a new seed
    "step_succeeded",  # the step passed and its output is committed
    "step_degraded",  # retries and backtracks are spent; its best attempt is kept
    "step_failed",  # retries and backtracks are spent
    "step_skipped",  # a producer failed, so this step will not run
    "backtracked",  # an upstream step is regenerated and the subgraph below re-runs
    "spawned",  # a step grew the graph with child nodes
    "batch",  # a generator host ran one batch (data: model, size, wait, forward time)
    "run_finished",  # the run ended succeeded, degraded or failed
]


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    run_id: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class EventBus:
    """Fan-out of events to listeners; `subscribe` returns the unsubscribe function."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def emit(self, kind: EventKind, run_id: str, step: str | None = None, **data: Any) -> None:
        if self._listeners:
            event = Event(kind, run_id, step, data)
            for listener in list(self._listeners):
                listener(event)
