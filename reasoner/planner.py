"""The planner: a request in words to a graph spec of registered blocks, built and checked.

(Not `Plan.planner`, which adds a plan's own steps for one input.)

1. Shortlist: the sentence embedder ranks the blocks' example graphs by likeness to the
   request; the blocks of the likest examples and the blocks whose descriptions are likest
   are the ones offered, so the prompt stays short.
2. Prompt: the offered blocks (inputs, parameters, output, description), the likest
   examples as request/graph pairs, the most alike last, then the request.
3. The model writes the graph node by node, one constrained call per node, under a JSON
   schema that admits only what is valid at that point: the block of the likest example's
   node there (`layout="examples"`), or any offered block whose inputs can be wired there,
   or the end (`layout="free"`); inputs wired only from earlier nodes of a fitting output
   type; parameters of their declared types; values grounded in the request (`Grounds`).
   So a graph is wired right by construction.
4. The graph is built (`Plan.from_spec`); one that does not build (a value out of range)
   goes back to the model with its error and the next example's layout, up to `attempts`
   answers. When none builds, `PlanningError` lists every answer and why it failed.

The model's reply is data: each node is parsed as JSON and built from registered blocks,
never run as code.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo

from reasoner._exceptions import InputError, PlanError, PlanningError
from reasoner.blocks import Block, Blocks, FromRequest
from reasoner.plan import Plan, format_validation_error
from reasoner.spec import GraphSpec, Wire, parse_spec

Layout = Literal["examples", "free"]
MAX_NODES = 6
NODE_TOKENS = 160  # a node's budget: a word problem's text fits
END = "end"
SCALARS = (int, float, str, bool)


@dataclass
class Tried:
    """One answer of the model (a graph), why it was rejected (None: it built), and the
    model calls it took."""

    text: str
    error: str | None = None
    calls: int = 1


@dataclass
class Drafted:
    """A planned graph: the plan built from it, and every answer it took."""

    plan: Plan
    tries: list[Tried]

    @property
    def calls(self) -> int:
        return sum(tried.calls for tried in self.tries)


async def plan_from_request(request: str, engine: Any, *, blocks: Blocks | None = None,
                            **options: Any) -> Plan:
    """The plan the language model drafts for `request`, built and checked, not yet run.

    Inspect it (`plan.to_spec()`, `plan.mermaid()`), edit the spec and build it again
    with `Plan.from_spec`, or run it: `await engine.run(plan, {})`. Blocks default to
    every block of the plan packages (`known_blocks()`); `options` are `draft`'s.
    """
    from reasoner.blocks import known_blocks

    drafted = await draft(request, engine.generators["lm"], engine.generators["embedder"],
                          known_blocks() if blocks is None else blocks, **options)
    return drafted.plan


async def draft(request: str, lm: Any, embedder: Any, blocks: Blocks, *, seed: int = 0,
                attempts: int = 3, layout: Layout = "examples", keep_examples: int = 3,
                keep_blocks: int = 3) -> Drafted:
    """`plan_from_request` with the generators given, saying what it tried.

    The graph is written node by node, each node one constrained call. With `layout=
    "examples"` (the default), attempt k lays the graph out as the k-th likest example
    does (its blocks, in order, wired the same way) and the model writes each node's
    parameters and values; with `"free"`, the model also picks each node's block among
    those offered that can be wired at that point (see `next_node_schema`), and where the
    graph ends. A graph that does not build goes back with its error. Up to `attempts`
    answers in all.
    """
    if not request.strip():
        raise InputError("the request is empty")
    if not blocks:
        raise PlanningError("there are no blocks to plan with")
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    examples = _examples(blocks)
    offered, shown = await shortlist(embedder, request, blocks, examples, keep_examples,
                                     keep_blocks)
    layouts = list({_shape(spec): spec for _, spec in reversed(shown)}.values())
    grounds = Grounds.of(request)
    tries: list[Tried] = []
    feedback = ""
    for attempt in range(attempts):
        if layout == "examples":
            like = layouts[attempt % len(layouts)]
            ordered = sorted(shown, key=lambda example: _shape(example[1]) == _shape(like))
            prompt = graph_prompt(request, blocks, offered, ordered)
            next_node = _following(like, blocks, grounds)
        else:
            prompt = graph_prompt(request, blocks, offered, shown)
            next_node = _choosing([blocks[name] for name in offered], grounds)
        tried = await _answer(lm, prompt + feedback, next_node, blocks, greedy=attempt == 0,
                              seed=seed * 1000 + attempt)
        tries.append(tried)
        if tried.error is None:
            try:
                plan = Plan.from_spec(_spec_of(tried.text), blocks)
            except PlanError as exc:
                tried.error = str(exc)
            else:
                return Drafted(plan, tries)
        feedback = (f" {tried.text}\nThat graph is wrong: {tried.error}\n"
                    f"Request: {request}\nGraph:")
    said = "\n".join(f"  answer {i + 1}: {t.text or '(none)'}\n    rejected: {t.error}"
                     for i, t in enumerate(tries))
    raise PlanningError(f"no valid graph for the request after {attempts} answer(s):\n{said}")


NextNode = Callable[[Sequence[type[BaseModel]]], type[BaseModel] | None]


async def _answer(lm: Any, question: str, next_node: NextNode, blocks: Blocks, *,
                  greedy: bool, seed: int) -> Tried:
    """One graph, a node per call, each constrained to what `next_node` allows after the
    outputs so far, until the layout is done, the model ends it or repeats a node (a
    repeat adds nothing: the model is looping), or there are MAX_NODES nodes."""
    nodes: list[str] = []
    outputs: list[type[BaseModel]] = []
    calls = 0
    while len(nodes) < MAX_NODES and (schema := next_node(outputs)) is not None:
        written = "".join(f"{node}, " for node in nodes)
        try:
            generation = await lm.generate(f'{question} {{"nodes": [{written}', schema=schema,
                                           max_new_tokens=NODE_TOKENS,
                                           temperature=0.0 if greedy else 0.7,
                                           seed=seed * 100 + calls)
        except ValidationError as exc:  # cut short by the token budget
            return Tried(_graph_text(nodes), f"node {len(nodes) + 1} was cut short: "
                                             f"{format_validation_error(exc)}", calls + 1)
        calls += 1
        node = schema.model_validate_json(generation.text).model_dump(mode="json",
                                                                       by_alias=True)
        text = json.dumps(node)
        if node["block"] == END or text in nodes:
            break
        nodes.append(text)
        outputs.append(blocks[node["block"]].output)
    return Tried(_graph_text(nodes), None, calls)


def _graph_text(nodes: Sequence[str]) -> str:
    return f'{{"nodes": [{", ".join(nodes)}]}}'


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


def _lengths(info: FieldInfo) -> Any:
    """A list parameter's length bounds, kept in the schema (they cost the index little,
    and four numbers are then four numbers); other bounds are checked when it is built."""
    kept = {bound: getattr(m, bound) for m in info.metadata
            for bound in ("min_length", "max_length") if getattr(m, bound, None) is not None}
    return Field(..., **kept) if kept and typing.get_origin(_plain(info.annotation)) is list else ...


@dataclass(frozen=True)
class Grounds:
    """What values the request states: its whole numbers, and its spans of text by kind."""

    numbers: frozenset[int]
    spans: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, request: str) -> Grounds:
        sentences = [s for s in re.split(r"(?<=[.!?:;])\s+", request.strip()) if s]
        runs = [" ".join(sentences[i:j]) for i in range(len(sentences))
                for j in range(i + 1, len(sentences) + 1)]
        words = request.split()
        phrases = {" ".join(words[i:j]).strip(".,;:!?\"'") for i in range(len(words))
                   for j in range(i + 1, min(i + 8, len(words)) + 1)}
        quoted = [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", request)]
        return cls(stated_numbers(request), {
            "sentences": tuple(dict.fromkeys(runs)),
            "words": tuple(sorted(p for p in phrases if p)),
            "quoted": tuple(dict.fromkeys(quoted))})


def _fits(adapter: TypeAdapter[Any] | None, value: str) -> bool:
    """Whether the parameter would take `value` (a span it would refuse is not offered)."""
    if adapter is None:
        return True
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _grounded(annotation: Any, grounds: Grounds, default: Any = None,
              metadata: Sequence[Any] = ()) -> Any:
    """The type a value is written in, so that values come from the request and not from
    the examples: a whole number (alone or in a list) is one the request states, or the
    parameter's default; a `FromRequest` text is one of the request's spans of its kind
    that the parameter takes, or its default. Where there is none of these, any."""
    plain = _plain(annotation)
    item = typing.get_args(plain)[0] if typing.get_origin(plain) is list else plain
    marked = next((m for m in metadata if isinstance(m, FromRequest)), None)
    if item is int:
        allowed: tuple[Any, ...] = tuple(sorted(grounds.numbers | (
            {default} if type(default) is int else set())))
    elif item is str and marked is not None:
        fits = TypeAdapter(typing.Annotated[str, *metadata]) if item is plain else None
        allowed = tuple(span for span in grounds.spans[marked.kind] if _fits(fits, span)) + (
            (default,) if isinstance(default, str) else ())
        if not allowed and default == []:  # the request quotes nothing: no endings
            return typing.Annotated[plain, Field(max_length=0)]
    else:
        return plain
    if not allowed:
        return plain
    return list[Literal[allowed]] if item is not plain else Literal[allowed]  # type: ignore[misc,valid-type]


_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD = {word: n for n, word in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_NUMBER = re.compile(rf"\d+|\b(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_UNITS[1:10])}))?"
                     rf"|{'|'.join(sorted(_UNITS, key=len, reverse=True))})\b", re.IGNORECASE)


NO_GROUNDS = Grounds(frozenset(), {"sentences": (), "words": (), "quoted": ()})


def stated_numbers(request: str) -> frozenset[int]:
    """The whole numbers a request states, in digits or in words up to ninety-nine."""
    found = set()
    for match in _NUMBER.finditer(request):
        words = re.split(r"[- ]", match.group().lower())
        found.add(int(words[0]) if words[0].isdigit() else sum(_WORD[w] for w in words))
    return frozenset(found)


def _literal_model(model: type[BaseModel], grounds: Grounds) -> type[BaseModel] | None:
    """What a literal value of an input may hold in the schema: its required scalar fields,
    or None when a value cannot be written in JSON by hand (images, nested models)."""
    plain = {name: _plain(info.annotation) for name, info in model.model_fields.items()
             if info.is_required()}
    if not plain or any(annotation not in SCALARS for annotation in plain.values()):
        return None
    fields = {name: (_grounded(annotation, grounds), ...) for name, annotation in plain.items()}
    return create_model(f"{model.__name__}Value", __config__=ConfigDict(extra="forbid"),
                        **fields)  # type: ignore[call-overload]


class _End(BaseModel):
    """The graph's end, written where a next node would be."""

    model_config = ConfigDict(extra="forbid")

    block: Literal["end"]  # END


