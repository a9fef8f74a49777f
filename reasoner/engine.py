"""The engine: where plans meet a store, generators and concurrency bounds.

`Engine.run` executes one plan on one input, `Engine.map` many inputs with
bounded concurrency (results as they finish), `Engine.resume` continues a
run from what its store committed. Generators are handed in by name
(`generators={"lm": ...}`) and reach steps as `ctx.lm`; `default_engine`
wires up this project's own models without importing them until used.
`Engine(backend="ray")` runs the same jobs on a Ray cluster (`reasoner.cluster`,
imported only then).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from reasoner._exceptions import ClusterError, GeneratorMissingError, InputError, StoreError
from reasoner.events import EventBus, Listener
from reasoner.executor import Execution
from reasoner.lease import Lease
from reasoner.plan import Plan
from reasoner.records import RunRecord, check_run_id
from reasoner.registry import load_plan, plan_ref
from reasoner.run import Run
from reasoner.store import Holder, Store, StoredRun, open_store

if TYPE_CHECKING:
    from reasoner.cluster import RayCluster


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path, as users read them."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(input)"
        lines.append(f"{prefix}field {path!r}: {error['msg']}")
    return "; ".join(lines)


def validate_input(plan: Plan, value: Any) -> BaseModel:
    """The plan's input model from a model, dict or JSON string; InputError names the field."""
    try:
        if isinstance(value, plan.input):
            task = value
        elif isinstance(value, str | bytes):
            task = plan.input.model_validate_json(value)
        else:
            if isinstance(value, BaseModel):
                value = value.model_dump()
            task = plan.input.model_validate(value)
        task.model_dump_json()  # what the store will write must be writable
    except ValidationError as exc:
        raise InputError(
            f"invalid input for plan {plan.name!r}: {format_validation_error(exc)}"
        ) from exc
    except (PydanticSerializationError, UnicodeError) as exc:
        raise InputError(
            f"invalid input for plan {plan.name!r}: it cannot be stored as JSON ({exc}); "
            "a lone surrogate character is the usual cause"
        ) from exc
    return task


