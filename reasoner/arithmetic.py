"""Exact, safe arithmetic over model output: never `eval`.

`evaluate` parses an expression with `ast` and accepts only numbers, the
operators + - * / (also written x, ×, ÷), unary minus and parentheses; it
computes with `Fraction`, so 7/2*2 is exactly 7. `worked_lines` finds every
"expression = value" claim in a text, and `verify` checks them all and that
a final answer follows from them.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from reasoner._exceptions import ExpressionError

MAX_DIGITS = 18  # refuse numbers and results that would make exact arithmetic explode

_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
_SPELLINGS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "$": " "})
_TIMES = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")  # 3 x 4 -> 3 * 4
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBERING = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s+", re.IGNORECASE)
_UNITS = re.compile(r"(?<=\d)\s+[A-Za-z][A-Za-z']*(?:\s+[A-Za-z][A-Za-z']*)*(?=\s*[-+*/=)])")
_EXPRESSION = r"[\d.\s()+\-*/]*\d[\d.\s()+\-*/]*"
_CHAIN = re.compile(rf"(?:{_EXPRESSION}=)+{_EXPRESSION}")  # a = b (= c ...)


def _number(text: str) -> Fraction:
    cleaned = text.replace(",", "")
    if len(cleaned.replace(".", "").lstrip("-")) > MAX_DIGITS:
        raise ExpressionError(f"number {text!r} is too long")
    try:
        return Fraction(cleaned)
    except ValueError:
        raise ExpressionError(f"{text!r} is not a number") from None


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _number(repr(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Add):
            result = left + right
        elif isinstance(node.op, ast.Sub):
            result = left - right
        elif isinstance(node.op, ast.Mult):
            result = left * right
        else:
            if right == 0:
                raise ExpressionError("division by zero")
            result = left / right
        if max(len(str(result.numerator)), len(str(result.denominator))) > 2 * MAX_DIGITS:
            raise ExpressionError("result is too large")
        return result
    what = type(node.op if isinstance(node, ast.BinOp | ast.UnaryOp) else node).__name__
    raise ExpressionError(f"{what} is not allowed in arithmetic (only numbers, + - * / and ())")


def evaluate(expression: str) -> Fraction:
    """The exact value of a plain arithmetic expression; ExpressionError otherwise."""
    text = _TIMES.sub("*", expression.translate(_SPELLINGS)).replace(",", "").strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > 200:
        raise ExpressionError("expression is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ExpressionError(f"{expression.strip()!r} is not an arithmetic expression") from None
    return _eval(tree)


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


@dataclass(frozen=True)
class Claim:
    """One 'expression = value' found in a text, and whether it holds."""

    expression: str
    claimed: Fraction
    actual: Fraction | None
    problem: str = ""

    @property
    def holds(self) -> bool:
        return self.actual is not None and self.actual == self.claimed


def _clean(line: str) -> str:
    """Normalise how models write arithmetic: numbering, 'x', '$', 1,000, units."""
    line = _NUMBERING.sub("", line.translate(_SPELLINGS))
    line = _TIMES.sub(" * ", _THOUSANDS.sub("", line))
    return _UNITS.sub("", line)


def _value(text: str) -> tuple[Fraction | None, str]:
    try:
        return evaluate(text), ""
    except ExpressionError as exc:
        return None, str(exc)


def worked_lines(text: str) -> list[Claim]:
    """Every arithmetic claim ('a op b = c', chains too) in `text`, checked exactly."""
    claims = []
    for line in text.splitlines():
        for match in _CHAIN.finditer(_clean(line)):
            parts = [part.strip(" .") for part in match.group(0).split("=")]
            for left, right in zip(parts, parts[1:], strict=False):
                claimed, problem = _value(right)
                actual, left_problem = _value(left)
                if claimed is None:
                    claims.append(Claim(left, Fraction(0), None, problem))
                else:
                    claims.append(Claim(left, claimed, actual, left_problem))
    return claims


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float  # share of claims that hold, times whether the answer follows
    reason: str


def verify(reasoning: str, answer: int | Fraction | None) -> Verdict:
    """Every worked line must hold and the answer must equal the last line's value."""
    claims = worked_lines(reasoning)
    if not claims:
        return Verdict(False, 0.0, "no worked line of the form 'a + b = c' in the reasoning")
    holding = sum(c.holds for c in claims)
    share = holding / len(claims)
    for claim in claims:
        if not claim.holds:
            detail = claim.problem or f"is {format_number(claim.actual)}"  # type: ignore[arg-type]
            return Verdict(False, share * 0.5,
                           f"wrong line: {claim.expression} = {format_number(claim.claimed)} "
                           f"({detail})")
    if answer is None:
        return Verdict(False, share * 0.5, "no final answer")
    if Fraction(answer) != claims[-1].claimed:
        return Verdict(False, share * 0.5,
                       f"answer {format_number(Fraction(answer))} does not follow from the last "
                       f"line ({claims[-1].expression} = {format_number(claims[-1].claimed)})")
    return Verdict(True, 1.0, f"{len(claims)} line(s) hold and the answer follows")
