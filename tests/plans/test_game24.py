"""game24 on fake generators: legal moves by construction, choose-ranked proposals, a search
that reaches 24 or spends its budget, random moves counted alike, the hard puzzle set."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from plans.game24 import (
    HARD,
    Puzzle,
    State,
    expression_or_spending,
    hard_puzzles,
    legal_moves,
    plan,
    random_success,
    reaches_24,
    start,
)
from reasoner import Engine, InputError
from reasoner.testing import FakeLM, fake_generators

PATH = ("13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 4 6)")  # then 4 * 6 = 24


def along_path(prompt: str, option: str) -> float:
    """The fake model's log-probabilities: the moves of PATH first, every other option alike."""
    return 0.0 if option in PATH else -1.0


def solvable(numbers: list[Fraction]) -> bool:
    """An oracle independent of `legal_moves`: every ordered pair, every operator."""
    if len(numbers) == 1:
        return numbers[0] == 24
    for i, j in itertools.permutations(range(len(numbers)), 2):
        rest = [v for k, v in enumerate(numbers) if k not in (i, j)]
        a, b = numbers[i], numbers[j]
        made = [a + b, a - b, a * b] + ([a / b] if b else [])
        if any(solvable([*rest, c]) for c in made):
            return True
    return False


def state(*numbers: int) -> State:
    return State(numbers=[str(n) for n in numbers], exprs=[str(n) for n in numbers])


def test_legal_moves_are_every_move_once() -> None:
    assert [c.moves[-1] for c in legal_moves(state(2, 3))] == [
        "2 + 3 = 5 (left: 5)", "2 * 3 = 6 (left: 6)", "2 - 3 = -1 (left: -1)",
        "3 - 2 = 1 (left: 1)", "2 / 3 = 2/3 (left: 2/3)", "3 / 2 = 3/2 (left: 3/2)"]
    # the same numbers left once: 4 - 4 and 4 / 4 in one order only, 0 + 5 = 5 - 0, 0 * 5 = 0 / 5
    assert [c.numbers for c in legal_moves(state(4, 4))] == [["8"], ["16"], ["0"], ["1"]]
    assert [c.moves[-1] for c in legal_moves(state(0, 5))] == [  # never 5 / 0
        "0 + 5 = 5 (left: 5)", "0 * 5 = 0 (left: 0)", "0 - 5 = -5 (left: -5)"]
    for numbers in ([4, 9, 10, 13], [1, 1, 4, 6], [3, 3, 8, 8], [5, 5, 5, 5]):
        children = legal_moves(start(Puzzle(numbers=numbers)))
        left = [tuple(map(Fraction, c.numbers)) for c in children]
        values = list(map(Fraction, numbers))
        every = {tuple(sorted([*(v for k, v in enumerate(values) if k not in (i, j)), c]))
                 for i, j in itertools.permutations(range(4), 2)
                 for c in (values[i] + values[j], values[i] - values[j], values[i] * values[j],
                           values[i] / values[j])}
        assert len(left) == len(set(left)) and set(left) == every, numbers
        assert all(c.numbers == sorted(c.numbers, key=Fraction) for c in children)
    assert len(legal_moves(start(Puzzle(numbers=[4, 9, 10, 13])))) == 36


async def test_the_lm_ranks_the_legal_moves_and_the_best_are_proposed() -> None:
    lm = FakeLM(prefer=along_path)
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"numbers": [4, 9, 10, 13], "branch": 2, "budget": 2}, seed=1)
    first = run.output("solve/1")
    assert first.spent.proposals == 2 and first.stop == "proposals"
    lines = [c.state.moves[-1] for c in first.children]
    assert PATH[0] in lines and len(lines) == 2
    assert lines[1 - lines.index(PATH[0])] == "4 + 9 = 13 (left: 10 13 13)"  # ties: the first


async def test_search_reaches_24_through_its_levels() -> None:
    run = await Engine(generators=fake_generators(lm=FakeLM(prefer=along_path))).run(
        plan, {"numbers": [4, 9, 10, 13], "branch": 1}, seed=5)
    assert run.status == "succeeded", run.error
    answer = run.output("answer")
    assert answer.expression == "((13 - 9) * (10 - 4))" and answer.strategy == "search"
    assert [name for name in run.steps if name.startswith("solve/")] == [
        "solve/1", "solve/1/2", "solve/1/2/3"]
    assert run.steps["answer"].checks[0].reason == "((13 - 9) * (10 - 4)) = 24"
    # 1 + 1 proposed by choose, the 6 moves of "4 6" without it; 2 choose + 2 value calls
    assert (answer.proposals, answer.calls, answer.stop) == (8, 4, "goal")
    assert expression_or_spending(run) == "((13 - 9) * (10 - 4)) = 24, 8 proposals, 4 LM calls " \
                                          "(search)"


