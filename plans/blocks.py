"""The plan library's steps as blocks, and the example graphs the planner learns from.

Each block does what a step of one of the plans does (verified-digits, morph, story,
game24) through that plan's own functions and checks, so a graph of blocks behaves like
the plan it mirrors: the examples include the graph of each plan. Numbers travel between
blocks as `Number`, drawings as `Digits` (one image per digit) or `Drawing` (one strip).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from plans import game24, morph, story, verified_digits
from plans.game24 import Answer, Puzzle
from plans.morph import Frames, MorphInput
from plans.story import Paragraph, Story, StoryInput
from plans.verified_digits import Digits, Problem, Solution
from reasoner import Context, Image, checks
from reasoner.blocks import Blocks, FromRequest
from reasoner.plan import format_validation_error
from reasoner.search import Budget

M = TypeVar("M", bound=BaseModel)


class Number(BaseModel):
    """A whole number that can be drawn, with how it was found."""

    value: int = Field(ge=0, le=verified_digits.MAX_ANSWER,
                       description="a whole number from 0 to 999999")
    reasoning: str = Field("", description="how it was found: worked lines, or what was read")


class Drawing(BaseModel):
    """Handwritten digits in one shared style, as one strip."""

    labels: list[int] = Field(description="the digits, left to right")
    image: Image  # (28, 28 * len(labels))


class StoryOutline(BaseModel):
    """A story's topic, one planned line per paragraph, and the ending of each (or none)."""

    topic: str = ""
    lines: list[str] = Field(min_length=1, max_length=8)
    endings: list[str] = []

    @model_validator(mode="after")
    def _an_ending_per_line(self) -> StoryOutline:
        if self.endings and len(self.endings) != len(self.lines):
            raise ValueError(f"{len(self.endings)} endings for {len(self.lines)} lines: give "
                             f"one per line, or none")
        return self


Question = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\d",
                                description="an arithmetic word problem, its numbers in digits"),
                     FromRequest("sentences")]
Expression = Annotated[str, Field(min_length=1, max_length=200,
                                  description="an arithmetic expression: numbers, + - * /, "
                                              "brackets")]
FrameCount = Annotated[int, Field(ge=2, le=64, description="images in the sequence, "
                                                           "both ends included")]
Topic = Annotated[str, Field(max_length=160, description="what the story is about"),
                  FromRequest("words")]
ParagraphCount = Annotated[int, Field(ge=2, le=8, description="paragraphs, when no endings "
                                                              "are given")]
Endings = Annotated[list[str], Field(max_length=8, description="the closing sentence of each "
                                     "paragraph, in order: none, or 2 to 8"),
                    FromRequest("quoted")]
Numbers = Annotated[list[Annotated[int, Field(ge=1, le=13)]],
                    Field(min_length=4, max_length=4, description="four whole numbers, 1 to 13")]
Proposals = Annotated[int, Field(ge=1, le=500, description="moves the search may put forward")]

blocks = Blocks()


def _validated(model: type[M], block: str, **data: object) -> M:
    """A plan's input model from a block's arguments; a one-line ValueError if they do not fit."""
    try:
        return model(**data)
    except ValidationError as exc:
        raise ValueError(f"{block}: {format_validation_error(exc)}") from None


def _number(solution: Solution) -> Number:
    return Number(value=solution.answer, reasoning=solution.reasoning)


def _solution(number: Number) -> Solution:
    return Solution(reasoning=number.reasoning, answer=number.value)


# ------------------------------------------------------------------ numbers
@blocks.block(samples=verified_digits.SAMPLES, select="vote", vote=lambda out: out.value,
              agree=verified_digits.AGREE, retries=1, on_exhausted="best", backtrack=False,
              uses=["lm"])
async def solve_word_problem(ctx: Context, question: Question) -> Number:
    """Solve an arithmetic word problem with the language model, step by step, every worked
    line checked and the answer voted on; gives the answer (a whole number) and its reasoning."""
    return _number(await verified_digits.solve.fn(ctx, Problem(question=question)))


@solve_word_problem.check
def arithmetic_holds(out: Number) -> checks.Result:
    return verified_digits.arithmetic_holds(_solution(out))


@solve_word_problem.check
def uses_the_question(question: str, out: Number) -> checks.Result:
    return verified_digits.uses_the_question(Problem(question=question), _solution(out))


@solve_word_problem.check
def one_chain(out: Number) -> checks.Result:
    return verified_digits.one_chain(_solution(out))


@blocks.block
async def evaluate_expression(expression: Expression) -> Number:
    """Compute an arithmetic expression exactly, without a model; gives its value, which must
    be a whole number from 0 to 999999."""
    return _number(verified_digits.computed(expression))


