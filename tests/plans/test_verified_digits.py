"""verified-digits on fake generators: the happy path and every failure path."""

from __future__ import annotations

import numpy as np
import pytest

from plans.verified_digits import (
    SAMPLES,
    Problem,
    answer_and_confidence,
    one_chain,
    parse_solution,
    plan,
)
from reasoner import Engine, InputError
from reasoner.testing import FakeGAN, FakeLM, FakeVAE, fake_generators

QUESTION = "Tom has 12 apples. Tom buys 7 more apples. How many apples does Tom have now?"


def scripted(*replies: str) -> FakeLM:
    remaining = list(replies)
    return FakeLM(lambda prompt, seed: remaining.pop(0) if len(remaining) > 1 else remaining[0])


async def test_a_correct_answer_is_drawn_and_harmonized() -> None:
    engine = Engine(generators=fake_generators(lm=scripted("12 + 7 = 19\nAnswer: 19")))
    run = await engine.run(plan, {"question": QUESTION}, seed=1)
    assert run.status == "succeeded", run.error
    result = run.output("harmonize")
    assert (result.answer, result.labels) == (19, [1, 9])
    assert result.image.shape == (28, 56) and result.image.dtype == np.uint8
    assert run.steps["render"].checks[0].reason.startswith("reads back 19")


async def test_a_wrong_line_is_caught_and_that_sample_does_not_vote() -> None:
    lm = scripted("12 + 7 = 20\nAnswer: 20", "12 + 7 = 19\nAnswer: 19")
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"question": QUESTION})
    solve = run.steps["solve"]
    assert run.status == "succeeded" and run.output("solve").answer == 19
    assert [a.status for a in solve.attempts] == ["failed"] + ["passed"] * (SAMPLES - 1)
    assert solve.attempts[0].checks[0].reason == "wrong line: 12 + 7 = 20 (is 19)"
    assert solve.votes == {"19": SAMPLES - 1} and solve.confidence == (SAMPLES - 1) / SAMPLES
    assert answer_and_confidence(run) == "answer 19, confidence 0.88 (votes: 19 ×7)"
    assert len({seed for _, seed in lm.calls}) == SAMPLES


async def test_true_lines_that_leave_a_number_of_the_question_out_do_not_pass() -> None:
    lm = scripted("12 + 1 = 13\nAnswer: 13")
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"question": QUESTION})
    solve = run.steps["solve"]
    assert run.status == "degraded" and run.steps["solve"].status == "degraded"
    assert solve.attempts[0].checks[0].passed
    assert solve.attempts[0].checks[1].reason == "the reasoning never uses 7"


async def test_samples_that_never_agree_are_kept_as_a_degraded_best_effort() -> None:
    def disagreeing(prompt: object, seed: int) -> str:
        extra = seed % 1000
        return f"12 + 7 = 19\n19 + {extra} = {19 + extra}\nAnswer: {19 + extra}"

    run = await Engine(generators=fake_generators(lm=FakeLM(disagreeing))).run(
        plan, {"question": QUESTION})
    solve = run.steps["solve"]
    assert run.status == "degraded" and solve.status == "degraded"
    assert len(solve.attempts) == 2 * SAMPLES and set(solve.votes.values()) == {1}
    assert run.output("harmonize").answer == run.output("solve").answer  # drawn all the same
    assert run.steps["harmonize"].status == "succeeded"


async def test_a_vote_with_no_passing_sample_keeps_the_best_attempt_as_degraded() -> None:
    lm = scripted("I think the answer is 19.")
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"question": QUESTION})
    solve = run.steps["solve"]
    assert run.status == "degraded" and solve.status == "degraded"
    assert len(solve.attempts) == 2 * SAMPLES and solve.votes == {}
    assert "no worked line" in solve.standing.reason
    assert run.output("harmonize").answer == 19


async def test_a_misread_digit_is_redrawn_with_a_new_seed() -> None:
    first = {"seed": None}

    def misdraw(seed: int, label: int) -> int | None:
        first["seed"] = first["seed"] if first["seed"] is not None else seed
        return 7 if seed == first["seed"] and label == 1 else None

    generators = fake_generators(lm=scripted("12 + 7 = 19\nAnswer: 19"), gan=FakeGAN(misdraw))
    run = await Engine(generators=generators).run(plan, {"question": QUESTION})
    render = run.steps["render"]
    assert run.status == "succeeded"
    assert [a.status for a in render.attempts] == ["failed", "succeeded"]
    assert render.attempts[0].checks[0].reason.startswith("digit 1 (1) read as 7")


async def test_harmonize_that_breaks_the_digits_backtracks_into_render() -> None:
    class SmudgingVAE(FakeVAE):
        decodes = 0

        async def decode(self, latents, labels):  # noqa: ANN001, ANN201
            self.decodes += 1
            images = await super().decode(latents, labels)
            return np.ones_like(images) if self.decodes == 1 else images

    generators = fake_generators(lm=scripted("6 * 7 = 42\nAnswer: 42"), vae=SmudgingVAE())
    run = await Engine(generators=generators).run(plan, {"question": "What is 6 times 7?"})
    assert run.status == "succeeded"
    assert [(b.failed, b.target) for b in run.backtracks] == [("harmonize", "render")]
    assert run.steps["render"].generation == 1 and len(run.steps["solve"].attempts) == SAMPLES


async def test_an_expression_needs_no_language_model() -> None:
    lm = FakeLM()
    run = await Engine(generators=fake_generators(lm=lm)).run(plan, {"expression": "6 * (3 + 4)"})
    assert run.status == "succeeded" and run.output("harmonize").answer == 42
    assert lm.calls == []


async def test_an_expression_that_cannot_be_drawn_fails_with_the_reason() -> None:
    run = await Engine(generators=fake_generators()).run(plan, {"expression": "3 - 10"})
    assert run.status == "failed" and "answer -7 is not a whole number from 0" in run.error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"question": "How many apples are left?"}, "field 'question': Value error, a question must "
                                                     "contain at least one number"),
        ({"expression": "2 ** 8"}, "field 'expression': Value error, Pow is not allowed"),
        ({"question": "1 + 1?", "expression": "1 + 1"}, "exactly one of 'question' or 'expression'"),
        ({}, "exactly one of"),
    ],
)
async def test_bad_problems_are_rejected_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        await Engine(generators=fake_generators()).run(plan, data)
    assert Problem.model_fields.keys() == {"question", "expression"}


@pytest.mark.parametrize(("reasoning", "verdict"), [
    ("12 + 7 = 19\n12 + 1 = 13\nAnswer: 13", "12 + 7 = 19 is never used again"),
    ("4 * 6 = 24\n24 - 5 = 19\nAnswer: 19", "2 line(s) in one chain"),
    ("each gets 24 / 8 = 3 pencils\nEach gets 24 / 8 = 3\nAnswer: 3", "1 line(s) in one chain"),
])
def test_worked_lines_must_form_one_chain(reasoning: str, verdict: str) -> None:
    result = one_chain(parse_solution(reasoning))
    assert result.reason == verdict and result.passed == verdict.endswith("one chain")
