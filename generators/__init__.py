"""Generators: the models (language model, GAN, VAE, classifier, embedder) and their host.

`Host` keeps the models resident on one device (CUDA when present) and batches the requests
of every concurrent caller; steps reach the models through its handles:

    async with Host() as host:
        text = (await host.lm.generate("Say hi", max_new_tokens=16, seed=1)).text
        digits = await host.gan.generate([4, 2], seed=7)

The names below load on first access, so `import generators.gan` (or running
`python -m generators.lm`) does not pull in the host and every model module.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BatchRecord": "generators.host",
    "Batcher": "generators.host",
    "ClassifierHandle": "generators.host",
    "EmbedderHandle": "generators.host",
    "GANHandle": "generators.host",
    "Host": "generators.host",
    "HostClosed": "generators.host",
    "LMHandle": "generators.host",
    "OpStats": "generators.host",
    "VAEHandle": "generators.host",
    "Generation": "generators.lm",
    "Message": "generators.lm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'generators' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
