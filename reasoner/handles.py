"""What a step may call on each generator: one `typing.Protocol` per handle, defined once.

Three things implement these: the project's batching host (`generators.host`), the fakes in
`reasoner.testing`, and whatever generators a user brings to `Engine(generators=...)`.
Writing the interface down once, here, lets a type checker and `tests/engine/test_handles.py`
hold all of them to the same parameters, so the fakes that engine tests run on cannot drift
from the real handles. To bring your own models, implement the protocols of the names your
plans `use`. What a handle returns that the engine itself builds (`Choices` of `LM.choose`)
is defined here too, with the rule its arguments follow (`check_options`), so that every
implementation ranks and refuses alike.

Only numpy and pydantic are imported: `import reasoner` must never load torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, get_type_hints

import numpy as np
from pydantic import BaseModel

Prompt = str | Sequence[dict[str, str]]
"""A chat: a string is one user message, else messages with "role" and "content"."""


class Generation(Protocol):
    """One LM completion, as steps read it."""

    @property
    def text(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def finish_reason(self) -> str: ...  # "stop", or "length" when max_new_tokens cut it


class Classification(Protocol):
    """Digits read from n images."""

    @property
    def labels(self) -> np.ndarray: ...  # (n,) ints
    @property
    def probs(self) -> np.ndarray: ...  # (n, 10) float32, rows sum to 1


@dataclass(frozen=True)
class Choice:
    """One option of `LM.choose` and its log-probability as the reply."""

    text: str
    logprob: float
    tokens: int  # the option's token count


@dataclass(frozen=True)
class Choices:
    """The options of one `LM.choose` call, highest log-probability first."""

    choices: tuple[Choice, ...]
    prompt_tokens: int  # what the model read: the prompt once, plus every option

    @classmethod
    def rank(
        cls, options: Sequence[str], logprobs: Sequence[float], tokens: Sequence[int], prompt: int
    ) -> Choices:
        """`options` sorted by log-probability (ties keep their order); `prompt`: its tokens."""
        ranked = sorted(
            (Choice(text, float(lp), n) for text, lp, n in zip(options, logprobs, tokens, strict=True)),
            key=lambda choice: -choice.logprob,
        )
        return cls(tuple(ranked), prompt + sum(tokens))

    @property
    def best(self) -> Choice:
        return self.choices[0]

    def __len__(self) -> int:
        return len(self.choices)

    def __iter__(self) -> Iterator[Choice]:
        return iter(self.choices)

    def __getitem__(self, index: int) -> Choice:
        return self.choices[index]


def check_options(options: Sequence[str]) -> None:
    """What `LM.choose` accepts: at least one option, none empty, no two the same."""
    if isinstance(options, str) or not options:
        raise ValueError("options must be a non-empty list of strings")
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not option:
            raise ValueError(f"option {i} is empty")
        if option in seen:
            raise ValueError(f"option {option!r} is given twice")
        seen.add(option)


class LM(Protocol):
    """A chat language model."""

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
    ) -> Generation:
        """A completion; `temperature=0` is greedy; with `schema`, JSON valid for it; with
        `regex`, text that fully matches it (not both). A constrained completion cut short
        by `max_new_tokens` raises."""
        ...

    async def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        """Log-probability of each continuation as the reply to `prompt`."""
        ...

    async def choose(
        self, prompt: Prompt, options: Sequence[str], *, system: str | None = None
    ) -> Choices:
        """Every option with its log-probability as the reply to `prompt`, best first.

        The options must be distinct and non-empty (else ValueError); the prompt is read once.
        """
        ...


class GAN(Protocol):
    """Draws digits."""

    async def generate(
        self, labels: Sequence[int], *, seed: int, shared_style: bool = True
    ) -> np.ndarray:
        """(n, 28, 28) float32 images in [0, 1], one per label, decided by `seed` alone."""
        ...


class VAE(Protocol):
    """Moves digits to and from a latent style space."""

    async def encode(self, images: np.ndarray, labels: Sequence[int]) -> np.ndarray:
        """(n, z) latents of (n, 28, 28) images of the given digits."""
        ...

    async def decode(self, latents: np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n, 28, 28) images; labels are digits (n,) or soft labels (n, 10)."""
        ...

    async def interpolate(
        self, a_latent: np.ndarray, b_latent: np.ndarray, steps: int, labels_a: int, labels_b: int
    ) -> np.ndarray:
        """(steps, 28, 28) frames from a to b, the digit label blended with the latent."""
        ...


class Classifier(Protocol):
    """Reads digits."""

    async def classify(self, images: np.ndarray) -> Classification:
        """The digits shown by (n, 28, 28) images in [0, 1]."""
        ...


class Embedder(Protocol):
    """Sentence embeddings."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit-norm vectors."""
        ...

    async def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts."""
        ...


class ProjectHandles(TypedDict):
    """Every generator of this project, by the name steps reach it under (`ctx.lm`, ...)."""

    lm: LM
    gan: GAN
    vae: VAE
    classifier: Classifier
    embedder: Embedder


HANDLES: dict[str, type] = get_type_hints(ProjectHandles)
"""The handle names, in one place, each with the protocol its generator implements."""
