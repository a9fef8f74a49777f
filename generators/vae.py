"""Conditional VAE for MNIST digits: encode (image, label) -> latent, decode (latent, label).

The latent holds the handwriting style and the label holds the digit, so a style can be
carried from one digit to another, and two latents can be interpolated (the "morph"
plan). The label enters both networks through bias-free linear layers on a one-hot
vector, which equal an embedding lookup for hard labels but also accept soft labels: an
(n, 10) array of class weights, for interpolating the digit itself. The decoder takes
the label at every resolution (hidden layer, 7x7, 14x14), and training keeps the digit's
identity out of the latent with an adversary (see `train.train_vae`), so the label, not
the latent, decides which digit is drawn.

No BatchNorm anywhere, so a request's output never depends on its batch neighbours.
Inference API for the batching host: `EncodeRequest`, `DecodeRequest`, `load`,
`validate_encode`, `validate_decode`, `encode_batch`, `decode_batch`, `interpolate`,
`prior_latents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from generators.data import (
    NUM_CLASSES,
    check_images,
    check_labels,
    check_matrix,
    check_seed,
    check_soft_labels,
    load_model,
    model_device,
    split_rows,
    validate_each,
)

KIND = "vae"


@dataclass(frozen=True)
class VAEConfig:
    """Architecture hyperparameters (stored in the weight file's metadata)."""

    z_dim: int = 16
    channels: int = 32  # conv width at 14x14 (twice this at 7x7)
    hidden: int = 256


DEFAULT_Z_DIM = VAEConfig.z_dim


class CVAE(nn.Module):
    """Conv encoder q(z | x, y) and transposed-conv decoder p(x | z, y), Bernoulli pixels."""

    def __init__(self, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        self.config = config
        c, hid = config.channels, config.hidden
        # Encoder.
        self.enc1 = nn.Conv2d(1, c, 4, stride=2, padding=1)
        self.enc2 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.enc_fc = nn.Linear(2 * c * 7 * 7, hid)
        self.enc_label = nn.Linear(NUM_CLASSES, hid, bias=False)
        self.enc_out = nn.Linear(hid, 2 * config.z_dim)
        # Decoder.
        self.dec_fc = nn.Linear(config.z_dim, hid)
        self.dec_label = nn.Linear(NUM_CLASSES, hid, bias=False)
        self.dec_fc2 = nn.Linear(hid, 2 * c * 7 * 7)
        self.dec_label7 = nn.Linear(NUM_CLASSES, 2 * c, bias=False)  # per-channel label bias
        self.dec1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.dec_label14 = nn.Linear(NUM_CLASSES, c, bias=False)
        self.dec2 = nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 28, 28) in [0, 1], y (B, 10) -> posterior mean and log-variance (B, z_dim)."""
        h = F.leaky_relu(self.enc1(x.unsqueeze(1)), 0.2)  # (B, c, 14, 14)
        h = F.leaky_relu(self.enc2(h), 0.2)  # (B, 2c, 7, 7)
        h = F.leaky_relu(self.enc_fc(h.flatten(1)) + self.enc_label(y), 0.2)  # (B, hidden)
        mu, logvar = self.enc_out(h).chunk(2, dim=1)  # (B, z_dim) each
        return mu, logvar

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim), y (B, 10) one-hot or soft -> pixel logits (B, 28, 28)."""
        c = self.config.channels
        h = F.leaky_relu(self.dec_fc(z) + self.dec_label(y), 0.2)  # (B, hidden)
        h = self.dec_fc2(h).view(-1, 2 * c, 7, 7)  # (B, 2c, 7, 7)
        h = F.leaky_relu(h + self.dec_label7(y)[:, :, None, None], 0.2)
        h = self.dec1(h)  # (B, c, 14, 14)
        h = F.leaky_relu(h + self.dec_label14(y)[:, :, None, None], 0.2)
        return self.dec2(h).squeeze(1)  # (B, 28, 28)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images (B, 28, 28) in [0, 1]: the decoder's pixel probabilities."""
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction logits (B, 28, 28), mu and logvar (B, z_dim)."""
        mu, logvar = self.encode(x, y)
        eps = torch.randn(mu.shape, generator=gen).to(mu.device)  # (B, z_dim)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode_logits(z, y), mu, logvar


# --------------------------------------------------------------------------------------
# Inference API used by the batching host.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeRequest:
    images: np.ndarray  # (n, 28, 28) float32 in [0, 1]
    labels: tuple[int, ...]  # the digit each image shows


@dataclass(frozen=True)
class DecodeRequest:
    latents: np.ndarray  # (n, z_dim)
    labels: tuple[int, ...] | np.ndarray  # ints, or (n, 10) soft labels (rows sum to 1)


def load(device: str | torch.device = "cpu", path: str | Path | None = None) -> CVAE:
    """The shipped (or given) CVAE, on `device`, in eval mode, gradients off."""
    return load_model(KIND, lambda cfg: CVAE(VAEConfig(**cfg)), path, device)


def validate_encode(request: EncodeRequest) -> None:
    """Raise ValueError naming what is wrong with one request; cheap, no model needed."""
    if not isinstance(request, EncodeRequest):
        raise ValueError(f"expected an EncodeRequest, got {type(request).__name__}")
    images = check_images(request.images)
    labels = check_labels(request.labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")


def _condition(labels: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Hard or soft labels -> float32 class weights (n, 10)."""
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        return check_soft_labels(labels)
    return np.eye(NUM_CLASSES, dtype=np.float32)[check_labels(labels)]


def validate_decode(request: DecodeRequest, z_dim: int = DEFAULT_Z_DIM) -> None:
    """Raise ValueError naming what is wrong with one request (pass `model.config.z_dim`)."""
    if not isinstance(request, DecodeRequest):
        raise ValueError(f"expected a DecodeRequest, got {type(request).__name__}")
    latents = check_matrix(request.latents, z_dim, "latents")
    cond = _condition(request.labels)
    if len(cond) != len(latents):
        raise ValueError(f"{len(latents)} latents but {len(cond)} labels")


def encode_batch(model: CVAE, requests: Sequence[EncodeRequest]) -> list[np.ndarray]:
    """Posterior means (n, z_dim) per request, deterministic, in one forward pass."""
    validate_each(requests, validate_encode, "encode")
    if not requests:
        return []
    sizes = [len(r.labels) for r in requests]
    x = np.concatenate([check_images(r.images) for r in requests])  # (N, 28, 28)
    y = np.concatenate([_condition(r.labels) for r in requests])  # (N, 10)
    dev = model_device(model)
    with torch.inference_mode():
        mu, _ = model.encode(torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev))
        out = mu.float().cpu().numpy()  # (N, z_dim)
    return split_rows(out, sizes)


