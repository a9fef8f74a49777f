"""Digit classifier: a small CNN that reads MNIST digits, used by checks and metrics.

It is the judge for the generative models (does the GAN's 7 read as a 7?) and its
penultimate layer is the feature space of the Frechet distance in `metrics.py`.
Trained by `python -m generators.train classifier` on the 4,000 training digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from generators.data import (
    NUM_CLASSES,
    check_images,
    load_model,
    model_device,
    split_rows,
    validate_each,
)

KIND = "classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture hyperparameters (stored in the weight file's metadata)."""

    channels: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = 128
    dropout: float = 0.3

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return cls(**{**d, "channels": tuple(d["channels"])})


class Classifier(nn.Module):
    """Three conv blocks -> a feature vector -> 10 logits."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.bn3 = nn.BatchNorm2d(c3)
        self.fc = nn.Linear(c3 * 3 * 3, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images (B, 28, 28) or (B, 1, 28, 28) in [0, 1]."""
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, 1, 28, 28)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # (B, c1, 14, 14)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # (B, c2, 7, 7)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)  # (B, c3, 3, 3)
        return F.relu(self.fc(x.flatten(1)))  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.head(self.dropout(self.features(x)))


# --------------------------------------------------------------------------------------
# Inference API used by the batching host.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifyRequest:
    images: np.ndarray  # (n, 28, 28) float32 in [0, 1]


@dataclass(frozen=True)
class Classification:
    labels: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n, 10) float32


def load(device: str | torch.device = "cpu", path: str | Path | None = None) -> Classifier:
    """The shipped (or given) classifier, on `device`, in eval mode, gradients off."""
    return load_model(KIND, lambda cfg: Classifier(ClassifierConfig.from_dict(cfg)), path, device)


def validate_classify(request: ClassifyRequest) -> None:
    """Raise ValueError naming what is wrong with one request; cheap, no model needed."""
    if not isinstance(request, ClassifyRequest):
        raise ValueError(f"expected a ClassifyRequest, got {type(request).__name__}")
    check_images(request.images)


def _logits(model: Classifier, images: np.ndarray, chunk: int = 1024) -> torch.Tensor:
    """Logits for already-validated float32 images, in chunks to bound memory."""
    dev = model_device(model)
    out = [
        model(torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).to(dev)).float()
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)


def classify_batch(model: Classifier, requests: Sequence[ClassifyRequest]) -> list[Classification]:
    """Classify all requests' images in one pass, then split the result per request."""
    validate_each(requests, validate_classify, "classify")
    if not requests:
        return []
    images = np.concatenate([check_images(r.images) for r in requests])  # (N, 28, 28)
    with torch.inference_mode():
        probs = torch.softmax(_logits(model, images), dim=1).cpu().numpy()  # (N, 10)
    return [
        Classification(labels=p.argmax(axis=1).astype(np.int64), probs=p)
        for p in split_rows(probs, [len(r.images) for r in requests])
    ]


def predict(model: Classifier, images: np.ndarray) -> np.ndarray:
    """Predicted digits (n,) int64 for images (n, 28, 28); a convenience over classify_batch."""
    return classify_batch(model, [ClassifyRequest(images)])[0].labels


def labels_and_features(model: Classifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted digits (n,) int64 and penultimate features (n, feature_dim) in one pass."""
    arr = check_images(images)
    dev = model_device(model)
    labels, feats = [], []
    with torch.inference_mode():
        for i in range(0, len(arr), 1024):
            f = model.features(torch.from_numpy(np.ascontiguousarray(arr[i : i + 1024])).to(dev))
            labels.append(model.head(f).argmax(dim=1).cpu())  # dropout is off in eval mode
            feats.append(f.float().cpu())
    if not feats:
        return np.zeros(0, np.int64), np.zeros((0, model.config.feature_dim), np.float32)
    return torch.cat(labels).numpy().astype(np.int64), torch.cat(feats).numpy()


def features(model: Classifier, images: np.ndarray) -> np.ndarray:
    """Penultimate-layer features (n, feature_dim) float32, the Frechet distance's space."""
    return labels_and_features(model, images)[1]
