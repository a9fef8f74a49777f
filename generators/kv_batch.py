"""The KV cache of a batch of token sequences: prompts read with their shared prefixes once,
rows that join, rows that leave.

Layout: the batch's keys and values are (B, heads, W, head_dim) per layer and a (B, W) mask
marks each row's real columns. Every row ends at the right edge; a row whose prompt came
partly from the prefix cache has its cached prefix, then padding, then the part it read,
and positions are counted from the mask, so the holes change nothing a row attends to.
Batches of different widths merge by padding the narrower one on the left, which is how a
request joins a running decode.

`prefill` reads a batch of prompts, taking what it can from the `PrefixCache`. A prompt
that several requests send (the N samples of one prompt) is read once and its rows copied.
Prefixes that two or more prompts share and the cache lacks (one header under many states)
are read first, once each, and cached (by `prefill` itself, so what they share among
themselves comes first); then every prompt from the end of its longest cached prefix. At
least the last token of each distinct prompt is read, for the logits of its next token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from generators.prefix_cache import PrefixCache, common_prefix

MIN_SHARED = 4  # a prefix shared within a batch is read apart from its prompts if this long

# forward(ids (B, T), mask (B, W + T), cache of width W or None) -> (last logits (B, V), cache)
Forward = Callable[[torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, Any]]
Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (B, heads, W, head_dim)


class _GrowingLayer(DynamicLayer):
    """Keys and values in buffers with room to grow: a decode step writes its token in place,
    where a DynamicLayer copies the whole cache to append one (most of a CPU decode step's
    memory traffic once prompts are long). `keys`/`values` are views of the buffers; when
    something else replaces them (`batch_select_indices`), the next update adopts the new
    tensors into fresh buffers."""

    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        buffers = self._buffers
        if buffers is None or buffers[0].shape[-2] < length + new or not self._viewed(buffers):
            need = length + new
            shape = (*key_states.shape[:2], need + max(64, need // 4), key_states.shape[-1])
            buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
            if length:
                buffers[0][:, :, :length] = self.keys
                buffers[1][:, :, :length] = self.values
            self._buffers = buffers
        buffers[0][:, :, length : length + new] = key_states
        buffers[1][:, :, length : length + new] = value_states
        self.keys, self.values = buffers[0][:, :, : length + new], buffers[1][:, :, : length + new]
        return self.keys, self.values

    def _viewed(self, buffers: tuple[torch.Tensor, torch.Tensor]) -> bool:
        keys = self.keys
        return keys.data_ptr() == buffers[0].data_ptr() and keys.shape[0] == buffers[0].shape[0]


def _cache(layers: Layers | None = None) -> DynamicCache:
    """A cache of growing layers holding `layers` (or empty, for the model to fill)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = _GrowingLayer
    for i, (keys, values) in enumerate(layers or []):
        cache.update(keys, values, i)
    return cache


def _layers(cache: DynamicCache) -> Layers:
    return [(layer.keys, layer.values) for layer in cache.layers]


@dataclass
class KVBatch:
    """Per-layer keys and values of B rows (in `cache`) and the mask of their real columns."""

    cache: DynamicCache
    mask: torch.Tensor  # (B, W)

    def __len__(self) -> int:
        return self.mask.shape[0]

    def select(self, rows: Sequence[int]) -> None:
        """Keep only `rows`, in that order, and drop the columns none of them uses."""
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        if start:
            self.cache = _cache([(k[:, :, start:], v[:, :, start:]) for k, v in _layers(self.cache)])
            self.mask = self.mask[:, start:]

    def extend(self, other: KVBatch) -> None:
        """Append `other`'s rows; the narrower batch is padded on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        parts = [_pad_left(self, width), _pad_left(other, width)]
        self.cache = _cache([
            (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
            for a, b in zip(*(p[0] for p in parts), strict=True)
        ])
        self.mask = torch.cat([p[1] for p in parts])

    def row(self, i: int) -> torch.Tensor:
        """Row i's KV over its real columns: (layers, 2, heads, n, head_dim)."""
        columns = self.mask[i].bool()
        return torch.stack(
            [torch.stack([k[i][:, columns], v[i][:, columns]]) for k, v in _layers(self.cache)]
        )


def _pad_left(batch: KVBatch, width: int) -> tuple[Layers, torch.Tensor]:
    extra = width - batch.mask.shape[1]
    layers = _layers(batch.cache)
    if not extra:
        return layers, batch.mask
    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0, extra, 0))  # (B, heads, width, head_dim)

    return [(pad(k), pad(v)) for k, v in layers], torch.nn.functional.pad(batch.mask, (extra, 0))