def decode_batch(model: CVAE, requests: Sequence[DecodeRequest]) -> list[np.ndarray]:
    """Images (n, 28, 28) float32 in [0, 1] per request, in one forward pass."""
    z_dim = model.config.z_dim
    validate_each(requests, partial(validate_decode, z_dim=z_dim), "decode")
    if not requests:
        return []
    sizes = [len(r.latents) for r in requests]
    z = np.concatenate([check_matrix(r.latents, z_dim, "latents") for r in requests])
    y = np.concatenate([_condition(r.labels) for r in requests])  # (N, 10)
    dev = model_device(model)
    with torch.inference_mode():
        out = model.decode(torch.from_numpy(z).to(dev), torch.from_numpy(y).to(dev))
        images = out.float().cpu().numpy()  # (N, 28, 28)
    return split_rows(images, sizes)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """Linear path (steps, *a.shape) from a to b, both ends included exactly. Pure numpy."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"endpoints differ in shape: {a.shape} vs {b.shape}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (both ends included), got {steps!r}")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    t = np.linspace(0.0, 1.0, int(steps)).astype(dtype).reshape(-1, *([1] * a.ndim))
    return ((1 - t) * a.astype(dtype) + t * b.astype(dtype)).astype(dtype)


def prior_latents(n: int, seed: int, z_dim: int = DEFAULT_Z_DIM) -> np.ndarray:
    """n standard-normal latents (n, z_dim) float32 from the seed alone (CPU generator)."""
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    return torch.randn(n, z_dim, generator=gen).numpy()
