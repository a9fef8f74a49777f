"""story on fake generators: planning by size, a constrained outline, resampling, best effort,
the single-pass baseline and the project's inputs."""

from __future__ import annotations

import re

import pytest

from plans.story import (
    LINE,
    finish_with,
    opening_and_coherence,
    plan,
    split_paragraphs,
    story_inputs,
)
from reasoner import Engine, InputError
from reasoner.testing import FakeLM, assert_coherent, fake_generators

ENDINGS = ["The lighthouse keeper lit the old lamp.", "The ship found the harbour at last."]


def writer(bad_paragraphs: int = 0, never: int | None = None, line: str | None = None) -> FakeLM:
    """Outline lines (`line` if given) and paragraphs that echo their ending's words, after
    `bad_paragraphs` misses; paragraph `never` always misses."""
    state = {"bad": bad_paragraphs}

    def respond(prompt: str, seed: int) -> str:
        if prompt.startswith("We are planning"):
            ending = re.search(r'the sentence: "(.*)"', prompt).group(1)
            return f"A storm night where {ending.lower()}" if line is None else line
        ending = re.search(r'exact sentence: "(.*)"', prompt).group(1)
        if state["bad"] > 0 or (never is not None and ending == ENDINGS[never]):
            state["bad"] -= 1
            return "Stock prices fell sharply on monday morning."
        words = " ".join(ending.lower().rstrip(".").split()[-3:])
        return f"On a storm night near the keeper lamp, all spoke of the {words}. {ending}"

    return FakeLM(respond)


async def test_one_paragraph_step_per_ending() -> None:
    lm = writer()
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"endings": ENDINGS, "topic": "the sea"}, seed=3)
    assert run.status == "succeeded", run.error
    assert list(run.steps) == ["outline", "paragraph_0", "paragraph_1", "story"]
    story = run.output("story")
    paragraphs = story.text.split("\n\n")
    assert [p.endswith(e) for p, e in zip(paragraphs, ENDINGS, strict=True)] == [True, True]
    assert (story.strategy, story.written, story.appended, story.below) == ("steps", 2, 0, [])
    assert [set(s) for s in story.scores] == [{"ending", "outline", "coherence"},
                                              {"ending", "previous", "outline", "coherence"}]
    assert story.coherence == pytest.approx(
        (story.scores[0]["ending"] + (story.scores[1]["ending"] + story.scores[1]["previous"]) / 2)
        / 2)
    assert len(lm.calls) == 4  # an outline line per ending, a paragraph per ending
    assert_coherent(run, min_step=0.2, min_edge=0.2)


async def test_the_outline_has_a_line_per_ending_whatever_the_model_writes() -> None:
    """The fake replies "\\n\\n" to the outline, which no parser could use; under the regex
    every line exists, on one line, within its bound."""
    endings = [*ENDINGS, "The crew slept."]
    run = await Engine(generators=fake_generators(lm=writer(line="\n\n"))).run(
        plan, {"endings": endings})
    lines = run.output("outline").lines
    assert len(lines) == 3 and all(re.fullmatch(LINE, line) for line in lines)
    assert len(run.steps["outline"].attempts) == 1


async def test_a_paragraph_below_threshold_is_resampled() -> None:
    run = await Engine(generators=fake_generators(lm=writer(bad_paragraphs=1))).run(
        plan, {"endings": ENDINGS})
    first = run.steps["paragraph_0"]
    assert run.status == "succeeded" and [a.status for a in first.attempts] == ["failed", "passed"]
    assert first.attempts[0].checks[0].reason.startswith("similarity to its ending 0.")
    assert run.output("paragraph_0").appended is False


async def test_a_paragraph_that_never_fits_is_kept_degraded_with_its_ending() -> None:
    run = await Engine(generators=fake_generators(lm=writer(never=1))).run(
        plan, {"endings": ENDINGS})
    assert run.status == "degraded" and run.degraded == ["paragraph_1"]
    assert [a.status for a in run.steps["paragraph_1"].attempts] == ["failed"] * 3
    story = run.output("story")
    assert story.text.split("\n\n")[1] == (
        "Stock prices fell sharply on monday morning. The ship found the harbour at last.")
    assert (story.written, story.appended, story.below) == (1, 1, [1])
    opening, said = opening_and_coherence(run).split("\n")
    assert story.text.startswith(opening.removesuffix("..."))
    assert said == (f"coherence {story.coherence:.2f}; 1 ending(s) written by the model, "
                    f"1 appended; under a threshold: paragraph 2")


