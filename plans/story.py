"""story: a short story that reaches given ending sentences, paragraph by paragraph.

Input: one required closing sentence per paragraph (2 to 8), an optional topic, the strategy
and, for `steps`, drafts per paragraph. Either strategy ends with a story that has every
ending word for word, in order, one closing each paragraph: where the model did not write an
ending, it is appended, and the output counts how many the model wrote and how many were
appended.

`steps` (default):
1. `outline`: one line per ending, each a call constrained by a regular expression to one
   line of 10 to 80 characters (all in one batch), so the outline always has its lines.
2. `paragraph_<i>` (one step per ending, planned from the input's size): `samples` drafts of
   paragraph i from its outline line, the previous paragraph and ending i; the draft with the
   best checks is kept. Each paragraph's text is the model's own whole sentences before the
   ending (cut where it wrote the ending; none copied from the previous paragraph), then the
   ending.
3. Checks per paragraph, with the sentence embedder: the model's text against its ending, the
   previous paragraph and its outline line, each a cosine similarity against a threshold. A
   round with no draft over every threshold is retried; when the retries are spent the best
   draft is kept and the paragraph is `degraded` (so is the run, which still has its story).
4. `story`: the paragraphs joined, with each paragraph's similarities and the coherence.

`single`, the baseline: one LM call writes the whole story; its text is dealt into one
paragraph per ending (`split_paragraphs`), each finished and measured as above. The same
thresholds are its check, with no retries: below one, the run ends `degraded`.

Coherence, one measure for both strategies: a paragraph's is the mean of its text's
similarity to its ending and to the previous paragraph (the first paragraph: to its ending
alone); a story's is the mean over its paragraphs. The outline similarity is checked, not
counted, as `single` has no outline.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from reasoner import Context, Plan, Run, checks

# Cosine similarities of all-MiniLM-L6-v2: unrelated sentences sit near 0.0-0.1, a paragraph
# that works towards its ending near 0.3-0.6. The thresholds catch drift, not style.
ENDING_THRESHOLD = 0.25
PREVIOUS_THRESHOLD = 0.2
OUTLINE_THRESHOLD = 0.2
# An outline line: 10 to LINE_CHARS characters on one line, so a budget of LINE_CHARS tokens
# (each at least a character) always ends it. One regex for every line: its index over the
# vocabulary, the costly part of constrained decoding, is built once.
LINE_CHARS = 80
LINE = rf"[A-Za-z][^\n]{{9,{LINE_CHARS - 1}}}"
PARAGRAPH_TOKENS = 120  # a paragraph's budget; a draft cut short keeps its whole sentences


class StoryInput(BaseModel):
    endings: list[str] = Field(min_length=2, max_length=8,
                               description="the closing sentence of each paragraph, in order")
    topic: str | None = Field(None, max_length=200)
    strategy: Literal["steps", "single"] = Field(
        "steps", description="paragraph by paragraph with checks, or one pass (the baseline)")
    samples: int = Field(1, ge=1, le=16, description="drafts per paragraph, the best kept (steps)")

    @field_validator("endings")
    @classmethod
    def _sentences(cls, endings: list[str]) -> list[str]:
        cleaned = [" ".join(ending.split()) for ending in endings]
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
    text: str  # the lead, then the required ending
    lead: str  # the model's own text, before the ending (what the measures judge)
    appended: bool  # whether the ending was appended (the model did not write it)
    ending: float | None  # similarity of the lead to its ending; None for a paragraph without one
    previous: float | None = None  # to the previous paragraph; None for the first
    outline: float | None = None  # to its outline line; None without an outline

    @property
    def coherence(self) -> float:
        """The mean of the similarities to its ending and to the previous paragraph, those it has;
        with neither (the first paragraph of a story without endings), to its outline line."""
        measured = [m for m in (self.ending, self.previous) if m is not None]
        return statistics.fmean(measured) if measured else self.outline or 0.0

    def below(self) -> list[str]:
        """The measures under their thresholds."""
        limits = [("ending", self.ending, ENDING_THRESHOLD),
                  ("previous", self.previous, PREVIOUS_THRESHOLD),
                  ("outline", self.outline, OUTLINE_THRESHOLD)]
        return [name for name, value, limit in limits if value is not None and value < limit]


class Paragraphs(BaseModel):
    parts: list[Paragraph]


class Story(BaseModel):
    text: str  # paragraphs separated by blank lines, paragraph i ending with ending i
    strategy: str
    scores: list[dict[str, float]]  # per paragraph: its similarities and its coherence
    coherence: float  # the mean of the paragraphs' coherence
    written: int  # endings the model wrote itself
    appended: int  # endings appended where the model did not write them
    below: list[int]  # paragraphs kept with a measure under its threshold


plan = Plan("story", input=StoryInput, description=__doc__, max_backtracks=0, examples=[
    ("a story about a lost cat that ends with 'The cat came home.' and 'Everyone cheered.'",
     {"endings": ["The cat came home.", "Everyone cheered."], "topic": "a lost cat"}),
    ("write three paragraphs ending in 'It rained.', 'The river rose.', 'The town was saved.'",
     {"endings": ["It rained.", "The river rose.", "The town was saved."]}),
])


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i + 1}. {line}" for i, line in enumerate(lines))


def split_paragraphs(text: str, count: int) -> list[str]:
    """`count` paragraphs of a single pass: the model's own lines where it wrote at least
    `count` (the rest joined into the last), else its sentences dealt into `count`
    consecutive groups of near-equal size (a group may be empty)."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if len(lines) >= count:
        return [*lines[:count - 1], " ".join(lines[count - 1:])]
    every = sentences(" ".join(lines))
    cuts = [round(k * len(every) / count) for k in range(count + 1)]
    return [" ".join(every[cuts[k]:cuts[k + 1]]) for k in range(count)]


