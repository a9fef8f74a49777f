"""The records a run leaves behind: runs, their graphs, step nodes, attempts, backtracks.

These pydantic models are what the store writes and reads, what `Run`
exposes, and what `--json` prints. Step outputs are not in them: each output
is stored once, as its own model's JSON, next to the attempt that made it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from reasoner._exceptions import InputError

# "degraded": a step whose checks could not be met kept its best attempt (`on_exhausted="best"`)
# and the run went on; a run ends "degraded" when no required step failed and some step is
# degraded. "interrupted": a run whose process was cancelled (Ctrl-C, SIGTERM, a caller that
# stopped waiting); like "running" it is resumable. Steps never have that status.
Status = Literal["pending", "running", "succeeded", "degraded", "failed", "skipped", "interrupted"]
DONE: tuple[Status, ...] = ("succeeded", "degraded")  # a node with an output that stands
FINISHED: tuple[Status, ...] = ("succeeded", "degraded", "failed")  # a run that ended

_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it is safe as a file name and a key: 1-64 of A-Z a-z 0-9 . _ -, no leading dot."""
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        raise InputError(
            f"invalid run id {run_id!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )
    return run_id


@dataclass(slots=True)
class CheckRecord:
    name: str
    passed: bool
    score: float
    reason: str = ""


@dataclass(slots=True)
class Compute:
    """What an attempt spent: calls per generator, and language-model tokens.

    Counted by `ctx`'s generator handles as the step and its checks call them:
    every call by the generator's name, and the `prompt_tokens` and
    `completion_tokens` of any result that reports them.
    """

    calls: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    generated_tokens: int = 0

    def count(self, generator: str, result: object) -> None:
        self.calls[generator] = self.calls.get(generator, 0) + 1
        self.prompt_tokens += _tokens(result, "prompt_tokens")
        self.generated_tokens += _tokens(result, "completion_tokens")

    def add(self, other: Compute) -> None:
        for name, n in other.calls.items():
            self.calls[name] = self.calls.get(name, 0) + n
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens

    @classmethod
    def total(cls, parts: Iterable[Compute]) -> Compute:
        total = cls()
        for part in parts:
            total.add(part)
        return total

    def __str__(self) -> str:
        return describe_compute(self.calls, self.prompt_tokens, self.generated_tokens)


def describe_compute(calls: Mapping[str, float], prompt_tokens: float,
                     generated_tokens: float) -> str:
    """"lm 3, gan 1; tokens 120 in, 45 out", for one attempt or a mean over runs."""
    said = ", ".join(f"{name} {n:g}" for name, n in sorted(calls.items())) or "no calls"
    if not (prompt_tokens or generated_tokens):
        return said
    return f"{said}; tokens {prompt_tokens:.0f} in, {generated_tokens:.0f} out"


def _tokens(result: object, name: str) -> int:
    value = getattr(result, name, 0)
    return value if isinstance(value, int) else 0


@dataclass(slots=True)
class AttemptRecord:
    """One execution of a step: its seed, verdicts, error and timing.

    A slotted dataclass rather than a model because the executor makes one per
    step on its hot path; `ATTEMPT` (pydantic) serializes and validates it
    where it crosses into and out of the store.
    """

    node: str
    generation: int  # bumped each time backtracking regenerates the node or an ancestor
    attempt: int  # 1-based within the generation
    seed: int
    # "succeeded": passed and stands for the node. "passed": one of a step's samples that
    # passed its checks; the node's row says which sample was chosen. "failed": an error or
    # a failed check.
    status: Literal["succeeded", "passed", "failed"]
    checks: list[CheckRecord] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    started_at: float = 0.0
    duration_s: float = 0.0
    compute: Compute = field(default_factory=Compute)

    @property
    def score(self) -> float:
        """The mean of its checks' scores (1 without checks, 0 when it raised)."""
        if self.error:
            return 0.0
        return sum(c.score for c in self.checks) / len(self.checks) if self.checks else 1.0

    @property
    def reason(self) -> str:
        """Why the attempt failed, in one line ('' when it succeeded)."""
        if self.error:
            return self.error
        failed = [f"{c.name}: {c.reason}" if c.reason else c.name for c in self.checks if not c.passed]
        return "; ".join(failed)


ATTEMPT = TypeAdapter(AttemptRecord)


class NodeRecord(BaseModel):
    """A node's row: written when it is spawned, reset by a backtrack, fails or is skipped.

    A plain success writes no node row: the succeeded attempt of the node's
    current generation is the record of it, which keeps a step's commit to one
    row. A sampled step's choice, and a degraded step's best effort, are written
    here: `chosen` names the attempt that stands for the node.
    """

    name: str
    template: str | None = None  # set for spawned nodes
    parent: str | None = None
    payload: str | None = None  # payload model JSON for spawned nodes
    generation: int = 0
    status: Status = "pending"
    ordinal: int = 0  # spawn order, so a resumed run rebuilds the graph in the same order
    chosen: int | None = None  # the attempt (of this generation) whose output stands
    confidence: float | None = None  # vote share of the chosen answer among the samples
    votes: dict[str, int] = {}  # answer -> samples voting for it


class BacktrackRecord(BaseModel):
    failed: str
    target: str
    reason: str
    at: float


class StepShape(BaseModel):
    name: str
    output: str  # the output model's class name
    takes: list[str] = []  # the steps whose outputs it takes, in order


class PlanShape(BaseModel):
    """The compiled graph of a run, kept with it: enough to show the run without its plan."""

    input: str  # the input model's class name
    steps: list[StepShape]
    templates: dict[str, str] = {}  # template name -> output model's class name


class RunRecord(BaseModel):
    run_id: str
    plan: str
    plan_ref: str | None = None  # registry name or "module:attribute", for resume
    spec: dict[str, Any] | None = None  # the graph spec of a plan built from one, for resume
    blocks: dict[str, str] = {}  # with `spec`: block name -> the module registering it
    shape: PlanShape | None = None  # None only in runs stored before shapes were kept
    status: Status = "running"
    seed: int = 0
    input: str  # input model JSON
    error: str | None = None
    max_backtracks: int = 2
    concurrency: int | None = None
    created_at: float
    finished_at: float | None = None
