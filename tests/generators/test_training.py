"""Training smoke test: a few steps per model into a temporary folder, then load back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from generators import classifier as clf
from generators import gan, train, vae


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classifier through the CLI (as a user runs it), then the GAN and VAE, 3 steps each."""
    out = tmp_path_factory.mktemp("weights")
    threads = torch.get_num_threads()
    try:
        args = ["classifier", "--max-steps", "3", "--out", str(out), "--quiet", "--seed", "1"]
        assert train.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    train.train_gan(seed=1, epochs=1, out=out, max_steps=3, quiet=True, recalibrate_batches=2)
    train.train_vae(seed=1, epochs=1, out=out, max_steps=3, quiet=True)
    return out


def test_files_written(trained: Path) -> None:
    for kind in ("classifier", "gan", "vae"):
        assert (trained / f"{kind}.safetensors").is_file()
        report = json.loads((trained / f"{kind}.json").read_text())
        assert report["model"] == kind and report["seed"] == 1 and report["steps"] == 3
        assert report["train_seconds"] >= 0 and report["config"] and report["metrics"]
    for kind in ("gan", "vae"):
        png = (trained / f"{kind}.png").read_bytes()  # --out is not the shipped folder
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        report = json.loads((trained / f"{kind}.json").read_text())
        assert report["classifier"].endswith("classifier.safetensors")
        assert "real_halves_frechet_distance" in report["metrics"]
    gan_metrics = json.loads((trained / "gan.json").read_text())["metrics"]
    assert {"gan_class_accuracy", "gan_frechet_distance"} <= gan_metrics.keys()
    vae_metrics = json.loads((trained / "vae.json").read_text())["metrics"]
    assert {"vae_recon_class_accuracy", "vae_prior_class_accuracy"} <= vae_metrics.keys()


def test_trained_weights_load_and_run(trained: Path) -> None:
    judge = clf.load(path=trained / "classifier.safetensors")
    g = gan.load(path=trained / "gan.safetensors")
    model = vae.load(path=trained / "vae.safetensors")
    digits = gan.generate_batch(g, [gan.GenerateRequest((0, 1), seed=0)])[0]
    assert digits.shape == (2, 28, 28)
    assert clf.classify_batch(judge, [clf.ClassifyRequest(digits)])[0].probs.shape == (2, 10)
    z = vae.encode_batch(model, [vae.EncodeRequest(digits, (0, 1))])[0]
    assert vae.decode_batch(model, [vae.DecodeRequest(z, (0, 1))])[0].shape == (2, 28, 28)


def test_training_is_seeded(trained: Path, tmp_path: Path) -> None:
    """Same seed, same steps: the same weights (deterministic kernels, seeded shuffles)."""
    train.train_vae(seed=1, epochs=1, out=tmp_path, max_steps=3, quiet=True, samples=tmp_path)
    a = load_file(str(trained / "vae.safetensors"))
    b = load_file(str(tmp_path / "vae.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
