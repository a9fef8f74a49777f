"""Job summaries over a store: success rate, per-step attempts, backtracks, latency and
compute, and the most common reasons checks failed. What a researcher reads off after
running strategies over the same inputs.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
from pydantic import BaseModel

from reasoner.records import Compute, describe_compute
from reasoner.store import Store


class Spent(BaseModel):
    """Mean compute per run: calls by generator, language-model tokens in and out."""

    calls: dict[str, float]
    prompt_tokens: float
    generated_tokens: float

    @classmethod
    def mean(cls, parts: list[Compute]) -> Spent:
        total, n = Compute.total(parts), max(len(parts), 1)
        return cls(calls={name: count / n for name, count in sorted(total.calls.items())},
                   prompt_tokens=total.prompt_tokens / n,
                   generated_tokens=total.generated_tokens / n)

    def __str__(self) -> str:
        return describe_compute({name: round(n, 1) for name, n in self.calls.items()},
                                self.prompt_tokens, self.generated_tokens)


class Latency(BaseModel):
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> Latency | None:
        if not values:
            return None
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(p50=float(p50), p90=float(p90), p99=float(p99))


class StepSummary(BaseModel):
    step: str  # spawned nodes are grouped as "<root>/*"
    runs: int
    mean_attempts: float
    first_try: float  # share of runs where the first attempt passed
    backtracks: int
    latency_s: Latency | None  # time in the step per run, retries included
    compute: Spent  # per run, every attempt counted


class Summary(BaseModel):
    plan: str | None
    runs: int
    succeeded: int
    degraded: int
    failed: int
    unfinished: int
    success_rate: float  # succeeded, not degraded
    job_latency_s: Latency | None
    compute: Spent  # per run
    steps: list[StepSummary]
    failure_reasons: list[tuple[str, int]]  # most common first, numbers replaced by N


def _group(node: str) -> str:
    root, _, rest = node.partition("/")
    return f"{root}/*" if rest else root


def _pattern(reason: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", reason.splitlines()[0] if reason else "")[:160]


def summarize_store(store: Store, plan: str | None = None, top: int = 10) -> Summary:
    histories = store.history(plan)
    statuses = Counter(h.record.status for h in histories)
    per_step: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    backtracks: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    spent: dict[str, list[Compute]] = defaultdict(list)
    for history in histories:
        by_step: dict[str, list] = defaultdict(list)
        for attempt in history.attempts:
            by_step[_group(attempt.node)].append(attempt)
            if attempt.status == "failed":
                reasons[_pattern(attempt.reason)] += 1
        for step, attempts in by_step.items():
            stats = per_step[step]
            stats["attempts"].append(len(attempts))
            stats["first_try"].append(float(attempts[0].status != "failed"))
            stats["time"].append(sum(a.duration_s for a in attempts))
            spent[step].append(Compute.total(a.compute for a in attempts))
        for decision in history.backtracks:
            backtracks[_group(decision.failed)] += 1
    finished = [h.record.finished_at - h.record.created_at for h in histories
                if h.record.finished_at is not None]
    steps = [
        StepSummary(step=step, runs=len(stats["attempts"]),
                    mean_attempts=float(np.mean(stats["attempts"])),
                    first_try=float(np.mean(stats["first_try"])), backtracks=backtracks[step],
                    latency_s=Latency.of(stats["time"]), compute=Spent.mean(spent[step]))
        for step, stats in per_step.items()
    ]
    total = len(histories)
    ended = statuses["succeeded"] + statuses["degraded"] + statuses["failed"]
    return Summary(
        plan=plan, runs=total, succeeded=statuses["succeeded"], degraded=statuses["degraded"],
        failed=statuses["failed"], unfinished=total - ended,
        success_rate=statuses["succeeded"] / total if total else 0.0,
        job_latency_s=Latency.of(finished),
        compute=Spent.mean([Compute.total(a.compute for a in h.attempts) for h in histories]),
        steps=steps,
        failure_reasons=reasons.most_common(top),
    )


def format_summary(summary: Summary) -> str:
    """The summary as text for people."""
    lines = [f"{summary.runs} runs{f' of {summary.plan}' if summary.plan else ''}: "
             f"{summary.succeeded} succeeded, "
             + (f"{summary.degraded} degraded, " if summary.degraded else "")
             + f"{summary.failed} failed, {summary.unfinished} unfinished; "
             f"success rate {summary.success_rate:.1%}"]
    if summary.job_latency_s:
        j = summary.job_latency_s
        lines.append(f"job latency p50 {j.p50:.3f} s, p90 {j.p90:.3f} s, p99 {j.p99:.3f} s")
    lines.append(f"compute per run: {summary.compute}")
    lines.append(f"{'step':24} {'runs':>5} {'attempts':>9} {'1st try':>8} {'backtr.':>8} "
                 f"{'p50 s':>8} {'p90 s':>8} {'p99 s':>8}  compute per run")
    for s in summary.steps:
        lat = s.latency_s
        lines.append(f"{s.step[:24]:24} {s.runs:5d} {s.mean_attempts:9.2f} {s.first_try:8.1%} "
                     f"{s.backtracks:8d} {lat.p50 if lat else 0:8.3f} {lat.p90 if lat else 0:8.3f} "
                     f"{lat.p99 if lat else 0:8.3f}  {s.compute}")
    if summary.failure_reasons:
        lines.append("most common failure reasons:")
        lines += [f"  {count:5d}  {reason}" for reason, count in summary.failure_reasons]
    return "\n".join(lines)
