"""Graph specs: built into plans from blocks, every mistake a PlanError naming node and field,
round-tripped, stored with the run and resumed from it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from sample_blocks import Number, Words, blocks
from sample_plans import counted

from reasoner import Engine, Plan, PlanError
from reasoner.blocks import Blocks, load_blocks
from reasoner.spec import GraphSpec

CHAIN = {"nodes": [
    {"id": "a", "block": "number", "params": {"value": 4}},
    {"id": "b", "block": "number", "params": {"value": 5}},
    {"id": "sum", "block": "add", "inputs": {"left": {"from": "a"}, "right": {"from": "b"}}},
    {"id": "big", "block": "scale", "inputs": {"number": {"from": "sum"}}, "params": {"times": 3}},
    {"id": "words", "block": "spell", "inputs": {"number": {"from": "big"}},
     "params": {"prefix": "it is "}},
]}


def _counts(log: Path) -> dict[str, int]:
    names = log.read_text().split() if log.exists() else []
    return {name: names.count(name) for name in set(names)}


def with_node(index: int, **changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(CHAIN))
    spec["nodes"][index].update(changes)
    return spec


async def test_a_spec_builds_an_ordinary_plan_that_runs() -> None:
    plan = Plan.from_spec(CHAIN, blocks)
    compiled = plan.compile()
    assert list(compiled.steps) == ["a", "b", "sum", "big", "words"]
    assert compiled.producers["sum"] == ("a", "b") and compiled.producers["words"] == ("big",)
    assert 'big["big (scale): Number"]' in plan.mermaid() and "sum -->|number| big" in plan.mermaid()
    run = await Engine().run(plan, {})
    assert run.status == "succeeded"
    assert run.output("words") == Words(text="it is number 27")
    assert run.steps["big"].checks[0].name == "stays_small" and run.steps["big"].checks[0].passed


async def test_literal_inputs_and_defaults() -> None:
    plan = Plan.from_spec({"nodes": [
        {"id": "n1", "block": "scale", "inputs": {"number": {"value": 21}}},
        {"id": "n2", "block": "spell", "inputs": {"number": {"text": "hello"}}},
    ]}, blocks)
    run = await Engine().run(plan, {})
    assert run.output("n1") == Number(value=42)  # times defaults to 2
    assert run.output("n2") == Words(text="hello")  # the second model of the union


async def test_a_failing_check_fails_the_node_named_by_its_id() -> None:
    plan = Plan.from_spec({"nodes": [
        {"id": "n1", "block": "scale", "inputs": {"number": {"value": 400}}, "params": {"times": 5}},
    ]}, blocks)
    run = await Engine().run(plan, {})
    assert run.status == "failed"
    assert "n1" in run.error and "2000 is over 1000 (times 5)" in run.error


@pytest.mark.parametrize(("spec", "message"), [
    (with_node(3, block="scael"),
     "node 'big': unknown block 'scael'; did you mean 'scale'?"),
    (with_node(2, inputs={"left": {"from": "a"}, "right": {"from": "c"}}),
     "node 'sum' (add): input 'right' is wired from unknown node 'c' (nodes: a, b, sum, big, words)"),
    (with_node(1, id="a"),
     "node 'a': the id is used by another node; ids are unique"),
    (with_node(0, block="scale", params={}, inputs={"number": {"from": "words"}}),
     "node 'a' (scale): input 'number' takes Number but node 'words' (spell) gives Words"),
    (with_node(0, block="add", params={}, inputs={"left": {"from": "sum"}, "right": {"value": 1}}),
     "nodes sum -> a -> sum form a cycle"),
    (with_node(3, inputs={"number": {"from": "big"}}),
     "nodes big -> big form a cycle"),
    (with_node(2, inputs={"left": {"from": "a"}}),
     "node 'sum' (add): input 'right' is missing: wire it from a node that gives Number"),
    (with_node(2, inputs={"left": {"from": "a"}, "right": {"from": "b"}, "third": {"from": "b"}}),
     "node 'sum' (add): unknown input 'third' (inputs: left, right)"),
    (with_node(3, params={"times": 3, "number": 2}),
     "node 'big' (scale): unknown parameter 'number' (it is an input: give it in inputs)"),
    (with_node(3, params={"times": 9}),
     "node 'big' (scale): parameter 'times': Input should be less than or equal to 5"),
    (with_node(0, params={}),
     "node 'a' (number): parameter 'value': Field required"),
    (with_node(3, inputs={"number": {"valeu": 3}}),
     "node 'big' (scale): input 'number' is not a valid Number: field 'value': Field required"),
    (with_node(4, id="4th"),
     "invalid graph spec: node '4th', field 'id': String should match pattern"),
    ({"nodes": [{"id": "n1"}]},
     "invalid graph spec: node 'n1', field 'block': Field required"),
    ({"nodes": []},
     "invalid graph spec: field 'nodes': List should have at least 1 item"),
    ("{not json", "invalid graph spec: field '(spec)': Invalid JSON"),
])
def test_every_mistake_is_a_plan_error_naming_node_and_field(spec: Any, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        Plan.from_spec(spec, blocks)
    assert message in str(caught.value)


def test_specs_round_trip() -> None:
    plan = Plan.from_spec(json.dumps(CHAIN), blocks)
    assert plan.to_spec().dump() == CHAIN
    again = Plan.from_spec(plan.to_spec(), blocks)
    assert again.mermaid() == plan.mermaid()
    assert GraphSpec.model_validate_json(json.dumps(plan.to_spec().dump())) == plan.to_spec()
    with pytest.raises(PlanError, match="written in Python, not built from a graph spec"):
        counted.to_spec()


def test_every_example_builds() -> None:
    for request, spec in blocks.examples:
        assert Plan.from_spec(spec, blocks).to_spec().dump() == spec, request


def test_blocks_are_checked_when_registered() -> None:
    mine = Blocks()

    class Out(BaseModel):
        x: int

    with pytest.raises(PlanError, match="block 'quiet': give it a docstring"):
        mine.block(lambda: Out(x=1), name="quiet")

    async def returns_int(n: int) -> int:
        """Not a model."""
        return n

    with pytest.raises(PlanError, match="block 'returns-int': the return annotation must be"):
        mine.block(returns_int)

    def fine(n: int) -> Out:
        """Fine."""
        return Out(x=n)

    made = mine.block(fine)
    with pytest.raises(PlanError, match="check 'odd' of block 'fine': parameter 'y'"):
        made.check(lambda out, y: True, name="odd")
    other = Blocks()
    other.block(fine)
    assert set(Blocks(mine, load_blocks("sample_blocks"))) == {"fine", *blocks}
    with pytest.raises(PlanError, match="'fine' is registered twice"):
        Blocks(mine, other)


async def test_a_run_stores_its_spec_and_resumes_from_it(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    log = tmp_path / "log"
    monkeypatch.setenv("SAMPLE_LOG", str(log))
    monkeypatch.setenv("SAMPLE_DELAY", "0.05")
    engine = Engine(tmp_path / "runs.db")
    job = asyncio.create_task(engine.run(Plan.from_spec(CHAIN, blocks), {}, run_id="cut"))
    while _counts(log).get("sum", 0) == 0:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    record = engine.store.load("cut").record
    assert record.spec == CHAIN and record.plan_ref is None
    assert record.blocks == {name: "sample_blocks" for name in ("number", "add", "scale", "spell")}
    committed = {n for n, s in engine.load("cut").steps.items() if s.status == "succeeded"}
    assert {"a", "b"} <= committed and "words" not in committed

    resumed = await Engine(tmp_path / "runs.db").resume("cut")  # the plan rebuilt from the spec
    assert resumed.status == "succeeded" and resumed.output("words").text == "it is number 27"
    assert all(_counts(log)[name] == 1 for name in committed)