async def test_a_search_that_spends_its_budget_unsolved_fails_naming_it() -> None:
    assert random_success([1, 2, 5, 11]) == 0
    lm = FakeLM()
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"numbers": [1, 2, 5, 11], "budget": 20}, seed=3)
    assert run.status == "failed"
    levels = [run.output(name) for name in run.steps if name.startswith("solve/")]
    last = levels[-1]
    assert last.stop == "proposals" and all(lv.stop is None for lv in levels[:-1])
    spent = last.spent.proposals
    assert levels[-2].spent.proposals < 20 <= spent < 20 + 6  # over by one level at most
    assert run.error == (f"step 'answer' failed: exactly_24: no expression reaches 24: the "
                         f"budget of 20 proposals is spent ({spent} proposed)")
    assert last.spent.lm_calls == run.compute.calls["lm"] > 0  # choose and score calls
    assert expression_or_spending(run) == (f"no expression reaches 24 after {spent} proposals, "
                                           f"{last.spent.lm_calls} LM calls (search)")


async def test_a_search_with_nothing_left_open_says_so() -> None:
    run = await Engine(generators=fake_generators()).run(
        plan, {"numbers": [1, 1, 1, 1], "budget": 100})
    last = run.output(max((n for n in run.steps if n.startswith("solve/")), key=len))
    assert run.status == "failed" and last.stop == "exhausted" and last.spent.proposals < 100
    assert run.error.endswith(f"no expression reaches 24: no state is left open after "
                              f"{last.spent.proposals} proposals")


async def test_random_moves_count_proposals_and_no_lm_calls() -> None:
    lm = FakeLM()
    engine = Engine(generators=fake_generators(lm=lm))
    run = await engine.run(plan, {"numbers": [1, 2, 5, 11], "strategy": "random", "budget": 7})
    assert run.status == "failed" and run.error.endswith("budget of 7 proposals is spent (7 proposed)")
    run = await engine.run(plan, {"numbers": [1, 1, 4, 6], "strategy": "random", "budget": 300},
                           seed=2)
    answer = run.output("answer")
    assert run.status == "succeeded" and answer.stop == "goal"
    assert lm.calls == [] and answer.calls == 0 and 3 <= answer.proposals <= 300
    assert answer.proposals % 3 == 0  # every walk is three moves; the last one reached 24


@pytest.mark.parametrize(("reply", "passed"), [("(10 - 4) * (13 - 9) = 24", True),
                                               ("(10 + 4) * (13 - 9)", False)])
async def test_direct_strategy_answers_in_one_call(reply: str, passed: bool) -> None:
    lm = FakeLM(lambda prompt, seed: reply)
    run = await Engine(generators=fake_generators(lm=lm)).run(
        plan, {"numbers": [4, 9, 10, 13], "strategy": "direct"})
    assert (run.status == "succeeded") is passed and len(lm.calls) == 1
    if passed:
        assert (run.output("answer").calls, run.output("answer").proposals) == (1, 1)
    else:
        assert run.error.endswith("(10 + 4) * (13 - 9) = 56, not 24")


def test_final_answers_are_checked_exactly() -> None:
    assert reaches_24([4, 9, 10, 13], "(10 - 4) * (13 - 9)").passed
    assert "uses [4, 4, 9, 9, 13]" in reaches_24([4, 9, 10, 13], "(9 - 4) * 4 + 13 - 9").reason
    assert reaches_24([4, 9, 10, 13], "4 + 9 + 10 + 13").reason == "4 + 9 + 10 + 13 = 36, not 24"
    assert reaches_24([3, 3, 8, 8], "8 / (3 - 8 / 3)").passed  # needs exact fractions
    assert "not arithmetic" in reaches_24([1, 2, 3, 4], "__import__('os')").reason


def test_random_success_is_the_exact_chance_of_random_moves() -> None:
    assert random_success([24]) == 1 and random_success([4, 6]) == pytest.approx(1 / 6)
    assert random_success([2, 2]) == 0 and random_success([1, 1, 1, 1]) == 0
    three = legal_moves(state(2, 3, 4))
    expected = sum(random_success(list(map(Fraction, c.numbers))) for c in three) / len(three)
    assert random_success([2, 3, 4]) == pytest.approx(expected) and expected > 0


def test_hard_puzzles_are_reproducible_solvable_and_hard() -> None:
    first = hard_puzzles(12, seed=1)
    assert first == hard_puzzles(12, seed=1) != hard_puzzles(12, seed=2)
    assert len(first) == 12 and len({tuple(p) for p in first}) == 12
    for numbers in first:
        assert all(1 <= n <= 13 for n in numbers) and solvable(list(map(Fraction, numbers)))
        assert 0 < random_success(numbers) < HARD
    with pytest.raises(ValueError, match="only 0 puzzles"):
        hard_puzzles(1, threshold=0)


@pytest.mark.parametrize(
    ("data", "message"),
    [({"numbers": [1, 2, 3]}, "field 'numbers': List should have at least 4 items"),
     ({"numbers": [1, 14, 3, 4]}, "field 'numbers': Value error, number 2 is 14"),
     ({"numbers": [1, 2, 3, 4], "strategy": "magic"}, "field 'strategy'"),
     ({"numbers": [1, 2, 3, 4], "branch": 0}, "field 'branch'")],
)
async def test_bad_inputs_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await Engine(generators=fake_generators()).run(plan, data)
