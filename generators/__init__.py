"""Generators: the models (language model, GAN, VAE, classifier, embedder) and their host.

`Host` keeps the models resident on one device (CUDA when present) and batches the requests
of every concurrent caller; steps reach the models through its handles:

    async with Host() as host:
        text = (await host.lm.generate("Say hi", max_new_tokens=16, seed=1)).text
        digits = await host.gan.generate([4, 2], seed=7)
"""

from generators.host import (
    Batcher,
    BatchRecord,
    ClassifierHandle,
    EmbedderHandle,
    GANHandle,
    Host,
    HostClosed,
    LMHandle,
    OpStats,
    VAEHandle,
)
from generators.lm import Generation, Message

__all__ = [
    "BatchRecord",
    "Batcher",
    "ClassifierHandle",
    "EmbedderHandle",
    "GANHandle",
    "Generation",
    "Host",
    "HostClosed",
    "LMHandle",
    "Message",
    "OpStats",
    "VAEHandle",
]
