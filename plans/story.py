"""story: a short story that reaches given ending sentences, paragraph by paragraph.

Input: one required closing sentence per paragraph (2 to 8), and an optional topic.
1. `outline`: the language model writes one line per paragraph, planning how
   the story reaches each ending.
2. `paragraph_<i>` (one step per ending, planned from the input's size): the
   model writes paragraph i from the outline, the previous paragraph and
   ending i. The paragraph must end with ending i exactly: the step appends it
   when the model did not, and the checks judge the text that leads into it.
3. Checks per paragraph, with the sentence embedder: coherence with its
   ending, with the previous paragraph and with its outline line, each a
   cosine similarity against a threshold. A paragraph below threshold is
   resampled; when its retries are spent, the outline is regenerated
   (paragraphs refuse backtracking, so the engine goes up to the outline).
4. `story`: the paragraphs joined, with every paragraph's scores.
"""

from __future__ import annotations

import functools
import re

from pydantic import BaseModel, Field, field_validator

from reasoner import Context, Plan, checks

# Cosine similarities of all-MiniLM-L6-v2: unrelated sentences sit near 0.0-0.1, a paragraph
# that works towards its ending near 0.3-0.6. The thresholds catch drift, not style.
ENDING_THRESHOLD = 0.25
PREVIOUS_THRESHOLD = 0.2
OUTLINE_THRESHOLD = 0.2


class StoryInput(BaseModel):
    endings: list[str] = Field(min_length=2, max_length=8,
                               description="the closing sentence of each paragraph, in order")
    topic: str | None = Field(None, max_length=200)

    @field_validator("endings")
    @classmethod
    def _sentences(cls, endings: list[str]) -> list[str]:
        cleaned = [ending.strip() for ending in endings]
        for i, ending in enumerate(cleaned):
            if not ending:
                raise ValueError(f"ending {i + 1} is empty")
            if len(ending) > 300:
                raise ValueError(f"ending {i + 1} is longer than 300 characters")
        return cleaned


class Outline(BaseModel):
    lines: list[str]


class Paragraph(BaseModel):
    index: int
    text: str  # ends with the required ending
    lead: str  # the model's own text, before the ending
    appended: bool  # whether the step had to append the ending


class Story(BaseModel):
    text: str
    scores: list[dict[str, float]]  # per paragraph: check name -> score


plan = Plan("story", input=StoryInput, description=__doc__, max_backtracks=2, examples=[
    ("a story about a lost cat that ends with 'The cat came home.' and 'Everyone cheered.'",
     {"endings": ["The cat came home.", "Everyone cheered."], "topic": "a lost cat"}),
    ("write three paragraphs ending in 'It rained.', 'The river rose.', 'The town was saved.'",
     {"endings": ["It rained.", "The river rose.", "The town was saved."]}),
])


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i + 1}. {line}" for i, line in enumerate(lines))


def parse_outline(text: str, count: int) -> Outline:
    """The first `count` non-empty lines, numbering stripped; fewer is a failed attempt."""
    lines = [re.sub(r"^\s*(?:\d+[.):]|[-*•])\s*", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if len(line) > 3]
    if len(lines) < count:
        raise ValueError(f"the outline has {len(lines)} usable lines, {count} needed")
    return Outline(lines=lines[:count])


def finish_with(text: str, ending: str) -> tuple[str, bool]:
    """(lead, appended): the text before the ending, cut where the model wrote it."""
    body = " ".join(text.split())
    at = body.lower().find(ending.lower().rstrip(".!?"))
    if at >= 0:
        return body[:at].strip(), False
    return body, True


@plan.step(retries=3, uses=["lm"])
async def outline(ctx: Context, task: StoryInput) -> Outline:
    about = f" about {task.topic}" if task.topic else ""
    prompt = (
        f"Plan a short story{about} in {len(task.endings)} paragraphs. Each paragraph must end "
        f"with the given sentence. Write exactly one outline line per paragraph, numbered.\n"
        f"Endings:\n{_numbered(task.endings)}"
    )
    generation = await ctx.lm.generate(prompt, max_new_tokens=40 * len(task.endings),
                                       temperature=0.8, seed=ctx.seed)
    return parse_outline(generation.text, len(task.endings))


async def write_paragraph(ctx: Context, task: StoryInput, outline: Outline,
                          previous: Paragraph | None = None, index: int = 0) -> Paragraph:
    ending = task.endings[index]
    context = f"The story so far ends with:\n{previous.text}\n\n" if previous else ""
    prompt = (
        f"{context}Write paragraph {index + 1} of the story (3 to 5 sentences). "
        f"Plan for it: {outline.lines[index]}\n"
        f"The paragraph must end with this exact sentence: \"{ending}\""
    )
    generation = await ctx.lm.generate(prompt, max_new_tokens=140, temperature=0.8, seed=ctx.seed)
    lead, appended = finish_with(generation.text, ending)
    if not lead:
        raise ValueError("the paragraph has no text before its ending")
    return Paragraph(index=index, text=f"{lead} {ending}", lead=lead, appended=appended)


async def _similar(ctx: Context, a: str, b: str, threshold: float, what: str) -> checks.Result:
    return checks.Result.at_least(await ctx.embedder.similarity(a, b), threshold, what)


async def fits_ending(ctx: Context, task: StoryInput, out: Paragraph) -> checks.Result:
    return await _similar(ctx, out.lead, task.endings[out.index], ENDING_THRESHOLD,
                          "similarity to its ending")


async def follows_previous(ctx: Context, out: Paragraph,
                           previous: Paragraph | None = None) -> checks.Result:
    if previous is None:
        return checks.Result.ok("first paragraph")
    return await _similar(ctx, out.lead, previous.text, PREVIOUS_THRESHOLD,
                          "similarity to the previous paragraph")


async def follows_outline(ctx: Context, outline: Outline, out: Paragraph) -> checks.Result:
    return await _similar(ctx, out.lead, outline.lines[out.index], OUTLINE_THRESHOLD,
                          "similarity to its outline line")


@plan.planner
def paragraphs(p: Plan, task: StoryInput) -> None:
    """One paragraph step per ending, each after the previous one, then the story."""
    names = []
    for i in range(len(task.endings)):
        inputs = {"outline": "outline"} | ({"previous": names[-1]} if names else {})
        step = p.add_step(functools.partial(write_paragraph, index=i), name=f"paragraph_{i}",
                          inputs=inputs, retries=3, uses=["lm", "embedder"], backtrack=False)
        for check in (fits_ending, follows_previous, follows_outline):
            step.check(check)
        names.append(step.name)
    p.add_step(collect, name="story", inputs={"parts": names})


async def collect(ctx: Context, parts: list[Paragraph]) -> Story:
    """Join the paragraphs, with the scores of each paragraph's standing checks."""
    scores = [{c.name: c.score for c in ctx.verdicts(f"paragraph_{p.index}")} for p in parts]
    return Story(text="\n\n".join(p.text for p in parts), scores=scores)
