"""Consistency checks: what a check returns, and helpers for common verdicts.

A check is a function attached to a step with `@step.check`. It receives any
of the step's inputs (by parameter name, as the step does), the step's output
(parameter `out`, `output` or the step's own name) and optionally `ctx`, and
returns a `Result`. A failed check makes the attempt fail: the step is
resampled with a new seed, and when its retries are spent the engine
backtracks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Result(BaseModel):
    """A check's verdict: whether it passed, a score in [0, 1], and why."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "", score: float = 1.0) -> Result:
        return cls(passed=True, score=score, reason=reason)

    @classmethod
    def fail(cls, reason: str, score: float = 0.0) -> Result:
        return cls(passed=False, score=score, reason=reason)

    @classmethod
    def at_least(cls, score: float, threshold: float, what: str = "score") -> Result:
        """Pass when `score` reaches `threshold`; the reason states both numbers."""
        score = min(1.0, max(0.0, float(score)))
        verdict = ">=" if score >= threshold else "<"
        return cls(
            passed=score >= threshold,
            score=score,
            reason=f"{what} {score:.3f} {verdict} threshold {threshold:.3f}",
        )


def arithmetic(reasoning: str, answer: int | None) -> Result:
    """Every worked line 'a op b = c' holds exactly and `answer` follows from the last one.

    The text is parsed with `ast` and computed with fractions; it is never
    evaluated as Python (see `reasoner.arithmetic`).
    """
    from reasoner.arithmetic import verify

    verdict = verify(reasoning, answer)
    return Result(passed=verdict.passed, score=verdict.score, reason=verdict.reason)
