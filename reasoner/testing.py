"""Fast, deterministic fake generators with the interfaces of the real ones.

Engine and plan tests run on these in milliseconds, without torch. They are
coherent with each other, so chains behave like the real thing: the fake GAN
draws seven-segment digits, the fake classifier reads them back by template
matching, the fake VAE decodes a latent into the glyph of its (soft) label,
and the fake embedder scores texts by the words they share. Each takes hooks
to script failures (a misdrawn digit, a bad LM answer) for the failure paths, and
the fake LM's ranking of options can be scripted too.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from re import _constants as sre  # the stdlib's regex parser, already loaded by `re`
from re import _parser as sre_parse
from typing import Any

import numpy as np
from pydantic import BaseModel

from reasoner.handles import HANDLES, Choices, ProjectHandles, Prompt, check_options
from reasoner.run import Run, excerpt

# Seven segments (a top, b top-right, c bottom-right, d bottom, e bottom-left, f top-left,
# g middle) as (row0, col0, row1, col1) boxes on a 28x28 canvas.
_SEGMENTS = {
    "a": (4, 8, 7, 20),
    "b": (4, 17, 14, 20),
    "c": (14, 17, 24, 20),
    "d": (21, 8, 24, 20),
    "e": (14, 8, 24, 11),
    "f": (4, 8, 14, 11),
    "g": (12, 8, 15, 20),
}
_DIGITS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def glyph(digit: int) -> np.ndarray:
    """The (28, 28) float32 seven-segment template of a digit."""
    image = np.zeros((28, 28), np.float32)
    for segment in _DIGITS[digit]:
        r0, c0, r1, c1 = _SEGMENTS[segment]
        image[r0:r1, c0:c1] = 1.0
    return image


_GLYPHS = np.stack([glyph(d) for d in range(10)])  # (10, 28, 28)


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


async def _tick() -> None:
    await asyncio.sleep(0)  # a real generator always yields to the loop


@dataclass
class FakeGeneration:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


def _prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(message["content"] for message in prompt)


class FakeLM:
    """`generate` answers with `respond(prompt, seed)`; `score` and `choose` prefer the
    options that share words with the prompt, or follow `prefer(prompt, option)` when given.

    With `regex`, a scripted reply that does not match it is replaced by a string drawn
    from the regex by the seed, as constrained decoding would never produce it.
    """

    def __init__(
        self,
        respond: Callable[[str, int], str] | None = None,
        prefer: Callable[[str, str], float] | None = None,
    ) -> None:
        self.respond = respond or (lambda prompt, seed: f"reply {seed % 1000} to: {prompt[-40:]}")
        self.prefer = prefer or _shared_words
        self.calls: list[tuple[str, int]] = []

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        schema: type[BaseModel] | None = None,
        regex: str | None = None,
        system: str | None = None,
    ) -> FakeGeneration:
        if schema is not None and regex is not None:
            raise ValueError("give schema or regex, not both")
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {regex!r}: {exc}") from None
        await _tick()
        text = _prompt_text(prompt)
        self.calls.append((text, seed))
        reply = self.respond(text, seed)
        if regex is not None and re.fullmatch(regex, reply) is None:
            reply = draw_from_regex(regex, seed)
        for marker in stop or ():
            reply = reply.split(marker, 1)[0]
        words = reply.split()
        if len(words) > max_new_tokens:
            reply, reason = " ".join(words[:max_new_tokens]), "length"
        else:
            reason = "stop"
        if schema is not None:
            schema.model_validate_json(reply)
        if regex is not None and re.fullmatch(regex, reply) is None:
            raise ValueError(f"completion {reply!r} does not match regex {regex!r}: "
                             f"cut short by max_new_tokens={max_new_tokens} or a stop string")
        return FakeGeneration(reply, len(text.split()), min(len(words), max_new_tokens), reason)

    async def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        await _tick()
        text = _prompt_text(prompt)
        return [self.prefer(text, c) for c in continuations]

    async def choose(
        self, prompt: Prompt, options: Sequence[str], *, system: str | None = None
    ) -> Choices:
        check_options(options)
        text = _prompt_text(prompt) if system is None else f"{system}\n{_prompt_text(prompt)}"
        logprobs = await self.score(text, options)
        tokens = [len(option.split()) for option in options]
        return Choices.rank(options, logprobs, tokens, len(text.split()))


def _shared_words(prompt: str, option: str) -> float:
    """A log-probability stand-in: words shared with the prompt, less 0.1 per word."""
    vocabulary = set(re.findall(r"\w+", prompt.lower()))
    return sum(word in vocabulary for word in re.findall(r"\w+", option.lower())) - 0.1 * len(
        option.split()
    )


_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
}


def draw_from_regex(regex: str, seed: int, *, tries: int = 100) -> str:
    """A string that fully matches `regex`, drawn by `seed` (ValueError if none is found).

    A seeded walk over the regex's parse tree (Python's own parser): each alternative,
    repeat count and character is picked at random among what the pattern allows, repeats
    of unbounded ones capped at three more than their minimum, characters from printable
    ASCII or the ranges the pattern names. Each draw is checked against the regex, so
    what the walk cannot honour (lookarounds, anchors inside) is drawn again, then refused.
    """
    rng = random.Random(seed)
    tree = sre_parse.parse(regex)
    for _ in range(tries):
        text = _draw(tree, rng, {})
        if re.fullmatch(regex, text) is not None:
            return text
    raise ValueError(f"FakeLM drew no string matching regex {regex!r} in {tries} tries")


def _draw(items: Any, rng: random.Random, groups: dict[int, str]) -> str:
    """A string for a parsed (sub)pattern; `groups` collects what each group drew."""
    out = []
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            out.append(_pick(rng, [c for c in _PRINTABLE if ord(c) != arg]))
        elif op is sre.ANY:
            out.append(rng.choice(_PRINTABLE))
        elif op is sre.IN:
            out.append(_draw_in(arg, rng))
        elif op is sre.BRANCH:
            out.append(_draw(rng.choice(arg[1]), rng, groups))
        elif op is sre.SUBPATTERN:
            group, *_, sub = arg
            text = _draw(sub, rng, groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = arg
            out.extend(_draw(sub, rng, groups) for _ in range(rng.randint(low, min(high, low + 3))))
        elif op is sre.ATOMIC_GROUP:
            out.append(_draw(arg, rng, groups))
        elif op is sre.GROUPREF:
            out.append(groups.get(arg, ""))
        # Anchors and lookarounds add no characters; the caller's final check judges them.
    return "".join(out)


def _draw_in(items: Any, rng: random.Random) -> str:
    """One character of a set `[...]`: a member, or for `[^...]` a printable non-member."""

    def member(c: str) -> bool:
        return any(
            (op is sre.LITERAL and ord(c) == arg)
            or (op is sre.RANGE and arg[0] <= ord(c) <= arg[1])
            or (op is sre.CATEGORY and re.fullmatch(_CATEGORIES.get(arg, "(?!)"), c) is not None)
            for op, arg in items
        )

    if items[0][0] is sre.NEGATE:
        return _pick(rng, [c for c in _PRINTABLE if not member(c)])
    op, arg = rng.choice(items)
    if op is sre.LITERAL:
        return chr(arg)
    if op is sre.RANGE:
        return chr(rng.randint(*arg))
    return _pick(rng, [c for c in _PRINTABLE if member(c)])


def _pick(rng: random.Random, chars: Sequence[str]) -> str:
    """A random one of `chars`; none (a set nothing printable is in) draws nothing."""
    return rng.choice(chars) if chars else ""


class FakeGAN:
    """Seven-segment digits with seeded noise; `misdraw(seed, label)` can swap a digit."""

    def __init__(self, misdraw: Callable[[int, int], int | None] | None = None) -> None:
        self.misdraw = misdraw
        self.calls = 0

    async def generate(
        self, labels: Sequence[int], *, seed: int, shared_style: bool = True
    ) -> np.ndarray:
        await _tick()
        self.calls += 1
        rng = np.random.default_rng(seed)
        drawn = []
        for label in labels:
            if not 0 <= int(label) <= 9:
                raise ValueError(f"label {label} is not a digit 0-9")
            swapped = self.misdraw(seed, int(label)) if self.misdraw else None
            image = glyph(int(label) if swapped is None else swapped)
            drawn.append(np.clip(image * 0.9 + rng.random((28, 28), np.float32) * 0.1, 0, 1))
        return np.stack(drawn).astype(np.float32)  # (n, 28, 28)


@dataclass
class FakeClassification:
    labels: np.ndarray  # (n,)
    probs: np.ndarray  # (n, 10)


class FakeClassifier:
    """Reads images back by correlation with the seven-segment templates."""

    async def classify(self, images: np.ndarray) -> FakeClassification:
        await _tick()
        flat = np.asarray(images, np.float32).reshape(len(images), -1)  # (n, 784)
        templates = _GLYPHS.reshape(10, -1)
        distance = ((flat[:, None, :] - templates[None]) ** 2).mean(-1)  # (n, 10)
        logits = -distance * 250.0  # one segment apart is ~9 logits
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return FakeClassification(probs.argmax(1), probs.astype(np.float32))


class FakeVAE:
    """A 16-d latent: a fixed projection of the image; decoding draws the (soft) label's glyph."""

    z_dim = 16

    def __init__(self) -> None:
        self._projection = (
            np.random.default_rng(0).standard_normal((784, self.z_dim)).astype(np.float32) / 28
        )

    async def encode(self, images: np.ndarray, labels: Sequence[int]) -> np.ndarray:
        await _tick()
        return np.asarray(images, np.float32).reshape(len(images), -1) @ self._projection  # (n, 16)

    async def decode(self, latents: np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        await _tick()
        soft = np.asarray(labels)
        if soft.ndim == 1:
            soft = np.eye(10, dtype=np.float32)[soft.astype(int)]
        base = np.einsum("nk,khw->nhw", soft.astype(np.float32), _GLYPHS)  # (n, 28, 28)
        style = np.tanh(np.asarray(latents, np.float32).sum(1))[:, None, None] * 0.05
        return np.clip(base * 0.9 + style + 0.05, 0, 1).astype(np.float32)

    async def interpolate(
        self, a_latent: np.ndarray, b_latent: np.ndarray, steps: int, labels_a: int, labels_b: int
    ) -> np.ndarray:
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]  # (steps, 1)
        a, b = (
            np.asarray(a_latent, np.float32).reshape(1, -1),
            np.asarray(b_latent, np.float32).reshape(1, -1),
        )
        eye = np.eye(10, dtype=np.float32)
        return await self.decode(a + t * (b - a), eye[labels_a] + t * (eye[labels_b] - eye[labels_a]))


