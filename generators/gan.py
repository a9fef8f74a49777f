"""Class-conditional GAN for MNIST digits: a DCGAN-style generator and a projection critic.

The generator turns noise plus a digit label into a 28x28 image in [0, 1]; at inference
the noise is scaled by `GANConfig.truncation` (0.7), which lifts class accuracy. The label is
embedded with a bias-free linear layer on a one-hot vector (the same as a lookup table,
but it also takes soft labels) and concatenated with the noise. The discriminator is a
spectrally normalised conv net with a projection head (Miyato & Koyama, 2018) trained
with the hinge loss; it is only needed for training and is not shipped. The shipped
generator is an exponential moving average of the training weights.

Inference API for the batching host: `GenerateRequest`, `load`, `validate_request`,
`generate_batch`. Each request draws its noise from its own seeded CPU generator, so
its images depend only on its own seed and labels, never on its batch neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from generators.data import (
    NUM_CLASSES,
    check_labels,
    check_seed,
    load_model,
    model_device,
    one_hot,
    split_rows,
    validate_each,
)

KIND = "gan"


@dataclass(frozen=True)
class GANConfig:
    """Architecture hyperparameters (stored in the weight file's metadata)."""

    z_dim: int = 64
    label_dim: int = 16  # width of the label embedding concatenated with the noise
    g_channels: int = 32  # generator width at 14x14 (twice this at 7x7)
    d_channels: int = 32  # discriminator width at 14x14 (twice this at 7x7)
    # Inference only: requests' noise is scaled by this (the "truncation trick"), trading
    # a little variety for digits that read as their label more reliably.
    truncation: float = 0.7


class Generator(nn.Module):
    """(noise, label) -> image: linear to 7x7, two stride-2 transposed convs to 28x28."""

    def __init__(self, config: GANConfig = GANConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.g_channels
        self.embed = nn.Linear(NUM_CLASSES, config.label_dim, bias=False)
        self.fc = nn.Linear(config.z_dim + config.label_dim, 2 * c * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm1d(2 * c * 7 * 7)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.up2 = nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) noise, y (B, 10) one-hot or soft labels -> images (B, 28, 28) in [0, 1]."""
        c = self.config.g_channels
        h = torch.cat([z, self.embed(y)], dim=1)  # (B, z_dim + label_dim)
        h = F.relu(self.bn0(self.fc(h))).view(-1, 2 * c, 7, 7)  # (B, 2c, 7, 7)
        h = F.relu(self.bn1(self.up1(h)))  # (B, c, 14, 14)
        return torch.sigmoid(self.up2(h)).squeeze(1)  # (B, 28, 28)


class Discriminator(nn.Module):
    """Projection critic: a score from the image plus <embed(label), features>.

    An auxiliary class head on the same features (AC-GAN) can add a classification loss:
    it pushes the generator towards digits that read as their label.
    """

    def __init__(self, config: GANConfig = GANConfig()) -> None:
        super().__init__()
        c = config.d_channels
        self.conv1 = spectral_norm(nn.Conv2d(1, c, 4, stride=2, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1))
        self.fc = spectral_norm(nn.Linear(2 * c * 7 * 7, 256))
        self.out = spectral_norm(nn.Linear(256, 1))
        self.embed = spectral_norm(nn.Linear(NUM_CLASSES, 256, bias=False))
        self.aux = nn.Linear(256, NUM_CLASSES)  # AC-GAN class head, used when aux_weight > 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 28, 28) images in [0, 1] -> features (B, 256) (also fed to an AC head)."""
        h = x.unsqueeze(1) * 2 - 1  # (B, 1, 28, 28) in [-1, 1]
        h = F.leaky_relu(self.conv1(h), 0.2)  # (B, c, 14, 14)
        h = F.leaky_relu(self.conv2(h), 0.2)  # (B, 2c, 7, 7)
        return F.leaky_relu(self.fc(h.flatten(1)), 0.2)  # (B, 256)

    def score(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """features (B, 256), y (B, 10) one-hot -> scores (B,): linear + projection term."""
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)  # (B,)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, 28, 28) images in [0, 1], y (B, 10) one-hot -> scores (B,)."""
        return self.score(self.features(x), y)


# --------------------------------------------------------------------------------------
# Inference API used by the batching host.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateRequest:
    labels: tuple[int, ...]  # digits 0-9, one image per label
    seed: int
    shared_style: bool = True  # one noise vector for all the digits: one handwriting


def load(device: str | torch.device = "cpu", path: str | Path | None = None) -> Generator:
    """The shipped (or given) generator, on `device`, in eval mode, gradients off."""
    return load_model(KIND, lambda cfg: Generator(GANConfig(**cfg)), path, device)


def validate_request(request: GenerateRequest) -> None:
    """Raise ValueError naming what is wrong with one request; cheap, no model needed."""
    if not isinstance(request, GenerateRequest):
        raise ValueError(f"expected a GenerateRequest, got {type(request).__name__}")
    check_labels(request.labels)
    check_seed(request.seed)
    if not isinstance(request.shared_style, bool | np.bool_):
        raise ValueError(f"shared_style must be a bool, got {request.shared_style!r}")


def request_noise(request: GenerateRequest, z_dim: int) -> torch.Tensor:
    """The request's standard-normal noise (n, z_dim), drawn on CPU from its own seed alone."""
    n = len(request.labels)
    gen = torch.Generator(device="cpu").manual_seed(int(request.seed))
    if request.shared_style:
        return torch.randn(1, z_dim, generator=gen).expand(n, z_dim)  # (n, z_dim)
    return torch.randn(n, z_dim, generator=gen)  # (n, z_dim)


def generate_batch(model: Generator, requests: Sequence[GenerateRequest]) -> list[np.ndarray]:
    """All requests' digits in one forward pass; one (n, 28, 28) float32 array per request."""
    validate_each(requests, validate_request, "generate")
    if not requests:
        return []
    sizes = [len(r.labels) for r in requests]
    if sum(sizes) == 0:
        return [np.zeros((0, 28, 28), np.float32) for _ in requests]
    dev = model_device(model)
    z_dim = model.config.z_dim
    with torch.inference_mode():
        z = torch.cat([request_noise(r, z_dim) for r in requests]).to(dev)  # (N, z_dim)
        z = z * model.config.truncation
        labels = torch.from_numpy(np.concatenate([check_labels(r.labels) for r in requests]))
        images = model(z, one_hot(labels.to(dev))).float().cpu().numpy()  # (N, 28, 28)
    return split_rows(images, sizes)
