"""The Ray backend: the same plans on a cluster, `Engine(backend="ray")`.

One machine runs out of GPUs and cores long before a batch of jobs runs out
of work, so this spreads jobs over Ray actors without changing how a run
behaves. Four kinds of actor, all created by the driver's `RayCluster`:
- `StoreHost`, one, on the driver's node: the only owner of the SQLite file.
  Workers write through `RemoteStore`, which buffers a loop tick's writes and
  ships them as one call; Ray runs one submitter's calls to a synchronous
  actor in order, so a commit that returned means everything before it is
  on disk. The store stays the single source of truth: the driver reads
  every finished run back from it, and `resume` works across backends.
- `GeneratorHost`, one per GPU (`num_gpus=1`), or one CPU actor when the
  cluster has none: an async actor holding the generators, so concurrent
  requests from every worker meet in its batching host. Workers reach it
  through proxies with the handles' own async methods (`ctx.lm.generate`).
- `Worker`, `workers` of them, spread over nodes: an async actor running the
  ordinary executor for its share of the jobs. Plans travel by reference
  (`plan_ref`), inputs as JSON inside the run record, so workers re-import
  the plan and validate the input as a local run would.
Failures: Ray restarts dead hosts and workers (`max_restarts`) and re-sends
their calls (`max_task_retries`). A generator call is a pure function of its
arguments and seed, so re-sending it is safe; a job is re-sent as "continue
run R", which resumes from the store, so nothing committed runs again. A
worker lost for good is replaced by the driver and its job handed on.

Which generators the hosts hold: `generators="project"` (this project's
models behind `generators.host.Host`, on the actor's GPU when it has one)
or a "module:factory" reference, called inside each host actor and
returning a mapping of name to handle (e.g. "reasoner.testing:fake_generators").

Ray is imported only by this module, and only when it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from reasoner._exceptions import ClusterError
from reasoner.coherence import EdgeMetric
from reasoner.events import EventBus
from reasoner.executor import continue_run
from reasoner.lease import Lease
from reasoner.plan import Plan
from reasoner.records import FINISHED, BacktrackRecord, NodeRecord, RunRecord, Status
from reasoner.registry import load_plan, plan_ref, stored_plan
from reasoner.runtime import Runtime
from reasoner.store import Blobs, Holder, RunHistory, SQLiteStore, Store, StoredRun

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

    from reasoner.coherence import EdgeScore
    from reasoner.records import AttemptRecord

PROJECT = "project"  # this project's models, `generators.host.Host` behind ProjectGenerators
_PROJECT_FACTORY = "reasoner.project:ProjectGenerators"
HOST_CONCURRENCY = 4096  # requests in flight per host actor, so all of them can share a batch
WORKER_CONCURRENCY = 4096  # jobs in flight per worker actor
CALL_RETRIES = 5  # a generator call lost with its host is re-sent to the restarted host
JOB_RETRIES = 3  # a job lost with its worker is re-sent to the restarted worker
HANDOVERS = 2  # a job whose worker is gone for good moves to a fresh one, this many times

# (Store method, arguments): what a worker's RemoteStore ships to the store actor.
Write = tuple[str, tuple[Any, ...]]
_WRITES = frozenset(
    {"create_run", "update_run", "put_node", "delete_nodes", "add_attempt", "add_backtrack",
     "put_edges"}
)


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("backend='ray' needs Ray: pip install 'reasoner[ray]'") from exc
    return ray


def _reraise(exc: Exception) -> NoReturn:
    """Raise what the remote code raised (StoreError, ValueError...), not Ray's wrapper of it;
    Ray's own failures (an actor gone, an object lost) as ClusterError."""
    from ray.exceptions import RayError, RayTaskError

    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, RayError):
        raise ClusterError(f"Ray: {cause}") from exc
    if cause is exc:
        raise exc
    raise cause from exc


async def _remote(ref: ObjectRef[Any]) -> Any:
    """Await a remote call, raising what the remote code raised."""
    try:
        return await ref
    except Exception as exc:
        _reraise(exc)


def _get(ref: ObjectRef[Any]) -> Any:
    """Blocking `_remote`, for the driver's synchronous reads (`Engine.load`, `runs`)."""
    try:
        return _ray().get(ref)
    except Exception as exc:
        _reraise(exc)


