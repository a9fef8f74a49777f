"""`Run`: what `Engine.run` returns and `Engine.load` reads back from a store.

A run keeps every step's status, output and full attempt history (seeds,
check verdicts, errors with tracebacks, timings), and the backtracking
decisions taken. `to_json()` is the shape `reasoner ... --json` prints.

`read_run` rebuilds a Run from a store without importing its plan: the run's
record keeps its graph (`PlanShape`), and each output is read into a model
made from the stored JSON itself, named like the step's output model, with
image and array fields decoded. Given the plan, outputs are its own models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, create_model

from reasoner.arrays import BLOB_KEY, Array, Image
from reasoner.coherence import Coherence, EdgeScore, StepScore, summarize
from reasoner.records import AttemptRecord, BacktrackRecord, CheckRecord, Compute, Status

if TYPE_CHECKING:
    from reasoner.plan import CompiledPlan
    from reasoner.store import StoredRun


@dataclass
class StepRun:
    """One node of a finished (or interrupted) run."""

    name: str
    status: Status
    generation: int
    attempts: list[AttemptRecord]
    output: Any = None  # the step's pydantic output when it succeeded or is degraded
    template: str | None = None
    parent: str | None = None
    standing: AttemptRecord | None = None  # the attempt whose output stands
    confidence: float | None = None  # select="vote": the chosen answer's share of the samples
    votes: dict[str, int] = field(default_factory=dict)  # select="vote": answer -> samples

    @property
    def checks(self) -> list[CheckRecord]:
        """The check verdicts of the standing attempt, else of the latest one."""
        attempt = self.standing or (self.attempts[-1] if self.attempts else None)
        return attempt.checks if attempt is not None else []

    @property
    def compute(self) -> Compute:
        """What every attempt of this step spent."""
        return Compute.total(a.compute for a in self.attempts)

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
    spec: dict[str, Any] | None = None  # the graph spec the plan was built from, if it was

    def coherence(self) -> Coherence:
        """Per-step and per-edge coherence, their minimum and mean, and the weakest link."""
        steps = []
        for name, step in self.steps.items():
            standing = step.standing or (step.attempts[-1] if step.attempts else None)
            if standing is None or step.status in ("skipped", "pending", "running"):
                score = None
            elif step.status == "failed":
                score = 0.0
            else:
                score = min((c.score for c in standing.checks), default=None)
            backtracks = sum(name in (b.failed, b.target) for b in self.backtracks)
            reasons = [f"{c.name}: {c.reason}" for c in standing.checks] if standing else []
            if step.status in ("failed", "degraded") and standing is not None:
                reasons.append(standing.reason)
            steps.append(StepScore(step=name, status=step.status, score=score,
                                   attempts=len(step.attempts), backtracks=backtracks,
                                   reasons=reasons, confidence=step.confidence))
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
    def compute(self) -> Compute:
        """What the whole run spent: every attempt of every step."""
        return Compute.total(step.compute for step in self.steps.values())

    @property
    def degraded(self) -> list[str]:
        """The steps that kept a best effort because their checks could not be met."""
        return [name for name, step in self.steps.items() if step.status == "degraded"]

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
                "chosen": node.standing.attempt if node.standing else None,
                "confidence": node.confidence,
                "votes": node.votes,
                "output": None if node.output is None else node.output.model_dump(mode="json"),
                "checks": [asdict(c) for c in node.checks],
                "compute": asdict(node.compute),
            }
            if node.status in ("failed", "degraded") and node.attempts:
                steps[name]["error"] = (node.standing or node.attempts[-1]).reason
        return finite_json({
            "run_id": self.run_id,
            "plan": self.plan,
            "status": self.status,
            "seed": self.seed,
            "error": self.error,
            "input": self.input.model_dump(mode="json"),
            "spec": self.spec,
            "backtracks": [b.model_dump() for b in self.backtracks],
            "edges": [e.model_dump() for e in self.edges],
            "compute": asdict(self.compute),
            "steps": steps,
        })


def excerpt(output: BaseModel | None, limit: int = 160) -> str:
    """A step output in one short line: arrays by dtype and shape, long text cut."""
    if output is None:
        return "(no output)"
    text = json.dumps(output.model_dump(), default=lambda value: (
        f"<{value.dtype} array {'x'.join(map(str, value.shape))}>" if hasattr(value, "shape")
        else str(value)))
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


# ----------------------------------------------------------- reading a stored run
def read_run(stored: StoredRun, plan: CompiledPlan | None = None) -> Run:
    """The Run a store's record describes; never imports user code when `plan` is None."""
    record, shape = stored.record, stored.record.shape
    # Each step's output model: the plan's class, or without the plan the class's name.
    outputs: dict[str, type[BaseModel] | str]
    templates: dict[str, type[BaseModel] | str]
    if plan is not None:
        task: BaseModel = plan.input.model_validate_json(record.input)
        outputs = {name: step.output for name, step in plan.steps.items()}
        templates = {name: step.output for name, step in plan.templates.items()}
        links = [(p, name) for name in plan.steps for p in plan.producers[name]]
    elif shape is not None:
        task = _untyped(shape.input, record.input, stored)
        outputs = {s.name: s.output for s in shape.steps}
        templates = dict(shape.templates)
        links = [(p, s.name) for s in shape.steps for p in s.takes]
    else:  # stored before runs kept their graph: steps in the order they first ran, no edges
        task = _untyped("Input", record.input, stored)
        outputs = dict.fromkeys(_static_names(stored), "Output")
        templates, links = {}, []
    runs: dict[str, StepRun] = {}
    for name, state in stored.states(list(outputs)).items():
        row = state.row
        template = row.template if row.parent else None
        model = templates.get(template or "", "Output") if template else outputs[name]
        output = None
        if state.output is not None:
            output = (_untyped(model, state.output, stored) if isinstance(model, str) else
                      model.model_validate_json(state.output, context={"blobs": stored.blobs}))
        runs[name] = StepRun(name, state.status, row.generation, state.attempts, output,
                             template, row.parent, state.standing, row.confidence, dict(row.votes))
        if row.parent:
            links.append((row.parent, name))
    return Run(record.run_id, record.plan, record.status, record.seed, task, runs,
               list(stored.backtracks), record.created_at, record.error, record.finished_at,
               list(stored.edges), links, record.spec)