class Engine:
    """Runs plans. One engine shares its store, generators and bounds across all its runs."""

    def __init__(
        self,
        store: str | Path | Store | None = ":memory:",
        *,
        generators: Mapping[str, Any] | str | None = None,
        max_concurrency: int = 256,
        score_edges: bool = True,
        backend: Literal["local", "ray"] = "local",
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        """`backend="ray"` spreads runs over `workers` Ray actors (see `reasoner.cluster`).

        On Ray, `address` is None (start a local cluster), "auto" or "ray://host:port";
        `generators` is "project" (the default) or a "module:factory" reference called
        inside each generator host actor; `max_concurrency` bounds each worker.
        """
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.score_edges = score_edges  # measure edge coherence when each run ends
        self.limit = asyncio.Semaphore(max_concurrency)  # steps running at once, all runs
        self.events = EventBus()
        self._commit: asyncio.Future[None] | None = None
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
                max_concurrency=max_concurrency, score_edges=score_edges, events=self.events,
            )
            self.store: Store = self.cluster.store
            self.generators: Mapping[str, Any] = self.cluster.generators
            return
        if backend != "local":
            raise ValueError(f"backend must be 'local' or 'ray', not {backend!r}")
        if address is not None or workers is not None:
            raise ValueError("address and workers apply to backend='ray' only")
        if isinstance(generators, str):
            raise ValueError("a generators reference applies to backend='ray'; pass a mapping")
        self.store = open_store(store)
        self.generators = generators if generators is not None else {}

    async def committed(self) -> None:
        """Return once everything written so far is committed.

        The commit runs at the end of the current loop tick, so every step that
        finished in that tick, in any run, shares one commit.
        """
        if self._commit is None:
            loop = asyncio.get_running_loop()
            self._commit = loop.create_future()
            loop.call_soon(self._flush)
        await asyncio.shield(self._commit)  # one waiter's cancellation must not cancel the rest

    def _flush(self) -> None:
        future, self._commit = self._commit, None
        assert future is not None
        try:
            self.store.commit()
        except Exception as exc:
            future.set_exception(StoreError(f"cannot commit to the store: {exc}"))
        else:
            future.set_result(None)

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
        concrete = plan.for_input(task)
        self._check_generators(concrete)
        record = RunRecord(
            run_id=run_id or uuid.uuid4().hex[:16],
            plan=plan.name,
            plan_ref=plan_ref(plan),
            seed=seed,
            input=task.model_dump_json(),
            max_backtracks=plan.max_backtracks if max_backtracks is None else max_backtracks,
            concurrency=concurrency,
            created_at=time.time(),
        )
        if self.cluster is not None:
            return self.load_stored(await self.cluster.run(record), plan)
        holder = Holder.here()
        self.store.create_run(record, lease=holder)
        async with Lease(self.store, record.run_id, holder, taken=True):
            return await Execution(self, concrete, record, task).execute()

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
        pending = iter(tasks)
        running: set[asyncio.Task[Run]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < concurrency:
                    try:
                        value = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    running.add(asyncio.create_task(self.run(plan, value, seed=seed)))
                if not running:
                    return
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    yield finished.result()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def resume(self, run_id: str, plan: Plan | None = None) -> Run:
        """Continue a run from its store: nothing committed is recomputed.

        RunBusyError when another live process executes the run (see `reasoner.lease`).
        """
        if self.cluster is not None:
            return self.load_stored(await self.cluster.resume(run_id, plan), plan)
        async with Lease(self.store, run_id):  # read only once no other process executes it
            return await self.resume_stored(self.store.load(run_id), plan)

    async def resume_stored(self, stored: StoredRun, plan: Plan | None = None) -> Run:
        """Continue a run from what a store returned for it (a Ray worker reads it remotely)."""
        record = stored.record
        plan = plan or load_plan(record.plan_ref or record.plan)
        task = validate_input(plan, record.input)
        concrete = plan.for_input(task)
        execution = Execution(self, concrete, record, task, stored)
        if record.status in ("succeeded", "failed"):  # finished: nothing to do
            return execution.to_run()
        self._check_generators(concrete)
        return await execution.execute()

    def load(self, run_id: str, plan: Plan | None = None) -> Run:
        """Read a run back from the store without running anything."""
        return self.load_stored(self.store.load(run_id), plan)

    def load_stored(self, stored: StoredRun, plan: Plan | None = None) -> Run:
        """The Run a store's record of it describes."""
        plan = plan or load_plan(stored.record.plan_ref or stored.record.plan)
        task = validate_input(plan, stored.record.input)
        return Execution(self, plan.for_input(task), stored.record, task, stored).to_run()

    def runs(self, plan: str | None = None) -> list[RunRecord]:
        return self.store.runs(plan)

    def _check_generators(self, plan: Plan) -> None:
        for step in [*plan.steps.values(), *plan.templates.values()]:
            for name in step.options.uses:
                if name not in self.generators:
                    known = ", ".join(sorted(self.generators)) or "none"
                    raise GeneratorMissingError(
                        f"step {step.name!r} uses generator {name!r}, which this engine does "
                        f"not have (it has: {known})"
                    )

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


class ProjectGenerators(Mapping[str, Any]):
    """This project's models behind one batching host, created on first use.

    Plans that never touch a model never import torch; the first `ctx.lm`
    (or `ctx.gan`, ...) starts the host on `device` (CUDA when present).
    """

    NAMES = ("lm", "gan", "vae", "classifier", "embedder")

    def __init__(self, device: str | None = None, events: EventBus | None = None) -> None:
        self.device = device
        self.events = events
        self.host: Any = None

    def __getitem__(self, name: str) -> Any:
        if name not in self.NAMES:
            raise KeyError(name)
        if self.host is None:
            from generators.host import Host

            self.host = Host(device=self.device)
            if self.events is not None:
                bus = self.events
                self.host.subscribe(lambda batch: bus.emit("batch", "", **vars(batch)))
        return getattr(self.host, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)

    async def aclose(self) -> None:
        if self.host is not None:
            await self.host.aclose()


def default_engine(store: str | Path | Store | None = ":memory:", *, device: str | None = None,
                   max_concurrency: int = 256) -> Engine:
    """The engine the CLI uses: a store plus this project's generators, loaded lazily."""
    engine = Engine(store, max_concurrency=max_concurrency)
    engine.generators = ProjectGenerators(device, engine.events)
    return engine