def _wire(sources: tuple[str, ...]) -> type[BaseModel]:
    """An input wired from one of `sources`, the earlier nodes whose output fits it."""
    return create_model(f"From{'_'.join(sources)}",
                        __config__=ConfigDict(extra="forbid", populate_by_name=True),
                        node=(Literal[sources], Field(alias="from")))


def _node_model(block: Block, choices: dict[str, list[Any]],
                grounds: Grounds) -> type[BaseModel] | None:
    """What a node of `block` may be, each input one of its `choices` (wires, literal
    models, None), or None when an input has none. Fields are in alphabetical order, the
    order constrained decoding writes them in; every input and parameter is written out,
    an optional input left out as null."""
    title = "".join(part.title() for part in block.name.split("-"))
    fields: dict[str, Any] = {"block": (Literal[block.name], ...)}
    if block.inputs:
        if not all(choices.get(name) for name in block.inputs):
            return None
        ports = {name: (typing.Union[tuple(choices[name])], ...)  # noqa: UP007
                 for name in block.inputs}
        fields["inputs"] = (create_model(f"{title}Inputs", __config__=ConfigDict(extra="forbid"),
                                         **ports), ...)
    if block.params.model_fields:
        params = {name: (_grounded(info.annotation, grounds, info.default, info.metadata),
                         _lengths(info))
                  for name, info in block.params.model_fields.items()}
        fields["params"] = (create_model(f"{title}Params", __config__=ConfigDict(extra="forbid"),
                                         **params), ...)
    return create_model(f"{title}Node", __config__=ConfigDict(extra="forbid"), **fields)