def _static_names(stored: StoredRun) -> list[str]:
    """The steps (not spawned nodes) of a run that kept no graph, in the order they first ran."""
    names = dict.fromkeys(a.record.node for a in stored.attempts)
    names.update(dict.fromkeys(stored.nodes))
    return [n for n in names if n not in stored.nodes or stored.nodes[n].parent is None]


def _untyped(name: str, text: str, stored: StoredRun) -> BaseModel:
    """A stored JSON object as a frozen model named `name`; blob fields become arrays again."""
    data = json.loads(text)
    if not isinstance(data, dict):
        data = {"value": data}
    kinds = tuple((key, _field_kind(value, stored.blob_kinds)) for key, value in data.items())
    model = _model(name if name.isidentifier() else "Output", kinds)
    return model.model_validate(data, context={"blobs": stored.blobs})


def _field_kind(value: Any, blob_kinds: dict[str, str]) -> str:
    """"image", "array", "images", "arrays" for blob references (by what was stored), else "any"."""

    def blob(item: Any) -> str | None:
        if isinstance(item, dict) and len(item) == 1 and BLOB_KEY in item:
            return "image" if blob_kinds.get(item[BLOB_KEY]) == "png" else "array"
        return None

    if isinstance(value, list) and value and all(blob(v) for v in value):
        return f"{blob(value[0])}s"
    return blob(value) or "any"


_TYPES: dict[str, Any] = {"image": Image, "array": Array, "images": list[Image],
                          "arrays": list[Array], "any": Any}


@cache
def _model(name: str, kinds: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    config = ConfigDict(frozen=True, arbitrary_types_allowed=True, protected_namespaces=(),
                        extra="allow", ser_json_inf_nan="strings")
    fields: dict[str, Any] = {key: (_TYPES[kind], ...) for key, kind in kinds
                              if key.isidentifier() and not hasattr(BaseModel, key)}
    return create_model(name, __config__=config, **fields)  # other keys stay, as extras