# ------------------------------------------------------------------ generators
def generator_factory(spec: str) -> Callable[[], Mapping[str, Any]]:
    """The factory that "project" or a "module:factory" reference names."""
    reference = _PROJECT_FACTORY if spec == PROJECT else spec
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise ClusterError(
            f"generators={spec!r}: give 'project' or a 'module:factory' reference to a function "
            "that returns the generators by name"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ClusterError(f"generators={spec!r}: cannot import it: {exc}") from exc
    if not callable(factory):
        raise ClusterError(f"generators={spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


class GeneratorHost:
    """A generator host as an async Ray actor: every worker's requests meet in its batcher."""

    def __init__(self, spec: str) -> None:
        generators = generator_factory(spec)()
        if not isinstance(generators, Mapping):
            raise ClusterError(f"generators={spec!r} returned {type(generators).__name__}, "
                               "not a mapping of name to generator")
        self.generators = generators

    async def names(self) -> list[str]:
        return list(self.generators)

    async def call(
        self, generator: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if method.startswith("_"):
            raise ClusterError(f"generator method {method!r} is private")
        return await getattr(self.generators[generator], method)(*args, **kwargs)

    async def aclose(self) -> None:
        closer = getattr(self.generators, "aclose", None)
        if closer is not None:
            await closer()


class GeneratorProxy:
    """A generator on a host actor, called like the local one: `await proxy.method(...)`.

    Every method is forwarded as it is called, so the proxy serves any
    generator a factory makes; a wrong argument raises its original error type
    from the actor, exactly as the local handle would.
    """

    def __init__(self, host: ActorHandle, name: str) -> None:
        self._host = host
        self._name = name

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await _remote(self._host.call.remote(self._name, method, args, kwargs))

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, *args, **kwargs)

        return call


def proxies(host: ActorHandle, names: Sequence[str]) -> dict[str, GeneratorProxy]:
    """A worker's `ctx` generators: one proxy per generator the host actor holds."""
    return {name: GeneratorProxy(host, name) for name in names}


# ----------------------------------------------------------------------- store
class StoreHost:
    """The store as a synchronous Ray actor: the one process that opens the SQLite file."""

    def __init__(self, path: str) -> None:
        self.store = SQLiteStore(path)

    def apply(self, writes: list[Write]) -> None:
        """Apply one batch of a worker's writes and commit them together."""
        for method, args in writes:
            if method not in _WRITES:
                raise ClusterError(f"{method!r} is not a store write")
            getattr(self.store, method)(*args)
        self.store.commit()

    def create_run(self, record: RunRecord) -> None:
        self.store.create_run(record)

    def acquire_lease(self, run_id: str, holder: Holder) -> None:
        self.store.acquire_lease(run_id, holder)

    def renew_lease(self, run_id: str, holder: Holder) -> bool:
        return self.store.renew_lease(run_id, holder)

    def release_lease(self, run_id: str, holder: Holder) -> None:
        self.store.release_lease(run_id, holder)

    def load(self, run_id: str) -> StoredRun:
        return self.store.load(run_id)

    def runs(self, plan: str | None, status: Status | None) -> list[RunRecord]:
        return self.store.runs(plan, status)

    def history(self, plan: str | None) -> list[RunHistory]:
        return self.store.history(plan)

    def close(self) -> None:
        self.store.close()


class RemoteStore(Store):
    """A `Store` whose writes go to the store actor, one call per loop tick.

    Writes are buffered; `commit()` ships them. `synced()` (the Store's own
    per-tick barrier) returns once the actor has committed this tick's writes
    and everything shipped before. Reads (`load`, `runs`, `history`) block, for
    the driver's synchronous API.
    """

    durable = True

    def __init__(self, actor: ActorHandle) -> None:
        self.actor = actor
        self._writes: list[Write] = []
        self._shipped: list[ObjectRef[None]] = []

    def create_run(self, record: RunRecord) -> None:
        self._writes.append(("create_run", (record,)))

    def update_run(self, record: RunRecord) -> None:
        self._writes.append(("update_run", (record,)))

    def put_node(self, run_id: str, record: NodeRecord) -> None:
        self._writes.append(("put_node", (run_id, record)))

    def delete_nodes(self, run_id: str, names: list[str]) -> None:
        self._writes.append(("delete_nodes", (run_id, names)))

    def add_attempt(
        self, run_id: str, record: AttemptRecord, output: str | None, blobs: Blobs
    ) -> int | None:
        self._writes.append(("add_attempt", (run_id, record, output, blobs)))
        return None

    def add_backtrack(self, run_id: str, seq: int, record: BacktrackRecord) -> None:
        self._writes.append(("add_backtrack", (run_id, seq, record)))

    def put_edges(self, run_id: str, edges: list[EdgeScore]) -> None:
        self._writes.append(("put_edges", (run_id, edges)))

    def commit(self) -> None:
        if self._writes:
            writes, self._writes = self._writes, []
            self._shipped.append(self.actor.apply.remote(writes))

    def close(self) -> None:
        self.commit()

    async def synced(self) -> None:
        try:
            await super().synced()
        except Exception as exc:
            _reraise(exc)

    def _commit_tick(self) -> list[Awaitable[None]]:
        """Ship this tick's writes; the actor's answers to every call shipped since say when."""
        self.commit()
        shipped, self._shipped = self._shipped, []
        return shipped  # type: ignore[return-value]  # an ObjectRef is awaitable, many times

    # Leases go straight to the actor, in order after the writes shipped before them.
    def acquire_lease(self, run_id: str, holder: Holder) -> Awaitable[None]:  # type: ignore[override]
        self.commit()
        return _remote(self.actor.acquire_lease.remote(run_id, holder))

    def renew_lease(self, run_id: str, holder: Holder) -> Awaitable[bool]:  # type: ignore[override]
        return _remote(self.actor.renew_lease.remote(run_id, holder))

    def release_lease(self, run_id: str, holder: Holder) -> Awaitable[None]:  # type: ignore[override]
        self.commit()
        return _remote(self.actor.release_lease.remote(run_id, holder))

    def load(self, run_id: str) -> StoredRun:
        return _get(self.actor.load.remote(run_id))  # type: ignore[no-any-return]

    def runs(self, plan: str | None = None, status: Status | None = None) -> list[RunRecord]:
        return _get(self.actor.runs.remote(plan, status))  # type: ignore[no-any-return]

    def history(self, plan: str | None = None) -> list[RunHistory]:
        return _get(self.actor.history.remote(plan))  # type: ignore[no-any-return]


# --------------------------------------------------------------------- workers
class Worker:
    """An async Ray actor running its share of the jobs with the ordinary executor.

    It finds the store and its host actor by name, so a restarted worker finds
    them again without the driver keeping its constructor's arguments alive.
    """

    def __init__(self, store: str, host: str, names: list[str], max_concurrency: int,
                 score_edges: bool, edge_metrics: tuple[EdgeMetric, ...]) -> None:
        ray = _ray()
        self.store = RemoteStore(ray.get_actor(store))
        self.runtime = Runtime(self.store, EventBus(), proxies(ray.get_actor(host), names),
                               asyncio.Semaphore(max_concurrency), edge_metrics, score_edges)
        self._plans: dict[str, Plan] = {}

    async def job(self, run_id: str, plan: str | None) -> None:
        """Run `run_id` to its end from what the store holds; a re-sent job resumes."""
        async with Lease(self.store, run_id):  # a re-sent job takes over its dead worker's lease
            stored: StoredRun = await _remote(self.store.actor.load.remote(run_id))
            record = stored.record
            key = plan or json.dumps([record.plan_ref, record.plan, record.spec], sort_keys=True)
            if key not in self._plans:
                self._plans[key] = load_plan(plan) if plan else stored_plan(record)
            try:
                await continue_run(self.runtime, stored, self._plans[key])
            finally:  # cancelled too: once the job returns, the store holds all it recorded
                await self.store.synced()


# ---------------------------------------------------------------------- driver
class RayCluster:
    """The driver's side of `Engine(backend="ray")`: starts the actors, hands out jobs.

    Connects to Ray unless it is already initialised (then it uses that
    connection, and leaves it open on close).
    """

    def __init__(
        self,
        store: str | Path | Store | None,
        *,
        address: str | None,
        workers: int | None,
        generators: str,
        max_concurrency: int,
        score_edges: bool,
        edge_metrics: tuple[EdgeMetric, ...],
        events: EventBus,
    ) -> None:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if store is None or isinstance(store, Store):
            raise ClusterError(
                "backend='ray' keeps runs in a store actor that opens the SQLite file itself: "
                "give the store as a path (or ':memory:', kept in the actor)"
            )
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        generator_factory(generators)  # a bad reference fails here, not in an actor
        path = str(store) if str(store) == ":memory:" else str(Path(store).resolve())
        self.events = events
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=address)
            except ConnectionError as exc:
                raise ClusterError(
                    f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`"
                ) from exc
        here = ray.get_runtime_context().get_node_id()
        prefix = f"reasoner-{uuid.uuid4().hex[:12]}"  # actor names, unique to this engine
        self._store_name = f"{prefix}-store"
        self._store = ray.remote(StoreHost).options(
            name=self._store_name, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(path)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self._host_names = [f"{prefix}-host-{index}" for index in range(max(gpus, 1))]
        self.hosts: list[ActorHandle] = []
        self.workers: list[ActorHandle] = []
        try:
            self.hosts = [
                ray.remote(GeneratorHost).options(
                    name=name, num_gpus=1 if gpus else 0, max_concurrency=HOST_CONCURRENCY,
                    max_restarts=-1, max_task_retries=CALL_RETRIES,
                ).remote(generators)
                for name in self._host_names
            ]
            self._names: list[str] = _get(self.hosts[0].names.remote())  # waits for its start
        except BaseException:
            self._end()
            raise
        self._worker = ray.remote(Worker).options(
            max_concurrency=WORKER_CONCURRENCY, max_restarts=-1, max_task_retries=JOB_RETRIES,
            scheduling_strategy="SPREAD",
        )
        self._options = (max_concurrency, score_edges, edge_metrics)
        count = workers or sum(1 for node in ray.nodes() if node["Alive"])
        self.workers = [self._start_worker(slot) for slot in range(count)]
        self._busy = [0] * count  # jobs in flight per worker slot
        self.store = RemoteStore(self._store)
        self.generators = proxies(self.hosts[0], self._names)

    def _start_worker(self, slot: int) -> ActorHandle:
        host = self._host_names[slot % len(self._host_names)]  # workers share hosts evenly
        return self._worker.remote(self._store_name, host, self._names, *self._options)

    async def run(self, record: RunRecord) -> StoredRun:
        """Store the new run, have a worker run it, and read it back."""
        if record.plan_ref is None and record.spec is None:
            raise ClusterError(
                f"plan {record.plan!r} is defined in __main__; Ray workers import plans by "
                "reference, so define it in a module they can import"
            )
        await _remote(self._store.create_run.remote(record))
        return await self._drive(record, None)

    async def resume(self, run_id: str, plan: Plan | None) -> StoredRun:
        stored: StoredRun = await _remote(self._store.load.remote(run_id))
        if stored.record.status in FINISHED:
            return stored
        reference = None if plan is None else plan_ref(plan)
        if plan is not None and reference is None:
            raise ClusterError(f"plan {plan.name!r} cannot be imported by reference on a worker")
        return await self._drive(stored.record, reference)

    async def _drive(self, record: RunRecord, plan: str | None) -> StoredRun:
        self.events.emit("run_started", record.run_id, plan=record.plan)
        await self._job(record.run_id, plan)
        stored: StoredRun = await _remote(self._store.load.remote(record.run_id))
        self.events.emit("run_finished", record.run_id, status=stored.record.status,
                         error=stored.record.error)
        return stored

    async def _job(self, run_id: str, plan: str | None) -> None:
        """Run the job on the least busy worker; if that worker is gone for good, on another."""
        ray = _ray()
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

        for handover in range(HANDOVERS + 1):
            slot = min(range(len(self.workers)), key=self._busy.__getitem__)
            worker = self.workers[slot]
            self._busy[slot] += 1
            ref = worker.job.remote(run_id, plan)
            try:
                await ref
                return
            except asyncio.CancelledError:  # stop the remote job too, and wait until it has
                ray.cancel(ref)
                with contextlib.suppress(Exception):
                    await ref
                raise
            except Exception as exc:
                if isinstance(exc, RayTaskError) or not isinstance(exc, RayActorError):
                    _reraise(exc)  # the job itself raised
                if not isinstance(exc, ActorDiedError) or handover == HANDOVERS:
                    raise ClusterError(
                        f"run {run_id}: the Ray worker running it died and Ray's retries are "
                        f"spent; the store keeps the run, resume it later (last: {exc})"
                    ) from exc
                # Dead for good (not restarting): its job stopped with it, and moves on.
                if self.workers[slot] is worker:
                    self.workers[slot] = self._start_worker(slot)
            finally:
                self._busy[slot] -= 1

    async def aclose(self) -> None:
        """Let the hosts release their models, close the store, and end every actor."""
        try:
            await asyncio.gather(*(_remote(host.aclose.remote()) for host in self.hosts))
            await _remote(self._store.close.remote())
        finally:
            self._end()

    def _end(self) -> None:
        ray = _ray()
        for actor in [self._store, *self.hosts, *self.workers]:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
