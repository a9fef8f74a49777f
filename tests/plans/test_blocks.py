"""The project's blocks on fake generators: every example graph runs, and each block's
failure paths fail the way its plan's step does."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

from plans import game24
from plans.blocks import blocks
from plans.game24 import JUDGMENTS, random_success
from plans.verified_digits import EXAMPLE, SAMPLES
from reasoner import Engine, Plan, PlanError, Run
from reasoner.testing import FakeClassifier, FakeGAN, FakeLM, fake_generators

# The worked lines the fake LM gives for each word problem of the examples.
SOLUTIONS = {
    "A farmer plants 6 rows of 9 carrots and picks 15. How many are still in the ground?":
        "6 * 9 = 54\n54 - 15 = 39\nAnswer: 39",
    "Tom has 3 bags with 2 apples in each. How many apples?": "3 * 2 = 6\nAnswer: 6",
    "Sam reads 15 pages a day for 6 days. How many pages has he read?": "15 * 6 = 90\nAnswer: 90",
    "Mia has 45 marbles and wins 17 more. How many does she have?": "45 + 17 = 62\nAnswer: 62",
    "28 pupils split into teams of 4. How many teams are there?": "28 / 4 = 7\nAnswer: 7",
    "Nina has 12 shells and finds 9 more on the beach. How many shells does she have?":
        "12 + 9 = 21\nAnswer: 21",
    "Kim had 9 pens and gave away 4. How many pens are left?": "9 - 4 = 5\nAnswer: 5",
}


def respond(prompt: str, seed: int) -> str:
    """A word problem's worked lines (KeyError for a question without any); any other prompt
    the fake's own reply."""
    if EXAMPLE[0]["content"] in prompt:
        return SOLUTIONS[prompt.rsplit("\n", 1)[-1]]
    return f"reply {seed % 1000} to: {prompt[-40:]}"


def knows_24(prompt: str, option: str) -> float:
    """Log-probabilities that know the game: moves leaving numbers that can still make 24
    first, and the judgment " sure" for those numbers (" impossible" for the others)."""
    left = re.search(r"\(left: (.*)\)", option) or re.search(r"numbers (.*) can reach", prompt)
    solvable = random_success([Fraction(n) for n in left.group(1).split()]) > 0
    if option in JUDGMENTS:
        return 0.0 if option == (" sure" if solvable else " impossible") else -5.0
    return 0.0 if solvable else -5.0


def lm() -> FakeLM:
    return FakeLM(respond, prefer=knows_24)


async def run_graph(nodes: list[dict], **generators: object) -> Run:
    plan = Plan.from_spec({"nodes": nodes}, blocks)
    return await Engine(None, generators=fake_generators(**({"lm": lm()} | generators))).run(
        plan, {})


@pytest.mark.parametrize(("request_", "spec"), blocks.examples,
                         ids=[request for request, _ in blocks.examples])
async def test_every_example_builds_and_succeeds(request_: str, spec: dict) -> None:
    ids = [node["id"] for node in spec["nodes"]]
    assert ids == [f"n{i + 1}" for i in range(len(ids))]
    for node in spec["nodes"]:  # each wired from an earlier node
        wired = [given["from"] for given in node.get("inputs", {}).values() if "from" in given]
        assert all(ids.index(source) < ids.index(node["id"]) for source in wired), node
    run = await run_graph(spec["nodes"])
    assert run.status == "succeeded", run.error
    assert list(run.steps) == ids


def test_the_examples_cover_every_block_in_graphs_of_one_to_four() -> None:
    used = {node["block"] for _, spec in blocks.examples for node in spec["nodes"]}
    assert used == set(blocks) and len(blocks) == 9
    sizes = [len(spec["nodes"]) for _, spec in blocks.examples]
    assert len(sizes) == 35 and set(sizes) == {1, 2, 3, 4}
    assert [sizes.count(n) for n in (1, 2, 3, 4)] == [14, 12, 5, 4]
    graphs = {tuple(node["block"] for node in spec["nodes"]) for _, spec in blocks.examples}
    assert {("solve-word-problem", "draw-number", "harmonize-digits"),  # each plan's graph
            ("evaluate-expression", "draw-number", "harmonize-digits"),
            ("morph-digits",), ("outline-story", "write-story"), ("solve-24",)} <= graphs


