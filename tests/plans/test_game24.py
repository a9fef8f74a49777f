"""game24 on fake generators: the search grows its graph, proposals are checked exactly."""

from __future__ import annotations

import re

import pytest

from plans.game24 import plan, puzzles, reaches_24, solvable
from reasoner import Engine, InputError
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
    assert (answer.calls, answer.proposals) == (7, 7)  # 4 proposal + 3 value calls; 3+2+2 lines


async def test_an_illegal_move_is_rejected_by_the_check() -> None:
    run = await Engine(generators=fake_generators(lm=FakeLM(proposer))).run(
        plan, {"numbers": [4, 9, 10, 13]})
    first = run.output("solve/1")
    assert "10 - 4 = 7 (left: 7 9 13): 10 - 4 is 6, not 7" in first.rejected
    assert "2 + 2 = 4 (left: 4 4): 2 is not among the numbers left" in first.rejected
    assert [s.numbers for s in first.kept] == [["4", "10", "4"]]


async def test_a_spent_budget_fails_the_run_with_the_reason() -> None:
    lm = FakeLM(lambda prompt, seed: "13 + 13 = 26 (left: 26)")
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"numbers": [4, 9, 10, 13]})
    assert run.status == "failed"
    assert run.error == "step 'answer' failed: exactly_24: no expression reaches 24"
    assert run.output("solve/1").kept == [] and "solve/1/2" not in run.steps


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
