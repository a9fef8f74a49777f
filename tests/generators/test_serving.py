"""Prefix sharing and continuous batching with the real language model on CPU: the same
seeds give the same text with them as without them, and the cache keeps to its cap."""

from __future__ import annotations

import asyncio

import pytest

from generators import BatchRecord, Host
from generators.lm import GenerateRequest, LanguageModel, to_messages

HEADER = (
    "You solve small arithmetic puzzles. Use each number once and reply with one line.\n"
    "Example: numbers 2 3 4 -> 2 * 3 + 4 = 10\nExample: numbers 5 1 1 -> 5 + 1 + 1 = 7\n"
)
# (prompt, temperature, seed): samples of one prompt, a shared header, greedy and sampled.
CALLS = [
    *[("Write one sentence about the sea.", 1.0, seed) for seed in range(4)],
    *[(f"{HEADER}Numbers {a} {b} {c} ->", 0.0, 0) for a, b, c in [(1, 2, 3), (4, 4, 2)]],
    *[(f"{HEADER}Numbers {a} {b} {c} ->", 0.8, 7) for a, b, c in [(6, 1, 2), (3, 3, 9)]],
    ("What is the capital of France?", 0.0, 0),
]


async def outputs(host: Host, lm: LanguageModel, *, spread_s: float = 0.0) -> list[object]:
    """Every call's text (or error), the calls sent `spread_s` apart (0: all at once)."""
    await host.load("lm", lambda device: lm)

    async def call(i: int, prompt: str, temperature: float, seed: int) -> str:
        await asyncio.sleep(i * spread_s)
        out = await host.lm.generate(prompt, max_new_tokens=10, temperature=temperature,
                                     seed=seed)
        return out.text

    return list(await asyncio.gather(*(call(i, *c) for i, c in enumerate(CALLS)),
                                     return_exceptions=True))


@pytest.fixture
async def plain(language_model: LanguageModel) -> list[object]:
    """The texts with no sharing at all and static batches."""
    async with Host("cpu", prefix_cache_mb=0, continuous=False, max_wait_ms=20) as host:
        texts = await outputs(host, language_model)
        stats = host.stats()["lm.generate"]
    assert stats.cached_tokens == 0 and stats.prefill_tokens == stats.prompt_tokens
    return texts


@pytest.mark.parametrize("continuous", [True, False])
async def test_prefix_sharing_and_joining_a_running_batch_leave_the_text_unchanged(
    language_model: LanguageModel, plain: list[object], continuous: bool
):
    records: list[BatchRecord] = []
    async with Host("cpu", continuous=continuous, max_wait_ms=20) as host:
        host.subscribe(records.append)
        # Twice: the second time every prompt is in the prefix cache.
        first = await outputs(host, language_model, spread_s=0.15)
        again = await outputs(host, language_model)
        stats = host.stats()["lm.generate"]
    assert first == plain and again == plain
    assert stats.hits >= len(CALLS) + 3  # 3 sister samples, then everything the second time
    assert stats.prefill_tokens < stats.prompt_tokens / 2
    # Continuous: requests sent while others decode join them; static: they wait.
    assert any(r.joined for r in records) == continuous


async def test_the_cache_keeps_within_its_megabytes_and_the_text_is_unchanged(
    language_model: LanguageModel, plain: list[object]
):
    async with Host("cpu", prefix_cache_mb=2, max_wait_ms=20) as host:
        texts = await outputs(host, language_model, spread_s=0.1)
        cache = host.prefix_cache
    assert texts == plain
    assert 0 < cache.bytes <= 2 * 2**20 and cache.evicted_tokens > 0


async def test_a_request_that_fails_inside_a_shared_batch_fails_alone(
    language_model: LanguageModel, plain: list[object]
):
    limit = language_model.model.config.max_position_embeddings
    async with Host("cpu", max_wait_ms=50) as host:
        await host.load("lm", lambda device: language_model)
        calls = [host.lm.generate(p, max_new_tokens=10, temperature=t, seed=s)
                 for p, t, s in CALLS[:4]]
        calls.insert(2, host.lm.generate(CALLS[0][0], max_new_tokens=limit, seed=0))
        results = await asyncio.gather(*calls, return_exceptions=True)
        stats = host.stats()["lm.generate"]
    failed = results.pop(2)
    assert isinstance(failed, ValueError) and "the model allows" in str(failed)
    assert [r.text for r in results] == plain[:4]
    assert stats.batches == 1 and stats.hits == 3  # the four shared one batch and a prompt


def test_direct_calls_share_within_the_batch_and_match_unshared_text(
    language_model: LanguageModel,
):
    from generators.prefix_cache import PrefixCache

    requests = [GenerateRequest(to_messages(p), max_new_tokens=10, temperature=t, seed=s)
                for p, t, s in CALLS]
    unshared = language_model.generate(requests, PrefixCache(0))
    shared = language_model.generate(requests)
    assert [g.text for g in shared] == [g.text for g in unshared]
    assert all(g.cached_tokens == 0 for g in unshared)
    assert sum(g.cached_tokens > 0 for g in shared) >= 3
