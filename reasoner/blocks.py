"""Blocks: typed, documented step functions that graph specs and the planner put together.

A block is a step function registered under a name, with a one-paragraph
description (its docstring's first paragraph). Its signature says everything,
as for a plan's steps: a parameter annotated with a pydantic model (or a union
of them) is an *input*, wired from another node's output or given as a literal
object; any other annotated parameter is a literal *parameter* (a number, a
string, a list of them; `Annotated[int, Field(ge=2)]` adds bounds); `ctx` is the
step's `Context`. The return annotation is the output model.

A module registers blocks on its own `Blocks` and never imports the planner:

    blocks = Blocks()

    @blocks.block(uses=["gan"], retries=4)
    async def draw_number(ctx, number: Number) -> Digits:
        '''Draw a number in handwriting with the GAN.'''

    @draw_number.check
    async def reads_back(ctx, out: Digits) -> checks.Result: ...

    blocks.example("write 305 in handwriting",
                   [{"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 305}}}])

`known_blocks()` collects every `Blocks` of the plan packages' modules;
`load_blocks("my.module")` a user's. Options are those of `Plan.step`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from reasoner._exceptions import PlanError, UnknownPlanError
from reasoner.plan import CTX, OUTPUT_NAMES, StepOptions, _type_hints
from reasoner.project import PLAN_PACKAGES


@dataclass(frozen=True)
class FromRequest:
    """Marks a text parameter that a request states word for word, e.g.
    `question: Annotated[str, FromRequest("sentences")]`: the planner may write it only as
    a span of the request (`"sentences"`: whole sentences in a row; `"words"`: up to eight
    words in a row; `"quoted"`: a passage in quotes), never as words of its examples."""

    kind: Literal["sentences", "words", "quoted"] = "words"


def port_models(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The models an input accepts (`A`, `A | B`, `A | None`), or () for a parameter."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if args and all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return tuple(args)
    return ()


@dataclass(eq=False)
class Block:
    """One registered block. `inputs` maps each input to the models it accepts."""

    name: str
    fn: Callable[..., Any]
    description: str
    output: type[BaseModel]
    inputs: dict[str, tuple[type[BaseModel], ...]]
    required: frozenset[str]  # inputs without a default
    params: type[BaseModel]  # the literal parameters, validated as one model
    options: dict[str, Any]
    module: str
    checks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)

    def check(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Register a check on the block's output, as `Step.check` does for a step.

        Its parameters may be `ctx`, `out` (or `output`) and the block's inputs and parameters.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            check_name = name or fn.__name__
            allowed = {CTX, *OUTPUT_NAMES, *self.inputs, *self.params.model_fields}
            for param in inspect.signature(fn).parameters:
                if param not in allowed:
                    raise PlanError(f"check {check_name!r} of block {self.name!r}: parameter "
                                    f"{param!r} is not 'ctx', 'out', an input or a parameter")
            if any(existing == check_name for existing, _ in self.checks):
                raise PlanError(f"block {self.name!r} already has a check named {check_name!r}")
            self.checks.append((check_name, fn))
            return fn

        return register(fn) if fn is not None else register

    def __repr__(self) -> str:
        return f"<Block {self.name} -> {self.output.__name__}>"


def make_block(fn: Callable[..., Any], name: str | None = None, description: str | None = None,
               **options: Any) -> Block:
    """A block from a step function; PlanError names the function and what is wrong."""
    block_name = name or fn.__name__.replace("_", "-")
    where = f"block {block_name!r}"
    text = (description or inspect.getdoc(fn) or "").strip()
    if not text:
        raise PlanError(f"{where}: give it a docstring (or description=): the planner shows it")
    for option in ("inputs", "template", "name"):
        if option in options:
            raise PlanError(f"{where}: {option}= is set by each node of a graph, not by the block")
    StepOptions(**options)  # the same checks as a step's options, now
    hints = _type_hints(fn, where)
    annotated = _type_hints(fn, where, extras=True)
    output = hints.get("return")
    if not (isinstance(output, type) and issubclass(output, BaseModel)):
        raise PlanError(f"{where}: the return annotation must be a pydantic model class, "
                        f"got {output!r}")
    inputs: dict[str, tuple[type[BaseModel], ...]] = {}
    required: set[str] = set()
    params: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name == CTX:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise PlanError(f"{where}: *args and **kwargs cannot name inputs or parameters")
        if param.name not in hints:
            raise PlanError(f"{where}: parameter {param.name!r} has no type annotation")
        models = port_models(hints[param.name])
        if models:
            inputs[param.name] = models
            if param.default is param.empty:
                required.add(param.name)
        else:
            default = ... if param.default is param.empty else param.default
            params[param.name] = (annotated[param.name], default)
    title = "".join(part.title() for part in block_name.replace("_", "-").split("-"))
    model = create_model(f"{title}Params", __config__=ConfigDict(extra="forbid"), **params)
    return Block(block_name, fn, text.split("\n\n")[0].replace("\n", " "), output, inputs,
                 frozenset(required), model, dict(options), getattr(fn, "__module__", ""))


class Blocks(Mapping[str, Block]):
    """Blocks by name, and the (request, graph spec) examples the planner learns from.

    `Blocks(a, b)` is the union of other registries (a name registered twice is a PlanError).
    """

    def __init__(self, *groups: Blocks) -> None:
        self._blocks: dict[str, Block] = {}
        self.examples: list[tuple[str, dict[str, Any]]] = []
        for group in groups:
            for block in group.values():
                self._add(block)
            self.examples.extend(group.examples)

    def _add(self, block: Block) -> None:
        existing = self._blocks.get(block.name)
        if existing is not None and existing is not block:
            raise PlanError(f"block {block.name!r} is registered twice: in {existing.module} "
                            f"and in {block.module}")
        self._blocks[block.name] = block

    def block(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
              description: str | None = None, **options: Any) -> Any:
        """Decorator registering a block; usable bare or with `Plan.step`'s options."""

        def register(fn: Callable[..., Any]) -> Block:
            block = make_block(fn, name, description, **options)
            self._add(block)
            return block

        return register(fn) if fn is not None else register

    def example(self, request: str, nodes: Sequence[Mapping[str, Any]]) -> None:
        """A request in words and the graph that serves it, shown to the planner when alike.

        Checked when a graph is built from it (the project's tests build every example).
        """
        self.examples.append((request, {"nodes": [dict(node) for node in nodes]}))

    def get_block(self, name: str, where: str) -> Block:
        """The block `name`, or a PlanError for `where` naming the nearest known block."""
        if name in self._blocks:
            return self._blocks[name]
        close = difflib.get_close_matches(name, list(self._blocks), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PlanError(f"{where}: unknown block {name!r}{hint} "
                        f"(blocks: {', '.join(sorted(self._blocks)) or 'none'})")

    def __getitem__(self, name: str) -> Block:
        return self._blocks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return f"<Blocks {', '.join(self._blocks)}>"


def blocks_in(module: types.ModuleType) -> Blocks:
    """Every block registered by the `Blocks` registries a module holds."""
    return Blocks(*(v for v in vars(module).values() if isinstance(v, Blocks)))


def load_blocks(*modules: str) -> Blocks:
    """The blocks of the named modules (a user's own, or those a stored run used)."""
    found = []
    for name in modules:
        try:
            found.append(blocks_in(importlib.import_module(name)))
        except Exception as exc:  # finding it or running it: named, never a traceback
            raise UnknownPlanError(f"cannot import the blocks of module {name!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc
    return Blocks(*found)


def known_blocks(packages: Sequence[str] = PLAN_PACKAGES) -> Blocks:
    """Every block of the plan packages' modules (those whose names start with `_` skipped)."""
    modules = []
    for package_name in packages:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        modules += [f"{package_name}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                    if not info.name.startswith("_")]
    return load_blocks(*modules)
