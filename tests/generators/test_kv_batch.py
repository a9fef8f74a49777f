"""A batch's KV with fake tensors: growing layers, rows joining with padding, rows leaving."""

from __future__ import annotations

import torch

from generators.kv_batch import KVBatch, _cache


def kv(batch: int, width: int, start: float = 0.0) -> torch.Tensor:
    """(B, heads=2, W, head_dim=3) of distinct values."""
    return torch.arange(batch * 2 * width * 3, dtype=torch.float32).reshape(batch, 2, width, 3) + start


def test_appending_in_place_keeps_what_concatenating_would():
    cache = _cache([(kv(3, 5), kv(3, 5, 0.5))])
    keys, values = kv(3, 5), kv(3, 5, 0.5)
    for step in range(100):  # past the buffer's headroom, so it grows
        rows = keys.shape[0]
        k, v = kv(rows, 1, 1000.0 + step), kv(rows, 1, 2000.0 + step)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        got_k, got_v = cache.layers[0].update(k, v)
        assert torch.equal(got_k, keys) and torch.equal(got_v, values)
        if step == 50:  # rows leave: the layer adopts the selected tensors
            cache.batch_select_indices(torch.tensor([2, 0]))
            keys, values = keys[[2, 0]], values[[2, 0]]
    assert cache.get_seq_length() == 105


def test_joining_rows_pad_the_narrower_batch_and_leaving_rows_trim_unused_columns():
    running = KVBatch(_cache([(kv(2, 6), kv(2, 6))]), torch.ones(2, 6, dtype=torch.long))
    joining = KVBatch(_cache([(kv(1, 4, 99.0), kv(1, 4, 99.0))]), torch.ones(1, 4, dtype=torch.long))
    running.extend(joining)
    assert running.mask.tolist()[2] == [0, 0, 1, 1, 1, 1] and len(running) == 3
    assert torch.equal(running.cache.layers[0].keys[2, :, 2:], kv(1, 4, 99.0)[0])
    running.select([2])  # only the joined row is left: its two padding columns go
    assert running.mask.tolist() == [[1, 1, 1, 1]]
    assert torch.equal(running.row(0)[0, 0], kv(1, 4, 99.0)[0])  # (layers, k/v, heads, n, dim)