def sentences(text: str) -> list[str]:
    """The sentences of a text, the last one possibly unfinished."""
    return [m.group().strip() for m in re.finditer(r"[^.!?]+(?:[.!?]+[\"')\]]*|$)", text)
            if m.group().strip()]


def finish_with(text: str, ending: str | None, before: str = "") -> tuple[str, bool]:
    """(lead, appended): the model's text before the ending where it wrote the ending as a
    sentence of its own (any case), else its text, the ending to be appended (with no ending:
    its text, nothing appended). Whole sentences only (an unfinished last one is dropped where
    another is left), none repeated from `before` (the previous paragraph) or from the text
    itself: copying earns no similarity."""
    body = " ".join(text.split())
    if ending is None:
        found = None
    else:
        key = re.escape(ending.rstrip(".!?"))
        found = re.search(rf"(?:^|(?<=[.!?\"'] )){key}(?=[.!?\"']|$)", body, re.IGNORECASE)
    if found is not None:  # an ending written first: what follows it leads into it
        body = body[:found.start()] if found.start() else body[found.end():].lstrip(".!?\"' ")
    parts = sentences(body)
    if len(parts) > 1 and parts[-1][-1] not in ".!?\"')]":
        parts.pop()
    seen = {part.lower() for part in sentences(before)}
    lead = []
    for part in parts:
        if part.lower() not in seen:
            seen.add(part.lower())
            lead.append(part)
    return " ".join(lead), ending is not None and (found is None or found.start() == 0)


async def measure(ctx: Context, text: str, ending: str | None, index: int,
                  previous: Paragraph | None = None, plan_line: str | None = None) -> Paragraph:
    """Paragraph `index` from the model's text, with its similarities (no text scores 0)."""
    lead, appended = finish_with(text, ending, previous.text if previous else "")

    async def similarity(other: str) -> float:
        return await ctx.embedder.similarity(lead, other) if lead else 0.0

    return Paragraph(
        index=index, text=f"{lead} {ending or ''}".strip(), lead=lead, appended=appended,
        ending=None if ending is None else await similarity(ending),
        previous=None if previous is None else await similarity(previous.text),
        outline=None if plan_line is None else await similarity(plan_line))


async def outline(ctx: Context, task: StoryInput) -> Outline:
    """One constrained call per ending, all at once: a line each, whatever the model writes."""
    return Outline(lines=await outline_lines(ctx, task.topic, len(task.endings), task.endings))


