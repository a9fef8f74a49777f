"""The fake LM's `choose` and `regex=`: what engine and plan tests rely on when they script them.

Plans that rank options or constrain text to a pattern run on `FakeLM` in engine tests; these
pin that the fake ranks as `score` does, lets a test script the ranking, honours a regex the
scripted reply misses, and fails as the real handle does.
"""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from reasoner import Choice, Choices
from reasoner.testing import FakeLM, draw_from_regex


async def test_choose_ranks_by_shared_words_as_score_does() -> None:
    lm = FakeLM()
    prompt = "What colour is the sky?"
    options = ["green grass", "the sky is blue", "sky"]
    choices = await lm.choose(prompt, options)
    assert [c.text for c in choices] == ["the sky is blue", "sky", "green grass"]
    scores = dict(zip(options, await lm.score(prompt, options), strict=True))
    assert [c.logprob for c in choices] == [scores[c.text] for c in choices]
    assert [c.tokens for c in choices] == [4, 1, 2]
    assert choices.prompt_tokens == 5 + 4 + 1 + 2


async def test_choices_behave_as_a_ranked_sequence() -> None:
    choices = await FakeLM().choose("a b", ["x", "a", "y"])
    assert isinstance(choices, Choices) and len(choices) == 3
    assert choices.best == choices[0] == Choice("a", 0.9, 1)
    assert list(choices) == list(choices.choices)
    # "x" and "y" tie: they keep the order they were given in.
    assert [c.text for c in choices] == ["a", "x", "y"]
    assert [c.text for c in await FakeLM().choose("a b", ["y", "a", "x"])] == ["a", "y", "x"]


async def test_prefer_scripts_both_choose_and_score() -> None:
    lm = FakeLM(prefer=lambda prompt, option: -float(len(option)) if "short" in prompt else 0.0)
    choices = await lm.choose("pick the short one", ["medium", "tiny", "a longer option"])
    assert [c.text for c in choices] == ["tiny", "medium", "a longer option"]
    assert await lm.score("pick the short one", ["tiny", "medium"]) == [-4.0, -6.0]
    assert await lm.score("anything else", ["tiny", "medium"]) == [0.0, 0.0]


async def test_choose_sees_the_system_prompt() -> None:
    lm = FakeLM()
    plain = await lm.choose("Pick one.", ["red", "blue"])
    steered = await lm.choose("Pick one.", ["red", "blue"], system="The answer is blue")
    assert plain.best.text == "red" and steered.best.text == "blue"


@pytest.mark.parametrize(
    ("options", "problem"),
    [([], "non-empty"), ("ab", "non-empty"), (["a", ""], "option 1 is empty"), (["a", "a"], "twice")],
)
async def test_choose_refuses_bad_options(options: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        await FakeLM().choose("prompt", options)


async def test_a_reply_that_matches_the_regex_is_kept() -> None:
    lm = FakeLM(lambda prompt, seed: "12 + 3")
    out = await lm.generate("add", regex=r"\d+ [+*/-] \d+", seed=5)
    assert out.text == "12 + 3"


@pytest.mark.parametrize("regex", [r"(a|b|c)", r"[0-9]{1,3}", r"\d+ [+*/-] \d+", r"[^abc]x\s?"])
async def test_a_reply_that_misses_the_regex_is_replaced_by_one_that_matches(regex: str) -> None:
    lm = FakeLM(lambda prompt, seed: "this reply matches nothing!!")
    texts = [(await lm.generate("q", regex=regex, seed=seed)).text for seed in range(8)]
    assert all(re.fullmatch(regex, text) for text in texts), texts
    again = [(await lm.generate("q", regex=regex, seed=seed)).text for seed in range(8)]
    assert again == texts  # decided by the seed
    assert len(set(texts)) > 1  # and different seeds draw different strings


def test_draw_from_regex_honours_groups_and_refuses_the_impossible() -> None:
    assert re.fullmatch(r"(?P<w>[a-z]{2})-(?P=w)", draw_from_regex(r"(?P<w>[a-z]{2})-(?P=w)", 3))
    with pytest.raises(ValueError, match="drew no string"):
        draw_from_regex(r"[^\s\S]", 0)


class Answer(BaseModel):
    value: int


async def test_regex_fails_as_the_real_handle_does() -> None:
    lm = FakeLM(lambda prompt, seed: "one two three four five six")
    with pytest.raises(ValueError, match="not both"):
        await lm.generate("q", regex="a", schema=Answer)
    with pytest.raises(ValueError, match=re.escape("'[0-9'")):
        await lm.generate("q", regex="[0-9")
    assert lm.calls == []  # refused before anything ran
    with pytest.raises(ValueError, match="does not match"):
        await lm.generate("q", regex=r"(\w+ ){5}\w+", max_new_tokens=3)
