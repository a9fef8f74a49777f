"""The shipped image models: shapes, ranges, seeded reproducibility, request validation,
and what the weights actually do on CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

from generators import classifier as clf
from generators import data, gan, metrics, train, vae
from reasoner.arrays import decode_png

# CPU kernels can round differently for different batch sizes; a request's output must
# not depend on its batch neighbours beyond that.
BATCH_ATOL = 1e-5

T = TypeVar("T")


def _once_per_module(load: Callable[[], T]) -> Callable[[], T]:
    """A fixture named after the variable it is assigned to, made by `load` once per module."""
    return pytest.fixture(scope="module")(lambda: load())


judge = _once_per_module(clf.load)
generator = _once_per_module(gan.load)
cvae = _once_per_module(vae.load)
held_out = _once_per_module(data.test_split)


def _assert_images(x: np.ndarray, n: int) -> None:
    assert x.shape == (n, 28, 28)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.size == 0 or (x.min() >= 0.0 and x.max() <= 1.0)


# ------------------------------------------------------------------------------- data


def test_split_is_stratified_and_disjoint() -> None:
    train, test = data.train_split(), data.test_split()
    assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
    assert train.images.dtype == np.float32 and 0 <= train.images.min() < train.images.max() <= 1
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    train_rows = {r.tobytes() for r in train.images[:500]}
    assert not any(r.tobytes() in train_rows for r in test.images)
    assert data.train_split() is train  # cached


# ------------------------------------------------------------------------- classifier


def test_classifier_batch_shapes(judge: clf.Classifier, held_out) -> None:
    reqs = [clf.ClassifyRequest(held_out.images[:150]), clf.ClassifyRequest(
        held_out.images[150:300])]  # fmt: skip
    out = clf.classify_batch(judge, reqs)
    assert [len(r.labels) for r in out] == [150, 150]
    for r in out:
        assert r.labels.dtype == np.int64 and r.labels.shape == (150,)
        assert r.probs.dtype == np.float32 and r.probs.shape == (150, 10)
        np.testing.assert_allclose(r.probs.sum(axis=1), 1.0, atol=1e-5)
        assert (r.labels == r.probs.argmax(axis=1)).all()


def test_classifier_request_independent_of_batch(judge: clf.Classifier, held_out) -> None:
    mine = clf.ClassifyRequest(held_out.images[:7])
    alone = clf.classify_batch(judge, [mine])[0]
    others = [clf.ClassifyRequest(held_out.images[10 * i : 10 * i + 9]) for i in range(1, 6)]
    shared = clf.classify_batch(judge, [*others[:2], mine, *others[2:]])[2]
    np.testing.assert_array_equal(alone.labels, shared.labels)
    np.testing.assert_allclose(alone.probs, shared.probs, atol=BATCH_ATOL)


def test_classifier_features(judge: clf.Classifier, held_out) -> None:
    feats = clf.features(judge, held_out.images[:20])
    assert feats.shape == (20, judge.config.feature_dim) and feats.dtype == np.float32
    labels, feats2 = clf.labels_and_features(judge, held_out.images[:20])
    np.testing.assert_array_equal(feats, feats2)
    np.testing.assert_array_equal(labels, clf.predict(judge, held_out.images[:20]))
    assert clf.features(judge, np.zeros((0, 28, 28), np.float32)).shape == (0, 128)


# -------------------------------------------------------------------------------- GAN


def test_gan_shapes_and_range(generator: gan.Generator) -> None:
    out = gan.generate_batch(
        generator, [gan.GenerateRequest((1, 2, 3), seed=1), gan.GenerateRequest((7,), seed=2)]
    )
    assert len(out) == 2
    _assert_images(out[0], 3)
    _assert_images(out[1], 1)
    assert gan.generate_batch(generator, []) == []
    _assert_images(gan.generate_batch(generator, [gan.GenerateRequest((), seed=0)])[0], 0)


def test_gan_seed_reproducible_alone_and_in_batch(generator: gan.Generator) -> None:
    mine = gan.GenerateRequest((4, 2), seed=42)
    alone = gan.generate_batch(generator, [mine])[0]
    np.testing.assert_array_equal(alone, gan.generate_batch(generator, [mine])[0])
    others = [gan.GenerateRequest((i, 9 - i, 5), seed=100 + i) for i in range(5)]
    shared = gan.generate_batch(generator, [others[0], mine, *others[1:]])[1]
    np.testing.assert_allclose(alone, shared, atol=BATCH_ATOL)
    other_seed = gan.generate_batch(generator, [gan.GenerateRequest((4, 2), seed=43)])[0]
    assert np.abs(alone - other_seed).max() > 0.1


def test_gan_shared_style(generator: gan.Generator) -> None:
    shared = gan.generate_batch(generator, [gan.GenerateRequest((8, 8), seed=5)])[0]
    np.testing.assert_allclose(shared[0], shared[1], atol=1e-6)
    free = gan.generate_batch(generator, [gan.GenerateRequest((8, 8), 5, shared_style=False)])[0]
    assert np.abs(free[0] - free[1]).max() > 0.1


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (gan.GenerateRequest((1, 10), seed=0), r"labels\[1\] = 10 is out of range 0-9"),
        (gan.GenerateRequest((-1,), seed=0), "out of range 0-9"),
        (gan.GenerateRequest((1.5,), seed=0), "must be an int digit"),  # type: ignore[arg-type]
        (gan.GenerateRequest("12", seed=0), "tuple of ints"),  # type: ignore[arg-type]
        (gan.GenerateRequest((1,), seed=-3), "seed -3 is out of range"),
        (gan.GenerateRequest((1,), seed="7"), "seed must be an int"),  # type: ignore[arg-type]
    ],
)
def test_gan_bad_request(generator: gan.Generator, request_, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gan.validate_request(request_)
    good = gan.GenerateRequest((3,), seed=1)
    with pytest.raises(ValueError, match=r"generate request 1: .*" + match):
        gan.generate_batch(generator, [good, request_])


# -------------------------------------------------------------------------------- VAE


def test_vae_encode_decode_shapes_and_determinism(cvae: vae.CVAE, held_out) -> None:
    x, y = held_out.images[:6], tuple(int(v) for v in held_out.labels[:6])
    z = vae.encode_batch(cvae, [vae.EncodeRequest(x, y)])[0]
    assert z.shape == (6, cvae.config.z_dim) and z.dtype == np.float32
    np.testing.assert_array_equal(z, vae.encode_batch(cvae, [vae.EncodeRequest(x, y)])[0])
    images = vae.decode_batch(cvae, [vae.DecodeRequest(z, y)])[0]
    _assert_images(images, 6)
    assert vae.encode_batch(cvae, []) == [] and vae.decode_batch(cvae, []) == []


def test_vae_requests_independent_of_batch(cvae: vae.CVAE, held_out) -> None:
    x, y = held_out.images[:3], (1, 2, 3)
    others = [
        vae.EncodeRequest(held_out.images[10 * i : 10 * i + 4], (0, 1, 2, 3)) for i in range(1, 6)
    ]
    enc_alone = vae.encode_batch(cvae, [vae.EncodeRequest(x, y)])[0]
    enc_shared = vae.encode_batch(cvae, [*others[:3], vae.EncodeRequest(x, y), *others[3:]])[3]
    np.testing.assert_allclose(enc_alone, enc_shared, atol=BATCH_ATOL)
    mine = vae.DecodeRequest(vae.prior_latents(3, seed=9), np.array([4, 5, 6]))
    dec_others = [vae.DecodeRequest(vae.prior_latents(2, seed=i), (i, i)) for i in range(5)]
    dec_alone = vae.decode_batch(cvae, [mine])[0]
    dec_shared = vae.decode_batch(cvae, [*dec_others[:1], mine, *dec_others[1:]])[1]
    np.testing.assert_allclose(dec_alone, dec_shared, atol=BATCH_ATOL)


def test_vae_soft_labels_decode(cvae: vae.CVAE, judge) -> None:
    z = vae.prior_latents(4, seed=3)
    hard = vae.decode_batch(cvae, [vae.DecodeRequest(z, (2, 2, 7, 7))])[0]
    soft_onehot = np.eye(10, dtype=np.float32)[[2, 2, 7, 7]]
    soft = vae.decode_batch(cvae, [vae.DecodeRequest(z, soft_onehot)])[0]
    np.testing.assert_allclose(hard, soft, atol=1e-6)
    mix = np.zeros((5, 10), np.float32)
    t = np.linspace(0, 1, 5, dtype=np.float32)
    mix[:, 2], mix[:, 7] = 1 - t, t
    frames = vae.decode_batch(cvae, [vae.DecodeRequest(np.repeat(z[:1], 5, axis=0), mix)])[0]
    _assert_images(frames, 5)
    read = clf.predict(judge, frames)
    assert read[0] == 2 and read[-1] == 7


def test_vae_interpolate_endpoints() -> None:
    a = np.arange(16, dtype=np.float32)
    b = -np.ones(16, dtype=np.float32)
    path = vae.interpolate(a, b, 7)
    assert path.shape == (7, 16) and path.dtype == np.float32
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    np.testing.assert_allclose(path[3], (a + b) / 2, atol=1e-6)
    soft = vae.interpolate(np.eye(10)[3], np.eye(10)[8], 4)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="steps"):
        vae.interpolate(a, b, 1)
    with pytest.raises(ValueError, match="shape"):
        vae.interpolate(a, b[:3], 3)


def test_vae_morph_between_gan_digits(generator, cvae, judge) -> None:
    """The morph plan's path: GAN endpoints -> VAE latents -> interpolated frames."""
    ends = gan.generate_batch(generator, [gan.GenerateRequest((1, 7), seed=0)])[0]
    za, zb = vae.encode_batch(cvae, [vae.EncodeRequest(ends, (1, 7))])[0]
    z = vae.interpolate(za, zb, 6)
    labels = vae.interpolate(np.eye(10, dtype=np.float32)[1], np.eye(10, dtype=np.float32)[7], 6)
    frames = vae.decode_batch(cvae, [vae.DecodeRequest(z, labels)])[0]
    _assert_images(frames, 6)
    assert clf.predict(judge, frames[[0, -1]]).tolist() == [1, 7]