async def outline_lines(ctx: Context, topic: str | None, paragraphs: int,
                        endings: Sequence[str] = ()) -> list[str]:
    """A line per paragraph, each a call constrained by `LINE`, all at once; with `endings`
    (one per paragraph), each line says what leads to its paragraph's ending."""
    about = f" about {topic}" if topic else ""

    async def line(index: int) -> str:
        ends = (f"Paragraph {index + 1} must end with the sentence: \"{endings[index]}\"\n"
                if endings else "")
        prompt = (
            f"We are planning a short story{about} in {paragraphs} paragraphs. {ends}"
            f"In one sentence, say what happens in paragraph {index + 1}"
            f"{' before that' if endings else ''}."
        )
        generation = await ctx.lm.generate(prompt, regex=LINE, max_new_tokens=LINE_CHARS,
                                           temperature=0.8, seed=ctx.seed + index)
        return generation.text.strip()

    return list(await asyncio.gather(*map(line, range(paragraphs))))


async def write_paragraph(ctx: Context, task: StoryInput, outline: Outline,
                          previous: Paragraph | None = None, index: int = 0) -> Paragraph:
    return await draft(ctx, outline.lines[index], task.endings[index], previous, index)


async def draft(ctx: Context, line: str, ending: str | None, previous: Paragraph | None,
                index: int) -> Paragraph:
    """Paragraph `index` written from its outline line and the previous paragraph, to end with
    `ending` when there is one, and measured."""
    context = f"The story so far ends with:\n{previous.text}\n\n" if previous else ""
    ends = (f"\nThe paragraph must end with this exact sentence: \"{ending}\""
            if ending is not None else "")
    prompt = (f"{context}Write paragraph {index + 1} of the story (3 to 5 sentences). "
              f"Plan for it: {line}{ends}")
    generation = await ctx.lm.generate(prompt, max_new_tokens=PARAGRAPH_TOKENS, stop=["\n\n"],
                                       temperature=0.8, seed=ctx.seed)
    return await measure(ctx, generation.text, ending, index, previous, line)


def fits_ending(out: Paragraph) -> checks.Result:
    return checks.Result.at_least(out.ending, ENDING_THRESHOLD, "similarity to its ending")


def follows_previous(out: Paragraph) -> checks.Result:
    if out.previous is None:
        return checks.Result.ok("first paragraph")
    return checks.Result.at_least(out.previous, PREVIOUS_THRESHOLD,
                                  "similarity to the previous paragraph")


def follows_outline(out: Paragraph) -> checks.Result:
    return checks.Result.at_least(out.outline or 0.0, OUTLINE_THRESHOLD,
                                  "similarity to its outline line")


@plan.planner
def strategy(p: Plan, task: StoryInput) -> None:
    """`steps`: the outline, one paragraph step per ending, each after the previous one, then
    the story. `single`: one pass, then the story."""
    if task.strategy == "single":
        p.add_step(single, retries=0, on_exhausted="best", backtrack=False,
                   uses=["lm", "embedder"]).check(coherent)
        p.add_step(collect_single, name="story").check(every_ending)
        return
    p.add_step(outline, uses=["lm"], backtrack=False)
    names: list[str] = []
    for i in range(len(task.endings)):
        inputs = {"outline": "outline"} | ({"previous": names[-1]} if names else {})
        step = p.add_step(functools.partial(write_paragraph, index=i), name=f"paragraph_{i}",
                          inputs=inputs, retries=2, samples=task.samples, select="best",
                          on_exhausted="best", backtrack=False, uses=["lm", "embedder"])
        for check in (fits_ending, follows_previous, follows_outline):
            step.check(check)
        names.append(step.name)
    p.add_step(collect, name="story", inputs={"parts": names}).check(every_ending)


async def single(ctx: Context, task: StoryInput) -> Paragraphs:
    """The whole story in one LM call, dealt into a paragraph per ending, each finished and
    measured as in `steps`."""
    count = len(task.endings)
    about = f" about {task.topic}" if task.topic else ""
    prompt = (
        f"Write a short story{about} in {count} paragraphs (3 to 5 sentences each), one "
        f"paragraph a line. Paragraph k must end with sentence k, word for word:\n"
        f"{_numbered(task.endings)}"
    )
    generation = await ctx.lm.generate(prompt, max_new_tokens=count * PARAGRAPH_TOKENS,
                                       temperature=0.8, seed=ctx.seed)
    parts: list[Paragraph] = []
    for i, (text, ending) in enumerate(zip(split_paragraphs(generation.text, count),
                                           task.endings, strict=True)):
        parts.append(await measure(ctx, text, ending, i, parts[-1] if parts else None))
    return Paragraphs(parts=parts)


