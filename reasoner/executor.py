"""The executor: runs one plan on one input, step by step, as inputs become ready.

How a run proceeds:
- Every node (a static step, or a child spawned at run time) starts the
  moment its own producers are done; there are no lock-step rounds, so a
  slow branch never holds up an unrelated fast one.
- A node's task loops over attempts: run the step (under the run's and the
  runtime's concurrency bounds and the step's timeout), coerce and check the
  output. A raised exception, a timeout, a pydantic ValidationError or a
  failed check is a failed attempt; the next attempt gets a new seed.
- When a node's retries are spent, the executor backtracks: it picks the
  nearest ancestor that allows it, regenerates it and re-runs everything
  below, within the run's backtrack budget. When nothing is left, the node
  fails, the nodes below it are skipped, and independent branches go on.
- A success is committed to the store (its attempt row, and the rows of any
  children it spawned) before any dependant starts (`await store.synced()`),
  so a killed run resumes exactly. Steps finishing in the same loop tick, in
  any run, share a commit.
All node tasks live in one TaskGroup owned by `Execution.execute`: a
cancelled run cancels and awaits them all, and nothing outlives the run.
The executor gets everything it uses from a `Runtime` (store, events,
generators, limits) and walks a `CompiledPlan`; it never sees the Engine.
"""

from __future__ import annotations

import asyncio
import math
import time
import traceback
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from reasoner._exceptions import GeneratorMissingError, OutputError, PlanChangedError
from reasoner.checks import Result
from reasoner.coherence import EdgeScore, score_edge
from reasoner.context import Context, derive_seed
from reasoner.plan import CTX, OUTPUT_NAMES, Binding, CompiledPlan, Plan, Step, validate_input
from reasoner.records import (
    AttemptRecord,
    BacktrackRecord,
    CheckRecord,
    NodeRecord,
    PlanShape,
    RunRecord,
    Status,
)
from reasoner.run import Run, StepRun, read_run
from reasoner.runtime import Runtime
from reasoner.store import StoredRun, dump_output, load_output


def check_generators(plan: CompiledPlan, generators: Mapping[str, Any]) -> None:
    """GeneratorMissingError, before anything runs, for a step that uses a generator not given."""
    for step in [*plan.steps.values(), *plan.templates.values()]:
        for name in step.options.uses:
            if name not in generators:
                known = ", ".join(sorted(generators)) or "none"
                raise GeneratorMissingError(
                    f"step {step.name!r} uses generator {name!r}, which this engine does "
                    f"not have (it has: {known})"
                )


async def continue_run(runtime: Runtime, stored: StoredRun, plan: Plan) -> Run:
    """Continue a stored run of `plan` to its end; a finished one is returned as it is.

    PlanChangedError when the plan's graph for this input is not the run's.
    """
    record = stored.record
    task = validate_input(plan, record.input)
    compiled = plan.compile(task)
    if record.shape is not None and compiled.shape != record.shape:
        raise PlanChangedError(
            f"run {record.run_id!r} cannot resume: plan {plan.name!r} has changed since it "
            f"started ({_shape_change(record.shape, compiled.shape)}); start a new run"
        )
    if record.status in ("succeeded", "failed"):
        return read_run(stored, compiled)
    check_generators(compiled, runtime.generators)
    return await Execution(runtime, compiled, record, task, stored).execute()


def _shape_change(old: PlanShape, new: PlanShape) -> str:
    """The first difference between two graphs, in words."""
    before, after = {s.name: s for s in old.steps}, {s.name: s for s in new.steps}
    if gone := sorted(before.keys() - after.keys()):
        return f"step {gone[0]!r} is gone"
    if new := sorted(after.keys() - before.keys()):
        return f"step {new[0]!r} is new"
    for name, step in after.items():
        if step != before[name]:
            return (f"step {name!r} was {before[name].output} taking {before[name].takes}, "
                    f"now {step.output} taking {step.takes}")
    if old.templates != new.templates:
        return f"templates were {old.templates}, now {new.templates}"
    return f"input was {old.input}, now {new.input}"


