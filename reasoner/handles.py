"""What a step may call on each generator: one `typing.Protocol` per handle, defined once.

Three things implement these: the project's batching host (`generators.host`), the fakes in
`reasoner.testing`, and whatever generators a user brings to `Engine(generators=...)`.
Writing the interface down once, here, lets a type checker and `tests/engine/test_handles.py`
hold all of them to the same parameters, so the fakes that engine tests run on cannot drift
from the real handles. To bring your own models, implement the protocols of the names your
plans `use`.

Only numpy and pydantic are imported: `import reasoner` must never load torch.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        system: str | None = None,
    ) -> Generation:
        """A completion; `temperature=0` is greedy; with `schema`, JSON valid for it."""
        ...

    async def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        """Log-probability of each continuation as the reply to `prompt`."""
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
