"""The executor: runs one plan on one input, step by step, as inputs become ready.

How a run proceeds:
- Every node (a static step, or a child spawned at run time) starts the
  moment its own producers are done; there are no lock-step rounds, so a
  slow branch never holds up an unrelated fast one.
- A node's task loops over attempts: run the step (under the run's and the
  runtime's concurrency bounds and the step's timeout), coerce and check the
  output. A raised exception, a timeout, a pydantic ValidationError or a
  failed check is a failed attempt; the next attempt gets a new seed.
- A sampled step (`samples=N`) runs its attempts N at a time, a round; each
  sample is committed as it finishes, and when the round is over (or, with
  `select="first"`, at the first sample that passes) one passing sample is
  chosen and the node's row says which. A round with no passing sample is a
  failed try, as one failed attempt is for an unsampled step.
- When a node's retries are spent, the executor backtracks: it picks the
  nearest ancestor that allows it, regenerates it and re-runs everything
  below, within the run's backtrack budget. When nothing is left, a step with
  `on_exhausted="best"` keeps its best-scoring attempt and is `degraded`;
  otherwise the node fails, the nodes below it are skipped, and independent
  branches go on.
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
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from reasoner._exceptions import GeneratorMissingError, OutputError, PlanChangedError
from reasoner.checks import Result
from reasoner.coherence import EdgeScore, score_edge
from reasoner.context import Context, derive_seed
from reasoner.plan import CTX, OUTPUT_NAMES, Binding, CompiledPlan, Plan, Step, validate_input
from reasoner.records import (
    DONE,
    FINISHED,
    AttemptRecord,
    BacktrackRecord,
    CheckRecord,
    Compute,
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
    if record.status in FINISHED:
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
                 "wants_ctx", "settled", "tried", "keeps", "standing", "confidence", "votes")

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
        self.attempts = 0  # the highest attempt number of the current generation
        self.ordinal = 0
        self.output: BaseModel | None = None
        self.task: asyncio.Task[None] | None = None
        self.wants_ctx = step.takes_ctx or step.checks_take_ctx
        self.settled = 0  # producers[:settled] are known to be done, so scans resume there
        self.tried: dict[int, _Tried] = {}  # the current generation's attempts, by number
        # ... kept only where a choice among them is made (so a plain chain keeps no garbage)
        self.keeps = (step.options.samples > 1 or step.options.select != "first"
                      or step.options.on_exhausted == "best")
        self.standing: AttemptRecord | None = None  # the attempt whose output stands
        self.confidence: float | None = None
        self.votes: dict[str, int] = {}

    def record(self) -> NodeRecord:
        chosen = self.standing.attempt if self.standing and self.status in DONE else None
        return NodeRecord(
            name=self.name, template=self.step.name if self.parent else None, parent=self.parent,
            payload=self.payload.model_dump_json() if self.payload is not None else None,
            generation=self.generation, status=self.status, ordinal=self.ordinal,
            chosen=chosen, confidence=self.confidence, votes=self.votes,
        )

    def reset(self) -> None:
        """Forget the current generation's attempts and output (a backtrack regenerates it)."""
        self.children = []
        self.output = self.standing = self.confidence = None
        self.tried, self.votes = {}, {}
        self.generation += 1
        self.attempts = self.settled = 0


class _Reached:
    """How far an attempt got: the step's output, then each check's verdict in turn."""

    __slots__ = ("output", "checks")

    def __init__(self) -> None:
        self.output: BaseModel | None = None
        self.checks: list[CheckRecord] = []


class _Tried:
    """A finished attempt: its record, its output (if it made one), its vote and spawns."""

    __slots__ = ("record", "output", "key", "spawned")

    def __init__(self, record: AttemptRecord, output: BaseModel | None, key: Any = None,
                 spawned: tuple[tuple[str, Step, BaseModel], ...] = ()) -> None:
        self.record = record
        self.output = output
        self.key = key  # the answer it votes for (select="vote")
        self.spawned = spawned  # the children it asked for, spawned if it is chosen

    @property
    def passed(self) -> bool:
        return self.record.status != "failed"

    @property
    def rank(self) -> tuple[float, float]:
        """Higher is better: the mean check score, then the earlier attempt."""
        return self.record.score, -self.record.attempt


