"""Exact, safe arithmetic over model output: never `eval`.

`evaluate` parses an expression with `ast` and accepts only numbers, the
operators + - * / (also written x, ×, ÷), unary minus and parentheses; it
computes with `Fraction`, so 7/2*2 is exactly 7. `worked_lines` finds every
"expression = value" claim in a text, and `verify` checks them all and that
a final answer follows from them.

Every pattern here runs in linear time, because model output is untrusted and is checked
on the event loop. The regular expressions have no nested quantifiers and no two adjacent
quantifiers over overlapping characters (each note says why its backtracking is bounded);
the structure of a claim is found by the small scanners `_drop_units` and `_chains`. A
line longer than `MAX_LINE_CHARS` that could hold a claim, or a text with more than
`MAX_CLAIMS` claims, is refused with a verdict that says so (a 128-token reply is well
under 1 KB and a few dozen claims), never skipped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from reasoner._exceptions import ExpressionError

MAX_DIGITS = 18  # refuse numbers and results that would make exact arithmetic explode
MAX_LINE_CHARS = 4096  # a worked line longer than this is refused with a verdict
# A claim costs up to ~0.5 ms to compute (200 characters of fractions); a 128-token reply
# holds at most ~64 claims (each needs an '=' and a digit), so this never bites on one.
MAX_CLAIMS = 256

_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
_SPELLINGS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "$": " "})
# 3 x 4 -> 3 * 4. Tried only right after a digit or ')'; each \s* meets a character it
# cannot match ([xX], or the lookahead's [\d(]), so backtracking steps once per space.
_TIMES = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # fixed width
# Anchored at the start; every quantifier is followed by a character it cannot match.
_NUMBERING = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s+", re.IGNORECASE)
# A unit after a number ("5 apples + 3"): spaces, a letter, then letters, apostrophes and
# spaces; `_drop_units` checks the words. \s+ stops at a letter, the last run ends the match.
_UNIT_RUN = re.compile(r"(?<=\d)\s+[A-Za-z][A-Za-z'\s]*")
_UNIT_FOLLOWERS = frozenset("-+*/=)")
_EXPRESSION_RUN = re.compile(r"[\d.\s()+\-*/]+")  # what a side of a claim is made of
_DIGIT = re.compile(r"\d")


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
    if len(expression) > MAX_LINE_CHARS:
        raise ExpressionError("expression is too long")
    text = _TIMES.sub("*", expression.translate(_SPELLINGS)).replace(",", "").strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > 200:
        raise ExpressionError("expression is too long")
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS and (
            text[0] != "0" or text == "0"):
        return Fraction(int(text))  # a plain integer, as ast would read it, without parsing
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


def _drop_units(line: str) -> str:
    """Remove the words between a number and the operator after it: '5 apples + 3' -> '5 + 3'.

    The words must follow the number across whitespace, each must start with a letter
    (then letters and apostrophes), and only whitespace may separate the last one from an
    operator, '=' or ')'. Linear: every character after a digit is read at most twice.
    """
    pieces, kept = [], 0
    for run in _UNIT_RUN.finditer(line):
        words = run.group().rstrip()
        if (line[run.end():run.end() + 1] in _UNIT_FOLLOWERS
                and all(word[0] != "'" for word in words.split())):
            pieces.append(line[kept:run.start()])
            kept = run.start() + len(words)
    return "".join(pieces) + line[kept:] if pieces else line


def _clean(line: str) -> str:
    """Normalise how models write arithmetic: numbering, 'x', '$', 1,000, units."""
    line = _NUMBERING.sub("", line.translate(_SPELLINGS))
    line = _TIMES.sub(" * ", _THOUSANDS.sub("", line))
    return _drop_units(line)


def _chains(line: str) -> list[list[str]]:
    """The sides of every chain 'a = b (= c ...)' in a cleaned line, left to right.

    A side is a maximal run of digits, whitespace, '.', '(', ')' and + - * / holding at
    least one digit; a chain is two or more sides joined by single '=' signs. Each run is
    found once by `_EXPRESSION_RUN` and looked at no more than twice.
    """
    runs = [(m.start(), m.end(), _DIGIT.search(line, m.start(), m.end()) is not None)
            for m in _EXPRESSION_RUN.finditer(line)]
    chains, i = [], 0
    while i < len(runs):
        j = i
        while (runs[j][2] and j + 1 < len(runs) and runs[j + 1][2]
               and runs[j + 1][0] == runs[j][1] + 1 and line[runs[j][1]] == "="):
            j += 1
        if j > i:
            chains.append([line[start:end] for start, end, _ in runs[i:j + 1]])
        i = j + 1
    return chains


def _value(text: str) -> tuple[Fraction | None, str]:
    try:
        return evaluate(text), ""
    except ExpressionError as exc:
        return None, str(exc)


def worked_lines(text: str) -> list[Claim]:
    """Every arithmetic claim ('a op b = c', chains too) in `text`, checked exactly.

    A line longer than `MAX_LINE_CHARS` that holds an '=', or more than `MAX_CLAIMS`
    claims, raise ExpressionError naming the line and the cap; a line without '=' holds
    no claim.
    """
    claims = []
    for number, line in enumerate(text.splitlines(), 1):
        if "=" not in line:
            continue
        if len(line) > MAX_LINE_CHARS:
            raise ExpressionError(f"line {number} is too long to verify ({len(line)} chars, "
                                  f"cap {MAX_LINE_CHARS})")
        for chain in _chains(_clean(line)):
            parts = [part.strip(" .") for part in chain]
            for left, right in zip(parts, parts[1:], strict=False):
                if len(claims) == MAX_CLAIMS:
                    raise ExpressionError(f"too many claims to verify: line {number} goes past "
                                          f"the cap of {MAX_CLAIMS}")
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
    try:
        claims = worked_lines(reasoning)
    except ExpressionError as exc:  # a line too long, or too many claims, to verify
        return Verdict(False, 0.0, str(exc))
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
