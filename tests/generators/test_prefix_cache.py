"""The prefix cache's radix tree with fake KV tensors whose values are their tokens."""

from __future__ import annotations

import pytest
import torch

from generators.prefix_cache import PrefixCache

TOKEN_BYTES = 2 * 2 * 1 * 1 * 4  # (layers=2, k/v, heads=1, head_dim=1) float32 per token


def kv(tokens: list[int]) -> torch.Tensor:
    """(layers, 2, heads, n, head_dim) holding each token's own id."""
    return torch.tensor(tokens, dtype=torch.float32).reshape(1, 1, 1, -1, 1).expand(2, 2, 1, -1, 1)


def cached(cache: PrefixCache, tokens: list[int]) -> list[int]:
    n, found = cache.match(tokens)
    assert (found is None) == (n == 0)
    return [] if found is None else [int(v) for v in found[0, 0, 0, :, 0]]


def test_the_longest_cached_prefix_comes_back_with_its_kv():
    cache = PrefixCache(capacity_bytes=10**6)
    assert cache.match([1, 2, 3]) == (0, None)
    cache.insert([1, 2, 3, 4], kv([1, 2, 3, 4]))
    assert cached(cache, [1, 2, 3, 9]) == [1, 2, 3]
    assert cached(cache, [1, 2, 3, 4, 5]) == [1, 2, 3, 4]
    assert cached(cache, [2, 3]) == []
    assert cache.cached([1, 2, 9]) == 2


def test_prompts_that_part_split_an_edge_and_keep_both_branches():
    cache = PrefixCache(capacity_bytes=10**6)
    cache.insert([1, 2, 3, 4], kv([1, 2, 3, 4]))
    cache.insert([1, 2, 7, 8], kv([1, 2, 7, 8]))
    cache.insert([1, 2, 3, 4], kv([1, 2, 3, 4]))  # already there: nothing added
    assert cached(cache, [1, 2, 7, 8, 9]) == [1, 2, 7, 8]
    assert cached(cache, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert cache.tokens == 6  # the shared [1, 2] once, then [3, 4] and [7, 8]
    assert cache.bytes == 6 * TOKEN_BYTES


def test_eviction_keeps_the_cache_within_its_capacity():
    cache = PrefixCache(capacity_bytes=10 * TOKEN_BYTES)
    for start in range(0, 200, 4):
        prompt = list(range(start, start + 4))
        cache.insert(prompt, kv(prompt))
        assert cache.bytes <= cache.capacity_bytes
    assert cache.tokens == 8 and cache.evicted_tokens == 200 - 8
    assert cached(cache, [196, 197, 198, 199]) == [196, 197, 198, 199]  # the newest stay


def test_least_recently_used_branches_go_first_and_a_shared_header_stays():
    header = [1, 2, 3, 4, 5, 6]
    a, b = [*header, 10, 11], [*header, 20, 21]
    cache = PrefixCache(capacity_bytes=11 * TOKEN_BYTES)
    cache.insert(a, kv(a))
    cache.insert(b, kv(b))
    cache.match(a)  # a is used again after b was read
    cache.insert([50, 51], kv([50, 51]))  # 12 tokens > 11: b's branch must go
    assert cached(cache, b) == header
    assert cached(cache, a) == a
    assert cached(cache, [50, 51]) == [50, 51]


def test_a_cache_without_capacity_keeps_nothing():
    cache = PrefixCache(capacity_bytes=0)
    cache.insert([1, 2, 3], kv([1, 2, 3]))
    assert cache.match([1, 2, 3]) == (0, None) and cache.tokens == 0


def test_kv_must_cover_the_tokens():
    with pytest.raises(ValueError, match="covers 2 tokens, not 3"):
        PrefixCache(capacity_bytes=10**6).insert([1, 2, 3], kv([1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        PrefixCache(capacity_bytes=-1)
