"""Plans: typed step graphs defined in Python.

A `Plan` holds steps. A step is an async function whose parameters say what
it depends on, the way pytest fixtures do: a parameter named after another
step receives that step's output, a parameter annotated with the plan's
input model receives the input, and `ctx` receives the step's `Context`.
Every value that crosses an edge is a pydantic model, and the types must
match: `validate()` compiles the plan into a networkx DiGraph and raises
`PlanError` naming the step and parameter for every mistake, before anything
runs.

Plans sized by their task (N paragraphs, N digits) register a `planner`
that adds steps for a given input; templates are steps that only exist when
a running step spawns them (`ctx.spawn`), for searches that grow the graph.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from reasoner._exceptions import PlanError

if TYPE_CHECKING:
    import networkx as nx

CTX = "ctx"
OUTPUT_NAMES = ("out", "output")
SPAWN_SEPARATOR = "/"

Source = Literal["ctx", "input", "step", "steps", "payload", "default"]


@dataclass(frozen=True)
class StepOptions:
    """Per-step behaviour; `retries` counts resamples after the first attempt."""

    retries: int = 0
    timeout: float | None = None
    uses: Sequence[str] = ()
    backtrack: bool = True  # may a failing descendant regenerate this step?
    required: bool = True  # templates: does a failed spawned node fail the run?

    def __post_init__(self) -> None:
        object.__setattr__(self, "uses", tuple(self.uses))  # any sequence of names
        if self.retries < 0:
            raise PlanError(f"retries must be >= 0, got {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise PlanError(f"timeout must be positive seconds, got {self.timeout}")


@dataclass(frozen=True)
class Binding:
    """Where one parameter of a step or check gets its value."""

    param: str
    source: Source
    ref: str | tuple[str, ...] = ""  # producer step name(s) for "step"/"steps"


@dataclass
class Check:
    name: str
    fn: Callable[..., Any]
    params: tuple[str, ...]
    is_async: bool


@dataclass(eq=False)
class Step:
    """One node of a plan: a function (async, or plain and run in a thread), options, checks."""

    name: str
    fn: Callable[..., Any]
    output: type[BaseModel]
    options: StepOptions
    annotations: dict[str, Any]  # parameter -> annotation, ctx excluded
    defaults: frozenset[str]  # parameters with a default value
    inputs: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # explicit bindings
    template: bool = False
    checks: list[Check] = field(default_factory=list)
    takes_ctx: bool = False
    is_async: bool = True  # a plain `def` step runs in a worker thread, off the event loop

    @property
    def checks_take_ctx(self) -> bool:
        return any(CTX in check.params for check in self.checks)

    def check(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Register a consistency check (sync or async) on this step's output."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            check_name = name or fn.__name__
            allowed = {CTX, self.name, *OUTPUT_NAMES, *self.annotations}
            params = tuple(inspect.signature(fn).parameters)
            for param in params:
                if param not in allowed:
                    raise PlanError(
                        f"check {check_name!r} of step {self.name!r}: parameter {param!r} is "
                        f"neither an input of the step ({', '.join(self.annotations) or 'none'}) "
                        f"nor 'out', 'output', {self.name!r} or 'ctx'"
                    )
            if any(c.name == check_name for c in self.checks):
                raise PlanError(f"step {self.name!r} already has a check named {check_name!r}")
            self.checks.append(Check(check_name, fn, params, inspect.iscoroutinefunction(fn)))
            return fn

        return register(fn) if fn is not None else register

    def __repr__(self) -> str:
        return f"<Step {self.name} -> {self.output.__name__}>"


def _make_step(
    fn: Callable[..., Any],
    name: str | None,
    options: StepOptions,
    inputs: dict[str, str | Sequence[str]] | None,
    template: bool,
) -> Step:
    base = fn.func if isinstance(fn, functools.partial) else fn
    step_name = name or base.__name__
    where = f"step {step_name!r}"
    if not step_name or SPAWN_SEPARATOR in step_name:
        raise PlanError(f"{where}: a step name must be non-empty and must not contain '/'")
    hints = _type_hints(base, where)
    output = hints.get("return")
    if not (isinstance(output, type) and issubclass(output, BaseModel)):
        raise PlanError(
            f"{where}: the return annotation must be a pydantic model class, got {output!r}"
        )
    annotations: dict[str, Any] = {}
    defaults: set[str] = set()
    takes_ctx = False
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise PlanError(f"{where}: *args and **kwargs cannot name dependencies")
        if param.name == CTX:
            takes_ctx = True
            continue
        if param.default is not param.empty:
            defaults.add(param.name)
        if param.name not in hints:
            if param.name in defaults:
                continue
            raise PlanError(
                f"{where}: parameter {param.name!r} has no type annotation; annotate it with "
                f"the model it receives"
            )
        annotations[param.name] = hints[param.name]
    explicit = {k: (v if isinstance(v, str) else tuple(v)) for k, v in (inputs or {}).items()}
    for param in explicit:
        if param not in annotations:
            raise PlanError(f"{where}: inputs names parameter {param!r}, which it does not have")
    return Step(
        step_name, fn, output, options, annotations, frozenset(defaults), explicit, template,
        takes_ctx=takes_ctx, is_async=inspect.iscoroutinefunction(fn),
    )


def _type_hints(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    """Resolve annotations, also string ones naming classes local to the defining function."""
    try:
        return typing.get_type_hints(fn)
    except NameError as exc:
        error = exc
    frame = sys._getframe(1)
    while frame is not None:  # the plan may be built inside a function (tests, notebooks)
        try:
            return typing.get_type_hints(fn, localns=frame.f_locals)
        except NameError:
            frame = frame.f_back  # type: ignore[assignment]
    raise PlanError(f"{where}: cannot resolve an annotation: {error}") from error


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


class Plan:
    """A named, typed step graph over one input model."""

    def __init__(
        self,
        name: str,
        input: type[BaseModel],
        *,
        description: str | None = None,
        max_backtracks: int = 2,
        concurrency: int | None = None,
        examples: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        if not (isinstance(input, type) and issubclass(input, BaseModel)):
            raise PlanError(f"plan {name!r}: input must be a pydantic model class, got {input!r}")
        self.name = name
        self.input = input
        self.description = (description or "").strip()
        self.max_backtracks = max_backtracks
        self.concurrency = concurrency
        self.examples = list(examples)  # (request in words, input): how the planner learns a plan
        for request, value in self.examples:
            try:
                input.model_validate(value)
            except ValueError as exc:
                raise PlanError(
                    f"plan {name!r}: example {request!r} has an invalid input: {exc}"
                ) from exc
        self.steps: dict[str, Step] = {}
        self.templates: dict[str, Step] = {}
        self.edges: dict[tuple[str, str], Callable[..., Any]] = {}  # custom coherence metrics
        self._planner: Callable[[Plan, Any], None] | None = None
        self._bindings: dict[str, tuple[Binding, ...]] | None = None
        self._dependants: dict[str, tuple[str, ...]] = {}
        self._producers: dict[str, tuple[str, ...]] = {}
        self._graph: nx.DiGraph | None = None
        self.module = sys._getframe(1).f_globals.get("__name__", "")  # for resume by reference

    # ---------------------------------------------------------------- building
    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        uses: Sequence[str] = (),
        backtrack: bool = True,
        inputs: dict[str, str | Sequence[str]] | None = None,
    ) -> Any:
        """Decorator adding a step; usable bare (`@plan.step`) or with options.

        `timeout` bounds each attempt, the step and its checks together. An `async def`
        step is cancelled at its next await; a plain `def` step runs in a worker thread,
        which cannot be interrupted: the attempt fails on time and the thread's result
        is dropped when it ends.
        """

        def register(fn: Callable[..., Any]) -> Step:
            return self.add_step(fn, name=name, inputs=inputs, retries=retries,
                                 timeout=timeout, uses=uses, backtrack=backtrack)

        return register(fn) if fn is not None else register

    def add_step(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        inputs: dict[str, str | Sequence[str]] | None = None,
        **options: Any,
    ) -> Step:
        """Add a step by code: planners call this with generated names and bindings."""
        return self._add(_make_step(fn, name, StepOptions(**options), inputs, template=False))

    def template(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        uses: Sequence[str] = (),
        backtrack: bool = True,
        required: bool = True,
    ) -> Any:
        """Decorator for a step that only runs when spawned; it takes one payload model."""
        options = StepOptions(retries, timeout, uses, backtrack, required)

        def register(fn: Callable[..., Any]) -> Step:
            step = _make_step(fn, name, options, None, template=True)
            payload = [p for p in step.annotations if p not in step.defaults]
            if len(payload) != 1:
                raise PlanError(
                    f"template {step.name!r} must take exactly one payload parameter besides "
                    f"ctx, got {payload}"
                )
            if step.name in self.templates or step.name in self.steps:
                raise PlanError(f"plan {self.name!r} already has a step named {step.name!r}")
            self.templates[step.name] = step
            return step

        return register(fn) if fn is not None else register

    def edge(self, producer: str, consumer: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare how to score the edge producer -> consumer for coherence reports.

        The metric is `async def metric(generators, producer_output, consumer_output)`
        returning a score in [0, 1] or a `checks.Result`.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.edges[(producer, consumer)] = fn
            self._graph = None
            return fn

        return register

    def planner(self, fn: Callable[[Plan, Any], None]) -> Callable[[Plan, Any], None]:
        """Register `fn(plan, task)`, which adds the steps a given input needs."""
        self._planner = fn
        return fn

    def _add(self, step: Step) -> Step:
        if step.name in self.steps or step.name in self.templates:
            raise PlanError(f"plan {self.name!r}: duplicate step name {step.name!r}")
        self.steps[step.name] = step
        self._bindings = self._graph = None
        # Catch a type mismatch with an already defined producer right here, at the line
        # that introduces it; unknown names may still be defined later.
        for binding in self._bind(step, strict=False):
            self._check_types(step, binding)
        return step

    def for_input(self, task: BaseModel) -> Plan:
        """The concrete plan for one input: the planner's steps added, all validated."""
        if self._planner is None:
            self.validate()
            return self
        concrete = Plan.__new__(Plan)
        concrete.__dict__.update(self.__dict__)
        concrete.steps = dict(self.steps)
        concrete.templates = dict(self.templates)
        concrete.edges = dict(self.edges)
        concrete._planner = None
        concrete._bindings = concrete._graph = None
        try:
            self._planner(concrete, task)
        except PlanError:
            raise
        except Exception as exc:
            raise PlanError(f"plan {self.name!r}: planner failed for this input: {exc}") from exc
        concrete.validate()
        return concrete

    # -------------------------------------------------------------- validation
    def _bind(self, step: Step, *, strict: bool) -> list[Binding]:
        bindings: list[Binding] = []
        for param, annotation in step.annotations.items():
            explicit = step.inputs.get(param)
            if isinstance(explicit, tuple):
                bindings.append(Binding(param, "steps", explicit))
            elif explicit is not None:
                bindings.append(Binding(param, "step", explicit))
            elif step.template and param not in step.defaults:
                bindings.append(Binding(param, "payload"))
            elif param in self.steps:
                bindings.append(Binding(param, "step", param))
            elif isinstance(annotation, type) and issubclass(self.input, annotation):
                bindings.append(Binding(param, "input"))
            elif param in step.defaults:
                bindings.append(Binding(param, "default"))
            elif strict:
                known = sorted(self.steps)
                close = difflib.get_close_matches(param, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PlanError(
                    f"step {step.name!r}: parameter {param!r} names no step and its type "
                    f"{_type_name(annotation)} is not the plan input {self.input.__name__}"
                    f"{hint} (steps: {', '.join(known)})"
                )
        return bindings

    def _check_types(self, step: Step, binding: Binding) -> None:
        refs = (binding.ref,) if binding.source == "step" else binding.ref
        if binding.source not in ("step", "steps"):
            return
        expected = step.annotations[binding.param]
        if binding.source == "steps":
            args = typing.get_args(expected)
            if typing.get_origin(expected) not in (list, Sequence) or len(args) != 1:
                raise PlanError(
                    f"step {step.name!r}: parameter {binding.param!r} binds several steps, so "
                    f"annotate it list[Model], not {_type_name(expected)}"
                )
            expected = args[0]
        accepted = [a for a in typing.get_args(expected) if a is not type(None)] or [expected]
        if typing.get_origin(expected) not in (typing.Union, types.UnionType):
            accepted = [expected]
        for ref in refs:
            producer = self.steps.get(ref)
            if producer is None:
                continue
            if not any(isinstance(a, type) and issubclass(producer.output, a) for a in accepted):
                raise PlanError(
                    f"step {step.name!r}: parameter {binding.param!r} expects "
                    f"{_type_name(expected)} but step {ref!r} returns "
                    f"{producer.output.__name__}; annotate it {producer.output.__name__}"
                )

    def validate(self) -> nx.DiGraph:
        """Compile to a DiGraph, raising PlanError for any unknown name, bad type or cycle."""
        if self._graph is not None:
            return self._graph
        import networkx as nx

        if not self.steps:
            raise PlanError(f"plan {self.name!r} has no steps")
        graph = nx.DiGraph(name=self.name)
        bindings: dict[str, tuple[Binding, ...]] = {}
        for step in self.steps.values():
            graph.add_node(step.name)
        for step in list(self.steps.values()) + list(self.templates.values()):
            step_bindings = self._bind(step, strict=True)
            for binding in step_bindings:
                refs = (binding.ref,) if binding.source == "step" else binding.ref
                if binding.source in ("step", "steps"):
                    for ref in refs:
                        if ref not in self.steps:
                            raise PlanError(
                                f"step {step.name!r}: parameter {binding.param!r} names unknown "
                                f"step {ref!r} (steps: {', '.join(sorted(self.steps))})"
                            )
                    self._check_types(step, binding)
                    if not step.template:
                        for ref in refs:
                            graph.add_edge(ref, step.name, param=binding.param)
            bindings[step.name] = tuple(step_bindings)
        for step in self.steps.values():
            for name in step.options.uses:
                if not name.isidentifier():
                    raise PlanError(f"step {step.name!r}: uses names {name!r}, not an identifier")
        for producer, consumer in self.edges:
            if not graph.has_edge(producer, consumer):
                raise PlanError(
                    f"plan {self.name!r} declares a metric for edge {producer!r} -> {consumer!r}, "
                    f"but {consumer!r} does not take {producer!r}"
                )
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
            raise PlanError(f"plan {self.name!r} has a cycle: {path}")
        self._bindings = bindings
        self._dependants = {name: tuple(graph.successors(name)) for name in graph.nodes}
        self._producers = {name: tuple(dict.fromkeys(graph.predecessors(name))) for name in graph.nodes}
        self._graph = graph
        return graph

    @property
    def graph(self) -> nx.DiGraph:
        return self.validate()

    def bindings(self, step: str) -> tuple[Binding, ...]:
        self.validate()
        assert self._bindings is not None
        return self._bindings[step]

    def dependants(self, step: str) -> tuple[str, ...]:
        """The steps that take `step`'s output, in the order they were added."""
        self.validate()
        return self._dependants[step]

    def producers(self, step: str) -> tuple[str, ...]:
        """The steps whose outputs `step` takes."""
        self.validate()
        return self._producers[step]

    # ------------------------------------------------------------- rendering
    def mermaid(self) -> str:
        lines = ["flowchart TD", f"    input([{self.input.__name__}])"]
        graph = self.validate()
        for name in graph.nodes:
            step = self.steps[name]
            lines.append(f"    {_node_id(name)}[\"{name}: {step.output.__name__}\"]")
            if any(b.source == "input" for b in self.bindings(name)):
                lines.append(f"    input --> {_node_id(name)}")
        for src, dst, data in graph.edges(data=True):
            lines.append(f"    {_node_id(src)} -->|{data['param']}| {_node_id(dst)}")
        for template in self.templates.values():
            lines.append(f"    {_node_id(template.name)}{{{{\"{template.name}*: spawned\"}}}}")
        return "\n".join(lines) + "\n"

    def dot(self) -> str:
        graph = self.validate()
        lines = [f'digraph "{self.name}" {{', "    rankdir=TB;", "    input [shape=oval];"]
        for name in graph.nodes:
            label = f"{name}\\n{self.steps[name].output.__name__}"
            lines.append(f'    "{name}" [shape=box, label="{label}"];')
            if any(b.source == "input" for b in self.bindings(name)):
                lines.append(f'    input -> "{name}";')
        for src, dst, data in graph.edges(data=True):
            lines.append(f'    "{src}" -> "{dst}" [label="{data["param"]}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<Plan {self.name} ({len(self.steps)} steps) on {self.input.__name__}>"


def _node_id(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)