class _Node:
    """A node of the live graph: its step, where it stands, and its output."""

    __slots__ = ("name", "step", "bindings", "producers", "dependants", "children", "parent",
                 "payload", "generation", "status", "attempts", "ordinal", "output", "task",
                 "wants_ctx", "settled")

    def __init__(self, name: str, step: Step, bindings: tuple[Binding, ...],
                 producers: tuple[str, ...], dependants: tuple[str, ...]) -> None:
        self.name = name
        self.step = step
        self.bindings = bindings
        self.producers = producers
        self.dependants = dependants
        self.children: list[str] = []
        self.parent: str | None = None
        self.payload: BaseModel | None = None
        self.generation = 0
        self.status: Status = "pending"
        self.attempts = 0  # in the current generation
        self.ordinal = 0
        self.output: BaseModel | None = None
        self.task: asyncio.Task[None] | None = None
        self.wants_ctx = step.takes_ctx or step.checks_take_ctx
        self.settled = 0  # producers[:settled] are known to be done, so scans resume there

    def record(self) -> NodeRecord:
        return NodeRecord(
            name=self.name, template=self.step.name if self.parent else None, parent=self.parent,
            payload=self.payload.model_dump_json() if self.payload is not None else None,
            generation=self.generation, status=self.status, ordinal=self.ordinal,
        )


class _Reached:
    """How far an attempt got: the step's output, then each check's verdict in turn."""

    __slots__ = ("output", "checks")

    def __init__(self) -> None:
        self.output: BaseModel | None = None
        self.checks: list[CheckRecord] = []


def _payload_type(step: Step) -> type[BaseModel]:
    return next(a for p, a in step.annotations.items() if p not in step.defaults)