# ------------------------------------------------------------------ drawings
@blocks.block(retries=4, uses=["gan", "classifier"])
async def draw_number(ctx: Context, number: Number) -> Digits:
    """Draw a number in handwriting with the GAN, every digit in one shared style; gives one
    image per digit, each read back by the classifier (a misread number is redrawn)."""
    return await verified_digits.draw(ctx, number.value)


draw_number.check(verified_digits.render_reads_back, name="reads_back")


@blocks.block(uses=["vae", "classifier"])
async def harmonize_digits(ctx: Context, digits: Digits) -> Drawing:
    """Give handwritten digits one shared style with the VAE; gives them as one drawing that
    still reads back as the same digits."""
    return Drawing(labels=digits.labels, image=await verified_digits.one_style(ctx, digits))


@harmonize_digits.check
async def reads_back(ctx: Context, out: Drawing) -> checks.Result:
    return await verified_digits.read_back(ctx, morph.split(out.image), out.labels)


def _images(drawing: Digits | Drawing) -> np.ndarray:
    """The digit images of either kind of drawing, (n, 28, 28) floats in [0, 1]."""
    if isinstance(drawing, Digits):
        return verified_digits.as_floats(drawing.images)
    return morph.split(drawing.image)


@blocks.block(uses=["classifier"])
async def read_digits(ctx: Context, drawing: Digits | Drawing) -> Number:
    """Read handwritten digits with the classifier; gives the number they show, its reasoning
    saying how sure the classifier was of each digit."""
    reading = await ctx.classifier.classify(_images(drawing))
    labels = [int(label) for label in reading.labels]
    said = ", ".join(f"{label} (p={float(reading.probs[i, label]):.2f})"
                     for i, label in enumerate(labels))
    return Number(value=int("".join(map(str, labels))), reasoning=f"read {said}")


@read_digits.check
async def confidently_read(ctx: Context, drawing: Digits | Drawing, out: Number) -> checks.Result:
    """Every digit read with at least verified-digits' CONFIDENCE (read again: the output keeps
    only the number; leading zeros are the digits the value lost)."""
    images = _images(drawing)
    labels = [int(digit) for digit in str(out.value).zfill(len(images))]
    return await verified_digits.read_back(ctx, images, labels)


def _morph_task(start: Number, end: Number, frames: int) -> MorphInput:
    """The morph plan's input; ValueError naming an end that is not a single digit."""
    for name, number in (("start", start), ("end", end)):
        if number.value > 9:
            raise ValueError(f"morph-digits: {name} is {number.value}, not a single digit 0-9")
    if start.value == end.value:
        raise ValueError(f"morph-digits: start and end are both {start.value}; give two "
                         f"different digits")
    return MorphInput(source=start.value, target=end.value, frames=frames)


@blocks.block(retries=4, uses=["gan", "vae", "classifier"])
async def morph_digits(ctx: Context, start: Number, end: Number, frames: FrameCount = 8) -> Frames:
    """Animate one handwritten digit turning smoothly into another (GAN endpoints, VAE
    interpolation); takes two different single digits, gives the frames as one strip."""
    task = _morph_task(start, end, frames)
    ends = await morph.endpoints.fn(ctx, task)
    return await morph.frames.fn(ctx, task, await morph.encode.fn(ctx, task, ends))


@morph_digits.check
def ends_read_back(start: Number, end: Number, frames: int, out: Frames) -> checks.Result:
    return morph.ends_read_back(_morph_task(start, end, frames), out)


morph_digits.check(morph.smooth)
morph_digits.check(morph.target_rises)


# ------------------------------------------------------------------ stories
@blocks.block(uses=["lm"], backtrack=False)
async def outline_story(ctx: Context, topic: Topic = "", paragraphs: ParagraphCount = 3,
                        endings: Endings = [],  # noqa: B006  # read by pydantic, never mutated
                        about: Number | None = None) -> StoryOutline:
    """Plan a short story with the language model, one line per paragraph, about the topic
    (or a wired number, or both); with endings, one paragraph leads to each ending."""
    if about is not None:
        topic = " and ".join(filter(None, [topic, f"the number {about.value}"]))
    if not endings:
        return StoryOutline(topic=topic, lines=await story.outline_lines(ctx, topic, paragraphs))
    task = _validated(StoryInput, "outline-story", endings=endings, topic=topic or None)
    return StoryOutline(topic=topic, lines=(await story.outline(ctx, task)).lines,
                        endings=task.endings)


@blocks.block(uses=["lm", "embedder"])
async def write_story(ctx: Context, outline: StoryOutline) -> Story:
    """Write a story from its outline with the language model, paragraph by paragraph, each
    from its outline line and the previous paragraph; gives the story, every ending of the
    outline word for word, and how well the paragraphs hold together."""
    parts: list[Paragraph] = []
    for index, line in enumerate(outline.lines):
        ending = outline.endings[index] if outline.endings else None
        parts.append(await story.draft(ctx, line, ending, parts[-1] if parts else None, index))
    return story.assemble(parts, "steps")


