"""The safe arithmetic checker: exact, never eval, tolerant of how models write."""

from __future__ import annotations

from fractions import Fraction

import pytest

from reasoner import checks
from reasoner._exceptions import ExpressionError
from reasoner.arithmetic import evaluate, worked_lines


@pytest.mark.parametrize(
    ("text", "value"),
    [("7/2*2", 7), ("3 x 4", 12), ("-(2+3)", -5), ("1,000 + 1", 1001),
     ("0.1 + 0.2", Fraction(3, 10)), ("12 ÷ 4 × 2", 6)],
)
def test_evaluate_is_exact(text: str, value: Fraction) -> None:
    assert evaluate(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("2**3", "Pow is not allowed"), ("__import__('os')", "Call is not allowed"),
     ("1 +", "not an arithmetic expression"),
     ("(1).__class__", "not allowed"), ("1/0", "division by zero"), ("a + 1", "not allowed"),
     ("9" * 40, "too long"), ("", "empty")],
)
def test_evaluate_rejects_everything_else(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate(text)


def test_worked_lines_read_model_style_text() -> None:
    text = ("1. Tom has 5 apples + 3 apples = 8 apples\n"
            "Step 2: 8 x 3 = 24\n"
            "He pays $24 - $4 = $20.\n"
            "Answer: 20")
    claims = worked_lines(text)
    assert [(c.expression, c.claimed, c.holds) for c in claims] == [
        ("5 + 3", 8, True), ("8 * 3", 24, True), ("24 -  4", 20, True)]


def test_arithmetic_check_verdicts() -> None:
    good = checks.arithmetic("5 + 3 = 8\n8 * 2 = 16", answer=16)
    assert good.passed and good.score == 1.0
    wrong_line = checks.arithmetic("5 + 3 = 9\n9 * 2 = 18", answer=18)
    assert not wrong_line.passed and wrong_line.reason == "wrong line: 5 + 3 = 9 (is 8)"
    assert wrong_line.score == 0.25  # half the lines hold, halved for failing
    unfollowed = checks.arithmetic("5 + 3 = 8", answer=9)
    assert not unfollowed.passed and "does not follow" in unfollowed.reason
    nothing = checks.arithmetic("I think it is nine.", answer=9)
    assert not nothing.passed and "no worked line" in nothing.reason
    assert not checks.arithmetic("5 + 3 = 8", answer=None).passed
