"""The planner: graphs written node by node under constrained decoding, laid out as the
likest example or freely, wired right by construction, errors fed back."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError
from sample_blocks import Number, Words, blocks

from reasoner import Engine
from reasoner._exceptions import InputError, PlanningError
from reasoner.planner import (
    Grounds,
    _following,
    draft,
    in_answer_form,
    next_node_schema,
    plan_from_request,
    shortlist,
    stated_numbers,
)
from reasoner.spec import parse_spec
from reasoner.testing import FakeEmbedder, FakeLM, fake_generators

END = {"block": "end"}


def writing(first: Sequence[dict[str, Any]],
            corrected: Sequence[dict[str, Any]] = ()) -> Callable[[str, int], str]:
    """A scripted model writing `first` node by node (then the end); once an error was
    fed back, `corrected` instead."""

    def respond(prompt: str, seed: int) -> str:
        graph = corrected if "That graph is wrong" in prompt else first
        written = prompt.rsplit('{"nodes": [', 1)[1].count('{"block"')
        return json.dumps(graph[written] if written < len(graph) else END)

    return respond


SCALE_BY_9 = [{"block": "scale", "inputs": {"number": {"value": 21}}, "params": {"times": 9}}]
SCALE_BY_2 = [{"block": "scale", "inputs": {"number": {"value": 21}}, "params": {"times": 2}}]


async def test_a_wrong_graph_goes_back_with_its_error_then_a_right_one_builds() -> None:
    lm = FakeLM(writing(SCALE_BY_9, SCALE_BY_2))
    drafted = await draft("take 21 times 9", lm, FakeEmbedder(), blocks, keep_examples=1)
    first, second = drafted.tries
    error = "node 'n1' (scale): parameter 'times': Input should be less than or equal to 5"
    assert error in first.error and second.error is None
    assert drafted.calls == 2 == len(lm.calls)  # the example's layout: one node, no end call
    assert f'"times": 9}}}}]}}\nThat graph is wrong: {error}' in lm.calls[1][0]
    assert drafted.plan.to_spec().dump() == {"nodes": [
        {"id": "n1", "block": "scale", "params": {"times": 2}, "inputs": {"number": {"value": 21}}}]}
    run = await Engine().run(drafted.plan, {})
    assert run.output("n1") == Number(value=42)


async def test_no_valid_graph_says_what_each_answer_was_and_why_it_failed() -> None:
    lm = FakeLM(writing(SCALE_BY_9, SCALE_BY_9))
    with pytest.raises(PlanningError) as caught:
        await draft("take 21 times 9", lm, FakeEmbedder(), blocks, attempts=2, keep_examples=1)
    said = str(caught.value)
    assert said.startswith("no valid graph for the request after 2 answer(s):")
    assert said.count('answer 1: {"nodes": [{"block": "scale"') == 1
    assert said.count("rejected: node 'n1' (scale): parameter 'times'") == 2


async def test_the_free_layout_writes_blocks_and_the_end_wired_by_type() -> None:
    graph = [{"block": "number", "params": {"value": 2}},
             {"block": "add", "inputs": {"left": {"from": "n1"}, "right": {"value": 3}}},
             {"block": "spell", "inputs": {"number": {"from": "n2"}}, "params": {"prefix": ""}}]
    lm = FakeLM(writing(graph))
    drafted = await draft("add 2 and 3 and spell it", lm, FakeEmbedder(), blocks,
                          layout="free", keep_blocks=4)
    assert drafted.calls == 4  # three nodes, then the end
    run = await Engine().run(drafted.plan, {})
    assert run.status == "succeeded" and run.output("n3") == Words(text="number 5")


async def test_the_shortlist_offers_the_likest_blocks_and_examples_most_alike_last() -> None:
    examples = [(text, parse_spec(spec)) for text, spec in blocks.examples]
    _, shown = await shortlist(FakeEmbedder(), "double 8", blocks, examples)
    assert [text for text, _ in shown][-1] == "double 21" and len(shown) == 3
    offered, _ = await shortlist(FakeEmbedder(), "double 8", blocks, examples,
                                 keep_examples=1, keep_blocks=1)
    assert "scale" in offered and not {"add", "spell"} & set(offered)
    lm = FakeLM(writing([{"block": "scale", "inputs": {"number": {"value": 8}},
                          "params": {"times": 2}}]))
    drafted = await draft("double 8", lm, FakeEmbedder(), blocks, keep_examples=1, keep_blocks=1)
    prompt = lm.calls[0][0]
    assert "- scale (inputs number: Number; params times: int) -> Number: Multiply" in prompt
    assert "- add (" not in prompt and "Request: add 2 and 3" not in prompt
    assert prompt.endswith('{"block": "end"}]}\nRequest: double 8\nGraph: {"nodes": [')
    assert drafted.plan.to_spec().dump()["nodes"][0]["inputs"] == {"number": {"value": 8}}


def test_the_free_schema_wires_only_earlier_nodes_of_a_fitting_type() -> None:
    offered = [blocks["number"], blocks["add"], blocks["spell"]]
    first = next_node_schema(offered, [])
    first.model_validate_json('{"block": "number", "params": {"value": 3}}')
    for wrong in ('{"block": "end"}',  # a graph has a node
                  '{"block": "add", "inputs": {"left": {"from": "n1"}, "right": {"value": 1}}}',
                  '{"block": "scale", "inputs": {"number": {"value": 1}}, "params": {"times": 2}}',
                  '{"block": "number", "params": {"value": "three"}}'):
        with pytest.raises(ValidationError):
            first.model_validate_json(wrong)
    after_words = next_node_schema(offered, [Number, Words])
    after_words.model_validate_json(
        '{"block": "add", "inputs": {"left": {"from": "n1"}, "right": {"from": "n1"}}}')
    after_words.model_validate_json('{"block": "end"}')
    with pytest.raises(ValidationError):  # n2 gives Words, not a Number
        after_words.model_validate_json(
            '{"block": "add", "inputs": {"left": {"from": "n2"}, "right": {"value": 1}}}')


def test_text_marked_from_the_request_is_one_of_its_spans() -> None:
    from plans.blocks import blocks as project

    request = "Sam had 9 figs and ate 4. How many are left? Then a story about a wet dog."
    schema = next_node_schema([project["solve-word-problem"], project["outline-story"]], [],
                              Grounds.of(request))
    schema.model_validate_json('{"block": "solve-word-problem", "params": {"question": '
                               '"Sam had 9 figs and ate 4. How many are left?"}}')
    schema.model_validate_json('{"block": "outline-story", "inputs": {"about": null}, "params": '
                               '{"topic": "a wet dog", "paragraphs": 3, "endings": []}}')
    for wrong in ('{"block": "solve-word-problem", "params": {"question": "Sam had 9 figs."}}',
                  '{"block": "outline-story", "inputs": {"about": null}, "params": '
                  '{"topic": "a dry cat", "paragraphs": 3, "endings": []}}'):
        with pytest.raises(ValidationError):
            schema.model_validate_json(wrong)


def test_whole_numbers_come_from_the_request_or_a_default() -> None:
    assert stated_numbers("a two-paragraph story about forty-two, 17 + 5, and a stone") == {
        2, 42, 17, 5}
    schema = next_node_schema([blocks["scale"]], [], Grounds.of("scale 7 by 3"))
    schema.model_validate_json(
        '{"block": "scale", "inputs": {"number": {"value": 7}}, "params": {"times": 2}}')
    with pytest.raises(ValidationError):  # 21 is not in the request
        schema.model_validate_json(
            '{"block": "scale", "inputs": {"number": {"value": 21}}, "params": {"times": 3}}')


@pytest.mark.parametrize("registry", ["sample", "project"])
def test_every_example_is_written_as_its_layout_and_the_free_schema_allow(registry: str) -> None:
    """Under its own request's grounds: every value of an example comes from its request."""
    from plans.blocks import blocks as project

    chosen = blocks if registry == "sample" else project
    for request, raw in chosen.examples:
        spec = parse_spec(raw)
        written = json.loads(in_answer_form(spec, chosen))["nodes"]
        assert written[-1] == END and all(list(n) == sorted(n) for n in written)
        layout = _following(spec, chosen, Grounds.of(request))
        outputs: list[Any] = []
        for node in written[:-1]:
            layout(outputs).model_validate_json(json.dumps(node))
            next_node_schema(list(chosen.values()), outputs,
                             Grounds.of(request)).model_validate_json(json.dumps(node))
            outputs.append(chosen[node["block"]].output)
        assert layout(outputs) is None, request


async def test_plan_from_request_uses_the_engines_generators() -> None:
    engine = Engine(generators=fake_generators(lm=FakeLM(writing(SCALE_BY_9, SCALE_BY_2))))
    plan = await plan_from_request("take 21 times 9", engine, blocks=blocks, keep_examples=1)
    assert [step.block for step in plan.steps.values()] == ["scale"]
    with pytest.raises(InputError, match="the request is empty"):
        await plan_from_request("  ", engine, blocks=blocks)