@dataclass
class Prefill:
    batch: KVBatch
    logits: torch.Tensor  # (B, V): each prompt's next-token logits
    read: list[int]  # prompt tokens read on each prompt's behalf; the rest came cached


@dataclass(frozen=True)
class Reader:
    """What `prefill` reads with: the model's forward, the prefix cache, padding, device."""

    forward: Forward
    cache: PrefixCache
    pad_id: int
    device: torch.device


def prefill(reader: Reader, prompts: Sequence[Sequence[int]]) -> Prefill:
    """Read `prompts` (each at least one token) into a KVBatch, sharing what can be shared."""
    distinct: dict[tuple[int, ...], int] = {}
    where = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    if reader.cache.capacity_bytes and len(distinct) < len(prompts):
        # N samples of one prompt: read it once, copy its rows
        done = prefill(reader, [list(p) for p in distinct])
        done.batch.select(where)
        first = {w: i for i, w in reversed(list(enumerate(where)))}
        read = [done.read[w] if first[w] == i else 0 for i, w in enumerate(where)]
        return Prefill(done.batch, done.logits[torch.tensor(where, device=reader.device)], read)
    read = [0] * len(prompts)
    if reader.cache.capacity_bytes and (shared := _shared_prefixes(prompts, reader.cache)):
        # The shared prefixes share prefixes too (one header, then "Input: 1", "Input: 2"):
        # read those first, and each shared prefix from there.
        done = prefill(reader, [list(p) for p in shared])
        for owner, n in zip(shared.values(), done.read, strict=True):
            read[owner] += n
    done = _read(reader, prompts)
    return Prefill(done.batch, done.logits, [a + b for a, b in zip(read, done.read, strict=True)])


def _shared_prefixes(
    prompts: Sequence[Sequence[int]], cache: PrefixCache
) -> dict[tuple[int, ...], int]:
    """Prefixes two or more prompts share beyond what is cached, none a prefix of another,
    each with the first prompt that needs it (which is charged for reading it)."""
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    longest = [0] * len(prompts)
    for a, b in zip(order, order[1:], strict=False):
        n = common_prefix(prompts[a], prompts[b])
        longest[a], longest[b] = max(longest[a], n), max(longest[b], n)
    wanted: dict[tuple[int, ...], int] = {}
    for i, prompt in enumerate(prompts):
        n = min(longest[i], len(prompt) - 1)
        if n - cache.cached(prompt[:n]) >= MIN_SHARED:
            wanted.setdefault(tuple(prompt[:n]), i)
    return {p: i for p, i in wanted.items()
            if not any(len(q) > len(p) and q[: len(p)] == p for q in wanted)}


def _read(reader: Reader, prompts: Sequence[Sequence[int]]) -> Prefill:
    """One forward pass over each prompt past its longest cached prefix; caches the prompts."""
    cache = reader.cache
    hits = [cache.match(p[:-1]) if cache.capacity_bytes else (0, None) for p in prompts]
    rest = [p[n:] for p, (n, _) in zip(prompts, hits, strict=True)]
    past = max(n for n, _ in hits)
    width = max(len(r) for r in rest)
    ids = torch.full((len(prompts), width), reader.pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), past + width), dtype=torch.long)
    for i, ((n, _), r) in enumerate(zip(hits, rest, strict=True)):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, past - n : past] = 1
        mask[i, past + width - len(r):] = 1
    kv = None
    if past:
        ref = next(t for _, t in hits if t is not None)  # (layers, 2, heads, n, head_dim)
        stacked = ref.new_zeros((ref.shape[0], 2, len(prompts), ref.shape[2], past, ref.shape[4]))
        for i, (n, t) in enumerate(hits):  # (layers, 2, B, heads, past, head_dim)
            if n:
                stacked[:, :, i, :, past - n :] = t
        kv = _cache([(layer[0], layer[1]) for layer in stacked])
    logits, kv = reader.forward(ids.to(reader.device), mask.to(reader.device),
                                 _cache() if kv is None else kv)
    batch = KVBatch(kv, mask.to(reader.device))
    if cache.capacity_bytes:
        for i, (prompt, r) in enumerate(zip(prompts, rest, strict=True)):
            if len(r) > 1:  # only the last token is new: the next match stops before it anyway
                cache.insert(prompt, batch.row(i))
    return Prefill(batch, logits, [len(r) for r in rest])
