"""The planner's evaluation set: 42 requests in words, each with the graph that serves it.

How it is made: 15 graph shapes (5 of one block, 5 of two, 5 of three or four that mix
the language model with the image models), each with two or three phrasings written for
this set (none is a block's planner example); a request is a phrasing whose slots
(numbers, digits, names, topics, word problems) are drawn by `random.Random(seed + shape)`,
word problems from `plans._problems`. The expected graph of each request is written beside
its phrasing, so every answer is known. The same seed gives the same set.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plans._problems import ITEMS, NAMES, make_problems

TOPICS = ["a lighthouse keeper", "a lost kite", "a robot who learns to paint", "a snowy village",
          "a dragon who hates fire", "a secret garden", "a sleepy owl", "a broken clock"]
ENDINGS = [("The storm passed.", "They were home at last."),
           ("The door creaked open.", "Nobody was inside."),
           ("She found the key.", "The box was empty."),
           ("The train left early.", "He ran after it.")]


@dataclass(frozen=True)
class Case:
    request: str
    spec: dict[str, Any]  # the expected graph
    kind: str  # "single", "two" or "multi" (three or four blocks)
    shape: str  # the blocks, in order, e.g. "evaluate-expression>draw-number"


def node(id: str, block: str, params: dict[str, Any] | None = None,
         **inputs: Any) -> dict[str, Any]:
    """A node; an input is a node id (wired) or a literal object."""
    out: dict[str, Any] = {"id": id, "block": block}
    if params:
        out["params"] = params
    if inputs:
        out["inputs"] = {k: {"from": v} if isinstance(v, str) else v for k, v in inputs.items()}
    return out


def _single_digits(r: random.Random) -> tuple[int, int]:
    start, end = r.sample(range(10), 2)
    return start, end


def _small_problem(r: random.Random) -> tuple[str, int]:
    """A word problem whose answer is one digit (from 1 to 9)."""
    name, item = r.choice(NAMES), r.choice(ITEMS)
    left = r.randint(1, 9)
    gave = r.randint(2, 20)
    return (f"{name} had {left + gave} {item} and gave away {gave}. "
            f"How many {item} does {name} have left?", left)


Shape = Callable[[random.Random, int], tuple[str, list[dict[str, Any]]]]


def _evaluate(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    a, b, c = r.randint(2, 40), r.randint(2, 30), r.randint(2, 9)
    request, expression = [
        (f"What is {a} times {b}?", f"{a} * {b}"),
        (f"Compute {a} + {b} - {c}.", f"{a} + {b} - {c}"),
        (f"Work out ({a} + {b}) * {c} exactly.", f"({a} + {b}) * {c}"),
    ][i]
    return request, [node("n1", "evaluate-expression", {"expression": expression})]


def _solve(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    question = make_problems(5, r.randint(0, 10**6))[r.randint(0, 4)].question
    request = [f"Solve this word problem: {question}", question,
               f"Please answer the following. {question}"][i]
    return request, [node("n1", "solve-word-problem", {"question": question})]


def _draw(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    n = r.randint(10, 9999)
    request = [f"Draw the number {n} by hand.", f"Write {n} in handwritten digits.",
               f"Show me a handwritten {n}."][i]
    return request, [node("n1", "draw-number", number={"value": n})]


def _morph(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    start, end = _single_digits(r)
    frames = r.randint(5, 16)
    if i == 1:
        return (f"Animate the digit {start} turning into {end} over {frames} frames.",
                [node("n1", "morph-digits", {"frames": frames}, start={"value": start},
                      end={"value": end})])
    request = (f"Turn a handwritten {start} smoothly into a {end}." if i == 0 else
               f"Show a smooth transition from the digit {start} to the digit {end}.")
    return request, [node("n1", "morph-digits", start={"value": start}, end={"value": end})]


def _twenty_four(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    numbers = [[4, 7, 8, 8], [2, 3, 5, 12], [1, 6, 6, 8]][i]
    a, b, c, d = numbers
    request = [f"Find a way to get 24 from {a} {b} {c} {d}.",
               f"Use {a}, {b}, {c} and {d} with + - * / to reach 24.",
               f"Play the 24 game with the numbers {a} {b} {c} {d}."][i]
    return request, [node("n1", "solve-24", {"numbers": numbers})]


def _draw_then(block: str, port: str, top: int, phrasings: list[str]) -> Shape:
    """A number drawn, then read back or harmonized: `block` takes the drawing at `port`."""

    def make(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
        n = r.randint(10, top)
        return phrasings[i].format(n=n), [node("n1", "draw-number", number={"value": n}),
                                          node("n2", block, **{port: "n1"})]

    return make


_draw_read = _draw_then("read-digits", "drawing", 999, [
    "Draw {n}, then let the classifier say which number it sees.",
    "Write {n} by hand, then have the classifier read the digits.",
    "Handwrite the number {n} and check what it reads as."])
_draw_harmonize = _draw_then("harmonize-digits", "digits", 9999, [
    "Draw {n} so that every digit shares one style.",
    "Handwrite {n} and make its digits look consistent with the VAE.",
    "Draw the number {n}, then harmonize its digits."])


def _story(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    topic = r.choice(TOPICS)
    if i == 2:
        first, second = r.choice(ENDINGS)
        return (f"Write a story whose paragraphs end with '{first}' and '{second}'.",
                [node("n1", "outline-story", {"endings": [first, second]}),
                 node("n2", "write-story", outline="n1")])
    paragraphs = r.randint(2, 4)
    request, params = [(f"Write a story about {topic}.", {"topic": topic}),
                       (f"I'd like a {paragraphs}-paragraph story about {topic}.",
                        {"topic": topic, "paragraphs": paragraphs})][i]
    return request, [node("n1", "outline-story", params), node("n2", "write-story", outline="n1")]


def _evaluate_morph(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    a = r.randint(1, 4)
    b = r.randint(1, 9 - a)
    end = r.choice([d for d in range(10) if d != a + b])
    request, expression = [
        (f"Work out {a} + {b} and morph the result into a {end}.", f"{a} + {b}"),
        (f"Compute {a + b + 3} - 3, then animate that digit turning into {end}.",
         f"{a + b + 3} - 3"),
        (f"Take {a} + {b} and show it morphing into the digit {end}.", f"{a} + {b}"),
    ][i]
    return request, [node("n1", "evaluate-expression", {"expression": expression}),
                     node("n2", "morph-digits", start="n1", end={"value": end})]


def _outline_number(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    a, b = r.randint(2, 9), r.randint(2, 9)
    request = [f"Outline a story about the number you get from {a} times {b}.",
               f"Compute {a} * {b} and outline a story about that number."][i]
    return request, [node("n1", "evaluate-expression", {"expression": f"{a} * {b}"}),
                     node("n2", "outline-story", about="n1")]


def _solve_draw(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    question = make_problems(5, r.randint(0, 10**6))[i].question
    request = [f"{question} Draw the answer neatly, all its digits in one style.",
               f"Solve and write the answer in one consistent handwriting: {question}",
               f"{question} Show the answer as handwritten digits harmonized into one style."][i]
    return request, [node("n1", "solve-word-problem", {"question": question}),
                     node("n2", "draw-number", number="n1"),
                     node("n3", "harmonize-digits", digits="n2")]


def _story_and_drawing(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    a, b = r.randint(2, 9), r.randint(2, 9)
    request = [f"Write a two-paragraph story about the number you get from {a} times {b} "
               f"and draw that number.",
               f"Compute {a} * {b}, draw the result, and write a two-paragraph story about it.",
               f"Multiply {a} by {b}; write two paragraphs about that number and handwrite it."][i]
    return request, [node("n1", "evaluate-expression", {"expression": f"{a} * {b}"}),
                     node("n2", "outline-story", {"paragraphs": 2}, about="n1"),
                     node("n3", "write-story", outline="n2"),
                     node("n4", "draw-number", number="n1")]


def _solve_draw_morph(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    question, answer = _small_problem(r)
    end = r.choice([d for d in range(10) if d != answer])
    request = [f"{question} Draw the answer, then morph it into a {end}.",
               f"Solve: {question} Handwrite the answer and animate it turning into {end}.",
               f"{question} Show the answer drawn by hand and morphing into the digit {end}."][i]
    return request, [node("n1", "solve-word-problem", {"question": question}),
                     node("n2", "draw-number", number="n1"),
                     node("n3", "morph-digits", start="n1", end={"value": end})]


def _solve_draw_read(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    question = make_problems(5, r.randint(0, 10**6))[i + 1].question
    request = [f"{question} Draw the answer, then have the classifier read it back.",
               f"Answer this, handwrite the result and let the classifier read it: {question}",
               f"{question} Write the answer by hand and read the drawing back."][i]
    return request, [node("n1", "solve-word-problem", {"question": question}),
                     node("n2", "draw-number", number="n1"),
                     node("n3", "read-digits", drawing="n2")]


def _solve_story(r: random.Random, i: int) -> tuple[str, list[dict[str, Any]]]:
    question, _ = _small_problem(r)
    request = [f"{question} Then write a short story about the answer.",
               f"Solve this, then outline and write a story about the result: {question}"][i]
    return request, [node("n1", "solve-word-problem", {"question": question}),
                     node("n2", "outline-story", about="n1"),
                     node("n3", "write-story", outline="n2")]


SHAPES: list[tuple[str, Shape, int]] = [
    ("single", _evaluate, 3), ("single", _solve, 3), ("single", _draw, 3),
    ("single", _morph, 3), ("single", _twenty_four, 2),
    ("two", _draw_read, 3), ("two", _draw_harmonize, 3), ("two", _story, 3),
    ("two", _evaluate_morph, 3), ("two", _outline_number, 2),
    ("multi", _solve_draw, 3), ("multi", _story_and_drawing, 3), ("multi", _solve_draw_morph, 3),
    ("multi", _solve_draw_read, 3), ("multi", _solve_story, 2),
]


def planner_cases(seed: int = 0) -> list[Case]:
    """The 42 requests and their graphs: 14 of one block, 14 of two, 14 of three or four."""
    cases = []
    for index, (kind, make, count) in enumerate(SHAPES):
        r = random.Random(seed * 1000 + index)
        for i in range(count):
            request, nodes = make(r, i)
            cases.append(Case(request, {"nodes": nodes}, kind,
                              ">".join(n["block"] for n in nodes)))
    return cases
