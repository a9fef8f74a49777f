"""The executor: runs one plan on one input, step by step, as inputs become ready.

How a run proceeds:
- Every node (a static step, or a child spawned at run time) starts the
  moment its own producers are done; there are no lock-step rounds, so a
  slow branch never holds up an unrelated fast one.
- A node's task loops over attempts: run the step (under the run's and the
  engine's concurrency bounds and the step's timeout), coerce and check the
  output. A raised exception, a timeout, a pydantic ValidationError or a
  failed check is a failed attempt; the next attempt gets a new seed.
- When a node's retries are spent, the executor backtracks: it picks the
  nearest ancestor that allows it, regenerates it and re-runs everything
  below, within the run's backtrack budget. When nothing is left, the node
  fails, the nodes below it are skipped, and independent branches go on.
- A success is committed to the store (attempt, node state, spawned
  children) before any dependant starts, so a killed run resumes exactly.
All node tasks live in one TaskGroup owned by `Execution.execute`: a
cancelled run cancels and awaits them all, and nothing outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from reasoner._exceptions import OutputError
from reasoner.checks import Result
from reasoner.context import Context, derive_seed
from reasoner.plan import CTX, OUTPUT_NAMES, Binding, Plan, Step
from reasoner.records import AttemptRecord, BacktrackRecord, CheckRecord, NodeRecord, RunRecord
from reasoner.run import Run, StepRun
from reasoner.store import StoredRun, dump_output, load_output

if TYPE_CHECKING:
    from reasoner.engine import Engine


class _Node:
    """A node of the live graph: its step, its state record and its output."""

    __slots__ = ("name", "step", "bindings", "record", "output", "payload", "task",
                 "producers", "dependants", "children", "parent")

    def __init__(self, name: str, step: Step, bindings: tuple[Binding, ...], record: NodeRecord):
        self.name = name
        self.step = step
        self.bindings = bindings
        self.record = record
        self.output: BaseModel | None = None
        self.payload: BaseModel | None = None
        self.task: asyncio.Task[None] | None = None
        self.producers: tuple[str, ...] = ()
        self.dependants: list[str] = []
        self.children: list[str] = []
        self.parent: str | None = None


def _producers(bindings: tuple[Binding, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for b in bindings:
        if b.source == "step":
            names.append(b.ref)  # type: ignore[arg-type]
        elif b.source == "steps":
            names.extend(b.ref)
    return tuple(dict.fromkeys(names))


class Execution:
    """One run of a concrete plan; `execute()` drives it to an end and returns the Run."""

    def __init__(
        self,
        engine: Engine,
        plan: Plan,
        record: RunRecord,
        task: BaseModel,
        stored: StoredRun | None = None,
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.record = record
        self.input = task
        self.store = engine.store
        self.bus = engine.events
        self.nodes: dict[str, _Node] = {}
        self.history: dict[str, list[AttemptRecord]] = {}
        self.backtracks: list[BacktrackRecord] = []
        self._ordinal = 0
        self._tg: asyncio.TaskGroup | None = None
        limit = record.concurrency or plan.concurrency
        self._run_limit = asyncio.Semaphore(limit) if limit else None
        graph = plan.validate()
        for name in plan.steps:
            node = self._add_node(name, plan.steps[name], NodeRecord(name=name))
            node.dependants = list(graph.successors(name))
        if stored is not None:
            self._restore(stored)

    # ------------------------------------------------------------------ graph
    def _add_node(self, name: str, step: Step, record: NodeRecord) -> _Node:
        node = _Node(name, step, self.plan.bindings(step.name), record)
        node.producers = () if step.template else _producers(node.bindings)
        self.nodes[name] = node
        return node

    def _restore(self, stored: StoredRun) -> None:
        """Rebuild the live graph and outputs from what a store committed."""
        outputs = {a.id: a.output for a in stored.attempts}
        for attempt in stored.attempts:
            self.history.setdefault(attempt.record.node, []).append(attempt.record)
        self.backtracks = list(stored.backtracks)
        for record in sorted(stored.nodes.values(), key=lambda r: r.ordinal):
            if record.template is not None:
                step = self.plan.templates[record.template]
                node = self._add_node(record.name, step, record)
                node.parent = record.parent
                node.payload = self._payload_type(step).model_validate_json(record.payload or "{}")
                self.nodes[record.parent].children.append(record.name)  # type: ignore[index]
                self._ordinal = max(self._ordinal, record.ordinal)
            else:
                node = self.nodes[record.name]
                node.record = record
            # Attempts that were recorded but whose success never committed still count.
            node.record.attempts = sum(
                1 for a in self.history.get(record.name, []) if a.generation == record.generation
            )
            if record.status == "succeeded" and record.output_attempt is not None:
                text = outputs.get(record.output_attempt)
                node.output = load_output(node.step.output, text or "{}", stored.blobs)
        for name, node in self.nodes.items():
            if name not in stored.nodes:  # never committed: count its generation-0 attempts
                node.record.attempts = sum(1 for a in self.history.get(name, []) if a.generation == 0)

    @staticmethod
    def _payload_type(step: Step) -> type[BaseModel]:
        return next(a for p, a in step.annotations.items() if p not in step.defaults)

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
            for child in node.dependants + node.children:
                if child not in seen:
                    seen.add(child)
                    order.append(child)
                    stack.append(child)
        return order

    def _subtree(self, node: _Node) -> str:
        """'open' while anything spawned below is unfinished, else 'ok' or 'failed'."""
        status = node.record.status
        if status in ("failed", "skipped"):
            return "failed"
        if status != "succeeded":
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
        self.bus.emit("run_started", self.record.run_id, plan=self.plan.name)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._schedule(list(self.nodes))
        finally:
            self._tg = None
            self.store.commit()
        return self._finish()

    def _schedule(self, names: list[str]) -> None:
        """Start every listed pending node whose producers are done; skip doomed ones."""
        for name in names:
            node = self.nodes.get(name)
            if node is None or node.record.status != "pending":
                continue
            states = [self._subtree(self.nodes[p]) for p in node.producers]
            if "failed" in states:
                self._skip(node)
            elif all(s == "ok" for s in states):
                node.record.status = "running"
                assert self._tg is not None
                node.task = self._tg.create_task(self._attempts(node, node.record.generation))

    def _skip(self, node: _Node) -> None:
        node.record.status = "skipped"
        self.store.put_node(self.record.run_id, node.record)
        self.bus.emit("step_skipped", self.record.run_id, node.name)
        self._after(node)

    def _after(self, node: _Node) -> None:
        """A node changed state: look at whatever waits on it or on its spawn root."""
        current: _Node | None = node
        while current is not None:
            self._schedule(current.dependants)
            current = self.nodes[current.parent] if current.parent else None

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

    async def _attempts(self, node: _Node, generation: int) -> None:
        """The attempt loop of one node in one generation."""
        step, run_id = node.step, self.record.run_id
        kwargs = self._kwargs(node)
        self.bus.emit("step_started", run_id, node.name, generation=generation)
        while True:
            node.record.attempts += 1
            attempt = node.record.attempts
            seed = derive_seed(self.record.seed, node.name, generation, attempt)
            ctx = Context(run_id, step, node.name, seed, attempt, generation,
                          self.engine.generators, self)
            started, clock = time.time(), time.perf_counter()
            output: BaseModel | None = None
            checks: list[CheckRecord] = []
            error = trace = None
            try:
                async with self._limits():
                    if step.takes_ctx:
                        kwargs[CTX] = ctx
                    if step.options.timeout is None:
                        raw = await step.fn(**kwargs)
                    else:
                        async with asyncio.timeout(step.options.timeout):
                            raw = await step.fn(**kwargs)
                    output = self._coerce(step, node.name, raw)
                    if step.checks:
                        checks = await self._check(node, kwargs, output, ctx)
            except TimeoutError:
                error = f"timed out after {step.options.timeout} s"
                trace = traceback.format_exc()
            except Exception as exc:  # a step's failure is data, never the engine's crash
                error = f"{type(exc).__name__}: {exc}"
                trace = traceback.format_exc()
            if node.record.generation != generation or self.nodes.get(node.name) is not node:
                return  # superseded by a backtrack while the step swallowed its cancellation
            passed = error is None and all(c.passed for c in checks)
            text, blobs = None, {}
            if output is not None and self.store.durable:
                try:
                    text, blobs = dump_output(output)
                except Exception as exc:
                    error = (
                        f"OutputError: cannot store the output of step {node.name!r}: {exc} "
                        f"(annotate image fields reasoner.Image and tensors reasoner.Array)"
                    )
                    passed, trace = False, traceback.format_exc()
            record = AttemptRecord.model_construct(
                node=node.name, generation=generation, attempt=attempt, seed=seed,
                status="succeeded" if passed else "failed", checks=checks, error=error,
                traceback=trace, started_at=started, duration_s=time.perf_counter() - clock,
            )
            self.history.setdefault(node.name, []).append(record)
            attempt_id = self.store.add_attempt(run_id, record, text, blobs)
            if passed:
                self._succeeded(node, output, attempt_id, ctx)  # type: ignore[arg-type]
                return
            self.bus.emit("attempt_failed", run_id, node.name, attempt=attempt, seed=seed,
                          reason=record.reason)
            if attempt > step.options.retries:
                self._exhausted(node, record.reason)
                return
            self.bus.emit("step_retried", run_id, node.name, attempt=attempt + 1)

    @contextlib.asynccontextmanager
    async def _limits(self) -> Any:
        if self._run_limit is None:
            async with self.engine.limit:
                yield
        else:
            async with self._run_limit, self.engine.limit:
                yield

    @staticmethod
    def _coerce(step: Step, name: str, raw: Any) -> BaseModel:
        if isinstance(raw, step.output):
            return raw
        if isinstance(raw, dict):
            return step.output.model_validate(raw)  # a ValidationError is a failed attempt
        raise OutputError(
            f"step {name!r} returned {type(raw).__name__}, expected {step.output.__name__}"
        )

    async def _check(
        self, node: _Node, kwargs: dict[str, Any], output: BaseModel, ctx: Context
    ) -> list[CheckRecord]:
        records = []
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
                result = check.fn(**args)
                if check.is_async:
                    result = await result
                if isinstance(result, bool):
                    result = Result(passed=result, score=float(result))
                if not isinstance(result, Result):
                    raise OutputError(f"returned {type(result).__name__}, not checks.Result")
                record = CheckRecord(name=check.name, passed=result.passed, score=result.score,
                                     reason=result.reason)
            except Exception as exc:  # a broken check fails the attempt, not the run
                record = CheckRecord(name=check.name, passed=False, score=0.0,
                                     reason=f"check raised {type(exc).__name__}: {exc}")
            records.append(record)
            self.bus.emit("check", self.record.run_id, node.name, **record.model_dump())
        return records

    # -------------------------------------------------------------- outcomes
    def _succeeded(self, node: _Node, output: BaseModel, attempt_id: int | None, ctx: Context) -> None:
        run_id = self.record.run_id
        node.output = output
        node.record.status = "succeeded"
        node.record.output_attempt = attempt_id
        node.task = None
        for child_name, template, payload in ctx._spawned:
            self._ordinal += 1
            record = NodeRecord(name=child_name, template=template.name, parent=node.name,
                                payload=payload.model_dump_json(), generation=node.record.generation,
                                ordinal=self._ordinal)
            child = self._add_node(child_name, template, record)
            child.parent, child.payload = node.name, payload
            node.children.append(child_name)
            self.store.put_node(run_id, record)
        self.store.put_node(run_id, node.record)
        self.store.commit()  # durable before any dependant starts
        self.bus.emit("step_succeeded", run_id, node.name, attempts=node.record.attempts)
        if node.children:
            self.bus.emit("spawned", run_id, node.name, children=list(node.children))
            self._schedule(list(node.children))
        self._after(node)

    def _exhausted(self, node: _Node, reason: str) -> None:
        node.task = None
        if len(self.backtracks) < self.record.max_backtracks:
            for candidate in self._ancestors_nearest_first(node.name):
                target = self.nodes[candidate]
                if target.step.options.backtrack and target.record.status == "succeeded":
                    self._backtrack(node, target, reason)
                    return
        node.record.status = "failed"
        self.store.put_node(self.record.run_id, node.record)
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
        affected = [target.name, *self._descendants(target.name)]
        removed: list[str] = []
        current = asyncio.current_task()
        for name in affected:
            node = self.nodes[name]
            if node.task is not None and node.task is not current:
                node.task.cancel()
            node.task = None
            if node.parent is not None and name != target.name:
                removed.append(name)
                continue
            node.children = []
            node.output = None
            node.record = node.record.model_copy(update={
                "generation": node.record.generation + 1, "status": "pending", "attempts": 0,
                "output_attempt": None,
            })
            self.store.put_node(run_id, node.record)
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
        failed = sorted(
            (n for n in self.nodes.values()
             if n.record.status == "failed" and n.step.options.required),
            key=lambda n: self.history[n.name][-1].started_at,
        )
        errors = [f"step {n.name!r} failed: {self.history[n.name][-1].reason}" for n in failed]
        stuck = [n.name for n in self.nodes.values() if n.record.status in ("pending", "running")]
        if stuck:  # only a cancelled run ends this way
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
            name: StepRun.model_construct(
                name=name, status=node.record.status, generation=node.record.generation,
                attempts=self.history.get(name, []), output=node.output,
                template=node.record.template, parent=node.parent,
            )
            for name, node in self.nodes.items()
        }
        r = self.record
        return Run.model_construct(
            run_id=r.run_id, plan=r.plan, status=r.status, seed=r.seed, input=self.input,
            error=r.error, steps=steps, backtracks=self.backtracks, created_at=r.created_at,
            finished_at=r.finished_at,
        )
