"""Shared fixtures for the generator tests: offline hub, and the language model loaded once."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def language_model():
    from generators import lm

    return lm.load("cpu")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Other jobs share this machine's two cores; two spinning OpenMP threads per process
    # then slow the models down tenfold, one thread costs at most ~1.5x when alone.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