@write_story.check
def every_ending(outline: StoryOutline, out: Story) -> checks.Result:
    if not outline.endings:
        return checks.Result.ok("no endings to keep")
    # The check reads only the endings, which the outline's own validation has checked.
    return story.every_ending(StoryInput.model_construct(endings=outline.endings), out)


# ------------------------------------------------------------------ puzzles
@blocks.block(uses=["lm"], backtrack=False)
async def solve_24(ctx: Context, numbers: Numbers, budget: Proposals = 100) -> Answer:
    """Make exactly 24 from four numbers (1 to 13) with + - * /, each used once, by a
    best-first search whose moves the language model ranks and values; gives the expression
    and what the search spent."""
    puzzle = _validated(Puzzle, "solve-24", numbers=numbers, budget=budget)
    found = await game24.levels.run(ctx, [game24.start(puzzle)], Budget(proposals=budget))
    return game24.searched(found)


@solve_24.check
def exactly_24(numbers: list[int], budget: int, out: Answer) -> checks.Result:
    return game24.exactly_24(Puzzle(numbers=numbers, budget=budget), out)


# ------------------------------------------------------------------ examples
# One block each.
blocks.example("what is 144 / 12 + 5?", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "144 / 12 + 5"}}])
blocks.example("A farmer plants 6 rows of 9 carrots and picks 15. How many are still in the "
               "ground?", [
    {"id": "n1", "block": "solve-word-problem", "params": {
        "question": "A farmer plants 6 rows of 9 carrots and picks 15. How many are still in "
                    "the ground?"}}])
blocks.example("write 2024 in handwriting", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 2024}}}])
blocks.example("morph a 3 into an 8", [
    {"id": "n1", "block": "morph-digits",
     "inputs": {"start": {"value": 3}, "end": {"value": 8}}}])
blocks.example("animate a 0 turning into a 6 over 16 frames", [
    {"id": "n1", "block": "morph-digits", "params": {"frames": 16},
     "inputs": {"start": {"value": 0}, "end": {"value": 6}}}])
blocks.example("make 24 from 2 3 4 6", [
    {"id": "n1", "block": "solve-24", "params": {"numbers": [2, 3, 4, 6]}}])
blocks.example("play the 24 game with 1, 2, 3 and 4, at most 40 moves", [
    {"id": "n1", "block": "solve-24", "params": {"numbers": [1, 2, 3, 4], "budget": 40}}])
blocks.example("outline a four-paragraph story about a robot learning to paint", [
    {"id": "n1", "block": "outline-story",
     "params": {"topic": "a robot learning to paint", "paragraphs": 4}}])
blocks.example("how much is 48 divided by 6?", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "48 / 6"}}])
blocks.example("calculate 7 * (3 + 5) for me", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "7 * (3 + 5)"}}])
blocks.example("Nina has 12 shells and finds 9 more on the beach. How many shells does she "
               "have?", [
    {"id": "n1", "block": "solve-word-problem", "params": {
        "question": "Nina has 12 shells and finds 9 more on the beach. How many shells does "
                    "she have?"}}])
blocks.example("draw the digits 31 by hand", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 31}}}])
blocks.example("turn a 6 into a 9", [
    {"id": "n1", "block": "morph-digits",
     "inputs": {"start": {"value": 6}, "end": {"value": 9}}}])
blocks.example("reach 24 with 5 5 5 1", [
    {"id": "n1", "block": "solve-24", "params": {"numbers": [5, 5, 5, 1]}}])

# Two blocks.
blocks.example("handwrite 58 and let the classifier read it", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 58}}},
    {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}])
blocks.example("draw 730 with every digit in the same style", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 730}}},
    {"id": "n2", "block": "harmonize-digits", "inputs": {"digits": {"from": "n1"}}}])
blocks.example("tell me a story about a pirate parrot", [
    {"id": "n1", "block": "outline-story", "params": {"topic": "a pirate parrot"}},
    {"id": "n2", "block": "write-story", "inputs": {"outline": {"from": "n1"}}}])
blocks.example("compute 2 + 6 and animate it turning into a 1", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "2 + 6"}},
    {"id": "n2", "block": "morph-digits",
     "inputs": {"start": {"from": "n1"}, "end": {"value": 1}}}])
blocks.example("what is 6 * 3? outline a story about that number", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "6 * 3"}},
    {"id": "n2", "block": "outline-story", "inputs": {"about": {"from": "n1"}}}])
blocks.example("a story about a lighthouse keeper ending with 'The lamp went dark.' and "
               "'The ships still found the harbour.'", [
    {"id": "n1", "block": "outline-story", "params": {
        "topic": "a lighthouse keeper",
        "endings": ["The lamp went dark.", "The ships still found the harbour."]}},
    {"id": "n2", "block": "write-story", "inputs": {"outline": {"from": "n1"}}}])
