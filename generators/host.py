"""The generator host: resident models on one device, and request batching across callers.

`Batcher` coalesces concurrent `await submit(request)` calls into batches for a synchronous
batch function (`list[Request] -> list[Result]`) that runs in the host's single device
thread. `DecodeLoop` is the language model's continuous batching: requests join a running
decode at token boundaries and leave when done, each step one call in the device thread so
the other models' batches take turns between steps. `Host` owns that thread, loads each
model on first use, keeps the language model's prefix cache (`prefix_cache_mb`), and
exposes one async handle per model (`host.lm`, `host.gan`, `host.vae`, `host.classifier`,
`host.embedder`) whose methods build requests and submit them.

Failure isolation: requests are validated before they are queued; a batch that raises is
split (in halves on CUDA out-of-memory, else one by one) so that only the culprit fails,
and a decode loop whose step raises starts its rows again with half as many at once.
Every call is recorded as a `BatchRecord` (with the prompt tokens it read and the ones the
prefix cache saved), aggregated by `Host.stats()` and pushed to `Host.subscribe` callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, MutableMapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from generators import embedder as embedder_module
from generators import lm as lm_module
from generators.prefix_cache import PrefixCache
from reasoner.handles import Choices, check_options

if TYPE_CHECKING:
    from generators.classifier import Classification

log = logging.getLogger(__name__)

JOIN_AT = 4  # a running decode loop admits queued requests once 1/JOIN_AT of its rows are free
Req = TypeVar("Req")
Res = TypeVar("Res")


class HostClosed(RuntimeError):
    """The host (or batcher) was closed before the request could run."""


@dataclass(frozen=True)
class BatchRecord:
    """One call of a batch function (a failed call that was split is recorded too), or one
    group of requests that joined a decode loop together, recorded when the last leaves."""

    model: str
    operation: str
    size: int
    queue_wait_s: tuple[float, ...]  # per request: from submit to the start of this call
    forward_s: float  # the call; for a decode loop's group, from joining to the last leaving
    error: str | None = None
    prompt_tokens: int = 0  # language model: the requests' prompts, in tokens
    cached_tokens: int = 0  # of those, not read for them (prefix cache or a batch-mate)
    hits: int = 0  # requests with cached tokens
    joined: int = 0  # decode loop: rows already running when this group joined


def _token_counts(results: Sequence[Any]) -> dict[str, int]:
    """The prompt-token fields of a record, from results that count them (LM results)."""
    prompt = [getattr(r, "prompt_tokens", 0) for r in results]
    cached = [getattr(r, "cached_tokens", 0) for r in results]
    return {"prompt_tokens": sum(prompt), "cached_tokens": sum(cached),
            "hits": sum(c > 0 for c in cached)}


@dataclass
class OpStats:
    """Aggregates over the BatchRecords of one model operation."""

    batches: int = 0
    requests: int = 0
    failed_batches: int = 0
    max_batch: int = 0
    total_queue_wait_s: float = 0.0
    max_queue_wait_s: float = 0.0
    total_forward_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    hits: int = 0  # requests that found part of their prompt already read
    misses: int = 0  # requests of the language model that read all of it

    def add(self, record: BatchRecord) -> None:
        self.batches += 1
        self.requests += record.size
        self.failed_batches += record.error is not None
        self.max_batch = max(self.max_batch, record.size)
        self.total_queue_wait_s += sum(record.queue_wait_s)
        self.max_queue_wait_s = max(self.max_queue_wait_s, *record.queue_wait_s)
        self.total_forward_s += record.forward_s
        if record.prompt_tokens:
            self.prompt_tokens += record.prompt_tokens
            self.cached_tokens += record.cached_tokens
            self.hits += record.hits
            self.misses += record.size - record.hits

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the model read."""
        return self.prompt_tokens - self.cached_tokens

    @property
    def hit_rate(self) -> float:
        """The share of prompt tokens that were not read again."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0

    @property
    def mean_queue_wait_s(self) -> float:
        return self.total_queue_wait_s / self.requests if self.requests else 0.0


@dataclass
class _Pending:
    request: Any
    future: asyncio.Future[Any]
    queued_at: float


class _ClosedOnExit(ABC):
    """`async with x:` ends with `await x.aclose()`, however the block ends."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class _Queue(_ClosedOnExit):
    """What Batcher and DecodeLoop share: validated submissions queued for a loop task that
    the queue owns (started on the first submit, cancelled by `aclose()`, which fails what
    is still pending with HostClosed), and outcomes handed back on the event loop."""

    def __init__(
        self,
        *,
        executor: Executor,
        max_wait_s: float,
        validate: Callable[[Any], None] | None,
        on_record: Callable[[BatchRecord], None] | None,
        model: str,
        operation: str,
    ) -> None:
        self._executor = executor
        self._max_wait_s = max_wait_s
        self._validate = validate
        self._on_record = on_record
        self._model = model
        self._operation = operation
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, request: Any) -> Any:
        if self._closed:
            raise HostClosed(f"{self._model}.{self._operation}: closed")
        if self._validate is not None:
            self._validate(request)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._loop(), name=f"{self._model}.{self._operation}")
            self._task.add_done_callback(self._on_loop_exit)
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Pending(request, future, time.monotonic()))
        self._wake.set()
        return await future

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all(HostClosed(f"{self._model}.{self._operation}: closed"))

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        # The loop only ends by cancellation; anything else is a bug that callers must see.
        if not task.cancelled() and task.exception() is not None:
            self._closed = True
            self._fail_all(task.exception())  # type: ignore[arg-type]

    def _deliver(
        self, outcomes: Iterable[tuple[_Pending, Any, BaseException | None]],
        records: Sequence[BatchRecord],
    ) -> None:
        """Records to the observer, then each result or error to its (uncancelled) caller."""
        for record in records:
            if self._on_record is not None:
                self._on_record(record)
        for item, value, failure in outcomes:
            if item.future.done():  # the caller was cancelled
                continue
            if failure is None:
                item.future.set_result(value)
            else:
                item.future.set_exception(failure)

    @abstractmethod
    def _enqueue(self, item: _Pending) -> None: ...

    @abstractmethod
    def _fail_all(self, exc: BaseException) -> None:
        """Fail every request not yet answered with `exc`."""

    @abstractmethod
    async def _loop(self) -> None: ...


