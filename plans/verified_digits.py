"""verified-digits: solve a word problem, check the arithmetic, draw the answer by hand.

1. `solve`: the language model reasons step by step and ends with an answer
   (or, for `{"expression": ...}` input, the expression is computed exactly).
   Eight reasonings are sampled at once and each is checked: every worked line
   holds and the answer follows from them (parsed with `ast` and computed with
   fractions, never `eval`), every number of the question is used in a worked
   line, and the lines form one chain (no result is computed and then dropped).
   An answer that is not a whole number from 0 to 999999 cannot be drawn and
   fails its sample. The answer given by most passing samples is kept
   (self-consistency), and only when at least two of them agree; otherwise
   eight more are drawn into the same vote. With no agreement after that, the
   most voted answer is kept as a best effort and the run ends `degraded`:
   `succeeded` means the answer is probably right.
2. `render`: the GAN draws each digit of the answer in one shared style.
   Check: the classifier reads the same number back, each digit confidently;
   a misread number is redrawn with a new seed.
3. `harmonize`: the VAE encodes the digits, gives them one shared style
   latent and decodes them. Check: the result still reads back; if it does
   not, the engine backtracks into `render` for new digits.
Output: the answer, the reasoning and the number as one PNG strip.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from reasoner import Context, Image, Plan, Run, checks
from reasoner.arithmetic import ExpressionError, evaluate, format_number, worked_lines

CONFIDENCE = 0.9  # each digit must be read back with at least this probability
MAX_ANSWER = 10**6 - 1  # six digits at most
SAMPLES = 8  # reasonings drawn at once for the vote
AGREE = 2  # passing samples that must give the same answer

SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step. Write each calculation "
    "on its own line as 'a + b = c', using only numbers and + - * /. "
    "End with a last line 'Answer: N' where N is a whole number."
)
EXAMPLE = [
    {"role": "user", "content": "Lily has 4 bags with 6 candies in each bag. She eats 5 candies. "
                                "How many candies are left?"},
    {"role": "assistant", "content": "4 * 6 = 24\n24 - 5 = 19\nAnswer: 19"},
]
_ANSWER = re.compile(r"(?:answer(?:\s+is)?\s*[:=]?|####)\s*\$?\s*(-?[\d,]*\d)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # one character class each side of the '.': linear


class Problem(BaseModel):
    """A word problem (`question`), or an `expression` to compute and draw."""

    question: str | None = Field(None, max_length=2000,
                                 description="an arithmetic word problem to solve, with numbers")
    expression: str | None = Field(None, max_length=200,
                                   description="an arithmetic expression to compute and draw")

    @field_validator("question")
    @classmethod
    def _has_numbers(cls, question: str | None) -> str | None:
        if question is not None and not re.search(r"\d", question):
            raise ValueError("a question must contain at least one number, written in digits")
        return question

    @field_validator("expression")
    @classmethod
    def _is_arithmetic(cls, expression: str | None) -> str | None:
        if expression is not None:
            evaluate(expression)  # ExpressionError (a ValueError) says what is wrong
        return expression

    @model_validator(mode="after")
    def _one_of(self) -> Problem:
        if (self.question is None) == (self.expression is None):
            raise ValueError("give exactly one of 'question' or 'expression'")
        return self


class Solution(BaseModel):
    reasoning: str
    answer: int


class Digits(BaseModel):
    labels: list[int]
    images: list[Image]  # one (28, 28) image per digit


class Rendered(BaseModel):
    answer: int
    reasoning: str
    labels: list[int]
    image: Image  # (28, 28 * len(labels)) strip of the harmonized digits


plan = Plan("verified-digits", input=Problem, description=__doc__, max_backtracks=2, examples=[
    ("Sara has 5 boxes with 4 pens each. How many pens does she have? Draw the answer.",
     {"question": "Sara has 5 boxes with 4 pens each. How many pens does she have?"}),
    ("write the number 305 in handwriting", {"expression": "305"}),
    ("draw the result of 12 times 8", {"expression": "12 * 8"}),
])


def parse_solution(text: str) -> Solution:
    """Reasoning is the text; the answer is the last 'Answer: N' (or 'answer is N', '#### N')."""
    found = _ANSWER.findall(text)
    if not found:
        raise ValueError("the reasoning ends without 'Answer: N'")
    return Solution(reasoning=text.strip(), answer=int(found[-1].replace(",", "")))


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER.findall(text)}


def digits_of(number: int) -> list[int]:
    return [int(ch) for ch in str(number)]


def as_floats(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images).astype(np.float32) / 255.0  # (n, 28, 28) in [0, 1]


async def read_back(ctx: Context, images: np.ndarray, labels: list[int]) -> checks.Result:
    """The classifier must read every digit as its label with CONFIDENCE."""
    reading = await ctx.classifier.classify(images)
    confidence = [float(reading.probs[i, label]) for i, label in enumerate(labels)]
    wrong = [
        f"digit {i + 1} ({label}) read as {int(reading.labels[i])} "
        f"(p={float(reading.probs[i].max()):.2f})"
        for i, label in enumerate(labels)
        if int(reading.labels[i]) != label or confidence[i] < CONFIDENCE
    ]
    score = min(confidence)
    if wrong:
        return checks.Result.fail("; ".join(wrong), score=score)
    return checks.Result.ok(f"reads back {''.join(map(str, labels))} (min p={score:.2f})", score)


@plan.step(samples=SAMPLES, select="vote", vote=lambda out: out.answer, agree=AGREE, retries=1,
           on_exhausted="best", uses=["lm"], backtrack=False)
async def solve(ctx, problem: Problem) -> Solution:
    if problem.expression is not None:
        return computed(problem.expression)
    generation = await ctx.lm.generate(
        [*EXAMPLE, {"role": "user", "content": problem.question}],
        system=SYSTEM, max_new_tokens=128, temperature=0.7, seed=ctx.seed,
    )
    return drawable(parse_solution(generation.text))


def computed(expression: str) -> Solution:
    """The expression's exact value as a solution; ValueError if it is not a drawable number."""
    value = evaluate(expression)
    if value.denominator != 1:
        raise ValueError(f"{expression} = {format_number(value)} is not whole")
    return drawable(Solution(reasoning=f"{expression} = {value}", answer=int(value)))