def coherent(out: Paragraphs) -> checks.Result:
    """The thresholds of `steps`, every paragraph at once: the share of paragraphs meeting
    them, passing only when all do."""
    failing = [f"paragraph {p.index + 1}: {', '.join(p.below())}" for p in out.parts if p.below()]
    share = 1 - len(failing) / len(out.parts)
    if failing:
        return checks.Result.fail("under threshold: " + "; ".join(failing), score=share)
    return checks.Result.ok("every paragraph over its thresholds")


def assemble(parts: list[Paragraph], strategy: str) -> Story:
    """The story of its paragraphs, with their measures."""
    return Story(
        text="\n\n".join(p.text for p in parts),
        strategy=strategy,
        scores=[({} if p.ending is None else {"ending": p.ending})
                | ({} if p.previous is None else {"previous": p.previous})
                | ({} if p.outline is None else {"outline": p.outline})
                | {"coherence": p.coherence} for p in parts],
        coherence=statistics.fmean(p.coherence for p in parts),
        written=sum(p.ending is not None and not p.appended for p in parts),
        appended=sum(p.appended for p in parts),
        below=[p.index for p in parts if p.below()])


async def collect(task: StoryInput, parts: list[Paragraph]) -> Story:
    """Join the paragraphs of `steps` (`task` is for the `every_ending` check)."""
    return assemble(parts, "steps")


async def collect_single(task: StoryInput, single: Paragraphs) -> Story:
    """Join the paragraphs of the single pass (`task` is for the `every_ending` check)."""
    return assemble(single.parts, "single")


@plan.headline
def opening_and_coherence(run: Run) -> str:
    """The story's first words, then its coherence and how its endings came about."""
    story = run.steps["story"].output
    if story is None:
        return "no story"
    opening = story.text.split("\n")[0][:120]
    said = (f"coherence {story.coherence:.2f}; {story.written} ending(s) written by the model, "
            f"{story.appended} appended")
    if story.below:
        said += "; under a threshold: paragraph " + ", ".join(str(i + 1) for i in story.below)
    return f"{opening}...\n{said}"


def every_ending(task: StoryInput, out: Story) -> checks.Result:
    """Each paragraph of the text ends with its ending, word for word: the guarantee, kept."""
    paragraphs = out.text.split("\n\n")
    wrong = [i + 1 for i, (p, e) in enumerate(zip(paragraphs, task.endings, strict=False))
             if not p.endswith(e)]
    if len(paragraphs) != len(task.endings) or wrong:
        return checks.Result.fail(f"{len(paragraphs)} paragraphs for {len(task.endings)} "
                                  f"endings; paragraphs not ending right: {wrong}")
    return checks.Result.ok("every ending, in order")


# Words for story_inputs, from many walks of life: an ending is who did what, to what, where.
# The four endings of an input share no word from these lists, so they tell unrelated events.
SUBJECTS = ["The baker", "A lighthouse keeper", "The astronaut", "An old fisherman",
            "The violinist", "A tax lawyer", "The beekeeper", "A young chess player",
            "The surgeon", "A mountain guide", "The librarian", "A street painter"]
VERBS = ["sold", "repaired", "buried", "photographed", "forgot", "carried", "painted", "hid",
         "counted", "returned", "lost", "polished"]
OBJECTS = ["the last loaf", "a broken compass", "the brass key", "an unsigned letter",
           "the red kite", "a jar of honey", "the winning ticket", "a cracked violin",
           "the silver coin", "a map of the stars", "the wooden horse", "a box of seeds"]
PLACES = ["at the harbor", "on the frozen lake", "in the courthouse", "behind the bakery",
          "on the moon base", "in the desert", "at the train station", "under the bridge",
          "in the greenhouse", "at the summit", "in the museum", "on the night ferry"]


def story_inputs(count: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """`count` inputs of four unrelated endings, drawn by `seed` from the word lists above:
    within an input no two endings share a subject, verb, object or place."""
    rng = random.Random(seed)
    inputs = []
    for _ in range(count):
        picks = [rng.sample(words, 4) for words in (SUBJECTS, VERBS, OBJECTS, PLACES)]
        inputs.append({"endings": [f"{s} {v} {o} {p}." for s, v, o, p in zip(*picks, strict=True)]})
    return inputs