async def test_drafts_per_paragraph_keep_the_best() -> None:
    run = await Engine(generators=fake_generators(lm=writer(bad_paragraphs=2))).run(
        plan, {"endings": ENDINGS, "samples": 4})
    first = run.steps["paragraph_0"]
    assert run.status == "succeeded" and len(first.attempts) == 4
    assert [a.status for a in first.attempts].count("failed") == 2
    assert run.output("paragraph_0").lead.startswith("On a storm night")


async def test_the_single_pass_is_one_call_scored_by_the_same_measures() -> None:
    def respond(prompt: str, seed: int) -> str:
        return ("The keeper climbed the lighthouse stairs. The lighthouse keeper lit the old "
                "lamp.\n\nStock prices fell sharply.")

    lm = FakeLM(respond)
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"endings": ENDINGS, "strategy": "single"})
    assert len(lm.calls) == 1 and list(run.steps) == ["single", "story"]
    assert run.status == "degraded" and len(run.steps["single"].attempts) == 1
    story = run.output("story")
    assert story.text.split("\n\n") == [
        "The keeper climbed the lighthouse stairs. The lighthouse keeper lit the old lamp.",
        "Stock prices fell sharply. The ship found the harbour at last."]
    assert (story.strategy, story.written, story.appended, story.below) == ("single", 1, 1, [1])
    assert [set(s) for s in story.scores] == [{"ending", "coherence"},
                                              {"ending", "previous", "coherence"}]
    assert run.steps["single"].attempts[0].checks[0].reason == (
        "under threshold: paragraph 2: ending, previous")


def test_drafts_keep_whole_new_sentences_before_the_ending() -> None:
    ending = "The ship found the harbour at last."
    assert finish_with("Fog rolled in. the ship found the harbour at last. Then", ending) == (
        "Fog rolled in.", False)
    assert finish_with("Fog rolled in. Fog rolled in. Waves rose. The mast", ending,
                       before="Waves rose. The keeper slept.") == ("Fog rolled in.", True)
    inside = "Fog rose as the ship found the harbour at last, slowly."  # not the sentence
    assert finish_with(inside, ending) == (inside, True)
    assert finish_with("The ship found the harbour at last. Gulls cried.", ending) == (
        "Gulls cried.", True)


def test_a_single_pass_is_dealt_into_paragraphs() -> None:
    assert split_paragraphs("A.\n\nB.\nC. D.\n", 2) == ["A.", "B. C. D."]
    assert split_paragraphs("A. B. C. D. E", 2) == ["A. B.", "C. D. E"]
    assert split_paragraphs("A.", 3) == ["", "A.", ""]


def test_story_inputs_are_four_unrelated_sentences_reproducibly() -> None:
    inputs = story_inputs(20, seed=0)
    assert inputs == story_inputs(20, seed=0) != story_inputs(20, seed=1)
    assert len({tuple(i["endings"]) for i in inputs}) == 20
    for item in inputs:
        endings = item["endings"]
        assert len(endings) == 4 and all(e.endswith(".") for e in endings)
        words = [set(e.lower().rstrip(".").split()) - {"the", "a", "an", "at", "on", "in", "of"}
                 for e in endings]
        assert all(not (words[i] & words[j]) for i in range(4) for j in range(i + 1, 4))


@pytest.mark.parametrize(
    ("data", "message"),
    [({"endings": []}, "field 'endings': List should have at least 2 items"),
     ({"endings": ["One."]}, "field 'endings': List should have at least 2 items"),
     ({"endings": ["One.", "  "]}, "field 'endings': Value error, ending 2 is empty"),
     ({"endings": ["x."] * 9}, "field 'endings': List should have at most 8 items"),
     ({"endings": ["One.", "Two."], "strategy": "all"}, "field 'strategy'"),
     ({}, "field 'endings': Field required")],
)
async def test_bad_inputs_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await Engine(generators=fake_generators()).run(plan, data)
