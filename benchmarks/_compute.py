"""Quality against compute: one point per (plan, method, setting), measured over a set of inputs.

Imported by `test_time_compute.py` and its per-plan parts (`_ttc_*.py`). A point's runs
go through `engine.map` (`run_all`), and its mean LM calls and generated tokens per
input are read from what the runs recorded (`mean_compute`), with the whole set's wall
time; a hand-written single pass fills a Point itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reasoner import Engine, Plan, Run


@dataclass
class Point:
    """One row of the table and one marker of the plot."""

    plan: str  # "verified-digits", "game24", "story"
    method: str  # "single", "vote", "best", "search", "random", ...
    setting: int  # N samples, a budget, proposals: what the method was given
    quality: float  # the panel's y axis: correct share, solved share, mean coherence
    lm_calls: float  # mean per input
    generated_tokens: float  # mean per input
    proposals: float = 0.0  # mean per input (game24)
    wall_s: float = 0.0  # the whole set
    extra: dict[str, float] = field(default_factory=dict)  # precision, endings present, ...


async def run_all(engine: Engine, plan: Plan, inputs: Sequence[Any], *, concurrency: int,
                  seed: int = 0) -> tuple[list[Run], float]:
    """Every input through the plan, runs in input order, and the wall time in seconds."""
    clock = time.perf_counter()
    finished = [run async for run in engine.map(plan, inputs, concurrency=concurrency, seed=seed)]
    wall = time.perf_counter() - clock
    wanted = [plan.input.model_validate(item) for item in inputs]
    ordered: list[Run | None] = [None] * len(inputs)
    for run in finished:  # equal inputs run alike, so which of them a run fills does not matter
        slot = next(i for i, item in enumerate(wanted) if ordered[i] is None and item == run.input)
        ordered[slot] = run
    return [run for run in ordered if run is not None], wall


def mean_compute(runs: Sequence[Run]) -> tuple[float, float]:
    """(LM calls, generated tokens), mean per run, from the compute the runs recorded."""
    if not runs:
        return 0.0, 0.0
    calls = sum(run.compute.calls.get("lm", 0) for run in runs) / len(runs)
    tokens = sum(run.compute.generated_tokens for run in runs) / len(runs)
    return calls, tokens