def drawable(solution: Solution) -> Solution:
    """The solution, if its answer can be drawn (an error, not a check: nothing to keep)."""
    if not 0 <= solution.answer <= MAX_ANSWER:
        raise ValueError(f"answer {solution.answer} is not a whole number from 0 to {MAX_ANSWER}")
    return solution


@solve.check
def arithmetic_holds(out: Solution) -> checks.Result:
    return checks.arithmetic(out.reasoning, answer=out.answer)


@solve.check
def uses_the_question(problem: Problem, out: Solution) -> checks.Result:
    """Every number of the question is an operand of some worked line.

    Reasoning that leaves a given number out answered some other question, however
    true its lines are ("12 + 1 = 13" for "12 apples, buys 7 more").
    """
    if problem.question is None:
        return checks.Result.ok("an expression, computed exactly")
    given = _numbers(problem.question)
    try:
        used = {n for claim in worked_lines(out.reasoning) for n in _numbers(claim.expression)}
    except ExpressionError as exc:
        return checks.Result.fail(str(exc))
    missing = sorted(given - used)
    if missing:
        return checks.Result.fail("the reasoning never uses " + ", ".join(map(format_number, missing)),
                                  score=1 - len(missing) / len(given))
    return checks.Result.ok(f"uses all {len(given)} number(s) of the question")


@solve.check
def one_chain(out: Solution) -> checks.Result:
    """Every worked result but the last is used by a later line (a repeated line counts once).

    A reasoning that computes 12 + 7 = 19 and then goes on from 12 + 1 = 13 changed its
    mind midway; its lines are true but they do not lead to its answer.
    """
    try:
        claims = worked_lines(out.reasoning)
    except ExpressionError as exc:
        return checks.Result.fail(str(exc))
    distinct = list({(" ".join(c.expression.split()), c.claimed): c for c in claims}.values())
    dropped = [c for i, c in enumerate(distinct[:-1])
               if not any(c.claimed in _numbers(later.expression) for later in distinct[i + 1:])]
    if dropped:
        return checks.Result.fail(
            f"{dropped[0].expression.strip()} = {format_number(dropped[0].claimed)} is never "
            f"used again", score=1 - len(dropped) / len(distinct))
    return checks.Result.ok(f"{len(distinct)} line(s) in one chain")


@plan.headline
def answer_and_confidence(run: Run) -> str:
    """"answer 19, confidence 0.62 (votes: 19 ×5, 13 ×1)": what `reasoner run` prints."""
    solve = run.steps["solve"]
    if solve.output is None:
        return "no answer"
    said = f"answer {solve.output.answer}"
    if solve.confidence is not None:
        votes = ", ".join(f"{answer} ×{count}" for answer, count in solve.votes.items())
        said += f", confidence {solve.confidence:.2f} (votes: {votes})"
    return said


@plan.step(retries=4, uses=["gan", "classifier"])
async def render(ctx, solve: Solution) -> Digits:
    return await draw(ctx, solve.answer)


async def draw(ctx: Context, number: int) -> Digits:
    """The GAN draws each digit of `number` in one shared style."""
    labels = digits_of(number)
    images = await ctx.gan.generate(labels, seed=ctx.seed, shared_style=True)  # (n, 28, 28)
    return Digits(labels=labels, images=list(images))


@render.check
async def render_reads_back(ctx, out: Digits) -> checks.Result:
    return await read_back(ctx, as_floats(out.images), out.labels)


@plan.step(uses=["vae", "classifier"])
async def harmonize(ctx, solve: Solution, render: Digits) -> Rendered:
    return Rendered(answer=solve.answer, reasoning=solve.reasoning, labels=render.labels,
                    image=await one_style(ctx, render))


async def one_style(ctx: Context, digits: Digits) -> np.ndarray:
    """The digits redrawn by the VAE from their mean style latent, as one (28, 28 * n) strip."""
    labels = digits.labels
    latents = await ctx.vae.encode(as_floats(digits.images), labels)  # (n, z)
    style = np.repeat(latents.mean(axis=0, keepdims=True), len(labels), axis=0)  # (n, z)
    images = await ctx.vae.decode(style, labels)  # (n, 28, 28)
    return np.concatenate(list(images), axis=1)  # (28, 28 * n)


@harmonize.check
async def harmonized_reads_back(ctx, out: Rendered) -> checks.Result:
    n = len(out.labels)
    images = out.image.reshape(28, n, 28).transpose(1, 0, 2).astype(np.float32) / 255.0
    return await read_back(ctx, images, out.labels)  # (n, 28, 28) split back from the strip
