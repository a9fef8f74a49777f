"""The planner: a request in words to a graph spec of registered blocks, built and checked.

(Not `Plan.planner`, which adds a plan's own steps for one input.)

1. Shortlist: the sentence embedder finds the examples most like the request
   and the blocks whose descriptions are; the blocks of those examples and the
   likeliest blocks are the only ones offered, so the prompt stays short.
2. Prompt: the shortlisted blocks (inputs, parameters, output, description),
   then the likest examples as request/graph pairs, the most alike last, then
   the request.
3. The model writes the graph under constrained decoding: a JSON schema built
   from the shortlisted blocks, where a node's `block` is one of their names and
   its `inputs` and `params` are exactly that block's, typed.
4. The graph is built (`Plan.from_spec`); a spec that does not build goes back
   to the model with the error, up to `attempts` answers in all. When none
   builds, `PlanningError` lists every answer and why it failed.

The model's reply is data: it is parsed as JSON and built from registered
blocks, never run as code.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from reasoner._exceptions import InputError, PlanError, PlanningError
from reasoner.blocks import Block, Blocks
from reasoner.plan import Plan, format_validation_error
from reasoner.spec import GraphSpec, Wire, parse_spec

MAX_NODES = 6
NODE_IDS = rf"^n[1-{MAX_NODES}]$"
SCALARS = (int, float, str, bool)


@dataclass
class Tried:
    """One answer of the model, and why it was rejected (None: it built)."""

    text: str
    error: str | None = None


@dataclass
class Drafted:
    """A planned graph: the plan built from it, and every answer it took."""

    plan: Plan
    tries: list[Tried]
    shortlist: list[str]  # the blocks the model could choose from
    examples: list[str] = field(default_factory=list)  # the requests shown as examples

    @property
    def calls(self) -> int:
        return len(self.tries)


async def plan_from_request(request: str, engine: Any, *, blocks: Blocks | None = None,
                            seed: int = 0, attempts: int = 3) -> Plan:
    """The plan the language model drafts for `request`, built and checked, not yet run.

    Inspect it (`plan.to_spec()`, `plan.mermaid()`), edit the spec and build it again
    with `Plan.from_spec`, or run it: `await engine.run(plan, {})`. Blocks default to
    every block of the plan packages (`known_blocks()`).
    """
    from reasoner.blocks import known_blocks

    drafted = await draft(request, engine.generators["lm"], engine.generators["embedder"],
                          known_blocks() if blocks is None else blocks, seed=seed,
                          attempts=attempts)
    return drafted.plan


async def draft(request: str, lm: Any, embedder: Any, blocks: Blocks, *, seed: int = 0,
                attempts: int = 3, keep_examples: int = 3, keep_blocks: int = 3) -> Drafted:
    """`plan_from_request` with the generators given, saying what it tried."""
    if not request.strip():
        raise InputError("the request is empty")
    if not blocks:
        raise PlanningError("there are no blocks to plan with")
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    examples = _examples(blocks)
    offered, shown = await shortlist(embedder, request, blocks, examples, keep_examples,
                                     keep_blocks)
    schema = graph_schema([blocks[name] for name in offered])
    prompt = graph_prompt(request, blocks, offered, shown)
    tries: list[Tried] = []
    question = prompt
    for attempt in range(attempts):
        try:
            generation = await lm.generate(
                question, schema=schema, max_new_tokens=96 * MAX_NODES // 2,
                temperature=0.0 if attempt == 0 else 0.7, seed=seed + attempt, stop=["\n"])
            text = generation.text.strip()
        except ValidationError as exc:  # cut short by the token budget
            tries.append(Tried("", f"the graph was cut short: {format_validation_error(exc)}"))
            continue
        try:
            plan = Plan.from_spec(from_answer(text), blocks)
        except PlanError as exc:
            tries.append(Tried(text, str(exc)))
            question = (f"{prompt} {text}\nThat graph is wrong: {exc}\n"
                        f"Request: {request}\nGraph:")
            continue
        tries.append(Tried(text))
        return Drafted(plan, tries, offered, [text for text, _ in shown])
    said = "\n".join(f"  answer {i + 1}: {t.text or '(none)'}\n    rejected: {t.error}"
                     for i, t in enumerate(tries))
    raise PlanningError(f"no valid graph for the request after {attempts} answer(s):\n{said}")


def _examples(blocks: Blocks) -> list[tuple[str, GraphSpec]]:
    return [(request, parse_spec(spec)) for request, spec in blocks.examples]


async def shortlist(embedder: Any, request: str, blocks: Blocks,
                    examples: Sequence[tuple[str, GraphSpec]], keep_examples: int = 3,
                    keep_blocks: int = 3) -> tuple[list[str], list[tuple[str, GraphSpec]]]:
    """(blocks offered, examples shown): the blocks of the `keep_examples` examples most like
    the request and the `keep_blocks` blocks whose descriptions are; the examples most
    alike last, where a small model leans on them most. Blocks keep their registered order."""
    names = list(blocks)
    texts = [request, *(f"{name}: {blocks[name].description}" for name in names),
             *(text for text, _ in examples)]
    vectors = await embedder.embed(texts)  # (1 + blocks + examples, d), unit length
    likeness = vectors[1:] @ vectors[0]  # (blocks + examples,)
    by_block = likeness[:len(names)]
    by_example = likeness[len(names):]
    best_examples = sorted(range(len(examples)), key=lambda i: -by_example[i])[:keep_examples]
    wanted = {names[i] for i in sorted(range(len(names)), key=lambda i: -by_block[i])[:keep_blocks]}
    for i in best_examples:
        wanted |= {node.block for node in examples[i][1].nodes if node.block in blocks}
    shown = [examples[i] for i in sorted(best_examples, key=lambda i: by_example[i])]
    return [name for name in names if name in wanted], shown


# ------------------------------------------------------------------ the schema
def _plain(annotation: Any) -> Any:
    """The type without its bounds: lengths and ranges are checked when the graph is built,
    and a string's length bound would make the decoding index huge."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _plain(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_plain(a) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is list:
        return list[_plain(typing.get_args(annotation)[0])]  # type: ignore[misc]
    return annotation