class Execution:
    """One run of a concrete plan; `execute()` drives it to an end and returns the Run."""

    def __init__(
        self,
        runtime: Runtime,
        plan: CompiledPlan,
        record: RunRecord,
        task: BaseModel,
        stored: StoredRun | None = None,
    ) -> None:
        self.runtime = runtime
        self.plan = plan
        self.record = record
        self.input = task
        self.store = runtime.store
        self.bus = runtime.events
        self.nodes: dict[str, _Node] = {}
        self.history: dict[str, list[AttemptRecord]] = {}
        self.backtracks: list[BacktrackRecord] = []
        self.edges: list[EdgeScore] = []
        self._ordinal = 0
        self._tg: asyncio.TaskGroup | None = None
        limit = record.concurrency or plan.concurrency
        self._run_limit = asyncio.Semaphore(limit) if limit else None
        for name, step in plan.steps.items():
            self.nodes[name] = _Node(name, step, plan.bindings[name], plan.producers[name],
                                     plan.dependants[name])
        if stored is not None:
            self._restore(stored)

    @property
    def templates(self) -> Mapping[str, Step]:
        return self.plan.templates

    def _restore(self, stored: StoredRun) -> None:
        """Rebuild the live graph, statuses and outputs from what a store committed."""
        self.backtracks = list(stored.backtracks)
        self.edges = list(stored.edges)
        for name, state in stored.states(list(self.plan.steps)).items():
            row = state.row
            if row.parent is not None:
                template = self.plan.templates[row.template or ""]
                payload = _payload_type(template).model_validate_json(row.payload or "{}")
                self._spawn(self.nodes[row.parent], template, name, payload, row.generation)
                self._ordinal = max(self._ordinal, row.ordinal)
            node = self.nodes[name]
            node.generation, node.ordinal, node.attempts = row.generation, row.ordinal, state.current
            node.status = state.status
            if state.output is not None:
                node.output = load_output(node.step.output, state.output, stored.blobs)
            self.history[name] = state.attempts

    def _spawn(self, parent: _Node, template: Step, name: str, payload: BaseModel,
               generation: int) -> _Node:
        child = _Node(name, template, self.plan.bindings[template.name], (), ())
        child.parent, child.payload, child.generation = parent.name, payload, generation
        self.nodes[name] = child
        parent.children.append(name)
        return child

    # ------------------------------------------------------------ graph walks
    def _ancestors_nearest_first(self, name: str) -> list[str]:
        seen, order, frontier = {name}, [], [name]
        while frontier:
            next_frontier: list[str] = []
            for current in frontier:
                node = self.nodes[current]
                for producer in (node.parent,) if node.parent else node.producers:
                    if producer not in seen:
                        seen.add(producer)
                        order.append(producer)
                        next_frontier.append(producer)
            frontier = next_frontier
        return order

    def _descendants(self, name: str) -> list[str]:
        seen, order, stack = {name}, [], [name]
        while stack:
            node = self.nodes[stack.pop()]
            for child in (*node.dependants, *node.children):
                if child not in seen:
                    seen.add(child)
                    order.append(child)
                    stack.append(child)
        return order

    def _subtree(self, node: _Node) -> str:
        """'open' while anything spawned below is unfinished, else 'ok' or 'failed'."""
        if node.status in ("failed", "skipped"):
            return "failed"
        if node.status != "succeeded":
            return "open"
        state = "ok"
        for child_name in node.children:
            child = self.nodes[child_name]
            sub = self._subtree(child)
            if sub == "open":
                return "open"
            if sub == "failed" and child.step.options.required:
                state = "failed"
        return state

    def verdicts(self, name: str) -> list[CheckRecord]:
        node = self.nodes[name]
        for attempt in reversed(self.history.get(name, [])):
            if attempt.generation == node.generation and attempt.status == "succeeded":
                return attempt.checks
        return []

    def expansion_outputs(self, name: str) -> dict[str, BaseModel]:
        found: dict[str, BaseModel] = {}
        stack = list(reversed(self.nodes[name].children))
        while stack:
            node = self.nodes[stack.pop()]
            if node.output is not None:
                found[node.name] = node.output
            stack.extend(reversed(node.children))
        return found

    # --------------------------------------------------------------- driving
    async def execute(self) -> Run:
        """Drive the run to its end. Cancelled, it records the run `interrupted` (resumable)."""
        self.bus.emit("run_started", self.record.run_id, plan=self.plan.name)
        if self.record.status != "running":  # a resumed run is running again
            self.record.status = "running"
            self.store.update_run(self.record)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._schedule(list(self.nodes))
        except asyncio.CancelledError:
            self.record.status = "interrupted"
            self.store.update_run(self.record)
            self.bus.emit("run_interrupted", self.record.run_id)
            raise
        finally:
            self._tg = None
            self.store.commit()
        if self.runtime.score_edges:
            self.edges = await self._score_edges()
            self.store.put_edges(self.record.run_id, self.edges)
        return self._finish()

    async def _score_edges(self) -> list[EdgeScore]:
        """Coherence of every edge whose ends both succeeded, measured concurrently."""
        generators, defaults = self.runtime.generators, self.runtime.edge_metrics
        if not self.plan.edges and not defaults:
            return []  # no metric could apply

        async def one(producer: str, consumer: str) -> EdgeScore | None:
            a, b = self.nodes[producer].output, self.nodes[consumer].output
            if a is None or b is None:
                return None
            custom = self.plan.edges.get((producer, consumer))
            try:
                found = await score_edge(generators, a, b, defaults if custom is None else (custom,))
            except Exception as exc:  # a metric's failure is reported, never the run's
                return EdgeScore(producer=producer, consumer=consumer, metric="error", score=0.0,
                                 detail=f"{type(exc).__name__}: {exc}")
            if found is None:
                return None
            metric, score, detail = found
            if not math.isfinite(score):
                return EdgeScore(producer=producer, consumer=consumer, metric="error", score=0.0,
                                 detail=f"{metric} gave a non-finite score ({score})")
            return EdgeScore(producer=producer, consumer=consumer, metric=metric,
                             score=max(0.0, min(1.0, score)), detail=detail)

        pairs = [(p, c) for c in self.plan.steps for p in self.plan.producers[c]]
        scored = await asyncio.gather(*(one(p, c) for p, c in pairs))
        return [edge for edge in scored if edge is not None]

    def _schedule(self, names: list[str] | tuple[str, ...], *, claim: bool = False) -> _Node | None:
        """Start every listed pending node whose producers are done; skip doomed ones.

        With `claim`, the first node to start is returned instead, to run next in the
        calling node's task: a chain then costs no new task and no loop turn per step.
        """
        claimed = None
        for name in names:
            node = self.nodes.get(name)
            if node is None or node.status != "pending":
                continue
            state = "ok"
            while node.settled < len(node.producers):
                producer = self.nodes[node.producers[node.settled]]
                if producer.status != "succeeded" or producer.children:  # else plainly done
                    state = self._subtree(producer)
                    if state != "ok":
                        break  # an unfinished producer will look again when it settles
                node.settled += 1
            if state == "failed":
                self._mark(node, "skipped")
                self.bus.emit("step_skipped", self.record.run_id, node.name)
                self._after(node)
            elif state == "ok":
                node.status = "running"
                if claim and claimed is None:
                    claimed, node.task = node, asyncio.current_task()
                else:
                    assert self._tg is not None
                    node.task = self._tg.create_task(self._run(node))
        return claimed

    def _mark(self, node: _Node, status: Status) -> None:
        node.status = status
        self.store.put_node(self.record.run_id, node.record())

    def _after(self, node: _Node, *, claim: bool = False) -> _Node | None:
        """A node changed state: look at whatever waits on it or on its spawn root."""
        claimed, current = None, node
        while current is not None:
            found = self._schedule(current.dependants, claim=claim and claimed is None)
            claimed = claimed or found
            current = self.nodes[current.parent] if current.parent else None
        return claimed

    async def _run(self, node: _Node) -> None:
        """A node's task: its attempts, then those of each node it hands the task on to."""
        current: _Node | None = node
        while current is not None:
            current = await self._attempts(current, current.generation)

    def _kwargs(self, node: _Node) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for b in node.bindings:
            if b.source == "input":
                kwargs[b.param] = self.input
            elif b.source == "step":
                kwargs[b.param] = self.nodes[b.ref].output  # type: ignore[index]
            elif b.source == "steps":
                kwargs[b.param] = [self.nodes[r].output for r in b.ref]
            elif b.source == "payload":
                kwargs[b.param] = node.payload
        return kwargs

    async def _attempts(self, node: _Node, generation: int) -> _Node | None:
        """The attempt loop of one node in one generation; a node to run next, if it succeeded."""
        step, run_id, runtime = node.step, self.record.run_id, self.runtime
        durable, bus, shared = self.store.durable, self.bus, runtime.limit
        wants_ctx = node.wants_ctx
        kwargs = self._kwargs(node)
        if bus.active:
            bus.emit("step_started", run_id, node.name, generation=generation)
        while True:
            node.attempts += 1
            attempt = node.attempts
            seed = derive_seed(self.record.seed, node.name, generation, attempt)
            ctx = (Context(run_id, step, node.name, seed, attempt, generation,
                           runtime.generators, self) if wants_ctx else None)
            started, clock = time.time(), time.perf_counter()
            reached = _Reached()
            error = trace = None
            limit: asyncio.Timeout | None = None
            if self._run_limit is not None:
                await self._run_limit.acquire()
            try:
                await shared.acquire()
                try:
                    if step.takes_ctx:
                        kwargs[CTX] = ctx
                    if step.options.timeout is None:
                        await self._attempt(node, kwargs, ctx, reached)
                    else:  # the timeout bounds the whole attempt: the step and its checks
                        async with asyncio.timeout(step.options.timeout) as limit:
                            await self._attempt(node, kwargs, ctx, reached)
                except Exception as exc:  # a step's failure is data, never the engine's crash
                    if isinstance(exc, TimeoutError) and limit is not None and limit.expired():
                        pending = step.checks[len(reached.checks):]  # the first one was running
                        part = (f"check {pending[0].name!r}" if reached.output is not None
                                and pending else "the step")
                        error = f"timed out after {step.options.timeout} s in {part}"
                    else:
                        error = f"{type(exc).__name__}: {exc}"
                    trace = traceback.format_exc()
                finally:
                    shared.release()
            finally:
                if self._run_limit is not None:
                    self._run_limit.release()
            output = reached.output if error is None else None
            checks = reached.checks
            if node.generation != generation or self.nodes.get(node.name) is not node:
                return None  # superseded by a backtrack while the step swallowed its cancellation
            passed = error is None and (not checks or all(c.passed for c in checks))
            text, blobs = None, {}
            if output is not None and durable:
                try:
                    text, blobs = dump_output(output)
                except Exception as exc:
                    error = (f"OutputError: cannot store the output of step {node.name!r}: {exc} "
                             f"(annotate image fields reasoner.Image and tensors reasoner.Array)")
                    passed, trace = False, traceback.format_exc()
            record = AttemptRecord(
                node.name, generation, attempt, seed, "succeeded" if passed else "failed",
                checks, error, trace, started, time.perf_counter() - clock,
            )
            self.history.setdefault(node.name, []).append(record)
            self.store.add_attempt(run_id, record, text, blobs)
            if passed:
                for child, template, payload in ctx._spawned if ctx else ():  # same commit
                    self._ordinal += 1
                    spawned = self._spawn(node, template, child, payload, generation)
                    spawned.ordinal = self._ordinal
                    self.store.put_node(run_id, spawned.record())
                if durable:
                    await self.store.synced()  # durable before any dependant starts
                return self._succeeded(node, output)  # type: ignore[arg-type]
            self.bus.emit("attempt_failed", run_id, node.name, attempt=attempt, seed=seed,
                          reason=record.reason)
            if attempt > step.options.retries:
                self._exhausted(node, record.reason)
                return None
            self.bus.emit("step_retried", run_id, node.name, attempt=attempt + 1)

    async def _attempt(self, node: _Node, kwargs: dict[str, Any], ctx: Context | None,
                       reached: _Reached) -> None:
        """Run the step, then its checks, recording in `reached` how far it got."""
        step = node.step
        if step.is_async:
            raw = await step.fn(**kwargs)
        else:  # a plain function must not stall the loop: every other job runs on it
            raw = await asyncio.to_thread(step.fn, **kwargs)
        reached.output = raw if isinstance(raw, step.output) else self._coerce(node, raw)
        if step.checks:
            await self._check(node, kwargs, reached.output, ctx, reached.checks)

    @staticmethod
    def _coerce(node: _Node, raw: Any) -> BaseModel:
        if isinstance(raw, dict):
            return node.step.output.model_validate(raw)  # a ValidationError fails the attempt
        raise OutputError(
            f"step {node.name!r} returned {type(raw).__name__}, expected "
            f"{node.step.output.__name__}"
        )

    async def _check(
        self, node: _Node, kwargs: dict[str, Any], output: BaseModel, ctx: Context | None,
        records: list[CheckRecord],
    ) -> None:
        for check in node.step.checks:
            args = {}
            for param in check.params:
                if param == CTX:
                    args[param] = ctx
                elif param in OUTPUT_NAMES or param == node.step.name:
                    args[param] = output
                else:
                    args[param] = kwargs.get(param)
            try:
                if check.is_async:
                    result = await check.fn(**args)
                else:  # in a worker thread, so a slow check cannot stall other jobs
                    result = await asyncio.to_thread(check.fn, **args)
                if isinstance(result, bool):
                    result = Result(passed=result, score=float(result))
                if not isinstance(result, Result):
                    raise OutputError(f"returned {type(result).__name__}, not checks.Result")
                record = CheckRecord(check.name, result.passed, result.score, result.reason)
            except Exception as exc:  # a broken check fails the attempt, not the run
                record = CheckRecord(check.name, False, 0.0,
                                     f"check raised {type(exc).__name__}: {exc}")
            records.append(record)
            self.bus.emit("check", self.record.run_id, node.name, name=record.name,
                          passed=record.passed, score=record.score, reason=record.reason)

    # -------------------------------------------------------------- outcomes
    def _succeeded(self, node: _Node, output: BaseModel) -> _Node | None:
        """Record the output and start what waits on it; one of those continues in this task."""
        node.output = output
        node.status = "succeeded"
        node.task = None
        if self.bus.active:
            self.bus.emit("step_succeeded", self.record.run_id, node.name, attempts=node.attempts)
        claimed = None
        if node.children:
            self.bus.emit("spawned", self.record.run_id, node.name, children=list(node.children))
            claimed = self._schedule(node.children, claim=True)
        inherited = self._after(node, claim=claimed is None)
        return claimed or inherited

    def _exhausted(self, node: _Node, reason: str) -> None:
        node.task = None
        if len(self.backtracks) < self.record.max_backtracks:
            for candidate in self._ancestors_nearest_first(node.name):
                target = self.nodes[candidate]
                if target.step.options.backtrack and target.status == "succeeded":
                    self._backtrack(node, target, reason)
                    return
        self._mark(node, "failed")
        self.store.commit()
        self.bus.emit("step_failed", self.record.run_id, node.name, reason=reason)
        self._after(node)

    def _backtrack(self, failed: _Node, target: _Node, reason: str) -> None:
        """Regenerate `target` and re-run everything below it, within the budget."""
        run_id = self.record.run_id
        decision = BacktrackRecord(failed=failed.name, target=target.name, reason=reason,
                                   at=time.time())
        self.backtracks.append(decision)
        self.store.add_backtrack(run_id, len(self.backtracks), decision)
        removed: list[str] = []
        current = asyncio.current_task()
        for name in [target.name, *self._descendants(target.name)]:
            node = self.nodes[name]
            if node.task is not None and node.task is not current:
                node.task.cancel()
            node.task = None
            if node.parent is not None and name != target.name:
                removed.append(name)
                continue
            node.children = []
            node.output = None
            node.generation += 1
            node.attempts = node.settled = 0
            self._mark(node, "pending")
        for name in removed:
            del self.nodes[name]
        self.store.delete_nodes(run_id, removed)
        self.store.commit()
        self.bus.emit("backtracked", run_id, failed.name, target=target.name, reason=reason,
                      budget_left=self.record.max_backtracks - len(self.backtracks))
        self._schedule([target.name])

    # ------------------------------------------------------------------ result
    def _finish(self) -> Run:
        record = self.record
        failed, stuck = [], []
        for node in self.nodes.values():
            if node.status == "failed" and node.step.options.required:
                failed.append(node)
            elif node.status in ("pending", "running"):  # only a cancelled run ends this way
                stuck.append(node.name)
        failed.sort(key=lambda n: self.history[n.name][-1].started_at)
        errors = [f"step {n.name!r} failed: {self.history[n.name][-1].reason}" for n in failed]
        if stuck:
            errors.append(f"steps did not finish: {', '.join(stuck)}")
        record.status = "failed" if errors else "succeeded"
        record.error = errors[0] if errors else None
        record.finished_at = time.time()
        self.store.update_run(record)
        self.store.commit()
        self.bus.emit("run_finished", record.run_id, status=record.status, error=record.error)
        return self.to_run()

    def to_run(self) -> Run:
        steps = {
            name: StepRun(name, node.status, node.generation, self.history.get(name, []),
                          node.output, node.step.name if node.parent else None, node.parent)
            for name, node in self.nodes.items()
        }
        links = [(p, name) for name, node in self.nodes.items() for p in node.producers]
        links += [(node.parent, name) for name, node in self.nodes.items() if node.parent]
        r = self.record
        return Run(r.run_id, r.plan, r.status, r.seed, self.input, steps, self.backtracks,
                   r.created_at, r.error, r.finished_at, self.edges, links)
