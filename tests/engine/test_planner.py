"""The planner: constrained graph specs from a request, errors fed back, shortlists by likeness."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sample_blocks import Words, blocks

from reasoner import Engine
from reasoner._exceptions import InputError, PlanningError
from reasoner.planner import draft, graph_schema, in_answer_form, plan_from_request, shortlist
from reasoner.spec import parse_spec
from reasoner.testing import FakeEmbedder, FakeLM, fake_generators

WRONG = json.dumps({"nodes": [
    {"block": "spell", "id": "n1", "inputs": {"number": {"value": 2}}, "params": {"prefix": ""}},
    {"block": "add", "id": "n2", "inputs": {"left": {"from": "n1"}, "right": {"value": 3}}},
]})
RIGHT = json.dumps({"nodes": [
    {"block": "number", "id": "n1", "params": {"value": 2}},
    {"block": "add", "id": "n2", "inputs": {"left": {"from": "n1"}, "right": {"value": 3}}},
    {"block": "spell", "id": "n3", "inputs": {"number": {"from": "n2"}}, "params": {"prefix": ""}},
]})


def corrected_after_one_error() -> FakeLM:
    return FakeLM(lambda prompt, seed: RIGHT if "That graph is wrong" in prompt else WRONG)


async def test_a_wrong_spec_goes_back_with_its_error_then_a_right_one_builds() -> None:
    lm = corrected_after_one_error()
    drafted = await draft("add 2 and 3 and spell it", lm, FakeEmbedder(), blocks, keep_blocks=4)
    first, second = drafted.tries
    assert first.text == WRONG and second.error is None and drafted.calls == 2 == len(lm.calls)
    error = "node 'n2' (add): input 'left' takes Number but node 'n1' (spell) gives Words"
    assert error in first.error
    assert f"{WRONG}\nThat graph is wrong: {error}" in lm.calls[1][0]
    assert lm.calls[1][0].endswith("Request: add 2 and 3 and spell it\nGraph:")
    assert drafted.plan.to_spec().dump() == parse_spec(json.loads(RIGHT)).dump()
    run = await Engine().run(drafted.plan, {})
    assert run.status == "succeeded" and run.output("n3") == Words(text="number 5")


async def test_no_valid_graph_says_what_each_answer_was_and_why_it_failed() -> None:
    lm = FakeLM(lambda prompt, seed: WRONG)
    with pytest.raises(PlanningError) as caught:
        await draft("spell 2 and add 3", lm, FakeEmbedder(), blocks, attempts=2, keep_blocks=4)
    said = str(caught.value)
    assert said.startswith("no valid graph for the request after 2 answer(s):")
    assert said.count(f"answer 1: {WRONG}") == 1 and said.count(f"answer 2: {WRONG}") == 1
    assert said.count("rejected: node 'n2' (add): input 'left' takes Number") == 2


async def test_the_shortlist_offers_the_likest_blocks_and_examples_most_alike_last() -> None:
    examples = [(text, parse_spec(spec)) for text, spec in blocks.examples]
    _, shown = await shortlist(FakeEmbedder(), "double 8", blocks, examples)
    assert [text for text, _ in shown][-1] == "double 21" and len(shown) == 3
    offered, shown = await shortlist(FakeEmbedder(), "double 8", blocks, examples,
                                     keep_examples=1, keep_blocks=1)
    assert "scale" in offered and not {"add", "spell"} & set(offered)
    lm = FakeLM(lambda prompt, seed: json.dumps({"nodes": [
        {"block": "scale", "id": "n1", "inputs": {"number": {"value": 8}}, "params": {"times": 2}}]}))
    drafted = await draft("double 8", lm, FakeEmbedder(), blocks, keep_examples=1, keep_blocks=1)
    prompt = lm.calls[0][0]
    assert "- scale (inputs number: Number; params times: int) -> Number: Multiply" in prompt
    assert "- add (" not in prompt and "Request: add 2 and 3" not in prompt
    assert prompt.endswith('"params": {"times": 2}}]}\nRequest: double 8\nGraph:')
    assert drafted.plan.to_spec().dump() == {"nodes": [
        {"id": "n1", "block": "scale", "params": {"times": 2}, "inputs": {"number": {"value": 8}}}]}


def test_the_schema_admits_only_the_offered_blocks_and_their_typed_fields() -> None:
    schema = graph_schema([blocks["number"], blocks["scale"]])
    schema.model_validate_json(json.dumps({"nodes": [
        {"block": "number", "id": "n1", "params": {"value": 3}},
        {"block": "scale", "id": "n2", "inputs": {"number": {"from": "n1"}}, "params": {"times": 2}}]}))
    for wrong in (
        {"block": "add", "id": "n1", "inputs": {"left": {"from": "n2"}, "right": {"value": 1}}},
        {"block": "number", "id": "n1", "params": {"value": "three"}},
        {"block": "number", "id": "first", "params": {"value": 3}},
        {"block": "number", "id": "n1", "params": {"value": 3, "extra": 1}},
        {"block": "scale", "id": "n1", "inputs": {"number": {"from": "n1", "x": 1}},
         "params": {"times": 2}},
    ):
        with pytest.raises(ValidationError):
            schema.model_validate_json(json.dumps({"nodes": [wrong]}))


def test_examples_are_shown_in_the_form_the_schema_makes_the_model_write() -> None:
    schema = graph_schema(list(blocks.values()))
    for _, spec in blocks.examples:
        written = in_answer_form(parse_spec(spec), blocks)
        schema.model_validate_json(written)
        assert list(json.loads(written)["nodes"][0]) == sorted(json.loads(written)["nodes"][0])


async def test_plan_from_request_uses_the_engines_generators() -> None:
    engine = Engine(generators=fake_generators(lm=corrected_after_one_error()))
    plan = await plan_from_request("add 2 and 3, then spell it", engine, blocks=blocks)
    assert [step.block for step in plan.steps.values()] == ["number", "add", "spell"]
    with pytest.raises(InputError, match="the request is empty"):
        await plan_from_request("  ", engine, blocks=blocks)
