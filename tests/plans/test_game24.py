"""game24 on fake generators: the search grows its graph, proposals are checked exactly."""

from __future__ import annotations

import random
import re
import time

import pytest

from plans.game24 import (
    Puzzle,
    parse_move,
    plan,
    puzzles,
    reaches_24,
    solvable,
    start,
    verify_move,
)
from reasoner import Engine, InputError
from reasoner.arithmetic import MAX_LINE_CHARS
from reasoner.testing import FakeLM, fake_generators

MOVES = {  # what the fake model proposes for each state of 4 9 10 13
    "4 9 10 13": "13 - 9 = 4 (left: 4 4 10)\n10 - 4 = 7 (left: 7 9 13)\n2 + 2 = 4 (left: 4 4)",
    "4 10 4": "10 - 4 = 6 (left: 4 6)\n4 + 4 = 8 (left: 8 10)",
    "10 4 4": "10 - 4 = 6 (left: 4 6)",
    "4 6": "4 * 6 = 24 (left: 24)",
    "6 4": "4 * 6 = 24 (left: 24)",
}


def proposer(prompt: str, seed: int) -> str:
    numbers = re.findall(r"Input: ([\d /]+)\n", prompt)[-1].strip()
    return MOVES.get(numbers, "1 + 1 = 2 (left: 2)")


async def test_search_grows_levels_and_reaches_24() -> None:
    run = await Engine(generators=fake_generators(lm=FakeLM(proposer))).run(
        plan, {"numbers": [4, 9, 10, 13], "beam": 2}, seed=5)
    assert run.status == "succeeded", run.error
    answer = run.output("answer")
    assert answer.expression == "((13 - 9) * (10 - 4))" and answer.strategy == "search"
    levels = [name for name in run.steps if name.startswith("solve/")]
    assert levels == ["solve/1", "solve/1/2", "solve/1/2/3"]
    assert run.steps["answer"].checks[0].reason == "((13 - 9) * (10 - 4)) = 24"
    assert (answer.calls, answer.proposals) == (7, 4)  # 4 proposal + 3 value calls; 1+2+1 legal


async def test_an_illegal_move_is_rejected_by_the_check(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="reasoner.step")
    run = await Engine(generators=fake_generators(lm=FakeLM(proposer))).run(
        plan, {"numbers": [4, 9, 10, 13]})
    first = run.output("solve/1")
    assert "'10 - 4 = 7 (left: 7 9 13)': 10 - 4 is 6, not 7" in caplog.text
    assert "'2 + 2 = 4 (left: 4 4)': 2 is not among the numbers left" in caplog.text
    assert [c.state.numbers for c in first.children] == [["4", "10", "4"]]


async def test_a_spent_budget_fails_the_run_with_the_reason() -> None:
    lm = FakeLM(lambda prompt, seed: "13 + 13 = 26 (left: 26)")
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"numbers": [4, 9, 10, 13]})
    assert run.status == "failed"
    assert run.error == "step 'answer' failed: exactly_24: no expression reaches 24"
    assert run.output("solve/1").children == [] and "solve/1/2" not in run.steps
    assert run.output("solve/1").stop == "exhausted"


@pytest.mark.parametrize(("reply", "passed"), [("(10 - 4) * (13 - 9) = 24", True),
                                               ("(10 + 4) * (13 - 9)", False)])
async def test_direct_strategy_answers_in_one_call(reply: str, passed: bool) -> None:
    lm = FakeLM(lambda prompt, seed: reply)
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"numbers": [4, 9, 10, 13], "strategy": "direct"})
    assert (run.status == "succeeded") is passed and len(lm.calls) == 1
    if passed:
        assert run.output("answer").calls == 1
    else:
        assert run.error.endswith("(10 + 4) * (13 - 9) = 56, not 24")


async def test_random_strategy_spends_proposals_not_lm_calls() -> None:
    lm = FakeLM()
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"numbers": [1, 1, 4, 6], "strategy": "random", "budget": 300}, seed=2)
    answer = run.output("answer")
    assert lm.calls == [] and answer.calls == 0 and 0 < answer.proposals <= 300
    assert (run.status == "succeeded") == reaches_24([1, 1, 4, 6], answer.expression).passed


