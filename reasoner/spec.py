"""Graph specs: a step graph as JSON data, built into an ordinary `Plan` from registered blocks.

    {"nodes": [
      {"id": "n1", "block": "evaluate-expression", "params": {"expression": "17 + 25"}},
      {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}}
    ]}

Each node names a block (see `reasoner.blocks`), gives its literal `params`, and
its `inputs`: each wired from another node's output (`{"from": "n1"}`) or given as
a literal object of the input's model. `build_plan` checks everything a
hand-written plan is checked for, and more, before anything runs: every mistake
is a `PlanError` naming the node and the field. The plan keeps its spec
(`plan.to_spec()`), and a run of it stores the spec and where its blocks came
from, so it resumes, shows and reports like any other run.

Specs are data, possibly written by a model: nothing in one is ever run as code.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasoner._exceptions import PlanError
from reasoner.blocks import Block, Blocks
from reasoner.plan import Plan, _find_cycle, format_validation_error

NODE_ID = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


class Wire(BaseModel):
    """An input fed by another node's output."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    node: str = Field(alias="from", description="the id of the node whose output it takes")


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NODE_ID)
    block: str
    params: dict[str, Any] = {}
    inputs: dict[str, Wire | dict[str, Any]] = {}


class GraphSpec(BaseModel):
    """A step graph as data: what the planner writes and what a run of it stores."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("graph", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    nodes: list[NodeSpec] = Field(min_length=1, max_length=64)

    def dump(self) -> dict[str, Any]:
        """The spec as JSON data, in the form it is written (`"from"`, empty fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class Nothing(BaseModel):
    """The input of a graph built from a spec: every value is in its nodes."""

    model_config = ConfigDict(extra="forbid")


def parse_spec(spec: GraphSpec | Mapping[str, Any] | str | bytes) -> GraphSpec:
    """A `GraphSpec` from a model, dict or JSON text; PlanError naming the node and field."""
    if isinstance(spec, GraphSpec):
        return spec
    try:
        if isinstance(spec, str | bytes):
            return GraphSpec.model_validate_json(spec)
        return GraphSpec.model_validate(spec)
    except ValidationError as exc:
        raise PlanError(f"invalid graph spec: {_spec_problems(exc, spec)}") from None


def _spec_problems(exc: ValidationError, raw: Any) -> str:
    """One line per problem, a node named by its id where it has one."""
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(map(str, loc)) or "(spec)"
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            node = nodes[loc[1]] if isinstance(nodes, list) and loc[1] < len(nodes) else None
            name = node.get("id") if isinstance(node, Mapping) else None
            label = f"node {name!r}" if isinstance(name, str) else f"node {loc[1] + 1}"
            rest = [str(part) for part in loc[2:] if part not in ("Wire", "dict[str,any]")]
            where = f"{label}, field {'.'.join(rest) or '(node)'!r}"
        else:
            where = f"field {where!r}"
        lines.append(f"{where}: {error['msg']}")
    return "; ".join(dict.fromkeys(lines))


def build_plan(spec: GraphSpec | Mapping[str, Any] | str | bytes, blocks: Blocks) -> Plan:
    """An ordinary `Plan` from a graph spec: one step per node, named by the node's id."""
    graph = parse_spec(spec)
    by_id: dict[str, tuple[NodeSpec, Block]] = {}
    for node in graph.nodes:
        if node.id in by_id:
            raise PlanError(f"node {node.id!r}: the id is used by another node; ids are unique")
        by_id[node.id] = (node, blocks.get_block(node.block, f"node {node.id!r}"))
    wires: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, Any]] = {}
    for node, block in by_id.values():
        wires[node.id], values[node.id] = _arguments(node, block, by_id)
    cycle = _find_cycle({name: list(dict.fromkeys(w.values())) for name, w in wires.items()})
    if cycle:
        raise PlanError(f"nodes {' -> '.join(cycle)} form a cycle: each takes the next one's "
                        "output")
    plan = Plan(graph.name, Nothing, description=_describe(graph, by_id))
    plan.module = ""  # found again through its stored spec, not by importing a module
    for node, block in by_id.values():
        step = plan.add_step(block.fn, name=node.id, inputs=wires[node.id],
                             values=values[node.id], **block.options)
        step.block = block.name
        for check_name, check in block.checks:
            step.check(check, name=check_name)
    plan.compile()  # every check of a hand-written plan, too
    plan.spec = graph
    plan.block_modules = {block.name: block.module for _, block in by_id.values()}
    return plan


def _arguments(node: NodeSpec, block: Block,
               by_id: Mapping[str, tuple[NodeSpec, Block]]) -> tuple[dict[str, str], dict[str, Any]]:
    """(inputs wired, by producer id; literal values of every other parameter) for one node."""
    where = f"node {node.id!r} ({block.name})"
    for name in node.inputs:
        if name not in block.inputs:
            known = ", ".join(block.inputs) or "none"
            is_param = name in block.params.model_fields
            hint = " (it is a parameter: give it in params)" if is_param else ""
            raise PlanError(f"{where}: unknown input {name!r}{hint} (inputs: {known})")
    for name in node.params:
        if name not in block.params.model_fields:
            known = ", ".join(block.params.model_fields) or "none"
            hint = " (it is an input: give it in inputs)" if name in block.inputs else ""
            raise PlanError(f"{where}: unknown parameter {name!r}{hint} (parameters: {known})")
    try:
        params = block.params.model_validate(node.params)
    except ValidationError as exc:
        problems = format_validation_error(exc).replace("field ", "parameter ")
        raise PlanError(f"{where}: {problems}") from None
    values: dict[str, Any] = {name: getattr(params, name) for name in block.params.model_fields}
    wires: dict[str, str] = {}
    for name, models in block.inputs.items():
        takes = " | ".join(m.__name__ for m in models)
        given = node.inputs.get(name)
        if isinstance(given, Wire):
            if given.node not in by_id:
                raise PlanError(f"{where}: input {name!r} is wired from unknown node "
                                f"{given.node!r} (nodes: {', '.join(by_id)})")
            producer = by_id[given.node][1]
            if not any(issubclass(producer.output, model) for model in models):
                raise PlanError(f"{where}: input {name!r} takes {takes} but node {given.node!r} "
                                f"({producer.name}) gives {producer.output.__name__}")
            wires[name] = given.node
        elif given is not None:
            values[name] = _literal(where, name, models, given)
        elif name in block.required:
            raise PlanError(f"{where}: input {name!r} is missing: wire it from a node that gives "
                            f"{takes} ({{\"from\": \"<id>\"}}) or give its value")
        else:
            values[name] = _default(block, name)
    return wires, values


def _literal(where: str, name: str, models: tuple[type[BaseModel], ...],
             given: Mapping[str, Any]) -> BaseModel:
    problems = []
    for model in models:
        try:
            return model.model_validate(given)
        except ValidationError as exc:
            problems.append(format_validation_error(exc))
    raise PlanError(f"{where}: input {name!r} is not a valid "
                    f"{' or '.join(m.__name__ for m in models)}: {'; '.join(problems)}")


def _default(block: Block, name: str) -> Any:
    return inspect.signature(block.fn).parameters[name].default


def _describe(graph: GraphSpec, by_id: Mapping[str, tuple[NodeSpec, Block]]) -> str:
    steps = ", ".join(f"{node.id} ({block.name})" for node, block in by_id.values())
    return f"{graph.name}: a graph of {len(graph.nodes)} block(s): {steps}."