_NOTHING_SPENT = Compute()  # shared by the attempts of steps without ctx; records are read-only


def _key(vote: Any, attempt: AttemptRecord, output: BaseModel | None) -> Any:
    """The answer a stored passing sample votes for (None if it cannot vote now)."""
    if vote is None or output is None or attempt.status == "failed":
        return None
    try:
        return vote(output)
    except Exception:  # it voted when it ran; a vote function that changed cannot fail a resume
        return None


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
        self.failures: dict[str, str] = {}  # why each failed node gave up, as it said then
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
            node.status, node.standing = state.status, state.standing
            node.confidence, node.votes = row.confidence, dict(row.votes)
            vote = node.step.options.vote
            for attempt in state.attempts:
                if attempt.generation != row.generation or not node.keeps:
                    continue
                text = state.outputs.get(attempt.attempt)
                output = None if text is None else load_output(node.step.output, text, stored.blobs)
                node.tried[attempt.attempt] = _Tried(attempt, output, _key(vote, attempt, output))
            if state.standing is not None:
                kept = node.tried.get(state.standing.attempt)
                node.output = (kept.output if kept is not None else
                               load_output(node.step.output, state.output or "{}", stored.blobs))
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
        if node.status not in DONE:
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
        standing = self.nodes[name].standing
        return [] if standing is None else standing.checks

    def compute(self, name: str) -> Compute:
        """What `name` and every node spawned below it spent, over all their attempts."""
        names, stack = [], [name]
        while stack:
            current = stack.pop()
            names.append(current)
            stack.extend(self.nodes[current].children)
        return Compute.total(a.compute for n in names for a in self.history.get(n, ()))

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
                if producer.status not in DONE or producer.children:  # else plainly done
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
            elif b.source == "value":
                kwargs[b.param] = b.value
        return kwargs

    async def _attempts(self, node: _Node, generation: int) -> _Node | None:
        """The attempts of one node in one generation; a node to run next, if it has an output."""
        options = node.step.options
        kwargs = self._kwargs(node)
        if self.bus.active:
            self.bus.emit("step_started", self.record.run_id, node.name, generation=generation)
        if options.samples > 1 or options.select != "first":
            return await self._rounds(node, generation, kwargs)
        while True:
            node.attempts += 1
            tried = await self._try(node, generation, node.attempts, kwargs, "succeeded")
            if tried is None:
                return None  # superseded by a backtrack while the step swallowed its cancellation
            if tried.passed:
                node.standing = tried.record
                for child, template, payload in tried.spawned:  # same commit
                    self._add_child(node, child, template, payload, generation)
                if self.store.durable:
                    await self.store.synced()  # durable before any dependant starts
                return self._succeeded(node, tried.output, "succeeded")  # type: ignore[arg-type]
            if node.attempts > options.retries:
                return await self._exhausted(node, tried.record.reason)
            self.bus.emit("step_retried", self.record.run_id, node.name, attempt=node.attempts + 1)

    async def _rounds(self, node: _Node, generation: int, kwargs: dict[str, Any]) -> _Node | None:
        """A sampled step: rounds of N samples at once, until the samples so far give a choice.

        Attempt numbers are fixed by round (round r holds r*N+1 .. r*N+N), so a resumed
        node runs only the samples of its round that were not committed. The choice is
        made among every sample of the generation, so a later round adds to the vote.
        """
        options, n = node.step.options, node.step.options.samples
        first = options.select == "first"
        round_ = (node.attempts - 1) // n if node.attempts else 0
        chosen = None
        while round_ <= options.retries:
            numbers = range(round_ * n + 1, round_ * n + n + 1)
            if not (first and any(node.tried[a].passed for a in numbers if a in node.tried)):
                await self._round(node, generation, [a for a in numbers if a not in node.tried],
                                  kwargs)
                if node.generation != generation or self.nodes.get(node.name) is not node:
                    return None
                node.attempts = max([node.attempts, *node.tried])
            chosen = self._select(node, list(node.tried.values()))
            if chosen is not None and (not options.agree > 1
                                       or node.votes[str(chosen.key)] >= options.agree):
                return await self._choose(node, chosen, "succeeded")
            round_ += 1
            if round_ <= options.retries:
                self.bus.emit("step_retried", self.record.run_id, node.name,
                              attempt=round_ * n + 1)
        if chosen is not None:
            tally = ", ".join(f"{key} ×{count}" for key, count in node.votes.items())
            reason = (f"no answer has {options.agree} agreeing samples of {len(node.tried)} "
                      f"(votes: {tally})")
        else:
            last = node.tried[max(node.tried)].record.reason
            reason = f"no sample of {len(node.tried)} passed; last: {last}"
        return await self._exhausted(node, reason)

    async def _round(self, node: _Node, generation: int, numbers: list[int],
                     kwargs: dict[str, Any]) -> None:
        """Run the samples `numbers` at once; with select="first", until one passes."""
        first = node.step.options.select == "first"
        tasks: list[asyncio.Task[None]] = []

        async def sample(number: int) -> None:
            tried = await self._try(node, generation, number, dict(kwargs), "passed")
            if tried is not None and self.store.durable:
                await self.store.synced()  # each sample lands as it finishes
            if tried is not None and tried.passed and first:
                for task in tasks:  # the first to pass is the one chosen
                    if task is not asyncio.current_task():
                        task.cancel()

        try:
            async with asyncio.TaskGroup() as group:
                tasks.extend(group.create_task(sample(number)) for number in numbers)
        except BaseExceptionGroup as failed:  # the store's, say: raise it as it was raised
            raise failed.exceptions[0] from None

    def _select(self, node: _Node, samples: list[_Tried]) -> _Tried | None:
        """The sample to keep, by the step's `select`; None when none passed.

        With "vote", the node's confidence and tally are set from `samples` as well.
        """
        passed = [t for t in samples if t.passed]
        if not passed:
            return None
        select = node.step.options.select
        if select == "first":  # the first to finish passing
            return min(passed, key=lambda t: t.record.started_at + t.record.duration_s)
        if select == "best":
            return max(passed, key=lambda t: t.rank)
        tally = Counter(t.key for t in passed)
        best = {key: max(t.rank for t in passed if t.key == key) for key in tally}
        winner = max(tally, key=lambda key: (tally[key], best[key]))
        node.confidence = tally[winner] / len(samples)
        node.votes = {str(key): count for key, count in tally.most_common()}
        return max((t for t in passed if t.key == winner), key=lambda t: t.rank)

    async def _choose(self, node: _Node, tried: _Tried, status: Status) -> _Node | None:
        """Make `tried` the node's output: its row says so, in the same commit as its children."""
        node.standing, node.status = tried.record, status
        self.store.put_node(self.record.run_id, node.record())
        if status == "succeeded":  # a degraded output does not grow the graph
            for child, template, payload in tried.spawned:
                self._add_child(node, child, template, payload, node.generation)
        if self.store.durable:
            await self.store.synced()
        return self._succeeded(node, tried.output, status)  # type: ignore[arg-type]

    def _add_child(self, node: _Node, name: str, template: Step, payload: BaseModel,
                   generation: int) -> None:
        self._ordinal += 1
        spawned = self._spawn(node, template, name, payload, generation)
        spawned.ordinal = self._ordinal
        self.store.put_node(self.record.run_id, spawned.record())

    async def _try(self, node: _Node, generation: int, attempt: int, kwargs: dict[str, Any],
                   passing: Literal["succeeded", "passed"]) -> _Tried | None:
        """One attempt, recorded and stored (`passing` is its status if it passes).

        None when a backtrack superseded the node while the attempt ran.
        """
        step, run_id, runtime = node.step, self.record.run_id, self.runtime
        seed = derive_seed(self.record.seed, node.name, generation, attempt)
        ctx = (Context(run_id, step, node.name, seed, attempt, generation,
                       runtime.generators, self) if node.wants_ctx else None)
        started, clock = time.time(), time.perf_counter()
        reached = _Reached()
        error = trace = key = None
        limit: asyncio.Timeout | None = None
        if self._run_limit is not None:
            await self._run_limit.acquire()
        try:
            await runtime.limit.acquire()
            try:
                if step.takes_ctx:
                    kwargs[CTX] = ctx
                if step.options.timeout is None:
                    await self._attempt(node, kwargs, ctx, reached)
                else:  # the timeout bounds the whole attempt: the step and its checks
                    async with asyncio.timeout(step.options.timeout) as limit:
                        await self._attempt(node, kwargs, ctx, reached)
                if step.options.vote is not None and reached.output is not None:
                    key = step.options.vote(reached.output)
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
                runtime.limit.release()
        finally:
            if self._run_limit is not None:
                self._run_limit.release()
        output = reached.output if error is None else None
        checks = reached.checks
        if node.generation != generation or self.nodes.get(node.name) is not node:
            return None
        passed = error is None and (not checks or all(c.passed for c in checks))
        text, blobs = None, {}
        if output is not None and self.store.durable:
            try:
                text, blobs = dump_output(output)
            except Exception as exc:
                error = (f"OutputError: cannot store the output of step {node.name!r}: {exc} "
                         f"(annotate image fields reasoner.Image and tensors reasoner.Array)")
                passed, trace, output = False, traceback.format_exc(), None
        record = AttemptRecord(
            node.name, generation, attempt, seed, passing if passed else "failed", checks,
            error, trace, started, time.perf_counter() - clock,
            ctx.compute if ctx is not None else _NOTHING_SPENT,
        )
        self.history.setdefault(node.name, []).append(record)
        self.store.add_attempt(run_id, record, text, blobs)
        tried = _Tried(record, output, key,
                       tuple(ctx._spawned) if ctx is not None and passed else ())
        if node.keeps:
            node.tried[attempt] = tried
        if not passed:
            self.bus.emit("attempt_failed", run_id, node.name, attempt=attempt, seed=seed,
                          reason=record.reason)
        return tried

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
    def _succeeded(self, node: _Node, output: BaseModel, status: Status) -> _Node | None:
        """Record the output and start what waits on it; one of those continues in this task."""
        node.output = output
        node.status = status
        node.task = None
        if status == "degraded":
            self.bus.emit("step_degraded", self.record.run_id, node.name,
                          attempt=node.standing.attempt if node.standing else None,
                          reason=node.standing.reason if node.standing else "")
        elif self.bus.active:
            self.bus.emit("step_succeeded", self.record.run_id, node.name, attempts=node.attempts,
                          confidence=node.confidence)
        claimed = None
        if node.children:
            self.bus.emit("spawned", self.record.run_id, node.name, children=list(node.children))
            claimed = self._schedule(node.children, claim=True)
        inherited = self._after(node, claim=claimed is None)
        return claimed or inherited

    async def _exhausted(self, node: _Node, reason: str) -> _Node | None:
        """Retries are spent: backtrack, else keep the best effort (degraded), else fail."""
        if len(self.backtracks) < self.record.max_backtracks:
            for candidate in self._ancestors_nearest_first(node.name):
                target = self.nodes[candidate]
                if target.step.options.backtrack and target.status in DONE:
                    node.task = None
                    self._backtrack(node, target, reason)
                    return None
        if node.step.options.on_exhausted == "best":
            kept = self._select(node, list(node.tried.values())) or max(
                (t for t in node.tried.values() if t.output is not None),
                key=lambda t: t.rank, default=None)
            if kept is not None:  # the vote's answer if one passed, else the best score
                return await self._choose(node, kept, "degraded")
        node.task = None
        self.failures[node.name] = reason
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
            node.reset()
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
        errors = [f"step {n.name!r} failed: "
                  f"{self.failures.get(n.name) or self.history[n.name][-1].reason}" for n in failed]
        if stuck:
            errors.append(f"steps did not finish: {', '.join(stuck)}")
        degraded = any(node.status == "degraded" for node in self.nodes.values())
        record.status = "failed" if errors else "degraded" if degraded else "succeeded"
        record.error = errors[0] if errors else None
        record.finished_at = time.time()
        self.store.update_run(record)
        self.store.commit()
        self.bus.emit("run_finished", record.run_id, status=record.status, error=record.error)
        return self.to_run()

    def to_run(self) -> Run:
        steps = {
            name: StepRun(name, node.status, node.generation, self.history.get(name, []),
                          node.output, node.step.name if node.parent else None, node.parent,
                          node.standing, node.confidence, node.votes)
            for name, node in self.nodes.items()
        }
        links = [(p, name) for name, node in self.nodes.items() for p in node.producers]
        links += [(node.parent, name) for name, node in self.nodes.items() if node.parent]
        r = self.record
        return Run(r.run_id, r.plan, r.status, r.seed, self.input, steps, self.backtracks,
                   r.created_at, r.error, r.finished_at, self.edges, links)
