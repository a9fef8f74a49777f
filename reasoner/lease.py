"""Run leases: exactly one process executes a run at a time.

A lease is a row in the store (holder token, pid and host, heartbeat,
expiry). Executing a run (a new one, a resume, a Ray worker's job) holds its
lease: a second process that tries gets RunBusyError naming the holder. The
holder renews it every third of its time to live; a holder that dies stops
renewing, and its lease can be taken over once it expires, or at once when
the holder was on this machine and its pid is gone (kill -9, then resume,
does not wait). A holder that finds its lease taken over (it was suspended
past the expiry) stops its run with LeaseLostError.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from types import TracebackType
from typing import Any

from reasoner._exceptions import LeaseLostError
from reasoner.store import Holder, Store


class Lease:
    """`async with Lease(store, run_id):` acquires (unless `taken`), renews, releases."""

    def __init__(self, store: Store, run_id: str, holder: Holder | None = None, *,
                 taken: bool = False) -> None:
        self.store = store
        self.run_id = run_id
        self.holder = holder or Holder.here()
        self._taken = taken  # acquired already, with the run's creation
        self._owner: asyncio.Task[object] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._lost = False

    async def __aenter__(self) -> Lease:
        if not self._taken:
            await _settle(self.store.acquire_lease(self.run_id, self.holder))
        if self.store.durable:
            self._owner = asyncio.current_task()
            self._renewing = asyncio.create_task(self._renew(), name=f"lease {self.run_id}")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        if self._lost:
            if self._owner is not None:
                self._owner.uncancel()
            raise LeaseLostError(
                f"run {self.run_id!r}: this process lost its lease (it did not renew it for "
                f"{self.store.lease_ttl} s) and another process took the run over"
            ) from exc
        await _settle(self.store.release_lease(self.run_id, self.holder))

    async def _renew(self) -> None:
        interval = self.store.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            if not await _settle(self.store.renew_lease(self.run_id, self.holder)):
                self._lost = True
                assert self._owner is not None
                self._owner.cancel()
                return


async def _settle(result: Any) -> Any:
    """A store's answer: local stores return it, remote ones an awaitable of it."""
    return await result if inspect.isawaitable(result) else result