ZD = vae.DEFAULT_Z_DIM
GOOD_X = np.zeros((2, 28, 28), np.float32)


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (vae.EncodeRequest(np.zeros((2, 28, 27), np.float32), (1, 2)), r"shape \(n, 28, 28\)"),
        (vae.EncodeRequest(np.full((2, 28, 28), np.nan, np.float32), (1, 2)), "NaN"),
        (vae.EncodeRequest(GOOD_X + 2.0, (1, 2)), r"in \[0, 1\]"),
        (vae.EncodeRequest(GOOD_X, (1,)), "2 images but 1 labels"),
        (vae.EncodeRequest(GOOD_X, (1, 12)), "out of range 0-9"),
        (vae.EncodeRequest([[0.0]], (1,)), "numpy array"),  # type: ignore[arg-type]
    ],
)
def test_vae_bad_encode_request(cvae: vae.CVAE, request_, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vae.validate_encode(request_)
    with pytest.raises(ValueError, match=r"encode request 0: .*" + match):
        vae.encode_batch(cvae, [request_, vae.EncodeRequest(GOOD_X, (0, 0))])


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (vae.DecodeRequest(np.zeros((2, ZD + 1), np.float32), (1, 2)), rf"shape \(n, {ZD}\)"),
        (vae.DecodeRequest(np.full((2, ZD), np.inf, np.float32), (1, 2)), "NaN or infinity"),
        (vae.DecodeRequest(np.zeros((2, ZD), np.float32), (1, 2, 3)), "2 latents but 3 labels"),
        (vae.DecodeRequest(np.zeros((1, ZD), np.float32), (10,)), "out of range 0-9"),
        (vae.DecodeRequest(np.zeros((1, ZD), np.float32), np.full((1, 10), 0.2)), "sums to 2"),
        (vae.DecodeRequest(np.zeros((1, ZD), np.float32), np.ones((1, 9)) / 9), r"\(n, 10\)"),
        (vae.DecodeRequest(np.zeros((1, ZD), np.float32), np.array([0.5])), "integers"),
    ],
)
def test_vae_bad_decode_request(cvae: vae.CVAE, request_, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vae.validate_decode(request_, cvae.config.z_dim)
    good = vae.DecodeRequest(np.zeros((1, ZD), np.float32), (0,))
    with pytest.raises(ValueError, match=r"decode request 1: .*" + match):
        vae.decode_batch(cvae, [good, request_])


def test_classifier_bad_request(judge: clf.Classifier) -> None:
    bad = clf.ClassifyRequest(np.zeros((3, 28), np.float32))
    with pytest.raises(ValueError, match=r"shape \(n, 28, 28\)"):
        clf.validate_classify(bad)
    with pytest.raises(ValueError, match="classify request 1"):
        clf.classify_batch(judge, [clf.ClassifyRequest(GOOD_X), bad])


# ---------------------------------------------------------------------- weights, metrics


def test_load_rejects_wrong_or_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="holds 'classifier' weights, expected 'gan'"):
        gan.load(path=data.weights_path("classifier"))
    with pytest.raises(FileNotFoundError, match="python -m generators.train vae"):
        vae.load(path=tmp_path / "missing.safetensors")


