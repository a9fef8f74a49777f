"""Every plan on the real models, on CPU, with fixed seeds and small budgets.

These load the shipped GAN, VAE and classifier weights, the sentence embedder and
the language model (from its safetensors cache), once per session. The language
model runs for real but its replies are capped at a few dozen tokens, so that a
chain with retries fits in seconds. Sampling is seeded and torch runs on one
thread here, so each run is deterministic: every test pins the one outcome its
seed and input give, down to which attempts failed and why. A change in the
models, the prompts or the seeding shows up as a failure here, to be looked at
and re-pinned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from plans import game24, morph, story, verified_digits
from reasoner import Engine
from reasoner.registry import known_plans
from reasoner.router import route
from reasoner.testing import assert_coherent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One thread: the same floating-point sums, so the same samples, on any machine's
    core count (and two spinning threads per process crawl on a shared two-core box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Capped:
    """The real language model with every reply cut to at most `tokens` new tokens."""

    def __init__(self, lm: Any, tokens: int) -> None:
        self.lm, self.tokens = lm, tokens

    async def generate(self, prompt: Any, *, max_new_tokens: int = 64, **options: Any) -> Any:
        return await self.lm.generate(prompt, max_new_tokens=min(max_new_tokens, self.tokens),
                                      **options)

    async def score(self, prompt: Any, continuations: list[str]) -> list[float]:
        return await self.lm.score(prompt, continuations)

    async def choose(self, prompt: Any, options: list[str], **kwargs: Any) -> Any:
        return await self.lm.choose(prompt, options, **kwargs)


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


async def test_verified_digits_votes_over_checked_samples(
    reasoner_models: dict[str, Any],
) -> None:
    """Seed 0, replies cut at 40 tokens: of 16 samples (8, then 8 more as no two agreed)
    one passes every check, so its answer, 19, is kept as a best effort and the run is
    degraded. Each check catches what it was made for: a wrong line, a number of the
    question left out, and true lines that drop a result (12 + 7 = 19, then 12 + 1 = 13,
    the answer this job gave before the plan voted)."""
    question = "Tom has 12 apples. Tom buys 7 more apples. How many apples does Tom have now?"
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        verified_digits.plan, {"question": question}, seed=0)
    solve = run.steps["solve"]
    assert run.status == "degraded" and solve.status == "degraded"
    assert len(solve.attempts) == 2 * verified_digits.SAMPLES
    assert solve.votes == {"19": 1} and solve.confidence == 1 / 16
    tried = {a.attempt: a for a in solve.attempts}
    assert [n for n in sorted(tried) if tried[n].status == "passed"] == [11]
    assert tried[1].checks[0].reason == "wrong line: 12 * 7 = 98 (is 84)"
    assert tried[2].checks[1].reason == "the reasoning never uses 12"
    assert tried[3].checks[0].passed and tried[3].checks[1].passed
    assert tried[3].checks[2].reason == "12 + 7 = 19 is never used again"
    assert "the reasoning ends without 'Answer: N'" in (tried[4].error or "")
    out = run.output("solve")
    assert out.answer == 19 and out.reasoning.endswith("12 + 7 = 19 apples\nAnswer: 19")
    assert [len(run.steps[name].attempts) for name in ("render", "harmonize")] == [1, 1]
    assert run.output("harmonize").labels == [1, 9]


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
    """Seed 1: the model rambles in the outline (each line cut at its regex's bound) and
    writes neither ending itself, so both are appended; the first paragraph is resampled
    once (too far from its ending), the second passes at once, and the story has every
    ending word for word, in order, after the model's own text."""
    endings = ["The storm finally passed.", "The fishermen went home."]
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        story.plan, {"endings": endings}, seed=1)
    assert run.status == "succeeded", run.error
    lines = run.output("outline").lines
    assert lines[1] == ("The fishermen returned home to celebrate their 20th year, which they "
                        "had spent a")
    assert len(lines) == 2 and all(len(line) <= story.LINE_CHARS for line in lines)
    first, second = run.steps["paragraph_0"], run.steps["paragraph_1"]
    assert [a.status for a in first.attempts] == ["failed", "passed"]
    assert [[c.name for c in a.checks if not c.passed] for a in first.attempts] == [
        ["fits_ending"], []]
    assert [a.status for a in second.attempts] == ["passed"]
    out = run.output("story")
    assert out.text.split("\n\n")[1] == (
        "The story so far ends with: The fishermen returned home to celebrate their 20th year, "
        "which they had spent a lifetime. The fishermen went home.")
    assert [p.endswith(e) for p, e in zip(out.text.split("\n\n"), endings, strict=True)] == [
        True, True]
    assert (out.written, out.appended, out.below) == (0, 2, [])
    assert out.coherence == pytest.approx(0.447, abs=1e-3)
    assert (run.compute.calls["lm"], run.compute.generated_tokens) == (5, 149)