def _literals(block: Block, name: str, grounds: Grounds) -> list[Any]:
    """The literal forms an input may take, and null when it is optional."""
    found: list[Any] = [m for m in (_literal_model(model, grounds) for model in block.inputs[name])
                        if m is not None]
    return found + ([type(None)] if name not in block.required else [])


def next_node_schema(offered: Sequence[Block], outputs: Sequence[type[BaseModel]],
                     grounds: Grounds = NO_GROUNDS) -> type[BaseModel]:
    """What the node after nodes giving `outputs` (n1, n2, ...) may be: an offered block
    whose every input is wired from an earlier node of a fitting type or given as a
    value, or (after the first node) the end. So every graph written is wired right by
    construction: no unknown node, no type mismatch, no cycle. With `grounds`, the values
    the model writes are the request's (see `_grounded`)."""
    options: list[Any] = []
    for block in offered:
        choices = {}
        for name, models in block.inputs.items():
            sources = tuple(f"n{i + 1}" for i, out in enumerate(outputs)
                            if any(issubclass(out, model) for model in models))
            choices[name] = ([_wire(sources)] if sources else []) + _literals(block, name, grounds)
        if (model := _node_model(block, choices, grounds)) is not None:
            options.append(model)
    if outputs:
        options.append(_End)
    return RootModel[typing.Union[tuple(options)]]  # type: ignore[misc]  # noqa: UP007