def test_frechet_distance_known_values() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    a -= a.mean(axis=0)
    shift = np.arange(8, dtype=np.float64) / 4
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # A pure translation moves only the mean term: d^2 = |shift|^2.
    assert metrics.frechet_distance(a, a + shift) == pytest.approx((shift**2).sum(), rel=1e-6)
    # Scaling by s: d^2 = (1 - s)^2 tr(C) (same mean, commuting covariances).
    cov_tr = np.trace(np.cov(a, rowvar=False))
    assert metrics.frechet_distance(a, 3 * a) == pytest.approx(4 * cov_tr, rel=1e-6)


def test_sample_grid_png_roundtrip(tmp_path) -> None:
    images = np.random.default_rng(1).random((6, 28, 28)).astype(np.float32)
    grid = metrics.image_grid(images, 2, 3)
    path = tmp_path / "g.png"
    train.write_grid(path, grid)
    # Decoded by an independent reader (all five PNG filters), drawn at twice the size.
    np.testing.assert_array_equal(decode_png(path.read_bytes()), grid.repeat(2, 0).repeat(2, 1))


# ------------------------------------------------- what the shipped weights actually do
# Measured on CPU on fixed samples, against the targets the weights were trained to.

SAMPLE = np.random.default_rng(0).choice(data.NUM_CLASSES * data.TEST_PER_CLASS, 300, replace=False)


