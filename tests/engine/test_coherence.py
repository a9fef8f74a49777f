"""Coherence: step and edge scores, the weakest link, and the pytest plugin around them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from plans.verified_digits import plan as digits_plan
from reasoner import Engine, Plan, checks
from reasoner.testing import FakeLM, assert_coherent, fake_generators


class Topic(BaseModel):
    text: str


class Para(BaseModel):
    text: str


def story_plan() -> Plan:
    plan = Plan("mini-story", input=Topic)

    @plan.step
    async def outline(ctx, topic: Topic) -> Para:
        return Para(text=f"the {topic.text} sails across the sea to the island")

    @plan.step
    async def first(ctx, outline: Para) -> Para:
        return Para(text=f"the {outline.text.split()[1]} sails to the island at dawn")

    @plan.step
    async def second(ctx, first: Para) -> Para:
        return Para(text="stock prices fell sharply on monday")

    @second.check
    def long_enough(out: Para) -> checks.Result:
        return checks.Result.at_least(len(out.text) / 40, 0.5, "length")

    return plan


async def test_edges_are_scored_by_the_data_they_carry(reasoner_engine: Engine) -> None:
    run = await reasoner_engine.run(story_plan(), Topic(text="ship"))
    report = run.coherence()
    edges = {(e.producer, e.consumer): e for e in report.edges}
    assert {e.metric for e in report.edges} == {"text"}
    assert edges[("outline", "first")].score > 0.5 > edges[("first", "second")].score
    assert report.weakest == "edge 'first' -> 'second'"
    assert report.min_edge == edges[("first", "second")].score
    assert [s.score for s in report.steps] == [None, None, report.min_step]
    stored = reasoner_engine.load(run.run_id, story_plan())
    assert stored.coherence() == report


async def test_image_edges_use_the_classifier_and_the_vae(reasoner_engine: Engine) -> None:
    reasoner_engine.generators["lm"] = FakeLM(lambda prompt, seed: "6 * 7 = 42\nAnswer: 42")
    run = await reasoner_engine.run(digits_plan, {"question": "What is 6 times 7?"})
    metrics = {(e.producer, e.consumer): e.metric for e in run.coherence().edges}
    assert metrics == {("solve", "render"): "label", ("solve", "harmonize"): "label",
                       ("render", "harmonize"): "latent"}
    assert_coherent(run, min_step=0.9, min_edge=0.5)


async def test_a_plan_may_declare_its_own_edge_metric() -> None:
    plan = story_plan()

    @plan.edge("first", "second")
    async def shares_a_word(generators, first: Para, second: Para) -> checks.Result:  # noqa: ANN001
        shared = set(first.text.split()) & set(second.text.split())
        return checks.Result.at_least(len(shared) / 3, 0.5, "shared words")

    run = await Engine(generators=fake_generators()).run(plan, Topic(text="ship"))
    edge = next(e for e in run.coherence().edges if e.consumer == "second")
    assert edge.metric == "shares_a_word" and edge.score == 0.0
    assert edge.detail == "shared words 0.000 < threshold 0.500"


async def test_assert_coherent_names_the_weak_link(reasoner_engine: Engine) -> None:
    run = await reasoner_engine.run(story_plan(), Topic(text="ship"))
    assert_coherent(run, min_step=0.5)  # steps hold
    with pytest.raises(AssertionError) as failure:
        assert_coherent(run, min_edge=0.5)
    message = str(failure.value)
    assert "edge 'first' -> 'second' scores 0.000 < min_edge 0.500" in message
    assert "(text: embedder cosine)" in message and "stock prices fell" in message


def test_the_plugin_is_registered_for_any_project(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent('''
        from plans.verified_digits import plan
        from reasoner.testing import FakeLM, assert_coherent

        async def test_digits(reasoner_engine):
            reasoner_engine.generators["lm"] = FakeLM(lambda p, s: "3 + 4 = 7\\nAnswer: 7")
            run = await reasoner_engine.run(plan, {"question": "What is 3 plus 4?"}, seed=1)
            assert_coherent(run, min_step=0.9, min_edge=0.5)
            assert run.output("harmonize").answer == 7
    '''))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
         str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