class FakeEmbedder:
    """Hashed bag-of-words vectors: texts that share words are similar."""

    dim = 384

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        await _tick()
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, _stable(word) % self.dim] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    async def similarity(self, a: str, b: str) -> float:
        vectors = await self.embed([a, b])
        return float(vectors[0] @ vectors[1])


def fake_generators(**overrides: Any) -> ProjectHandles:
    """All five fakes by their `ctx` names; pass e.g. `lm=FakeLM(respond)` to script one."""
    unknown = set(overrides) - set(HANDLES)
    if unknown:
        raise KeyError(f"no fake generator named {sorted(unknown)}; fakes: {sorted(HANDLES)}")
    fakes: ProjectHandles = {
        "lm": FakeLM(),
        "gan": FakeGAN(),
        "vae": FakeVAE(),
        "classifier": FakeClassifier(),
        "embedder": FakeEmbedder(),
    }
    fakes.update(overrides)  # type: ignore[typeddict-item]  # an override is any implementation
    return fakes


def assert_coherent(run: Run, min_step: float | None = None, min_edge: float | None = None,
                    *, allow_degraded: bool = False) -> None:
    """Fail, naming the step or edge, its score, the threshold, why, and what it made.

    Every step must have succeeded (or, with `allow_degraded`, be degraded: a
    best effort kept when its checks could not be met); with `min_step`, every
    step with checks must score at least that; with `min_edge`, every scored
    edge must too.
    """
    report = run.coherence()
    problems = []
    for step in report.steps:
        output = run.steps[step.step].output
        if step.status == "degraded" and not allow_degraded:
            problems.append(f"step {step.step!r} degraded (its best attempt was kept, failing "
                            f"{'; '.join(step.reasons)}); output: {excerpt(output)}")
        elif step.status not in ("succeeded", "degraded"):
            problems.append(f"step {step.step!r} {step.status}: {'; '.join(step.reasons) or run.error}")
        elif min_step is not None and step.score is not None and step.score < min_step:
            problems.append(
                f"step {step.step!r} scores {step.score:.3f} < min_step {min_step:.3f} "
                f"({'; '.join(step.reasons)}); output: {excerpt(output)}"
            )
    for edge in report.edges:
        if min_edge is not None and edge.score < min_edge:
            problems.append(
                f"edge {edge.producer!r} -> {edge.consumer!r} scores {edge.score:.3f} < min_edge "
                f"{min_edge:.3f} ({edge.metric}: {edge.detail}); "
                f"output of {edge.consumer!r}: {excerpt(run.steps[edge.consumer].output)}"
            )
    if problems:
        raise AssertionError(f"run {run.run_id} of plan {run.plan!r} is not coherent:\n  "
                             + "\n  ".join(problems))
