"""The records a run leaves behind: runs, step nodes, attempts, backtracks.

These pydantic models are what the store writes and reads, what `Run`
exposes, and what `--json` prints. Step outputs are not in them: each output
is stored once, as its own model's JSON, next to the attempt that made it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "running", "succeeded", "failed", "skipped"]


class CheckRecord(BaseModel):
    name: str
    passed: bool
    score: float
    reason: str = ""


class AttemptRecord(BaseModel):
    """One execution of a step: its seed, verdicts, error and timing."""

    node: str
    generation: int  # bumped each time backtracking regenerates the node or an ancestor
    attempt: int  # 1-based within the generation
    seed: int
    status: Literal["succeeded", "failed"]
    checks: list[CheckRecord] = Field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    started_at: float
    duration_s: float

    @property
    def reason(self) -> str:
        """Why the attempt failed, in one line ('' when it succeeded)."""
        if self.error:
            return self.error
        failed = [f"{c.name}: {c.reason}" if c.reason else c.name for c in self.checks if not c.passed]
        return "; ".join(failed)


class NodeRecord(BaseModel):
    """The live state of one node of a run's graph (static step or spawned)."""

    name: str
    template: str | None = None  # set for spawned nodes
    parent: str | None = None
    payload: str | None = None  # payload model JSON for spawned nodes
    generation: int = 0
    status: Status = "pending"
    attempts: int = 0  # attempts made in this generation
    output_attempt: int | None = None  # store id of the attempt whose output stands
    ordinal: int = 0  # spawn order, so a resumed run rebuilds the graph in the same order


class BacktrackRecord(BaseModel):
    failed: str
    target: str
    reason: str
    at: float


class RunRecord(BaseModel):
    run_id: str
    plan: str
    plan_ref: str | None = None  # registry name or "module:attribute", for resume
    status: Status = "running"
    seed: int = 0
    input: str  # input model JSON
    error: str | None = None
    max_backtracks: int = 2
    concurrency: int | None = None
    created_at: float
    finished_at: float | None = None
