"""The single-plan request router (the planner's baseline): prompts from the registry,
constrained answers, re-asking."""

from __future__ import annotations

import pytest

from reasoner import PlanError, known_plans
from reasoner._exceptions import PlanningError
from reasoner.router import plan_prompt, route
from reasoner.testing import FakeLM


def answering(*replies: str) -> FakeLM:
    queue = list(replies)
    return FakeLM(lambda prompt, seed: queue.pop(0))


def test_prompts_are_built_from_the_registry() -> None:
    plans = known_plans()
    assert set(plans) >= {"verified-digits", "morph", "story", "game24"}
    prompt = plan_prompt("draw 42", plans)
    for name, plan in plans.items():
        assert f"- {name}:" in prompt
        assert all(example in prompt for example, _ in plan.examples)
    assert prompt.endswith("Request: draw 42\nAnswer:")


async def test_route_validates_and_re_asks_on_failure() -> None:
    lm = answering('{"plan": "paint"}', '{"plan": "verified-digits"}',
                   '{"question": "no numbers here"}', '{"expression": "42"}')
    routed = await route(lm, "draw the number forty-two in handwriting", known_plans())
    assert (routed.plan, routed.input, routed.asked) == ("verified-digits",
                                                          {"question": None, "expression": "42"}, 4)
    rejected = [prompt for prompt, _ in lm.calls if "rejected" in prompt]
    assert "field 'plan': Input should be 'game24', 'morph', 'story' or 'verified-digits'" in (
        rejected[0])
    assert "a question must contain at least one number" in rejected[1]


async def test_route_gives_up_after_its_attempts() -> None:
    lm = answering('{"plan": "game24"}', *['{"numbers": [1, 2]}'] * 3)
    with pytest.raises(PlanningError, match="no valid input for game24 after 3 attempts; last "
                                            "problem: field 'numbers': List should have at least 4"):
        await route(lm, "make 24 from 1 and 2", known_plans())


def test_bad_examples_are_caught_when_the_plan_is_built() -> None:
    from plans.game24 import Puzzle
    from reasoner import Plan

    with pytest.raises(PlanError, match="example 'x' has an invalid input"):
        Plan("p", input=Puzzle, examples=[("x", {"numbers": [99]})])


async def test_the_embedder_narrows_the_plans_and_the_schema() -> None:
    from reasoner.router import shortlist
    from reasoner.testing import FakeEmbedder

    plans = known_plans()
    kept, examples = await shortlist(FakeEmbedder(), "write the number 42 in handwriting", plans)
    assert len(kept) == 2 and "verified-digits" in kept
    assert examples[-1] == ("write the number 305 in handwriting", "verified-digits")
    outside = next(name for name in plans if name not in kept)  # not even in the schema
    lm = answering(f'{{"plan": "{outside}"}}', '{"plan": "verified-digits"}',
                   '{"expression": "42"}')
    routed = await route(lm, "write the number 42 in handwriting", plans,
                          embedder=FakeEmbedder())
    assert routed.plan == "verified-digits" and routed.asked == 3
    assert f"- {outside}:" not in lm.calls[0][0]
