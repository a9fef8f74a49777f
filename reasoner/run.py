"""`Run`: what `Engine.run` returns and `Engine.load` reads back from a store.

A run keeps every step's status, output and full attempt history (seeds,
check verdicts, errors with tracebacks, timings), and the backtracking
decisions taken. `to_json()` is the shape `reasoner ... --json` prints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from reasoner.coherence import Coherence, EdgeScore, StepScore, summarize
from reasoner.records import AttemptRecord, BacktrackRecord, CheckRecord, Status


@dataclass
class StepRun:
    """One node of a finished (or interrupted) run."""

    name: str
    status: Status
    generation: int
    attempts: list[AttemptRecord]
    output: Any = None  # the step's pydantic output when it succeeded
    template: str | None = None
    parent: str | None = None

    @property
    def checks(self) -> list[CheckRecord]:
        """The check verdicts of the latest attempt."""
        return self.attempts[-1].checks if self.attempts else []

    @property
    def seeds(self) -> list[int]:
        return [a.seed for a in self.attempts]


@dataclass
class Run:
    """A run's outcome; its records are the same the store keeps."""

    run_id: str
    plan: str
    status: Status
    seed: int
    input: Any  # the plan's input model
    steps: dict[str, StepRun]
    backtracks: list[BacktrackRecord]
    created_at: float
    error: str | None = None
    finished_at: float | None = None
    edges: list[EdgeScore] = field(default_factory=list)  # coherence of producer -> consumer
    links: list[tuple[str, str]] = field(default_factory=list)  # the graph: producer -> consumer

    def coherence(self) -> Coherence:
        """Per-step and per-edge coherence, their minimum and mean, and the weakest link."""
        steps = []
        for name, step in self.steps.items():
            standing = step.attempts[-1] if step.attempts else None
            if standing is None or step.status in ("skipped", "pending", "running"):
                score = None
            elif step.status == "failed":
                score = 0.0
            else:
                score = min((c.score for c in standing.checks), default=None)
            backtracks = sum(name in (b.failed, b.target) for b in self.backtracks)
            reasons = [f"{c.name}: {c.reason}" for c in standing.checks] if standing else []
            if step.status == "failed" and standing is not None:
                reasons.append(standing.reason)
            steps.append(StepScore(step=name, status=step.status, score=score,
                                   attempts=len(step.attempts), backtracks=backtracks,
                                   reasons=reasons))
        return summarize(self.run_id, steps, self.edges)

    def output(self, step: str) -> Any:
        """The output of `step`, or KeyError naming the steps that have one."""
        node = self.steps.get(step)
        if node is None or node.output is None:
            have = ", ".join(n for n, s in self.steps.items() if s.output is not None) or "none"
            state = "no such step" if node is None else f"status {node.status}"
            raise KeyError(f"step {step!r} has no output ({state}); steps with output: {have}")
        return node.output

    @property
    def outputs(self) -> dict[str, Any]:
        return {name: s.output for name, s in self.steps.items() if s.output is not None}

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.created_at

    def to_json(self) -> dict[str, Any]:
        """The `--json` object: images as PNG data URIs, arrays as lists.

        It is standard JSON (RFC 8259): a non-finite float is written as the
        string "NaN", "Infinity" or "-Infinity" (as pydantic and protobuf's JSON
        mapping do), and a float field reads such a string back.
        """
        steps: dict[str, Any] = {}
        for name, node in self.steps.items():
            steps[name] = {
                "status": node.status,
                "attempts": len(node.attempts),
                "output": None if node.output is None else node.output.model_dump(mode="json"),
                "checks": [asdict(c) for c in node.checks],
            }
            if node.status == "failed" and node.attempts:
                steps[name]["error"] = node.attempts[-1].reason
        return finite_json({
            "run_id": self.run_id,
            "plan": self.plan,
            "status": self.status,
            "seed": self.seed,
            "error": self.error,
            "input": self.input.model_dump(mode="json"),
            "backtracks": [b.model_dump() for b in self.backtracks],
            "edges": [e.model_dump() for e in self.edges],
            "steps": steps,
        })


def finite_json(value: Any) -> Any:
    """`value` with each non-finite float replaced by "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value
