"""The sentence embedder, offline from its PyPI package, directly and through the host."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from generators import Host
from generators import embedder as embedder_module


@pytest.fixture(scope="module")
def model():
    return embedder_module.load("cpu")


def test_batch_embeddings_are_normalised_and_split_per_request(model):
    requests = [
        embedder_module.EmbedRequest(("A cat sits on the mat.", "Dogs bark.")),
        embedder_module.EmbedRequest(()),
        embedder_module.EmbedRequest(("Rain falls.",)),
    ]
    out = embedder_module.embed_batch(model, requests)
    assert [o.shape for o in out] == [(2, 384), (0, 384), (1, 384)]
    np.testing.assert_allclose(np.linalg.norm(out[0], axis=1), 1.0, rtol=1e-5)


async def test_similar_sentences_score_higher_than_unrelated(model):
    async with Host("cpu", max_wait_ms=20) as host:
        await host.load("embedder", lambda device: model)
        related, unrelated = await asyncio.gather(
            host.embedder.similarity("A kitten sleeps on the sofa.", "A cat naps on the couch."),
            host.embedder.similarity("A kitten sleeps on the sofa.", "Interest rates rose today."),
        )
        assert related > unrelated + 0.3
        assert host.stats()["embedder.embed"].max_batch == 2
        with pytest.raises(ValueError):
            await host.embedder.embed([1, 2])  # type: ignore[list-item]


def test_special_tokens_typed_in_a_text_stay_text(model):
    """A "[SEP]" or "[CLS]" inside a sentence is text, not a segment boundary."""
    ids = model.tokenizer("a [SEP] b [CLS]")["input_ids"]
    assert ids.count(model.tokenizer.sep_token_id) == 1  # only the one the tokenizer adds
    assert ids.count(model.tokenizer.cls_token_id) == 1
    assert model.tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "a[sep]b[cls]"
