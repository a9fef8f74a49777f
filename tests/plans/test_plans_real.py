"""Every plan on the real models, on CPU, with fixed seeds and small budgets.

These load the shipped GAN, VAE and classifier weights, the sentence embedder and
the language model (from its safetensors cache), once per session. The language
model runs for real but its replies are capped at a few dozen tokens, so that a
chain with retries fits in seconds on two cores; the tests assert what must hold
whatever the tiny model writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plans import game24, morph, story, verified_digits
from reasoner import Engine
from reasoner.arithmetic import verify
from reasoner.planner import choose
from reasoner.registry import known_plans
from reasoner.testing import assert_coherent


class Capped:
    """The real language model with every reply cut to at most `tokens` new tokens."""

    def __init__(self, lm: Any, tokens: int) -> None:
        self.lm, self.tokens = lm, tokens

    async def generate(self, prompt: Any, *, max_new_tokens: int = 64, **options: Any) -> Any:
        return await self.lm.generate(prompt, max_new_tokens=min(max_new_tokens, self.tokens),
                                      **options)

    async def score(self, prompt: Any, continuations: list[str]) -> list[float]:
        return await self.lm.score(prompt, continuations)


def capped(models: dict[str, Any], tokens: int) -> dict[str, Any]:
    return {**models, "lm": Capped(models["lm"], tokens)}


async def test_verified_digits_draws_an_expression(reasoner_models: dict[str, Any]) -> None:
    run = await Engine(generators=reasoner_models).run(verified_digits.plan,
                                                       {"expression": "6 * 7 + 305"}, seed=0)
    assert run.status == "succeeded", run.error
    result = run.output("harmonize")
    assert result.answer == 347 and result.labels == [3, 4, 7]
    assert result.image.shape == (28, 84) and result.image.max() > 200
    assert_coherent(run, min_step=verified_digits.CONFIDENCE, min_edge=0.5)


async def test_verified_digits_solves_with_the_language_model(
    reasoner_models: dict[str, Any],
) -> None:
    question = "Tom has 12 apples. Tom buys 7 more apples. How many apples does Tom have now?"
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        verified_digits.plan, {"question": question}, seed=0)
    solve = run.steps["solve"]
    assert solve.attempts and all(a.checks or a.error for a in solve.attempts)
    if run.status == "succeeded":  # then every worked line held, exactly
        out = run.output("solve")
        assert verify(out.reasoning, out.answer).passed
        assert run.output("harmonize").labels == [int(d) for d in str(out.answer)]
    else:  # a step failed only once its retries were spent
        failed = [step for step in run.steps.values() if step.status == "failed"]
        assert failed and all(
            len(step.attempts) >= 1 + verified_digits.plan.steps[step.name].options.retries
            for step in failed)


async def test_morph_runs_smoothly_from_source_to_target(reasoner_models: dict[str, Any]) -> None:
    run = await Engine(generators=reasoner_models).run(
        morph.plan, {"source": 3, "target": 8, "frames": 8}, seed=0)
    assert run.status == "succeeded", run.error
    frames = run.output("frames")
    assert frames.strip.shape == (28, 224)
    assert frames.readings[0] == 3 and frames.readings[-1] == 8
    assert max(frames.distances) <= frames.bound
    assert np.argmax(frames.target_probs) > 0


async def test_story_writes_paragraphs_that_end_right(reasoner_models: dict[str, Any]) -> None:
    endings = ["The storm finally passed.", "The fishermen went home."]
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        story.plan, {"endings": endings}, seed=0, max_backtracks=0)
    outline = run.steps["outline"]
    assert outline.attempts and all(a.error or a.status == "succeeded" for a in outline.attempts)
    if outline.status == "succeeded":
        assert len(run.output("outline").lines) == 2
        paragraph = run.steps["paragraph_0"]
        assert paragraph.attempts and all(len(a.checks) == 3 or a.error for a in paragraph.attempts)
    if run.status == "succeeded":
        text = run.output("story").text.split("\n\n")
        assert [p.endswith(e) for p, e in zip(text, endings, strict=True)] == [True, True]


async def test_game24_search_proposes_and_checks_moves(reasoner_models: dict[str, Any]) -> None:
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        game24.plan, {"numbers": [4, 9, 10, 13], "beam": 2, "budget": 4}, seed=0)
    first = run.output("solve/1")
    assert first.calls >= 1 and first.proposals >= len(first.rejected)
    assert all(len(state.numbers) == 3 and len(state.moves) == 1 for state in first.kept)
    if run.status == "succeeded":
        assert game24.reaches_24([4, 9, 10, 13], run.output("answer").expression).passed
    else:
        assert run.error.startswith("step 'answer' failed: exactly_24")


async def test_planner_returns_a_valid_choice(reasoner_models: dict[str, Any]) -> None:
    plans = known_plans()
    choice = await choose(reasoner_models["lm"], "reach 24 using 3 3 8 8", plans)
    assert choice.plan in plans
    plans[choice.plan].input.model_validate(choice.input)


async def test_default_engine_events_carry_the_hosts_batches() -> None:
    from reasoner import default_engine

    engine = default_engine(None, device="cpu")
    batches = []
    engine.subscribe(lambda event: batches.append(event.data) if event.kind == "batch" else None)
    try:
        run = await engine.run(verified_digits.plan, {"expression": "12"}, seed=1)
    finally:
        await engine.aclose()
    assert run.status == "succeeded", run.error
    models = {batch["model"] for batch in batches}
    assert {"gan", "classifier", "vae"} <= models
    assert all(batch["size"] >= 1 and batch["forward_s"] > 0 for batch in batches)
