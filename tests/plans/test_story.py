"""story on fake generators: planning by size, paragraph checks, resampling, backtracking."""

from __future__ import annotations

import re

import pytest

from plans.story import plan
from reasoner import Engine, InputError
from reasoner.testing import FakeLM, assert_coherent, fake_generators

ENDINGS = ["The lighthouse keeper lit the old lamp.", "The ship found the harbour at last."]


def writer(bad_paragraphs: int = 0, needs_new_outline: bool = False) -> FakeLM:
    """Outlines and paragraphs that echo their ending's words, after `bad_paragraphs` misses."""
    state = {"bad": bad_paragraphs, "outlines": 0}

    def respond(prompt: str, seed: int) -> str:
        if prompt.startswith("Plan a short story"):
            state["outlines"] += 1
            tag = "storm" if state["outlines"] > 1 or not needs_new_outline else "market"
            return "\n".join(f"{i + 1}. a {tag} night where {e.lower()}" for i, e in enumerate(ENDINGS))
        ending = re.search(r'exact sentence: "(.*)"', prompt).group(1)
        if state["bad"] > 0 or (needs_new_outline and "market" in prompt):
            state["bad"] -= 1
            return "Stock prices fell sharply on monday morning."
        return f"On a storm night near the keeper lamp, the ship and harbour waited. {ending}"

    return FakeLM(respond)


async def test_one_paragraph_step_per_ending() -> None:
    run = await Engine(generators=fake_generators(lm=writer())).run(
        plan, {"endings": ENDINGS, "topic": "the sea"}, seed=3)
    assert run.status == "succeeded", run.error
    assert list(run.steps) == ["outline", "paragraph_0", "paragraph_1", "story"]
    story = run.output("story")
    paragraphs = story.text.split("\n\n")
    assert [p.endswith(e) for p, e in zip(paragraphs, ENDINGS, strict=True)] == [True, True]
    assert [set(s) for s in story.scores] == [{"fits_ending", "follows_previous",
                                               "follows_outline"}] * 2
    assert_coherent(run, min_step=0.25, min_edge=0.2)


async def test_a_paragraph_below_threshold_is_resampled() -> None:
    run = await Engine(generators=fake_generators(lm=writer(bad_paragraphs=1))).run(
        plan, {"endings": ENDINGS})
    first = run.steps["paragraph_0"]
    assert run.status == "succeeded" and [a.status for a in first.attempts] == ["failed", "succeeded"]
    assert first.attempts[0].checks[0].reason.startswith("similarity to its ending 0.")
    assert run.output("paragraph_0").appended is False


async def test_spent_retries_regenerate_the_outline() -> None:
    run = await Engine(generators=fake_generators(lm=writer(needs_new_outline=True))).run(
        plan, {"endings": ENDINGS})
    assert run.status == "succeeded", run.error
    assert [(b.failed, b.target) for b in run.backtracks] == [("paragraph_0", "outline")]
    assert "storm" in run.output("outline").lines[0]
    assert len(run.steps["paragraph_0"].attempts) == 5  # 4 under the old outline, 1 under the new


@pytest.mark.parametrize(
    ("data", "message"),
    [({"endings": []}, "field 'endings': List should have at least 2 items"),
     ({"endings": ["One."]}, "field 'endings': List should have at least 2 items"),
     ({"endings": ["One.", "  "]}, "field 'endings': Value error, ending 2 is empty"),
     ({"endings": ["x."] * 9}, "field 'endings': List should have at most 8 items"),
     ({}, "field 'endings': Field required")],
)
async def test_bad_inputs_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await Engine(generators=fake_generators()).run(plan, data)