blocks.example("write a three-paragraph story about a fox in winter", [
    {"id": "n1", "block": "outline-story", "params": {"topic": "a fox in winter"}},
    {"id": "n2", "block": "write-story", "inputs": {"outline": {"from": "n1"}}}])
blocks.example("compute 125 * 8 and write the result by hand", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "125 * 8"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}}])
blocks.example("draw 507 by hand and read it back", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 507}}},
    {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}])
blocks.example("draw 86 in one matching handwriting style", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 86}}},
    {"id": "n2", "block": "harmonize-digits", "inputs": {"digits": {"from": "n1"}}}])
blocks.example("morph a 1 into the result of 12 / 4", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "12 / 4"}},
    {"id": "n2", "block": "morph-digits",
     "inputs": {"start": {"value": 1}, "end": {"from": "n1"}}}])
blocks.example("Tom has 3 bags with 2 apples in each. How many apples? Animate a 2 turning "
               "into the answer.", [
    {"id": "n1", "block": "solve-word-problem",
     "params": {"question": "Tom has 3 bags with 2 apples in each. How many apples?"}},
    {"id": "n2", "block": "morph-digits",
     "inputs": {"start": {"value": 2}, "end": {"from": "n1"}}}])

# Three or four blocks.
blocks.example("Sam reads 15 pages a day for 6 days. How many pages has he read? Draw the "
               "answer neatly in one style.", [
    {"id": "n1", "block": "solve-word-problem",
     "params": {"question": "Sam reads 15 pages a day for 6 days. How many pages has he read?"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "harmonize-digits", "inputs": {"digits": {"from": "n2"}}}])
blocks.example("draw the result of 37 + 58, all its digits in one matching style", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "37 + 58"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "harmonize-digits", "inputs": {"digits": {"from": "n2"}}}])
blocks.example("compute 19 * 21, draw it in one style and check what it reads as", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "19 * 21"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "harmonize-digits", "inputs": {"digits": {"from": "n2"}}},
    {"id": "n4", "block": "read-digits", "inputs": {"drawing": {"from": "n3"}}}])
blocks.example("Mia has 45 marbles and wins 17 more. How many does she have? Draw the answer "
               "and read it back.", [
    {"id": "n1", "block": "solve-word-problem",
     "params": {"question": "Mia has 45 marbles and wins 17 more. How many does she have?"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "read-digits", "inputs": {"drawing": {"from": "n2"}}}])
blocks.example("Kim had 9 pens and gave away 4. How many pens are left? Draw the answer and "
               "morph it into a 1.", [
    {"id": "n1", "block": "solve-word-problem",
     "params": {"question": "Kim had 9 pens and gave away 4. How many pens are left?"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "morph-digits",
     "inputs": {"start": {"from": "n1"}, "end": {"value": 1}}}])
blocks.example("compute 8 * 7, draw it and write a two-paragraph story about it", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "8 * 7"}},
    {"id": "n2", "block": "outline-story", "params": {"paragraphs": 2},
     "inputs": {"about": {"from": "n1"}}},
    {"id": "n3", "block": "write-story", "inputs": {"outline": {"from": "n2"}}},
    {"id": "n4", "block": "draw-number", "inputs": {"number": {"from": "n1"}}}])
blocks.example("28 pupils split into teams of 4. How many teams are there? Then tell a "
               "two-paragraph story about that number.", [
    {"id": "n1", "block": "solve-word-problem",
     "params": {"question": "28 pupils split into teams of 4. How many teams are there?"}},
    {"id": "n2", "block": "outline-story", "params": {"paragraphs": 2},
     "inputs": {"about": {"from": "n1"}}},
    {"id": "n3", "block": "write-story", "inputs": {"outline": {"from": "n2"}}}])
blocks.example("draw 42 by hand, read it and write a story about a dragon and the number "
               "it shows", [
    {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 42}}},
    {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}},
    {"id": "n3", "block": "outline-story", "params": {"topic": "a dragon"},
     "inputs": {"about": {"from": "n2"}}},
    {"id": "n4", "block": "write-story", "inputs": {"outline": {"from": "n3"}}}])
blocks.example("work out 9 - 4, draw it by hand and write a story about it that ends with "
               "'So the count was right.' and 'Everyone went home.'", [
    {"id": "n1", "block": "evaluate-expression", "params": {"expression": "9 - 4"}},
    {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
    {"id": "n3", "block": "outline-story", "inputs": {"about": {"from": "n1"}}, "params": {
        "endings": ["So the count was right.", "Everyone went home."]}},
    {"id": "n4", "block": "write-story", "inputs": {"outline": {"from": "n3"}}}])
