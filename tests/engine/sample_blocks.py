"""Blocks the graph spec tests build plans from, found again by module when a run resumes.

Each block appends its node's name to the file in $SAMPLE_LOG when it starts and sleeps
$SAMPLE_DELAY seconds, as `sample_plans` does, so a test can cut a run midway.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from sample_plans import _executed

from reasoner import Context, checks
from reasoner.blocks import Blocks


class Number(BaseModel):
    value: int


class Words(BaseModel):
    text: str


blocks = Blocks()


@blocks.block
async def number(ctx: Context, value: int) -> Number:
    """Give the number `value`."""
    await _executed(ctx.step)
    return Number(value=value)


@blocks.block(retries=1)
async def add(ctx: Context, left: Number, right: Number) -> Number:
    """Add two numbers."""
    await _executed(ctx.step)
    return Number(value=left.value + right.value)


@blocks.block
async def scale(ctx: Context, number: Number,
                times: Annotated[int, Field(ge=1, le=5, description="the factor")] = 2) -> Number:
    """Multiply a number by a small factor."""
    await _executed(ctx.step)
    return Number(value=number.value * times)


@scale.check
def stays_small(out: Number, times: int) -> checks.Result:
    if out.value > 1000:
        return checks.Result.fail(f"{out.value} is over 1000 (times {times})")
    return checks.Result.ok(f"{out.value} is at most 1000")


@blocks.block
def spell(number: Number | Words, prefix: str = "") -> Words:
    """Write a number (or pass words through) as words."""
    text = number.text if isinstance(number, Words) else f"number {number.value}"
    return Words(text=f"{prefix}{text}")


blocks.example("add 2 and 3", [
    {"id": "n1", "block": "number", "params": {"value": 2}},
    {"id": "n2", "block": "number", "params": {"value": 3}},
    {"id": "n3", "block": "add", "inputs": {"left": {"from": "n1"}, "right": {"from": "n2"}}},
])
blocks.example("double 21", [
    {"id": "n1", "block": "scale", "inputs": {"number": {"value": 21}}},
])
blocks.example("spell 7 times 3", [
    {"id": "n1", "block": "scale", "inputs": {"number": {"value": 7}}, "params": {"times": 3}},
    {"id": "n2", "block": "spell", "inputs": {"number": {"from": "n1"}}},
])