async def test_game24_search_ranks_legal_moves_and_spends_its_budget(
    reasoner_models: dict[str, Any],
) -> None:
    """Seed 0, a budget of 8 proposals (so 2 moves kept per state): the model ranks the
    additions first at both levels, the search finishes the best state of two numbers
    with all six of its moves (none is 24, so all are dropped as dead ends), and stops
    over budget, one level's worth."""
    run = await Engine(generators=capped(reasoner_models, 40)).run(
        game24.plan, {"numbers": [4, 9, 10, 13], "budget": 8}, seed=0)
    assert run.status == "failed"
    assert run.error == ("step 'answer' failed: exactly_24: no expression reaches 24: the "
                         "budget of 8 proposals is spent (10 proposed)")
    levels = [run.output(name) for name in ("solve/1", "solve/1/2", "solve/1/2/3")]
    assert [[c.state.moves[-1] for c in lv.children] for lv in levels[:2]] == [
        ["4 + 10 = 14 (left: 9 13 14)", "4 + 9 = 13 (left: 10 13 13)"],
        ["9 + 14 = 23 (left: 13 23)", "9 + 13 = 22 (left: 14 22)"]]
    assert [lv.expanded[0].state.numbers for lv in levels] == [
        ["4", "9", "10", "13"], ["9", "13", "14"], ["13", "23"]]
    assert levels[2].children == []
    assert [(lv.spent.proposals, lv.spent.lm_calls, lv.stop) for lv in levels] == [
        (2, 3, None), (4, 6, None), (10, 6, "proposals")]  # a choose and 2 values a level
    assert "solve/1/2/3/4" not in run.steps


async def test_router_routes_a_24_puzzle_to_game24(reasoner_models: dict[str, Any]) -> None:
    """As `reasoner ask` does, with the embedder's shortlist. The plan is right at once; the
    135M model then copies the numbers of game24's example ("make 24 from 4 9 10 13"), a
    valid input the router has no way to reject."""
    plans = known_plans()
    routed = await route(reasoner_models["lm"], "reach 24 using 3 3 8 8", plans,
                         embedder=reasoner_models["embedder"])
    assert (routed.plan, routed.asked) == ("game24", 2)  # one answer each, both valid
    assert routed.input == {"numbers": [4, 9, 10, 13], "strategy": "direct", "branch": None,
                            "budget": 24}
    assert plans["game24"].input.model_validate(routed.input).numbers == [4, 9, 10, 13]


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


async def test_the_planner_draws_a_number_with_one_block(reasoner_models: dict[str, Any]) -> None:
    """The likest example's layout is one draw-number node; the model writes the number
    the request states, and the graph runs (the GAN's first two drawings misread)."""
    from reasoner.blocks import known_blocks
    from reasoner.planner import draft

    drafted = await draft("draw the number 2025 by hand", reasoner_models["lm"],
                          reasoner_models["embedder"], known_blocks())
    assert drafted.calls == 1 and drafted.plan.to_spec().dump() == {"nodes": [
        {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 2025}}}]}
    run = await Engine(None, generators=reasoner_models).run(drafted.plan, {})
    assert run.status == "succeeded" and run.output("n1").labels == [2, 0, 2, 5]
    assert [a.status for a in run.steps["n1"].attempts] == ["failed", "failed", "succeeded"]


async def test_the_planner_chains_a_drawing_into_a_reading(reasoner_models: dict[str, Any]) -> None:
    from reasoner.blocks import known_blocks
    from reasoner.planner import draft

    drafted = await draft("handwrite 305 and let the classifier read it back",
                          reasoner_models["lm"], reasoner_models["embedder"], known_blocks())
    assert drafted.calls == 2 and drafted.plan.to_spec().dump() == {"nodes": [
        {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 305}}},
        {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}]}
    run = await Engine(None, generators=reasoner_models).run(drafted.plan, {})
    assert run.status == "succeeded"
    assert run.output("n2").reasoning == "read 3 (p=0.99), 0 (p=0.99), 5 (p=0.99)"
