"""Plans: typed step graphs defined in Python, built here and compiled once per input.

A `Plan` holds steps. A step is a function whose parameters say what it
depends on, the way pytest fixtures do: a parameter named after another step
receives that step's output, a parameter annotated with the plan's input model
receives the input, and `ctx` receives the step's `Context`. Every value that
crosses an edge is a pydantic model, and the types must match: each step is
checked as it is added, and `compile()` checks the whole graph, raising
`PlanError` naming the step and parameter for every mistake, before anything
runs. The result, a `CompiledPlan`, is immutable; the executor walks it.

Plans sized by their task (N paragraphs, N digits) register a `planner`
that adds steps for a given input; templates are steps that only exist when
a running step spawns them (`ctx.spawn`), for searches that grow the graph.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from reasoner._exceptions import InputError, PlanError
from reasoner.records import PlanShape, StepShape

if TYPE_CHECKING:
    import networkx as nx

    from reasoner.blocks import Blocks
    from reasoner.spec import GraphSpec

CTX = "ctx"
OUTPUT_NAMES = ("out", "output")
SPAWN_SEPARATOR = "/"

Source = Literal["ctx", "input", "step", "steps", "payload", "value", "default"]


Select = Literal["first", "best", "vote"]
OnExhausted = Literal["fail", "best"]


@dataclass(frozen=True)
class StepOptions:
    """Per-step behaviour. See `Plan.step` for what each option means."""

    retries: int = 0
    timeout: float | None = None
    uses: Sequence[str] = ()
    backtrack: bool = True  # may a failing descendant regenerate this step?
    required: bool = True  # templates: does a failed spawned node fail the run?
    samples: int = 1
    select: Select = "first"
    vote: Callable[[Any], Hashable] | None = None
    agree: int = 1
    on_exhausted: OnExhausted = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "uses", tuple(self.uses))  # any sequence of names
        if self.retries < 0:
            raise PlanError(f"retries must be >= 0, got {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise PlanError(f"timeout must be positive seconds, got {self.timeout}")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise PlanError(f"samples must be an integer >= 1, got {self.samples!r}")
        if self.select not in typing.get_args(Select):
            raise PlanError(f"select must be 'first', 'best' or 'vote', got {self.select!r}")
        if (self.select == "vote") != (self.vote is not None):
            raise PlanError("select='vote' needs vote=<function of the output giving its answer>, "
                            "and vote= needs select='vote'")
        if self.vote is not None and not callable(self.vote):
            raise PlanError(f"vote must be a function of the step's output, got {self.vote!r}")
        if not isinstance(self.agree, int) or self.agree < 1:
            raise PlanError(f"agree must be an integer >= 1, got {self.agree!r}")
        if self.agree > 1 and self.select != "vote":
            raise PlanError("agree= counts agreeing samples, so it needs select='vote'")
        if self.agree > self.samples * (self.retries + 1):
            raise PlanError(f"agree={self.agree} can never be met by {self.samples} sample(s) "
                            f"a round over {self.retries + 1} round(s)")
        if self.on_exhausted not in typing.get_args(OnExhausted):
            raise PlanError(f"on_exhausted must be 'fail' or 'best', got {self.on_exhausted!r}")


@dataclass(frozen=True)
class Binding:
    """Where one parameter of a step or check gets its value."""

    param: str
    source: Source
    ref: str | tuple[str, ...] = ""  # producer step name(s) for "step"/"steps"
    value: Any = None  # the literal for "value"


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
    values: dict[str, Any] = field(default_factory=dict)  # literal arguments (graph specs' nodes)
    template: bool = False
    checks: list[Check] = field(default_factory=list)
    takes_ctx: bool = False
    is_async: bool = True  # a plain `def` step runs in a worker thread, off the event loop
    checks_take_ctx: bool = False  # kept as checks are added: read once per node, per run
    block: str | None = None  # the block it was built from, in a graph spec's plan

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
            self.checks_take_ctx = self.checks_take_ctx or CTX in params
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
    values: Mapping[str, Any] | None = None,
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
    for param in values or {}:
        if param not in annotations or param in explicit:
            raise PlanError(f"{where}: values names parameter {param!r}, which it does not have "
                            f"or which inputs binds")
    return Step(
        step_name, fn, output, options, annotations, frozenset(defaults), explicit,
        dict(values or {}), template, takes_ctx=takes_ctx, is_async=inspect.iscoroutinefunction(fn),
    )


def _type_hints(fn: Callable[..., Any], where: str, extras: bool = False) -> dict[str, Any]:
    """Resolve annotations, also string ones naming classes local to the defining function.

    With `extras`, `Annotated[...]` is kept (a block's parameter bounds live there).
    """
    try:
        return typing.get_type_hints(fn, include_extras=extras)
    except NameError as exc:
        error = exc
    frame = sys._getframe(1)
    while frame is not None:  # the plan may be built inside a function (tests, notebooks)
        try:
            return typing.get_type_hints(fn, localns=frame.f_locals, include_extras=extras)
        except NameError:
            frame = frame.f_back  # type: ignore[assignment]
    raise PlanError(f"{where}: cannot resolve an annotation: {error}") from error


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


class Plan:
    """A plan under construction: a named, typed step graph over one input model.

    Steps and templates are registered here (each is checked as it is added),
    and `compile(input)` validates the whole graph and returns the immutable
    `CompiledPlan` the executor walks, as LangGraph's `StateGraph.compile()` does.
    """

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
        self.examples = list(examples)  # (request in words, input): how the router learns a plan
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
        self.describe_result: Callable[[Any], str] | None = None  # see `headline`
        self._compiled: CompiledPlan | None = None  # the static graph, until a step is added
        self.module = sys._getframe(1).f_globals.get("__name__", "")  # for resume by reference
        self.spec: GraphSpec | None = None  # the graph spec it was built from, if it was
        self.block_modules: dict[str, str] = {}  # block name -> module, with `spec`

    @classmethod
    def from_spec(cls, spec: GraphSpec | Mapping[str, Any] | str | bytes, blocks: Blocks) -> Plan:
        """A plan from a graph spec (model, dict or JSON) and the blocks it names.

        Every unknown block, node, input or parameter, type mismatch, missing input
        and cycle is a PlanError naming the node and field. See `reasoner.spec`.
        """
        from reasoner.spec import build_plan

        return build_plan(spec, blocks)

    def to_spec(self) -> GraphSpec:
        """The graph spec this plan was built from: `Plan.from_spec(plan.to_spec(), blocks)`
        builds the same plan again."""
        if self.spec is None:
            raise PlanError(f"plan {self.name!r} was written in Python, not built from a graph "
                            "spec, so it has no spec")
        return self.spec

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
        template: bool = False,
        required: bool = True,
        samples: int = 1,
        select: Select = "first",
        vote: Callable[[Any], Hashable] | None = None,
        agree: int = 1,
        on_exhausted: OnExhausted = "fail",
    ) -> Any:
        """Decorator adding a step; usable bare (`@plan.step`) or with options.

        - `retries`: attempts after the first (with `samples`, rounds after the first)
          before the step is exhausted and the engine backtracks.
        - `timeout` bounds each attempt, the step and its checks together. An `async def`
          step is cancelled at its next await; a plain `def` step runs in a worker thread,
          which cannot be interrupted: the attempt fails on time and the thread's result
          is dropped when it ends.
        - `samples=N` runs N attempts at once, each with its own seed and checks, and
          `select` picks the output among those that pass: "first" (the first to pass;
          the rest are cancelled), "best" (highest mean check score) or "vote" (the
          answer `vote(output)` given by most passing samples, ties to the higher score;
          its share of the samples drawn is the step's confidence). Votes add up over
          the rounds of one generation, so a retry draws more samples for the same vote.
        - `agree=k` (with "vote"): the answer needs at least k passing samples behind it;
          a round that leaves no answer with k votes is a failed try. Two independent
          samples agreeing is far more often right than one sample that passed its checks.
        - `on_exhausted="best"`: when retries and backtracks are spent, keep the attempt
          with the best mean check score, mark the step `degraded` and go on, instead of
          failing it.
        - `template` and `required`: see `template`.
        """

        def register(fn: Callable[..., Any]) -> Step:
            return self.add_step(fn, name=name, inputs=inputs, template=template, retries=retries,
                                 timeout=timeout, uses=uses, backtrack=backtrack, required=required,
                                 samples=samples, select=select, vote=vote, agree=agree,
                                 on_exhausted=on_exhausted)

        return register(fn) if fn is not None else register

    def template(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorator for a step that only runs when spawned (`ctx.spawn`); it takes one payload.

        Options as for `step`; `required=False` lets the run succeed when a spawned node fails.
        """
        return self.step(fn, template=True, **options)

    def add_step(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        inputs: dict[str, str | Sequence[str]] | None = None,
        template: bool = False,
        values: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Step:
        """Add a step (or a template) by code; every way of adding a step ends here.

        `inputs` binds parameters to other steps by name; `values` gives parameters
        literal arguments (how a graph spec's node passes its parameters).
        """
        step = _make_step(fn, name, StepOptions(**options), inputs, template, values)
        if step.name in self.steps or step.name in self.templates:
            raise PlanError(f"plan {self.name!r}: duplicate step name {step.name!r}")
        if template:
            payload = [p for p in step.annotations if p not in step.defaults]
            if len(payload) != 1:
                raise PlanError(
                    f"template {step.name!r} must take exactly one payload parameter besides "
                    f"ctx, got {payload}"
                )
            self.templates[step.name] = step
        else:
            # Catch a type mismatch with an already defined producer right here, at the line
            # that introduces it; unknown names may still be defined later.
            for binding in _bind(self, step, strict=False):
                _check_types(self.steps, step, binding)
            self.steps[step.name] = step
        self._compiled = None
        return step

    def edge(self, producer: str, consumer: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare how to score the edge producer -> consumer for coherence reports.

        The metric is `async def metric(generators, producer_output, consumer_output)`
        returning a score in [0, 1] or a `checks.Result`.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.edges[(producer, consumer)] = fn
            self._compiled = None
            return fn

        return register

    def planner(self, fn: Callable[[Plan, Any], None]) -> Callable[[Plan, Any], None]:
        """Register `fn(plan, task)`, which adds the steps a given input needs."""
        self._planner = fn
        self._compiled = None
        return fn

    def with_options(self, step: str, **options: Any) -> Plan:
        """A copy of this plan in which `step` runs with other options (`samples`, `retries`, ...).

        How one plan is compared with itself under other strategies on the same inputs:
        `plan.with_options("solve", samples=16)`. The copy keeps the plan's name, so
        `reasoner resume` of one of its runs finds the original plan: resume it from Python
        with the copy instead (`engine.resume(run_id, plan=copy)`).
        """
        if step not in self.steps:
            raise PlanError(f"plan {self.name!r} has no step {step!r}")
        old = self.steps[step]
        try:
            changed = dataclasses.replace(old.options, **options)
        except TypeError as exc:
            raise PlanError(f"step {step!r}: {exc}") from None
        copy = Plan(self.name, self.input, description=self.description,
                    max_backtracks=self.max_backtracks, concurrency=self.concurrency,
                    examples=self.examples)
        copy.steps = {**self.steps, step: dataclasses.replace(old, options=changed,
                                                              checks=list(old.checks))}
        copy.templates, copy.edges, copy.module = dict(self.templates), dict(self.edges), self.module
        copy._planner, copy.describe_result = self._planner, self.describe_result
        return copy

    @property
    def has_planner(self) -> bool:
        """Whether steps are added per input (`@plan.planner`), so the graph depends on it."""
        return self._planner is not None

    def headline(self, fn: Callable[[Any], str]) -> Callable[[Any], str]:
        """Register `fn(run) -> str`: the run's result in a line or two.

        `reasoner run` prints it under each finished run's status; without one, the
        final steps' outputs are shown field by field (see `reasoner.headline`).
        """
        self.describe_result = fn
        return fn

    # --------------------------------------------------------------- compiling
    def compile(self, input: BaseModel | None = None) -> CompiledPlan:
        """Validate the graph and freeze it; with `input`, the planner's steps are added first.

        Raises PlanError naming the step and parameter for an unknown name, a bad
        type or a cycle. Without a planner (or without `input`) the result is cached.
        """
        if self._planner is None or input is None:
            if self._compiled is None:
                self._compiled = _compile(self)
            return self._compiled
        concrete = Plan(self.name, self.input, max_backtracks=self.max_backtracks,
                        concurrency=self.concurrency)
        concrete.steps, concrete.templates = dict(self.steps), dict(self.templates)
        concrete.edges, concrete.module = dict(self.edges), self.module
        try:
            self._planner(concrete, input)
        except PlanError:
            raise
        except Exception as exc:
            raise PlanError(f"plan {self.name!r}: planner failed for this input: {exc}") from exc
        return _compile(concrete)

    def mermaid(self) -> str:
        return self.compile().mermaid()

    def dot(self) -> str:
        return self.compile().dot()

    def __repr__(self) -> str:
        return f"<Plan {self.name} ({len(self.steps)} steps) on {self.input.__name__}>"


@dataclass(frozen=True, eq=False)
class CompiledPlan:
    """A validated, immutable step graph for one input: what the executor walks.

    `bindings`, `producers` and `dependants` are keyed by step name (bindings
    also by template name); producers and dependants keep the order steps were added.
    """

    name: str
    input: type[BaseModel]
    module: str
    max_backtracks: int
    concurrency: int | None
    steps: Mapping[str, Step]
    templates: Mapping[str, Step]
    edges: Mapping[tuple[str, str], Callable[..., Any]]
    bindings: Mapping[str, tuple[Binding, ...]]
    producers: Mapping[str, tuple[str, ...]]
    dependants: Mapping[str, tuple[str, ...]]

    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """The step graph as a networkx DiGraph; each edge carries the parameter it feeds."""
        import networkx as nx

        graph = nx.DiGraph(name=self.name)
        graph.add_nodes_from(self.steps)
        for name in self.steps:
            for binding in self.bindings[name]:
                for ref in _refs(binding):
                    graph.add_edge(ref, name, param=binding.param)
        return graph

    @functools.cached_property
    def shape(self) -> PlanShape:
        """What a stored run keeps of its plan, so it can be shown without importing it."""
        return PlanShape(
            input=self.input.__name__,
            steps=[StepShape(name=name, output=step.output.__name__, takes=list(self.producers[name]))
                   for name, step in self.steps.items()],
            templates={name: step.output.__name__ for name, step in self.templates.items()},
        )

    def mermaid(self) -> str:
        lines = ["flowchart TD"]
        if any(b.source == "input" for bindings in self.bindings.values() for b in bindings):
            lines.append(f"    input([{self.input.__name__}])")
        for name, step in self.steps.items():
            block = f" ({step.block})" if step.block else ""
            lines.append(f"    {_node_id(name)}[\"{name}{block}: {step.output.__name__}\"]")
            if any(b.source == "input" for b in self.bindings[name]):
                lines.append(f"    input --> {_node_id(name)}")
        for src, dst, param in self.graph.edges(data="param"):
            lines.append(f"    {_node_id(src)} -->|{param}| {_node_id(dst)}")
        for template in self.templates.values():
            lines.append(f"    {_node_id(template.name)}{{{{\"{template.name}*: spawned\"}}}}")
        return "\n".join(lines) + "\n"

    def dot(self) -> str:
        lines = [f'digraph "{self.name}" {{', "    rankdir=TB;", "    input [shape=oval];"]
        for name, step in self.steps.items():
            lines.append(f'    "{name}" [shape=box, label="{name}\\n{step.output.__name__}"];')
            if any(b.source == "input" for b in self.bindings[name]):
                lines.append(f'    input -> "{name}";')
        for src, dst, param in self.graph.edges(data="param"):
            lines.append(f'    "{src}" -> "{dst}" [label="{param}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<CompiledPlan {self.name} ({len(self.steps)} steps) on {self.input.__name__}>"


# ------------------------------------------------------------------ validation
def _refs(binding: Binding) -> tuple[str, ...]:
    """The producer steps a binding reads from (none for input, payload, default)."""
    if binding.source == "step":
        return (binding.ref,)  # type: ignore[return-value]
    return binding.ref if binding.source == "steps" else ()  # type: ignore[return-value]


def _bind(plan: Plan, step: Step, *, strict: bool) -> list[Binding]:
    bindings: list[Binding] = []
    for param, annotation in step.annotations.items():
        explicit = step.inputs.get(param)
        if isinstance(explicit, tuple):
            bindings.append(Binding(param, "steps", explicit))
        elif explicit is not None:
            bindings.append(Binding(param, "step", explicit))
        elif param in step.values:
            bindings.append(Binding(param, "value", value=step.values[param]))
        elif step.template and param not in step.defaults:
            bindings.append(Binding(param, "payload"))
        elif param in plan.steps:
            bindings.append(Binding(param, "step", param))
        elif isinstance(annotation, type) and issubclass(plan.input, annotation):
            bindings.append(Binding(param, "input"))
        elif param in step.defaults:
            bindings.append(Binding(param, "default"))
        elif strict:
            known = sorted(plan.steps)
            close = difflib.get_close_matches(param, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PlanError(
                f"step {step.name!r}: parameter {param!r} names no step and its type "
                f"{_type_name(annotation)} is not the plan input {plan.input.__name__}"
                f"{hint} (steps: {', '.join(known)})"
            )
    return bindings


def _check_types(steps: Mapping[str, Step], step: Step, binding: Binding) -> None:
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
    for ref in _refs(binding):
        producer = steps.get(ref)
        if producer is None:
            continue
        if not any(isinstance(a, type) and issubclass(producer.output, a) for a in accepted):
            raise PlanError(
                f"step {step.name!r}: parameter {binding.param!r} expects "
                f"{_type_name(expected)} but step {ref!r} returns "
                f"{producer.output.__name__}; annotate it {producer.output.__name__}"
            )


def _compile(plan: Plan) -> CompiledPlan:
    """Bind every parameter, check every type, find cycles: the whole plan or a PlanError."""
    if not plan.steps:
        raise PlanError(f"plan {plan.name!r} has no steps")
    bindings: dict[str, tuple[Binding, ...]] = {}
    producers: dict[str, list[str]] = {name: [] for name in plan.steps}
    dependants: dict[str, list[str]] = {name: [] for name in plan.steps}
    for step in [*plan.steps.values(), *plan.templates.values()]:
        bindings[step.name] = tuple(_bind(plan, step, strict=True))
        for binding in bindings[step.name]:
            for ref in _refs(binding):
                if ref not in plan.steps:
                    raise PlanError(
                        f"step {step.name!r}: parameter {binding.param!r} names unknown "
                        f"step {ref!r} (steps: {', '.join(sorted(plan.steps))})"
                    )
                if not step.template and ref not in producers[step.name]:
                    producers[step.name].append(ref)
                    dependants[ref].append(step.name)
            _check_types(plan.steps, step, binding)
        for name in step.options.uses:
            if not name.isidentifier():
                raise PlanError(f"step {step.name!r}: uses names {name!r}, not an identifier")
    for producer, consumer in plan.edges:
        if producer not in producers.get(consumer, ()):
            raise PlanError(
                f"plan {plan.name!r} declares a metric for edge {producer!r} -> {consumer!r}, "
                f"but {consumer!r} does not take {producer!r}"
            )
    cycle = _find_cycle(producers)
    if cycle:
        raise PlanError(f"plan {plan.name!r} has a cycle: {' -> '.join(cycle)}")
    return CompiledPlan(
        name=plan.name, input=plan.input, module=plan.module,
        max_backtracks=plan.max_backtracks, concurrency=plan.concurrency,
        steps=MappingProxyType(dict(plan.steps)), templates=MappingProxyType(dict(plan.templates)),
        edges=MappingProxyType(dict(plan.edges)), bindings=MappingProxyType(bindings),
        producers=MappingProxyType({k: tuple(v) for k, v in producers.items()}),
        dependants=MappingProxyType({k: tuple(v) for k, v in dependants.items()}),
    )


def _find_cycle(producers: Mapping[str, list[str]]) -> list[str]:
    """A cycle as [a, b, ..., a] (a takes from b, ...), or [] when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for producer in producers[name]:
            if state.get(producer) == 1:
                cycle = path[path.index(producer):]
                return [*reversed(cycle), cycle[-1]]
            if producer not in state and (found := visit(producer)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in producers:
        if name not in state and (found := visit(name)):
            return found
    return []


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path, as users read them."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(input)"
        lines.append(f"{prefix}field {path!r}: {error['msg']}")
    return "; ".join(lines)


def validate_input(plan: Plan | CompiledPlan, value: Any) -> BaseModel:
    """The plan's input model from a model, dict or JSON string; InputError names the field."""
    try:
        if isinstance(value, plan.input):
            task = value
        elif isinstance(value, str | bytes):
            task = plan.input.model_validate_json(value)
        else:
            if isinstance(value, BaseModel):
                value = value.model_dump()
            task = plan.input.model_validate(value)
        task.model_dump_json()  # what the store will write must be writable
    except ValidationError as exc:
        raise InputError(
            f"invalid input for plan {plan.name!r}: {format_validation_error(exc)}"
        ) from exc
    except (PydanticSerializationError, UnicodeError) as exc:
        raise InputError(
            f"invalid input for plan {plan.name!r}: it cannot be stored as JSON ({exc}); "
            "a lone surrogate character is the usual cause"
        ) from exc
    return task


def _node_id(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