class Batcher(_Queue, Generic[Req, Res]):
    """Coalesces concurrent submissions into batches for one batch function.

    A batch is flushed when `max_batch` compatible requests (same `key`) are queued, or
    `max_wait_s` after its oldest request arrived; while a batch runs, the next one fills.
    The flush loop is a task owned by the batcher: started on the first submit, ended by
    `aclose()` (or leaving `async with`), which fails still-queued requests with HostClosed.
    A caller cancelled while queued is dropped; one cancelled while its batch runs does not
    disturb the others.
    """

    def __init__(
        self,
        run: Callable[[list[Req]], list[Res]],
        *,
        executor: Executor,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        key: Callable[[Req], Hashable] | None = None,
        validate: Callable[[Req], None] | None = None,
        on_record: Callable[[BatchRecord], None] | None = None,
        model: str = "",
        operation: str = "",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__(executor=executor, max_wait_s=max_wait_s, validate=validate,
                         on_record=on_record, model=model, operation=operation)
        self._run = run
        self._max_batch = max_batch
        self._key = key
        self._groups: dict[Hashable, list[_Pending]] = {}

    def _enqueue(self, item: _Pending) -> None:
        key = self._key(item.request) if self._key is not None else None
        self._groups.setdefault(key, []).append(item)

    def _fail_all(self, exc: BaseException) -> None:
        for items in self._groups.values():
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        self._groups.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            try:
                outcomes, records = await loop.run_in_executor(self._executor, self._call, batch)
            except BaseException as exc:  # cancelled by aclose(), or a crash in the batch call
                error: Exception = (
                    HostClosed("closed while the batch ran")
                    if isinstance(exc, asyncio.CancelledError)
                    else RuntimeError(f"batch loop failed: {exc!r}")
                )
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                raise
            self._deliver([(item, value, failure) for item, (value, failure)
                           in zip(batch, outcomes, strict=True)], records)

    async def _next_batch(self) -> list[_Pending]:
        while True:
            self._wake.clear()
            for key in list(self._groups):
                live = [i for i in self._groups[key] if not i.future.done()]
                if live:
                    self._groups[key] = live
                else:
                    del self._groups[key]
            if not self._groups:
                await self._wake.wait()
                continue
            by_age = sorted(self._groups, key=lambda k: self._groups[k][0].queued_at)
            full = [k for k in by_age if len(self._groups[k]) >= self._max_batch]
            deadline = self._groups[by_age[0]][0].queued_at + self._max_wait_s
            if full or time.monotonic() >= deadline:
                key = full[0] if full else by_age[0]
                batch = self._groups[key][: self._max_batch]
                self._groups[key] = self._groups[key][self._max_batch :]
                return batch
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._wake.wait()

    def _call(
        self, batch: list[_Pending]
    ) -> tuple[list[tuple[Any, BaseException | None]], list[BatchRecord]]:
        """Run in the device thread; returns (value, error) per request and the records."""
        records: list[BatchRecord] = []
        return self._call_isolated(batch, records), records

    def _call_isolated(
        self, batch: list[_Pending], records: list[BatchRecord]
    ) -> list[tuple[Any, BaseException | None]]:
        start = time.monotonic()
        waits = tuple(start - item.queued_at for item in batch)
        try:
            results = self._run([item.request for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)}")
        except Exception as exc:
            records.append(self._record(batch, waits, start, repr(exc)))
            if len(batch) == 1:
                return [(None, exc)]
            if _is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = len(batch) // 2
                return self._call_isolated(batch[:half], records) + self._call_isolated(
                    batch[half:], records
                )
            return [out for item in batch for out in self._call_isolated([item], records)]
        records.append(self._record(batch, waits, start, None, **_token_counts(results)))
        return [(value, None) for value in results]

    def _record(
        self, batch: list[_Pending], waits: tuple[float, ...], start: float, error: str | None,
        **tokens: int,
    ) -> BatchRecord:
        return BatchRecord(
            model=self._model,
            operation=self._operation,
            size=len(batch),
            queue_wait_s=waits,
            forward_s=time.monotonic() - start,
            error=error,
            **tokens,
        )


class Stepper(Protocol):
    """A running batch that rows join and leave between steps (`lm.Decoder`)."""

    rows: list[Any]  # each with `done`, `result`, `error`

    def prepare(self, request: Any) -> Any: ...
    def join(self, rows: Sequence[Any]) -> None: ...
    def step(self) -> list[Any]: ...
    def remove(self, rows: Sequence[Any]) -> None: ...


@dataclass(eq=False)
class _Group:
    """Requests that joined a decode loop together: one BatchRecord once all have left."""

    items: list[_Pending]
    waits: tuple[float, ...]
    joined_at: float
    joined: int
    left: int = 0
    results: list[Any] = field(default_factory=list)
    error: str | None = None


class DecodeLoop(_Queue):
    """Continuous batching: requests join a running decode at token boundaries.

    The async side queues requests and drives the stepper one `_tick` at a time in the
    device thread: a tick admits what is queued (up to `max_rows` running), takes one step,
    and hands back the finished requests, which are resolved on the event loop. An idle
    loop waits `max_wait_s` after the first request for its peers, as a Batcher does.
    A request whose own preparation fails fails alone; a join that fails is tried again row
    by row; a step that fails puts every running request back in the queue, to start again
    from its seed with half as many rows at once, until the culprit runs and fails alone.
    """

    def __init__(
        self,
        start: Callable[[], Stepper],
        *,
        executor: Executor,
        max_rows: int = 32,
        max_wait_s: float = 0.005,
        validate: Callable[[Any], None] | None = None,
        on_record: Callable[[BatchRecord], None] | None = None,
        model: str = "",
        operation: str = "",
    ) -> None:
        super().__init__(executor=executor, max_wait_s=max_wait_s, validate=validate,
                         on_record=on_record, model=model, operation=operation)
        self._start = start
        self._max_rows = self._rows_cap = max_rows
        self._queue: list[_Pending] = []
        self._stepper: Stepper | None = None
        self._running: dict[int, tuple[_Pending, _Group]] = {}  # id(row) -> its request, group

    def _enqueue(self, item: _Pending) -> None:
        self._queue.append(item)

    def _fail_all(self, exc: BaseException) -> None:
        for item in [*self._queue, *(item for item, _ in self._running.values())]:
            if not item.future.done():
                item.future.set_exception(exc)
        self._queue.clear()
        self._running.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._queue = [item for item in self._queue if not item.future.done()]
            if not self._running:
                if not self._queue:
                    self._rows_cap = self._max_rows  # idle: a failed step is forgotten
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                deadline = self._queue[0].queued_at + self._max_wait_s
                if len(self._queue) < self._rows_cap and time.monotonic() < deadline:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(deadline - time.monotonic()):
                            await self._wake.wait()
                    continue
            room = max(0, self._rows_cap - len(self._running))
            if self._running and room < max(1, self._rows_cap // JOIN_AT):
                room = 0  # a join copies the batch's KV: let a few rows leave first
            admitted, self._queue = self._queue[:room], self._queue[room:]
            try:
                done, records, again = await loop.run_in_executor(
                    self._executor, self._tick, admitted
                )
            except BaseException as exc:
                error = (HostClosed("closed while the decode loop ran")
                         if isinstance(exc, asyncio.CancelledError)
                         else RuntimeError(f"decode loop failed: {exc!r}"))
                self._queue[:0] = admitted
                self._fail_all(error)
                raise
            self._queue[:0] = again
            self._deliver(done, records)

    def _tick(self, admitted: list[_Pending]) -> tuple[
        list[tuple[_Pending, Any, BaseException | None]], list[BatchRecord], list[_Pending]
    ]:
        """In the device thread: admit, step once; returns the finished requests, the records
        of groups that have all left, and the requests to queue again (a failed step)."""
        if self._stepper is None:
            self._stepper = self._start()
        stepper = self._stepper
        done: list[tuple[_Pending, Any, BaseException | None]] = []
        records: list[BatchRecord] = []
        now = time.monotonic()
        if admitted:
            group = _Group(admitted, tuple(now - i.queued_at for i in admitted), now,
                           len(self._running))
            rows = []
            for item in admitted:
                try:
                    rows.append((item, stepper.prepare(item.request)))
                except Exception as exc:
                    done.append((item, None, exc))
                    self._leave(group, exc, records)
            self._join(stepper, group, rows, done, records)
        gone = [row for row in stepper.rows if self._running[id(row)][0].future.done()]
        if gone:  # their callers were cancelled
            stepper.remove(gone)
            for row in gone:
                self._leave(self._running.pop(id(row))[1], None, records)
        if stepper.rows:
            try:
                finished = stepper.step()
            except Exception as exc:
                return done, records, self._restart(exc, done, records)
            for row in finished:
                item, group = self._running.pop(id(row))
                done.append((item, row.result, row.error))
                self._leave(group, row.error, records, row.result)
        return done, records, []

    def _join(self, stepper: Stepper, group: _Group, rows: list[tuple[_Pending, Any]],
              done: list[tuple[_Pending, Any, BaseException | None]],
              records: list[BatchRecord]) -> None:
        """Join the rows together, else one by one, so that a row that cannot join fails alone."""
        if not rows:
            return
        try:
            stepper.join([row for _, row in rows])
        except Exception as exc:
            if len(rows) == 1:
                done.append((rows[0][0], None, exc))
                self._leave(group, exc, records)
                return
            for one in rows:
                self._join(stepper, group, [one], done, records)
            return
        for item, row in rows:
            self._running[id(row)] = (item, group)

    def _restart(self, exc: Exception, done: list[tuple[_Pending, Any, BaseException | None]],
                 records: list[BatchRecord]) -> list[_Pending]:
        """A failed step: the running requests are to start again from their seeds, half as
        many at once (recorded again when they do); a request that ran alone fails."""
        self._stepper = None
        running = list(self._running.values())
        self._running.clear()
        if len(running) == 1:
            item, group = running[0]
            done.append((item, None, exc))
            self._leave(group, exc, records)
            return []
        if _is_oom(exc) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._rows_cap = max(1, len(running) // 2)
        for _, group in running:
            self._leave(group, exc, records)
        return [item for item, _ in running]

    def _leave(self, group: _Group, error: BaseException | None, records: list[BatchRecord],
               result: Any = None) -> None:
        group.left += 1
        if result is not None:
            group.results.append(result)
        if error is not None and group.error is None:
            group.error = repr(error)
        if group.left == len(group.items):
            records.append(BatchRecord(
                model=self._model, operation=self._operation, size=len(group.items),
                queue_wait_s=group.waits, forward_s=time.monotonic() - group.joined_at,
                error=group.error, joined=group.joined, **_token_counts(group.results),
            ))


class Host(_ClosedOnExit):
    """Owns the models on one device and batches every caller's requests into their calls.

    Use as `async with Host() as host:` (or call `await host.aclose()`); models load on
    first use, in the device thread, and stay resident in `models`: hosts on the same device
    that share one mapping (e.g. a test session's hosts on per-test event loops) load each
    model once.

    `prefix_cache_mb` bounds the KV the language model keeps of prompts it read (0: none
    kept, and requests of a batch share nothing either). `continuous` runs generation as a
    decode loop that requests join (`DecodeLoop`) rather than in static batches.
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        lm: str | None = None,
        models: MutableMapping[str, Any] | None = None,
        prefix_cache_mb: float = 512,
        continuous: bool = True,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.lm_name = lm
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20))
        self.continuous = continuous
        # One worker: batches of all models take turns on the device instead of contending.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generator-host")
        self._models: MutableMapping[str, Any] = {} if models is None else models
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._batchers: dict[tuple[str, str], Batcher[Any, Any] | DecodeLoop] = {}
        self._stats: dict[str, OpStats] = {}
        self._subscribers: list[Callable[[BatchRecord], None]] = []
        self._closed = False
        self.lm = LMHandle(self)
        self.gan = GANHandle(self)
        self.vae = VAEHandle(self)
        self.classifier = ClassifierHandle(self)
        self.embedder = EmbedderHandle(self)

    def handles(self) -> dict[str, _Handle]:
        """Every handle by the name of its model, which is also its attribute name here."""
        return {h.model: h for h in (self.lm, self.gan, self.vae, self.classifier, self.embedder)}

    def stats(self) -> dict[str, OpStats]:
        """Per "model.operation" aggregates (copies)."""
        return {name: OpStats(**vars(s)) for name, s in self._stats.items()}

    def subscribe(self, callback: Callable[[BatchRecord], None]) -> Callable[[], None]:
        """Call `callback` (on the event loop) after every batch; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    async def load(self, model: str, loader: Callable[[torch.device], Any]) -> Any:
        """The resident model `model`, loaded by `loader(device)` in the device thread once."""
        if self._closed:
            raise HostClosed("host is closed")
        lock = self._load_locks.setdefault(model, asyncio.Lock())
        async with lock:
            if model not in self._models:
                loop = asyncio.get_running_loop()
                self._models[model] = await loop.run_in_executor(self._executor, loader, self.device)
        return self._models[model]

    async def submit(
        self,
        model: str,
        operation: str,
        request: Req,
        *,
        loader: Callable[[torch.device], Any],
        run: Callable[[Any, list[Req]], list[Res]],
        validate: Callable[[Req], None] | None = None,
        key: Callable[[Req], Hashable] | None = None,
        stepper: Callable[[Any], Stepper] | None = None,
    ) -> Res:
        """Queue `request` for `run(resident_model, batch)`; batched with its peers. With
        `stepper(resident_model)`, it joins that running batch instead (`DecodeLoop`)."""
        batcher = self._batchers.get((model, operation))
        if batcher is None:
            resident = await self.load(model, loader)
            common = {"executor": self._executor, "max_wait_s": self.max_wait_s,
                      "validate": validate, "on_record": self._record, "model": model,
                      "operation": operation}
            batcher = self._batchers.setdefault(
                (model, operation),
                Batcher(partial(run, resident), max_batch=self.max_batch, key=key, **common)
                if stepper is None
                else DecodeLoop(partial(stepper, resident), max_rows=self.max_batch, **common),
            )
        if self._closed:  # closed while this call waited for the model to load
            raise HostClosed("host is closed")
        return await batcher.submit(request)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.gather(*(b.aclose() for b in self._batchers.values()))
        # Waits for a batch still running in the device thread.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    def _record(self, record: BatchRecord) -> None:
        self._stats.setdefault(f"{record.model}.{record.operation}", OpStats()).add(record)
        for callback in list(self._subscribers):
            try:
                callback(record)
            except Exception:  # an observer must not fail the callers of the batch
                log.exception("BatchRecord subscriber %r failed", callback)


class _Handle:
    """Async face of one resident model."""

    model: ClassVar[str]

    def __init__(self, host: Host) -> None:
        self._host = host

    def _load(self, device: torch.device) -> Any:
        raise NotImplementedError

    async def _submit(
        self,
        operation: str,
        request: Any,
        run: Callable[[Any, list[Any]], list[Any]],
        validate: Callable[[Any], None] | None = None,
        key: Callable[[Any], Hashable] | None = None,
        stepper: Callable[[Any], Stepper] | None = None,
    ) -> Any:
        return await self._host.submit(
            self.model, operation, request, loader=self._load, run=run, validate=validate,
            key=key, stepper=stepper,
        )


def _length_bucket(req: lm_module.GenerateRequest) -> int:
    # Similar token budgets share a batch, so short requests do not wait for long ones.
    return (req.max_new_tokens - 1).bit_length()


class LMHandle(_Handle):
    model = "lm"

    def _load(self, device: torch.device) -> lm_module.LanguageModel:
        return lm_module.load(device, self._host.lm_name)

    async def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        schema: type[BaseModel] | None = None,
        regex: str | None = None,
        system: str | None = None,
    ) -> lm_module.Generation:
        """Complete a chat (a string is one user message); `temperature=0` is greedy.

        With `schema`, the text is constrained to the model's JSON schema; a completion cut
        short by `max_new_tokens` raises pydantic's ValidationError. With `regex`, the text
        fully matches it; one that does not (cut short) raises ValueError.
        """
        request = lm_module.GenerateRequest(
            messages=lm_module.to_messages(prompt, system),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stop or ()),
            seed=seed,
            schema=schema,
            regex=regex,
        )
        cache = self._host.prefix_cache
        generation: lm_module.Generation = await self._submit(
            "generate",
            request,
            lambda lm, batch: lm.generate(batch, cache),
            lm_module.validate_generate,
            _length_bucket,
            (lambda lm: lm_module.Decoder(lm, cache)) if self._host.continuous else None,
        )
        if schema is not None:
            schema.model_validate_json(generation.text)
        if regex is not None and re.fullmatch(regex, generation.text) is None:
            cause = (
                f"cut short by max_new_tokens={max_new_tokens}"
                if generation.finish_reason == "length"
                else "cut by a stop string"
            )
            raise ValueError(
                f"completion {generation.text!r} does not match regex {regex!r}: {cause}"
            )
        return generation

    async def score(
        self, prompt: str | Sequence[dict[str, str]], continuations: Sequence[str]
    ) -> list[float]:
        """Log-probability of each continuation as the reply to `prompt`."""
        request = lm_module.ScoreRequest(lm_module.to_messages(prompt), tuple(continuations))
        return list((await self._score(request)).logprobs)

    async def choose(
        self,
        prompt: str | Sequence[dict[str, str]],
        options: Sequence[str],
        *,
        system: str | None = None,
    ) -> Choices:
        """Every option with its log-probability as the reply to `prompt`, best first.

        Options must be distinct and non-empty (ValueError before anything is queued). The
        prompt is read once for all options; calls batch with `score` calls.
        """
        check_options(options)
        request = lm_module.ScoreRequest(lm_module.to_messages(prompt, system), tuple(options))
        scored = await self._score(request)
        return Choices.rank(options, scored.logprobs, scored.tokens, scored.prompt_tokens)

    async def _score(self, request: lm_module.ScoreRequest) -> lm_module.Scored:
        """`score` and `choose` share one batcher, so concurrent calls of both batch together."""
        cache = self._host.prefix_cache
        return await self._submit(
            "score", request, lambda lm, batch: lm.score(batch, cache), lm_module.validate_score
        )


class GANHandle(_Handle):
    model = "gan"

    def _load(self, device: torch.device) -> Any:
        from generators import gan

        return gan.load(device)

    async def generate(
        self, labels: Sequence[int], *, seed: int, shared_style: bool = True
    ) -> np.ndarray:
        """(n, 28, 28) float32 images in [0, 1], one per label, decided by `seed` alone."""
        from generators import gan

        request = gan.GenerateRequest(tuple(int(v) for v in labels), seed, shared_style)
        return await self._submit("generate", request, gan.generate_batch, gan.validate_request)


class VAEHandle(_Handle):
    model = "vae"

    def _load(self, device: torch.device) -> Any:
        from generators import vae

        return vae.load(device)

    async def encode(self, images: np.ndarray, labels: Sequence[int]) -> np.ndarray:
        """(n, z) latents of images of the given digits."""
        from generators import vae

        request = vae.EncodeRequest(np.asarray(images, np.float32), tuple(int(v) for v in labels))
        return await self._submit("encode", request, vae.encode_batch, vae.validate_encode)

    async def decode(self, latents: np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n, 28, 28) images; labels are digits (n,) or soft labels (n, 10)."""
        from generators import vae

        soft = np.asarray(labels)
        labels_arg = soft.astype(np.float32) if soft.ndim == 2 else tuple(int(v) for v in soft)
        request = vae.DecodeRequest(np.asarray(latents, np.float32), labels_arg)
        model = await self._host.load(self.model, self._load)
        validate = partial(vae.validate_decode, z_dim=model.config.z_dim)
        return await self._submit("decode", request, vae.decode_batch, validate)

    async def interpolate(
        self,
        a_latent: np.ndarray,
        b_latent: np.ndarray,
        steps: int,
        labels_a: int,
        labels_b: int,
    ) -> np.ndarray:
        """(steps, 28, 28) frames from a to b, the digit label blended with the latent."""
        from generators import vae

        a, b = (np.asarray(x, np.float32).reshape(-1) for x in (a_latent, b_latent))
        eye = np.eye(10, dtype=np.float32)
        latents = vae.interpolate(a, b, steps)
        soft = vae.interpolate(eye[int(labels_a)], eye[int(labels_b)], steps)
        return await self.decode(latents, soft)


class ClassifierHandle(_Handle):
    model = "classifier"

    def _load(self, device: torch.device) -> Any:
        from generators import classifier

        return classifier.load(device)

    async def classify(self, images: np.ndarray) -> Classification:
        """`Classification` (labels (n,), probs (n, 10)) of (n, 28, 28) images in [0, 1]."""
        from generators import classifier

        request = classifier.ClassifyRequest(np.asarray(images, np.float32))
        return await self._submit(
            "classify", request, classifier.classify_batch, classifier.validate_classify
        )


class EmbedderHandle(_Handle):
    model = "embedder"

    def _load(self, device: torch.device) -> Any:
        return embedder_module.load(device)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit-norm sentence embeddings."""
        request = embedder_module.EmbedRequest(tuple(texts))
        return await self._submit(
            "embed", request, embedder_module.embed_batch, embedder_module.validate_request
        )

    async def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts."""
        vectors = await self.embed([a, b])
        return float(vectors[0] @ vectors[1])
