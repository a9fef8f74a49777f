"""story's part of the quality-against-compute benchmark: the single pass against the
paragraph-by-paragraph plan with N drafts per paragraph, the best kept.

Inputs: `plans.story.story_inputs(count, seed=0)`, four unrelated endings each. Quality is
the mean coherence of the final stories (`Story.coherence`: per paragraph, the mean of its
text's similarity to its ending and to the previous paragraph; the mean over paragraphs),
the same measure for both methods; a run without a story counts 0. `extra` holds the share
of runs whose final text has every ending verbatim and in order (read from the text, not
from the plan's own account), the share of endings the model wrote itself (the rest were
appended), and the share of runs that ended `degraded`.
"""

from __future__ import annotations

from collections.abc import Sequence

from _compute import Point, mean_compute, run_all

from plans.story import plan, story_inputs
from reasoner import Engine, Run


def has_every_ending(text: str, endings: Sequence[str]) -> bool:
    """Each ending in the text word for word, each after the one before."""
    at = 0
    for ending in endings:
        found = text.find(ending, at)
        if found < 0:
            return False
        at = found + len(ending)
    return True


def point(method: str, setting: int, runs: list[Run], wall: float) -> Point:
    """The point of one method's runs; a run without a story scores 0 and has no ending."""
    stories = [run.output("story") if run.status in ("succeeded", "degraded") else None
               for run in runs]
    endings = [len(run.input.endings) for run in runs]
    calls, tokens = mean_compute(runs)
    return Point(
        plan="story", method=method, setting=setting,
        quality=sum(s.coherence for s in stories if s) / len(runs),
        lm_calls=calls, generated_tokens=tokens, wall_s=wall,
        extra={
            "every_ending": sum(s is not None and has_every_ending(s.text, run.input.endings)
                                for s, run in zip(stories, runs, strict=True)) / len(runs),
            "written": sum(s.written for s in stories if s) / sum(endings),
            "degraded": sum(run.status == "degraded" for run in runs) / len(runs),
        })


async def measure(engine: Engine, count: int, samples: list[int], jobs: int) -> list[Point]:
    """One point for the single pass, one per number of drafts per paragraph."""
    inputs = story_inputs(count, seed=0)
    runs, wall = await run_all(engine, plan, [i | {"strategy": "single"} for i in inputs],
                               concurrency=jobs)
    points = [point("single", 1, runs, wall)]
    for n in samples:
        runs, wall = await run_all(engine, plan, [i | {"samples": n} for i in inputs],
                                   concurrency=jobs)
        points.append(point("best", n, runs, wall))
    return points
