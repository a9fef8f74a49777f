"""Host mechanics with fake batch functions: batching, isolation, OOM splits, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from generators import Batcher, BatchRecord, Host, HostClosed
from generators.host import DecodeLoop, _Handle


class Recorder:
    """A fake batch function that doubles numbers and remembers every batch it saw."""

    def __init__(self, delay_s: float = 0.01, fail: Callable[[list[int]], None] | None = None):
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[list[int]] = []

    def __call__(self, requests: list[int]) -> list[int]:
        self.batches.append(list(requests))
        time.sleep(self.delay_s)
        if self.fail is not None:
            self.fail(requests)
        return [2 * r for r in requests]


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown()


async def test_concurrent_callers_are_batched_and_get_their_own_results():
    async with Host("cpu", max_batch=8, max_wait_ms=20) as host:
        fake = Recorder()

        async def call(x: int) -> int:
            return await host.submit(
                "fake", "double", x, loader=lambda d: None, run=lambda m, r: fake(r)
            )

        results = await asyncio.gather(*(call(x) for x in range(40)))
        assert results == [2 * x for x in range(40)]
        stats = host.stats()["fake.double"]
        assert stats.requests == 40
        assert stats.max_batch == 8
        assert stats.mean_batch > 1
        assert all(len(b) <= 8 for b in fake.batches)


async def test_requests_are_grouped_by_key(executor):
    fake = Recorder()
    async with Batcher(fake, executor=executor, max_wait_s=0.02, key=lambda r: r % 2) as batcher:
        results = await asyncio.gather(*(batcher.submit(x) for x in range(20)))
    assert results == [2 * x for x in range(20)]
    assert all(len({r % 2 for r in b}) == 1 for b in fake.batches)
    assert len(fake.batches) == 2


async def test_invalid_request_fails_alone_before_batching(executor):
    def validate(r: int) -> None:
        if r < 0:
            raise ValueError("negative")

    fake = Recorder()
    async with Batcher(fake, executor=executor, max_wait_s=0.02, validate=validate) as batcher:
        results = await asyncio.gather(*(batcher.submit(x) for x in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    assert all(-1 not in b for b in fake.batches)


async def test_failing_request_is_isolated_from_its_batch(executor):
    def fail(requests: list[int]) -> None:
        if 13 in requests:
            raise RuntimeError("unlucky")

    records: list[BatchRecord] = []
    fake = Recorder(fail=fail)
    async with Batcher(fake, executor=executor, max_wait_s=0.02, on_record=records.append) as batcher:
        results = await asyncio.gather(
            *(batcher.submit(x) for x in (11, 12, 13, 14)), return_exceptions=True
        )
    assert results[:2] == [22, 24] and results[3] == 28
    assert isinstance(results[2], RuntimeError)
    assert fake.batches[0] == [11, 12, 13, 14]  # batched first, then retried one by one
    assert [r.size for r in records] == [4, 1, 1, 1, 1]
    assert [r.error is not None for r in records] == [True, False, False, True, False]


async def test_out_of_memory_splits_the_batch_in_halves(executor):
    def fail(requests: list[int]) -> None:
        if len(requests) > 4:
            raise torch.cuda.OutOfMemoryError("simulated")

    records: list[BatchRecord] = []
    fake = Recorder(delay_s=0, fail=fail)
    async with Batcher(fake, executor=executor, max_wait_s=0.02, on_record=records.append) as batcher:
        results = await asyncio.gather(*(batcher.submit(x) for x in range(16)))
    assert results == [2 * x for x in range(16)]
    assert [r.size for r in records] == [16, 8, 4, 4, 8, 4, 4]
    assert [len(b) for b in fake.batches if len(b) <= 4] == [4, 4, 4, 4]


async def test_cancelled_caller_does_not_break_the_batch(executor):
    fake = Recorder(delay_s=0.2)
    async with Batcher(fake, executor=executor, max_wait_s=0.01) as batcher:
        tasks = [asyncio.create_task(batcher.submit(x)) for x in range(5)]
        await asyncio.sleep(0.1)  # the batch is running now
        tasks[2].cancel()
        queued = asyncio.create_task(batcher.submit(99))  # waits for the next batch
        await asyncio.sleep(0)
        queued.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(asyncio.CancelledError):
            await queued
        after = await batcher.submit(7)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 2, 6, 8]
    assert isinstance(results[2], asyncio.CancelledError)
    assert after == 14
    assert all(99 not in b for b in fake.batches)  # cancelled while queued: never ran


async def test_closing_fails_queued_requests_and_refuses_new_ones(executor):
    fake = Recorder(delay_s=0.2)
    batcher = Batcher(fake, executor=executor, max_batch=1, max_wait_s=0)
    tasks = [asyncio.create_task(batcher.submit(x)) for x in range(3)]
    await asyncio.sleep(0.05)
    await batcher.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, HostClosed) for r in results)
    with pytest.raises(HostClosed):
        await batcher.submit(1)


# --- the decode loop, with a fake stepper --------------------------------------------------
class Job:
    """A fake generation: `steps` tokens long, its result twice its value."""

    def __init__(self, value: int, steps: int) -> None:
        self.value, self.steps, self.tokens = value, steps, 0
        self.result: int | None = None
        self.error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class Stepper:
    """Counts tokens per row. Value < 0 cannot be prepared, 99 cannot join, 13 breaks steps."""

    def __init__(self, log: list[tuple[str, list[int]]], delay_s: float = 0.005) -> None:
        self.rows: list[Job] = []
        self.log = log
        self.delay_s = delay_s

    def prepare(self, request: tuple[int, int]) -> Job:
        if request[0] < 0:
            raise ValueError("cannot prepare")
        return Job(*request)

    def join(self, rows: list[Job]) -> None:
        self.log.append(("join", [r.value for r in rows]))
        if any(r.value == 99 for r in rows):
            raise RuntimeError("cannot join")
        self.rows += rows

    def step(self) -> list[Job]:
        self.log.append(("step", [r.value for r in self.rows]))
        time.sleep(self.delay_s)
        if any(r.value == 13 for r in self.rows):
            raise RuntimeError("unlucky step")
        for row in self.rows:
            row.tokens += 1
            if row.tokens == row.steps:
                row.result = 2 * row.value
        finished = [r for r in self.rows if r.done]
        self.rows = [r for r in self.rows if not r.done]
        return finished

    def remove(self, rows: list[Job]) -> None:
        self.rows = [r for r in self.rows if r not in rows]


def decode_loop(executor, log, records=None, **kw) -> DecodeLoop:
    kw.setdefault("max_wait_s", 0.01)
    return DecodeLoop(lambda: Stepper(log), executor=executor,
                      on_record=None if records is None else records.append, **kw)


async def test_requests_join_a_running_decode_at_token_boundaries(executor):
    log: list[tuple[str, list[int]]] = []
    records: list[BatchRecord] = []
    async with decode_loop(executor, log, records) as loop:
        long = asyncio.create_task(loop.submit((1, 40)))
        await asyncio.sleep(0.05)  # the long job decodes now
        short = await asyncio.gather(loop.submit((2, 3)), loop.submit((3, 3)))
        assert not long.done()  # the short ones joined, ran and left beside it
        assert short == [4, 6] and await long == 2
    assert ("join", [2, 3]) in log
    steps_with_all = [rows for kind, rows in log if kind == "step" and rows == [1, 2, 3]]
    assert len(steps_with_all) == 3
    assert [(r.size, r.joined) for r in records] == [(2, 1), (1, 0)]


async def test_a_failing_request_in_a_decode_loop_fails_alone(executor):
    log: list[tuple[str, list[int]]] = []
    records: list[BatchRecord] = []
    async with decode_loop(executor, log, records) as loop:
        results = await asyncio.gather(
            *(loop.submit((v, 4)) for v in (11, -1, 12, 99, 13, 14)), return_exceptions=True
        )
    assert [results[i] for i in (0, 2, 5)] == [22, 24, 28]
    assert str(results[1]) == "cannot prepare" and str(results[3]) == "cannot join"
    assert str(results[4]) == "unlucky step"
    # The join failed as a whole, then row by row; 99 never ran.
    assert log[:5] == [("join", [11, 12, 99, 13, 14]), ("join", [11]), ("join", [12]),
                       ("join", [99]), ("join", [13])]
    # The step that 13 broke started every running request again, two at a time, then one.
    assert all(len(rows) <= 2 for kind, rows in log[7:] if kind == "step")
    assert ("step", [13]) in log
    assert all(r.size >= 1 for r in records) and any(r.error for r in records)


async def test_a_cancelled_caller_leaves_the_decode_loop(executor):
    log: list[tuple[str, list[int]]] = []
    async with decode_loop(executor, log) as loop:
        tasks = [asyncio.create_task(loop.submit((v, 30))) for v in (1, 2)]
        await asyncio.sleep(0.05)
        tasks[0].cancel()
        assert await tasks[1] == 4
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
    assert log[-1] == ("step", [2])  # the cancelled row left; the other finished alone


async def test_closing_a_decode_loop_fails_running_and_queued_requests(executor):
    loop = decode_loop(executor, [], max_rows=1)
    tasks = [asyncio.create_task(loop.submit((v, 1000))) for v in (1, 2)]
    await asyncio.sleep(0.05)
    await loop.aclose()
    assert all(isinstance(r, HostClosed)
               for r in await asyncio.gather(*tasks, return_exceptions=True))
    with pytest.raises(HostClosed):
        await loop.submit((3, 1))


async def test_seeded_requests_reproduce_whichever_batch_they_share():
    def noise(model: None, requests: list[int]) -> list[np.ndarray]:
        return [np.random.default_rng(seed).normal(size=4) for seed in requests]

    async with Host("cpu", max_wait_ms=20) as host:
        alone = await host.submit("fake", "noise", 5, loader=lambda d: None, run=noise)
        together = await asyncio.gather(
            *(host.submit("fake", "noise", s, loader=lambda d: None, run=noise) for s in range(8))
        )
    np.testing.assert_array_equal(alone, together[5])


async def test_models_load_once_lazily_off_the_event_loop():
    loads: list[str] = []

    def loader(device: torch.device) -> int:
        loads.append(threading.current_thread().name)
        time.sleep(0.05)
        return 3

    async with Host("cpu") as host:
        assert host.device == torch.device("cpu")
        results = await asyncio.gather(
            *(
                host.submit("m", "op", x, loader=loader, run=lambda m, r: [m * v for v in r])
                for x in range(5)
            )
        )
    assert results == [0, 3, 6, 9, 12]
    assert len(loads) == 1 and loads[0] != threading.main_thread().name


async def test_hosts_sharing_a_model_mapping_load_once():
    loads: list[int] = []
    shared: dict[str, object] = {}
    for _ in range(2):
        async with Host("cpu", models=shared) as host:
            out = await host.submit(
                "m", "op", 1, loader=lambda d: loads.append(1) or 5, run=lambda m, r: [m] * len(r)
            )
            assert out == 5
    assert len(loads) == 1


async def test_subscribers_receive_batch_records():
    seen: list[BatchRecord] = []
    async with Host("cpu") as host:
        unsubscribe = host.subscribe(seen.append)
        await host.submit("m", "op", 1, loader=lambda d: None, run=lambda m, r: r)
        unsubscribe()
        await host.submit("m", "op", 2, loader=lambda d: None, run=lambda m, r: r)
    assert len(seen) == 1
    record = seen[0]
    assert (record.model, record.operation, record.size, record.error) == ("m", "op", 1, None)
    assert record.forward_s >= 0 and len(record.queue_wait_s) == 1


async def test_handles_lists_every_handle_the_host_holds_under_its_attribute_name():
    async with Host("cpu") as host:
        held = {name: value for name, value in vars(host).items() if isinstance(value, _Handle)}
        assert host.handles() == held
        # The name is also the model the handle loads and submits to (and its stats key).
        assert all(handle.model == name for name, handle in held.items())


async def test_image_handles_for_real():
    async with Host("cpu", max_wait_ms=20) as host:
        together = await asyncio.gather(
            *(host.gan.generate([d, (d + 1) % 10], seed=d) for d in range(6))
        )
        alone = await host.gan.generate([3, 4], seed=3)
        # The seed alone decides; batched convolutions differ only by float rounding.
        np.testing.assert_allclose(alone, together[3], atol=1e-5)
        assert host.stats()["gan.generate"].max_batch > 1
        images = np.concatenate(together)  # (12, 28, 28)
        assert images.shape == (12, 28, 28) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0

        labels = [v for d in range(6) for v in (d, (d + 1) % 10)]
        read = await host.classifier.classify(images)
        assert read.probs.shape == (12, 10)
        assert np.mean(read.labels == np.array(labels)) >= 0.75

        latents = await host.vae.encode(images, labels)
        assert latents.shape[0] == 12
        decoded = await host.vae.decode(latents, labels)
        assert decoded.shape == (12, 28, 28)
        frames = await host.vae.interpolate(latents[0], latents[2], 5, labels[0], labels[2])
        assert frames.shape == (5, 28, 28)

        with pytest.raises(ValueError):
            await host.gan.generate([11], seed=0)
        with pytest.raises(ValueError):
            await host.vae.decode(latents[:, :2], labels)