def test_classifier_reads_held_out_digits(judge: clf.Classifier, held_out) -> None:
    predicted = clf.predict(judge, held_out.images[SAMPLE])
    assert (predicted == held_out.labels[SAMPLE]).mean() >= 0.97


def test_classifier_reads_back_gan_digits(generator: gan.Generator, judge) -> None:
    """200 digits, 20 of each, every one in its own handwriting (its own noise)."""
    labels = np.tile(np.arange(10), 20)
    reqs = [
        gan.GenerateRequest(tuple(int(v) for v in labels[i : i + 10]), seed=i, shared_style=False)
        for i in range(0, len(labels), 10)
    ]
    images = np.concatenate(gan.generate_batch(generator, reqs))
    assert (clf.predict(judge, images) == labels).mean() >= 0.95


def test_vae_reconstructs_held_out_digits(cvae: vae.CVAE, judge, held_out) -> None:
    x, labels = held_out.images[SAMPLE], held_out.labels[SAMPLE]
    y = tuple(int(v) for v in labels)
    z = vae.encode_batch(cvae, [vae.EncodeRequest(x, y)])[0]
    recon = vae.decode_batch(cvae, [vae.DecodeRequest(z, y)])[0]
    # Predicting every digit as the mean training image scores ~0.067.
    assert float(((recon - x) ** 2).mean()) <= 0.025
    assert (clf.predict(judge, recon) == labels).mean() >= 0.95