def _literal_model(model: type[BaseModel]) -> type[BaseModel] | None:
    """What a literal value of an input may hold in the schema: its required scalar fields,
    or None when a value cannot be written in JSON by hand (images, nested models)."""
    fields = {name: (_plain(info.annotation), ...) for name, info in model.model_fields.items()
              if info.is_required()}
    if not fields or any(annotation not in SCALARS for annotation, _ in fields.values()):
        return None
    return create_model(f"{model.__name__}Value", __config__=ConfigDict(extra="forbid"),
                        **fields)  # type: ignore[call-overload]


class _WireOut(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    node: str = Field(alias="from", pattern=NODE_IDS)


def node_schema(block: Block) -> type[BaseModel]:
    """The JSON a node of `block` may be: its name, an id, its inputs and its parameters.

    Fields are in alphabetical order, the order constrained decoding writes them in.
    Every input and parameter is written out, an optional input as null.
    """
    title = "".join(part.title() for part in block.name.split("-"))
    fields: dict[str, Any] = {"block": (Literal[block.name], ...),
                              "id": (str, Field(pattern=NODE_IDS))}
    if block.inputs:
        ports: dict[str, Any] = {}
        for name, models in block.inputs.items():
            options: list[Any] = [_WireOut]
            options += [m for m in map(_literal_model, models) if m is not None]
            if name not in block.required:
                options.append(type(None))
            ports[name] = (typing.Union[tuple(options)], ...)  # noqa: UP007
        fields["inputs"] = (create_model(f"{title}Inputs", __config__=ConfigDict(extra="forbid"),
                                         **ports), ...)
    if block.params.model_fields:
        params = {name: (_plain(info.annotation), ...)
                  for name, info in block.params.model_fields.items()}
        fields["params"] = (create_model(f"{title}Params", __config__=ConfigDict(extra="forbid"),
                                         **params), ...)
    return create_model(f"{title}Node", __config__=ConfigDict(extra="forbid"), **fields)


def graph_schema(offered: Sequence[Block]) -> type[BaseModel]:
    """The graph the model may write: 1 to MAX_NODES nodes of the offered blocks."""
    nodes = typing.Union[tuple(node_schema(block) for block in offered)]  # noqa: UP007
    return create_model("Graph", __config__=ConfigDict(extra="forbid"),
                        nodes=(list[nodes], Field(min_length=1, max_length=MAX_NODES)))


def in_answer_form(spec: GraphSpec, blocks: Blocks) -> str:
    """An example's spec written as the model is made to write one: every input and
    parameter given, fields in the schema's order."""
    nodes = []
    for node in spec.nodes:
        block = blocks[node.block]
        out: dict[str, Any] = {"block": node.block, "id": node.id}
        if block.inputs:
            out["inputs"] = {}
            for name in block.inputs:
                given = node.inputs.get(name)
                out["inputs"][name] = ({"from": given.node} if isinstance(given, Wire)
                                       else given)
        if block.params.model_fields:
            out["params"] = block.params.model_validate(node.params).model_dump(mode="json")
        nodes.append(out)
    return json.dumps({"nodes": nodes})


def from_answer(text: str) -> dict[str, Any]:
    """The spec in a model's answer: null (left out) inputs dropped."""
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"the answer is not JSON: {exc}") from None
    for node in graph.get("nodes", []) if isinstance(graph, dict) else []:
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node["inputs"] = {k: v for k, v in node["inputs"].items() if v is not None}
    return graph


# ------------------------------------------------------------------ the prompt
def _signature(block: Block) -> str:
    takes = [f"{name}: {' | '.join(m.__name__ for m in models)}"
             + ("" if name in block.required else " (optional)")
             for name, models in block.inputs.items()]
    params = [f"{name}: {_type_text(info.annotation)}"
              for name, info in block.params.model_fields.items()]
    parts = ([f"inputs {', '.join(takes)}"] if takes else []) + (
        [f"params {', '.join(params)}"] if params else [])
    return f"- {block.name} ({'; '.join(parts)}) -> {block.output.__name__}: {block.description}"


def _type_text(annotation: Any) -> str:
    plain = _plain(annotation)
    return getattr(plain, "__name__", None) or str(plain).replace("typing.", "")


def graph_prompt(request: str, blocks: Blocks, offered: Sequence[str],
                 examples: Sequence[tuple[str, GraphSpec]]) -> str:
    """The offered blocks, then request/graph examples, then the request."""
    lines = ["Write the graph of blocks that does what the request asks, as JSON. A node's "
             'input comes from an earlier node ({"from": "n1"}) or is given as a value.',
             "Blocks:", *(_signature(blocks[name]) for name in offered), ""]
    lines += [f"Request: {text}\nGraph: {in_answer_form(spec, blocks)}" for text, spec in examples]
    lines.append(f"Request: {request}\nGraph:")
    return "\n".join(lines)
