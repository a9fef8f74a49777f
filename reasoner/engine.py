"""The engine: where plans meet a store, generators and concurrency bounds.

`Engine.run` executes one plan on one input, `Engine.map` many inputs with
bounded concurrency (results as they finish), `Engine.resume` continues a
run from what its store committed, `Engine.load` reads a run back. The
engine builds one `Runtime` (store, events, generators, limits) and hands
it to the executor for every run. Generators are handed in by name
(`generators={"lm": ...}`) and reach steps as `ctx.lm`; `default_engine`
wires up this project's own models (`reasoner.project`) without importing
them until used. `Engine(backend="ray")` runs the same jobs on a Ray cluster
(`reasoner.cluster`, imported only then).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reasoner._exceptions import ClusterError, InputError
from reasoner.coherence import EdgeMetric
from reasoner.events import EventBus, Listener
from reasoner.executor import Execution, check_generators, continue_run
from reasoner.lease import Lease
from reasoner.plan import Plan, validate_input
from reasoner.project import EDGE_METRICS, ProjectGenerators
from reasoner.records import RunRecord, check_run_id
from reasoner.registry import plan_ref, stored_plan
from reasoner.run import Run, read_run
from reasoner.runtime import Runtime
from reasoner.store import Holder, Store, open_store

if TYPE_CHECKING:
    from reasoner.cluster import RayCluster


class Engine:
    """Runs plans. One engine shares its store, generators and bounds across all its runs."""

    def __init__(
        self,
        store: str | Path | Store | None = ":memory:",
        *,
        generators: Mapping[str, Any] | str | None = None,
        max_concurrency: int = 256,
        score_edges: bool = True,
        edge_metrics: Sequence[EdgeMetric] = EDGE_METRICS,
        events: EventBus | None = None,
        backend: Literal["local", "ray"] = "local",
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        """`edge_metrics` score each edge when a run ends (a plan's own metric comes first).

        On Ray (`backend="ray"`), `address` is None (start a local cluster), "auto" or
        "ray://host:port"; `generators` is "project" (the default) or a "module:factory"
        reference called inside each generator host actor; `max_concurrency` bounds
        each worker.
        """
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        events = events if events is not None else EventBus()
        self.cluster: RayCluster | None = None
        if backend == "ray":
            from reasoner.cluster import PROJECT, RayCluster

            if generators is not None and not isinstance(generators, str):
                raise ClusterError(
                    "with backend='ray' the generators are made inside each host actor: pass "
                    "generators='project' or a 'module:factory' reference, not a mapping"
                )
            self.cluster = RayCluster(
                store, address=address, workers=workers, generators=generators or PROJECT,
                max_concurrency=max_concurrency, score_edges=score_edges,
                edge_metrics=tuple(edge_metrics), events=events,
            )
            opened, handles = self.cluster.store, self.cluster.generators
        else:
            if backend != "local":
                raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
            if address is not None or workers is not None:
                raise ValueError("address and workers apply to backend='ray' only")
            if isinstance(generators, str):
                raise ValueError("a generators reference applies to backend='ray'; pass a mapping")
            opened, handles = open_store(store), generators if generators is not None else {}
        self.runtime = Runtime(opened, events, handles, asyncio.Semaphore(max_concurrency),
                               tuple(edge_metrics), score_edges)

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def generators(self) -> Mapping[str, Any]:
        return self.runtime.generators

    @property
    def events(self) -> EventBus:
        return self.runtime.events

    def subscribe(self, listener: Listener) -> Any:
        """Call `listener(event)` for every event; returns a function that unsubscribes."""
        return self.events.subscribe(listener)

    # ------------------------------------------------------------------ runs
    async def run(
        self,
        plan: Plan,
        input: Any,
        *,
        seed: int = 0,
        run_id: str | None = None,
        concurrency: int | None = None,
        max_backtracks: int | None = None,
    ) -> Run:
        """Run `plan` on `input` to the end; a failed step ends the run `failed`, not raised.

        Cancelled, the run is recorded `interrupted` and `resume` continues it.
        """
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (or None: no bound), got {concurrency}")
        if max_backtracks is not None and max_backtracks < 0:
            raise ValueError(f"max_backtracks must be at least 0, got {max_backtracks}")
        if run_id is not None:
            check_run_id(run_id)
        task = validate_input(plan, input)
        compiled = plan.compile(task)
        check_generators(compiled, self.generators)
        record = RunRecord(
            run_id=run_id or os.urandom(8).hex(),
            plan=plan.name,
            plan_ref=plan_ref(plan),
            spec=None if plan.spec is None else plan.spec.dump(),
            blocks=plan.block_modules,
            shape=compiled.shape,
            seed=seed,
            input=task.model_dump_json(),
            max_backtracks=plan.max_backtracks if max_backtracks is None else max_backtracks,
            concurrency=concurrency,
            created_at=time.time(),
        )
        if self.cluster is not None:
            return read_run(await self.cluster.run(record), compiled)
        execution = Execution(self.runtime, compiled, record, task)
        if not self.store.durable:  # nothing to lease: no other process can see this run
            self.store.create_run(record)
            return await execution.execute()
        holder = Holder.here()
        self.store.create_run(record, lease=holder)
        async with Lease(self.store, record.run_id, holder, taken=True):
            return await execution.execute()

    async def map(
        self,
        plan: Plan,
        inputs: Iterable[Any],
        *,
        concurrency: int = 8,
        seed: int = 0,
    ) -> AsyncIterator[Run]:
        """Run `plan` on every input, at most `concurrency` at once; yield runs as they finish.

        Every input is validated before any run starts (InputError names each bad
        item by its index). Every input runs with the same seed, so equal inputs
        give equal results wherever they sit in the list. Leaving the loop early
        cancels and awaits the runs still going; they are recorded `interrupted`
        and resume from the store.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        tasks, problems = [], []
        for index, value in enumerate(inputs):
            try:
                tasks.append(validate_input(plan, value))
            except InputError as exc:
                problems.append(f"item {index}: {exc}")
        if problems:
            shown = "\n".join(problems[:20]) + ("\n..." if len(problems) > 20 else "")
            raise InputError(f"{len(problems)} of {len(tasks) + len(problems)} inputs are "
                             f"invalid; nothing was run:\n{shown}")
        finished: asyncio.Queue[Run | Exception] = asyncio.Queue()
        slots = asyncio.Semaphore(concurrency)

        async def one(task: Any) -> None:
            try:
                finished.put_nowait(await self.run(plan, task, seed=seed))
            except Exception as exc:  # raised to the caller where it reads, not in the group
                finished.put_nowait(exc)
            finally:
                slots.release()

        async def start(group: asyncio.TaskGroup) -> None:
            for task in tasks:
                await slots.acquire()
                group.create_task(one(task))

        # Leaving the loop (or an error) exits the group, which cancels and awaits every run.
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(start(group))
                for _ in tasks:
                    result = await finished.get()
                    if isinstance(result, Exception):
                        raise result
                    yield result
        except BaseExceptionGroup as wrapped:  # runs never raise, so only what left the loop:
            error = wrapped.exceptions[0]  # a run's error, or the caller's GeneratorExit
            raise error from error.__cause__

    async def resume(self, run_id: str, plan: Plan | None = None) -> Run:
        """Continue a run from its store: nothing committed is recomputed.

        Without `plan`, the plan is imported by the reference the run was started
        with. RunBusyError when another live process executes the run (see
        `reasoner.lease`); PlanChangedError when the plan's graph is not the run's.
        """
        if self.cluster is not None:
            stored = await self.cluster.resume(run_id, plan)
            return read_run(stored, None if plan is None else plan.compile(
                validate_input(plan, stored.record.input)))
        async with Lease(self.store, run_id):  # read only once no other process executes it
            stored = self.store.load(run_id)
            record = stored.record
            return await continue_run(self.runtime, stored, plan or stored_plan(record))

    def load(self, run_id: str, plan: Plan | None = None) -> Run:
        """Read a run back from the store without running anything.

        Without `plan` nothing is imported: outputs are models made from the stored
        JSON (same field names, images and arrays decoded). With it, they are the
        plan's own output models.
        """
        stored = self.store.load(run_id)
        if plan is None:
            return read_run(stored)
        return read_run(stored, plan.compile(validate_input(plan, stored.record.input)))

    def runs(self, plan: str | None = None) -> list[RunRecord]:
        return self.store.runs(plan)

    # ------------------------------------------------------------- lifecycle
    async def aclose(self) -> None:
        """Release the generators (if they hold resources) and close the store."""
        closer = getattr(self.generators, "aclose", None)
        if closer is not None:
            await closer()
        self.store.close()
        if self.cluster is not None:
            await self.cluster.aclose()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def default_engine(store: str | Path | Store | None = ":memory:", *, device: str | None = None,
                   max_concurrency: int = 256) -> Engine:
    """The engine the CLI uses: a store plus this project's generators, loaded lazily."""
    events = EventBus()
    return Engine(store, generators=ProjectGenerators(device, events), events=events,
                  max_concurrency=max_concurrency)