async def test_a_drawn_expression_reads_back_as_its_value() -> None:
    run = await run_graph([
        {"id": "n1", "block": "evaluate-expression", "params": {"expression": "305 + 402"}},
        {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
        {"id": "n3", "block": "harmonize-digits", "inputs": {"digits": {"from": "n2"}}},
        {"id": "n4", "block": "read-digits", "inputs": {"drawing": {"from": "n3"}}}])
    assert run.status == "succeeded", run.error
    assert run.output("n1").model_dump() == {"value": 707, "reasoning": "305 + 402 = 707"}
    drawing = run.output("n3")
    assert drawing.labels == [7, 0, 7] and drawing.image.shape == (28, 84)
    assert run.output("n4").model_dump() == {
        "value": 707, "reasoning": "read 7 (p=1.00), 0 (p=0.99), 7 (p=1.00)"}
    assert run.steps["n4"].checks[0].reason.startswith("reads back 707 (min p=0.9")


async def test_a_word_problem_is_voted_on_and_a_wrong_line_does_not_vote() -> None:
    question = "Ana has 12 shells and finds 7 more. How many shells does she have?"
    replies = iter(["12 + 7 = 20\nAnswer: 20"])
    scripted = FakeLM(lambda prompt, seed: next(replies, "12 + 7 = 19\nAnswer: 19"))
    run = await run_graph([{"id": "n1", "block": "solve-word-problem",
                            "params": {"question": question}}], lm=scripted)
    solve = run.steps["n1"]
    assert run.status == "succeeded" and run.output("n1").value == 19
    assert [a.status for a in solve.attempts] == ["failed"] + ["passed"] * (SAMPLES - 1)
    assert solve.attempts[0].checks[0].reason == "wrong line: 12 + 7 = 20 (is 19)"
    assert [c.name for c in solve.attempts[1].checks] == ["arithmetic_holds", "uses_the_question",
                                                          "one_chain"]
    assert solve.votes == {"19": SAMPLES - 1}


async def test_an_expression_that_is_not_whole_fails_saying_so() -> None:
    run = await run_graph([{"id": "n1", "block": "evaluate-expression",
                            "params": {"expression": "7 / 2"}}])
    assert run.status == "failed"
    assert run.error == "step 'n1' failed: ValueError: 7 / 2 = 3.5 is not whole"


async def test_a_misread_number_is_redrawn_and_one_never_read_right_fails() -> None:
    first: dict[str, int | None] = {"seed": None}

    def once(seed: int, label: int) -> int | None:
        first["seed"] = first["seed"] if first["seed"] is not None else seed
        return 7 if seed == first["seed"] and label == 1 else None

    nodes = [{"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 19}}}]
    run = await run_graph(nodes, gan=FakeGAN(once))
    assert run.status == "succeeded"
    assert [a.status for a in run.steps["n1"].attempts] == ["failed", "succeeded"]
    assert run.steps["n1"].attempts[0].checks[0].reason.startswith("digit 1 (1) read as 7")

    run = await run_graph(nodes, gan=FakeGAN(lambda seed, label: 7 if label == 1 else None))
    assert run.status == "failed" and len(run.steps["n1"].attempts) == 5  # retries=4
    assert run.error.startswith("step 'n1' failed: reads_back: digit 1 (1) read as 7")


async def test_a_doubtful_reading_fails_its_check() -> None:
    class Doubtful(FakeClassifier):
        """Sure of the first images it is shown, doubtful of all it is shown after."""

        calls = 0

        async def classify(self, images: np.ndarray):  # noqa: ANN201
            self.calls += 1
            reading = await super().classify(images)
            if self.calls > 1:
                reading.probs = reading.probs * 0.5 + 0.05
            return reading

    run = await run_graph([
        {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 5}}},
        {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}],
        classifier=Doubtful())
    reading = run.steps["n2"].attempts[0].checks[0]
    assert (reading.name, reading.reason) == ("confidently_read", "digit 1 (5) read as 5 (p=0.54)")
    # read-digits does not retry (the same images read the same): it backtracks into the
    # drawing, which now never reads back confidently either
    assert [(b.failed, b.target) for b in run.backtracks] == [("n2", "n1")]
    assert run.status == "failed"
    assert run.error == "step 'n1' failed: reads_back: digit 1 (5) read as 5 (p=0.54)"


async def test_morph_takes_two_different_single_digits() -> None:
    run = await run_graph([
        {"id": "n1", "block": "evaluate-expression", "params": {"expression": "6 * 7"}},
        {"id": "n2", "block": "morph-digits",
         "inputs": {"start": {"value": 1}, "end": {"from": "n1"}}}])
    assert run.status == "failed"
    assert run.error == "step 'n2' failed: ValueError: morph-digits: end is 42, not a single digit 0-9"
    run = await run_graph([{"id": "n1", "block": "morph-digits", "params": {"frames": 5},
                            "inputs": {"start": {"value": 4}, "end": {"value": 4}}}])
    assert run.error.endswith("start and end are both 4; give two different digits")


async def test_a_morph_runs_from_start_to_end_under_the_plans_checks() -> None:
    run = await run_graph([{"id": "n1", "block": "morph-digits", "params": {"frames": 6},
                            "inputs": {"start": {"value": 3}, "end": {"value": 8}}}])
    frames = run.output("n1")
    assert run.status == "succeeded" and frames.strip.shape == (28, 28 * 6)
    assert (frames.readings[0], frames.readings[-1]) == (3, 8)
    assert [(c.name, c.passed) for c in run.steps["n1"].checks] == [
        ("ends_read_back", True), ("smooth", True), ("target_rises", True)]


async def test_a_story_keeps_every_ending_in_order() -> None:
    endings = ["The kettle sang.", "Nobody had lit the stove.", "The ghost drank its tea."]
    run = await run_graph([
        {"id": "n1", "block": "evaluate-expression", "params": {"expression": "3 * 4"}},
        {"id": "n2", "block": "outline-story", "params": {"topic": "a ghost", "paragraphs": 5,
                                                          "endings": endings},
         "inputs": {"about": {"from": "n1"}}},
        {"id": "n3", "block": "write-story", "inputs": {"outline": {"from": "n2"}}}])
    assert run.status == "succeeded", run.error
    outline = run.output("n2")
    assert outline.topic == "a ghost and the number 12"
    assert len(outline.lines) == 3 and outline.endings == endings  # endings set the paragraphs
    story = run.output("n3")
    paragraphs = story.text.split("\n\n")
    assert [p.endswith(e) for p, e in zip(paragraphs, endings, strict=True)] == [True] * 3
    assert story.written + story.appended == 3
    assert run.steps["n3"].checks[0].reason == "every ending, in order"


async def test_a_story_without_endings_follows_its_outline_lines() -> None:
    run = await run_graph([
        {"id": "n1", "block": "outline-story", "params": {"topic": "a lost kite",
                                                          "paragraphs": 4}},
        {"id": "n2", "block": "write-story", "inputs": {"outline": {"from": "n1"}}}])
    assert run.status == "succeeded", run.error
    lines = run.output("n1").lines
    assert len(lines) == 4
    story = run.output("n2")
    assert len(story.text.split("\n\n")) == 4
    assert [set(s) for s in story.scores] == [{"outline", "coherence"}] + [
        {"previous", "outline", "coherence"}] * 3
    assert (story.written, story.appended) == (0, 0)
    assert story.scores[0]["coherence"] == story.scores[0]["outline"]
    assert run.steps["n2"].checks[0].reason == "no endings to keep"


async def test_a_single_ending_is_refused_naming_the_field() -> None:
    run = await run_graph([{"id": "n1", "block": "outline-story",
                            "params": {"endings": ["The end."]}}])
    assert run.status == "failed"
    assert run.error.startswith("step 'n1' failed: ValueError: outline-story: field 'endings': "
                                "List should have at least 2 items")


async def test_solve_24_searches_as_the_game24_plan_does() -> None:
    run = await run_graph([{"id": "n1", "block": "solve-24",
                            "params": {"numbers": [4, 9, 10, 13], "budget": 60}}])
    assert run.status == "succeeded", run.error
    planned = await Engine(None, generators=fake_generators(lm=lm())).run(
        game24.plan, {"numbers": [4, 9, 10, 13], "budget": 60})
    answer = run.output("n1")
    assert answer == planned.output("answer") and answer.stop == "goal"
    assert run.steps["n1"].checks[0].reason == f"{answer.expression} = 24"
    assert answer.calls == run.steps["n1"].compute.calls["lm"]


def test_solve_24_refuses_a_number_out_of_range_before_anything_runs() -> None:
    with pytest.raises(PlanError, match=r"node 'n1' \(solve-24\): parameter 'numbers\.1': "
                                        r"Input should be less than or equal to 13"):
        Plan.from_spec({"nodes": [{"id": "n1", "block": "solve-24",
                                   "params": {"numbers": [1, 14, 3, 4]}}]}, blocks)
    with pytest.raises(PlanError, match="parameter 'numbers': List should have at least 4 items"):
        Plan.from_spec({"nodes": [{"id": "n1", "block": "solve-24",
                                   "params": {"numbers": [1, 3, 4]}}]}, blocks)