def _choosing(offered: Sequence[Block], grounds: Grounds) -> NextNode:
    """The free layout: any offered block that can be wired next, or the end."""
    return lambda outputs: next_node_schema(offered, outputs, grounds)


def _following(spec: GraphSpec, blocks: Blocks, grounds: Grounds) -> NextNode:
    """The layout of an example: node k is its node k's block, each input wired from the
    same earlier node or given as a value where the example's is; only the values and
    parameters are the model's to write."""
    position = {node.id: f"n{i + 1}" for i, node in enumerate(spec.nodes)}

    def next_node(outputs: Sequence[type[BaseModel]]) -> type[BaseModel] | None:
        if len(outputs) == len(spec.nodes):
            return None
        node = spec.nodes[len(outputs)]
        block = blocks[node.block]
        choices = {}
        for name in block.inputs:
            given = node.inputs.get(name)
            choices[name] = ([_wire((position[given.node],))] if isinstance(given, Wire) else
                             _literals(block, name, grounds) if given is not None
                             else [type(None)])
        return RootModel[_node_model(block, choices, grounds)]  # type: ignore[misc]

    return next_node


def _shape(spec: GraphSpec) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """A graph's blocks and how they are wired, its values left out."""
    position = {node.id: i for i, node in enumerate(spec.nodes)}
    return tuple((node.block, tuple(sorted(
        (name, str(position[given.node]) if isinstance(given, Wire) else "value")
        for name, given in node.inputs.items()))) for node in spec.nodes)


def in_answer_form(spec: GraphSpec, blocks: Blocks) -> str:
    """An example's spec written as the model is made to write one: every input and
    parameter given, fields in the schema's order, and the end as a last node."""
    position = {node.id: f"n{i + 1}" for i, node in enumerate(spec.nodes)}
    nodes = []
    for node in spec.nodes:
        block = blocks[node.block]
        out: dict[str, Any] = {"block": node.block}
        if block.inputs:
            out["inputs"] = {}
            for name in block.inputs:
                given = node.inputs.get(name)
                out["inputs"][name] = ({"from": position.get(given.node, given.node)}
                                       if isinstance(given, Wire) else given)
        if block.params.model_fields:
            out["params"] = block.params.model_validate(node.params).model_dump(mode="json")
        nodes.append(out)
    return json.dumps({"nodes": [*nodes, {"block": END}]})


def _spec_of(answer: str) -> dict[str, Any]:
    """The spec of an answer (written by `_answer` from nodes its schemas validated): nodes
    named n1, n2, ... by position, inputs left out as null dropped."""
    nodes = json.loads(answer)["nodes"]
    for i, node in enumerate(nodes):
        node["id"] = f"n{i + 1}"
        if "inputs" in node:
            node["inputs"] = {k: v for k, v in node["inputs"].items() if v is not None}
    return {"nodes": nodes}


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
    lines = ["Write the graph of blocks that does what the request asks, as JSON. Nodes are "
             'n1, n2, ... in order; an input comes from an earlier node ({"from": "n1"}) or '
             "is given as a value.",
             "Blocks:", *(_signature(blocks[name]) for name in offered), ""]
    lines += [f"Request: {text}\nGraph: {in_answer_form(spec, blocks)}" for text, spec in examples]
    lines.append(f"Request: {request}\nGraph:")
    return "\n".join(lines)