def test_final_answers_are_checked_exactly() -> None:
    assert reaches_24([4, 9, 10, 13], "(10 - 4) * (13 - 9)").passed
    assert "uses [4, 4, 9, 9, 13]" in reaches_24([4, 9, 10, 13], "(9 - 4) * 4 + 13 - 9").reason
    assert reaches_24([4, 9, 10, 13], "4 + 9 + 10 + 13").reason == "4 + 9 + 10 + 13 = 36, not 24"
    assert reaches_24([3, 3, 8, 8], "8 / (3 - 8 / 3)").passed  # needs exact fractions
    assert "not arithmetic" in reaches_24([1, 2, 3, 4], "__import__('os')").reason


def test_shipped_puzzles_are_solvable_and_reproducible() -> None:
    first = puzzles(5, seed=1)
    assert first == puzzles(5, seed=1) and len(first) == 5
    assert all(solvable(p) and all(1 <= n <= 13 for n in p) for p in first)
    assert not solvable([1, 1, 1, 1])


@pytest.mark.parametrize(
    ("data", "message"),
    [({"numbers": [1, 2, 3]}, "field 'numbers': List should have at least 4 items"),
     ({"numbers": [1, 14, 3, 4]}, "field 'numbers': Value error, number 2 is 14"),
     ({"numbers": [1, 2, 3, 4], "strategy": "magic"}, "field 'strategy'")],
)
async def test_bad_inputs_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await Engine(generators=fake_generators()).run(plan, data)


@pytest.mark.parametrize(("line", "parts"), [
    ("2 + 8 = 10 (left: 8 10 14)", ("2", "+", "8", "10")),
    ("8/2 = 4", ("8", "/", "2", "4")),  # a '/' inside a term splits it only when it must
    ("7/2 * 2 = 7", ("7/2", "*", "2", "7")),
    ("1. -3 - -4 = 1", ("-3", "-", "-4", "1")),
    ("so 3x4=12", ("3", "x", "4", "12")),
    ("14 ÷ 2 = 7 and 8 - 2 = 6", ("14", "÷", "2", "7")),
    ("a = 3 + 4 = 7", ("3", "+", "4", "7")),
    ("3 + 4 = x", None), ("= 3 + 4", None), ("3 4 = 7", None),
])
def test_moves_are_parsed_into_their_terms(line: str, parts) -> None:
    assert parse_move(line) == parts


OLD_MOVE = re.compile(r"(-?[\d./]+)\s*([-+*/×x÷])\s*(-?[\d./]+)\s*=\s*(-?[\d./]+)")


@pytest.mark.parametrize("alphabet", ["12./-+*x× =a", "1/-= ", "9./-÷ =(\t"])
def test_parse_move_finds_what_the_old_regex_found(alphabet: str) -> None:
    rng = random.Random(alphabet)  # the old regex is the oracle on inputs too short to be slow
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        found = OLD_MOVE.search(line)
        assert parse_move(line) == (found.groups() if found else None), line


@pytest.mark.parametrize(("line", "reason"), [
    ("1/" * 1500 + "1 = 1", "a term is not a number"),  # the old regex took ~6 s on this
    ("1/" * 2000, "not of the form 'a op b = c'"),
    ("4 / " + "/" * 2000 + " 9 = 1", "a term is not a number"),  # a = "///...", as before
    ("1 " * 2000 + "13 - 9 = 4", "legal"),
    ("- " * 2000 + "13 - 9 = 4", "legal"),
    ("-" * 2000 + "13 - 9 = 4", "-13 is not among the numbers left"),
])
def test_adversarial_moves_are_checked_exactly_and_fast(line: str, reason: str) -> None:
    state = start(Puzzle(numbers=[4, 9, 10, 13]))
    copies = 100_000 // (len(line) + 1)
    started = time.perf_counter()
    verdicts = [verify_move(state, one)[0] for one in [line] * copies]
    elapsed = time.perf_counter() - started
    assert {v.reason for v in verdicts} == {reason}
    assert elapsed < 1.0, f"{copies * len(line)} chars took {elapsed:.2f} s"


def test_a_move_line_over_the_cap_gets_a_clear_verdict() -> None:
    line = "1/" * 3000 + "1 = 1"
    verdict, child = verify_move(start(Puzzle(numbers=[4, 9, 10, 13])), line)
    assert child is None and not verdict.passed
    assert verdict.reason == f"line is too long to verify ({len(line)} chars, cap {MAX_LINE_CHARS})"
