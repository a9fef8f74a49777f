"""Durable run storage: SQLite by default, in WAL mode, with a versioned schema.

What is stored, and why this shape:
- `runs`: one row per run (its record as JSON, plus columns to list by).
- `nodes`: the live state of each step node; rewritten when it changes.
- `attempts`: append-only history; each attempt's output is stored here once,
  as its model's JSON with images and arrays replaced by blob references.
- `blobs`: PNG and npy bytes, content-addressed, so repeats cost nothing.
- `backtracks`: each decision to regenerate an upstream step.
- `edges`: each edge's coherence score, measured when the run ends.
Nothing is a full-state snapshot: a step's commit writes its own rows only.
The executor awaits `store.synced()` after a finished step's writes, before its
dependants start, so a run killed at any point resumes from exactly what was
committed; every step that finishes in the same loop tick, in any run, shares
that commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reasoner._exceptions import RunBusyError, StoreError
from reasoner.arrays import BLOB_KEY, decode_blob
from reasoner.coherence import EdgeScore
from reasoner.records import ATTEMPT, AttemptRecord, BacktrackRecord, NodeRecord, RunRecord, Status

SCHEMA_VERSION = 2  # 2 added `leases`; a version-1 store gains it, in place, when opened
APPLICATION_ID = 0x52534E52  # "RSNR" in the SQLite header: how a reasoner store is recognised
LEASE_TTL = 30.0  # seconds a run's lease lasts without a heartbeat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, plan TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, node TEXT NOT NULL,
    record TEXT NOT NULL, output TEXT);
CREATE INDEX IF NOT EXISTS attempts_by_run ON attempts (run_id, node);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS edges (
    run_id TEXT NOT NULL, producer TEXT NOT NULL, consumer TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, producer, consumer));
CREATE TABLE IF NOT EXISTS backtracks (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, token TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    heartbeat REAL NOT NULL, expires REAL NOT NULL);
"""

Blobs = dict[str, tuple[str, bytes]]


def dump_output(output: BaseModel) -> tuple[str, Blobs]:
    """A step output as JSON, with each Image/Array field moved out into a blob.

    Non-finite floats are written as the tokens NaN, Infinity and -Infinity,
    which pydantic reads back exactly (its own JSON writer would turn them
    into null, which the model then refuses to read).
    """
    sink: Blobs = {}
    text = output.model_dump_json(context={"blob_sink": sink})
    if "null" in text:  # a None, or a NaN/inf that pydantic wrote as null: write it exactly
        python = output.model_dump(mode="json", context={"blob_sink": sink})
        text = json.dumps(python, separators=(",", ":"), ensure_ascii=False)
    return text, sink


def load_output(model: type[BaseModel], text: str, blobs: dict[str, Any]) -> BaseModel:
    return model.model_validate_json(text, context={"blobs": blobs})


def _blob_keys(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        if BLOB_KEY in value and len(value) == 1:
            found.add(value[BLOB_KEY])
        else:
            for item in value.values():
                _blob_keys(item, found)
    elif isinstance(value, list):
        for item in value:
            _blob_keys(item, found)


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lease: a token unique to one execution, and its process."""

    token: str
    pid: int
    host: str

    @classmethod
    def here(cls) -> Holder:
        return cls(uuid.uuid4().hex, os.getpid(), socket.gethostname())

    def alive(self) -> bool:
        """False only when the holder's process is known dead (same host, pid gone)."""
        if self.host != socket.gethostname():
            return True  # another machine's process: only its lease's expiry tells
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass
class StoredAttempt:
    id: int
    record: AttemptRecord
    output: str | None


@dataclass
class NodeState:
    """Where one node of a stored run stands: its row, its attempts, its standing output."""

    row: NodeRecord
    attempts: list[AttemptRecord]  # every generation's, in order
    current: int = 0  # the highest attempt number of the current generation
    outputs: dict[int, str] = field(default_factory=dict)  # current generation: attempt -> JSON
    standing: AttemptRecord | None = None  # the attempt whose output stands for the node

    @property
    def status(self) -> Status:
        if self.row.status in ("failed", "skipped"):
            return self.row.status
        if self.standing is None:
            return "pending"
        return "degraded" if self.row.status == "degraded" else "succeeded"

    @property
    def output(self) -> str | None:
        """The JSON of the standing attempt's output."""
        if self.standing is None:
            return None
        return self.outputs.get(self.standing.attempt, "{}")


@dataclass
class StoredRun:
    """Everything a store holds about one run, enough to show or resume it."""

    record: RunRecord
    nodes: dict[str, NodeRecord]
    attempts: list[StoredAttempt]
    backtracks: list[BacktrackRecord]
    edges: list[EdgeScore] = field(default_factory=list)
    blobs: dict[str, Any] = field(default_factory=dict)  # key -> decoded array
    blob_kinds: dict[str, str] = field(default_factory=dict)  # key -> "png" or "npy"

    def states(self, static: Sequence[str]) -> dict[str, NodeState]:
        """Every node by name: the plan's `static` steps in order, then spawned ones as spawned.

        A static step without a row has not failed, been skipped or been reset;
        the attempt the row has `chosen`, else a succeeded attempt of the node's
        current generation, stands for it.
        """
        rows = {name: self.nodes.get(name) or NodeRecord(name=name) for name in static}
        spawned = sorted((r for r in self.nodes.values() if r.parent is not None),
                         key=lambda r: r.ordinal)
        rows.update((r.name, r) for r in spawned)
        states = {name: NodeState(row, []) for name, row in rows.items()}
        for attempt in self.attempts:
            record = attempt.record
            state = states.get(record.node)
            if state is None:  # a node a backtrack removed
                continue
            state.attempts.append(record)
            if record.generation != state.row.generation:
                continue
            state.current = max(state.current, record.attempt)
            if attempt.output is not None:
                state.outputs[record.attempt] = attempt.output
            chosen = state.row.chosen
            if record.attempt == chosen or (chosen is None and record.status == "succeeded"):
                state.standing = record
        return states


@dataclass
class RunHistory:
    record: RunRecord
    attempts: list[AttemptRecord]
    backtracks: list[BacktrackRecord]


class Store:
    """The store interface; this base keeps nothing (`Engine(store=None)`).

    The lease methods may also return an awaitable (a remote store's do).
    """

    durable = False
    lease_ttl = LEASE_TTL
    _tick: asyncio.Future[list[Awaitable[None]]] | None = None

    async def synced(self) -> None:
        """Return once everything written so far is committed.

        The commit runs at the end of the current loop tick, so every step that
        finished in that tick, in any run, shares one commit. A store whose
        commit completes elsewhere (the Ray store actor) hands back what to
        await for it from `_commit_tick`.
        """
        if self._tick is None:
            loop = asyncio.get_running_loop()
            self._tick = loop.create_future()
            loop.call_soon(self._end_tick)
        landed = await asyncio.shield(self._tick)  # one waiter's cancellation spares the rest
        for pending in landed:
            await pending

    def _end_tick(self) -> None:
        future, self._tick = self._tick, None
        assert future is not None
        try:
            landed = self._commit_tick()
        except Exception as exc:
            future.set_exception(StoreError(f"cannot commit to the store: {exc}"))
        else:
            future.set_result(landed)

    def _commit_tick(self) -> list[Awaitable[None]]:
        """Commit this tick's writes; what to await until they are durable (here: nothing)."""
        self.commit()
        return []

    def create_run(self, record: RunRecord, lease: Holder | None = None) -> None: ...
    def update_run(self, record: RunRecord) -> None: ...
    def put_node(self, run_id: str, record: NodeRecord) -> None: ...
    def delete_nodes(self, run_id: str, names: list[str]) -> None: ...
    def add_backtrack(self, run_id: str, seq: int, record: BacktrackRecord) -> None: ...
    def put_edges(self, run_id: str, edges: list[EdgeScore]) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...

    def add_attempt(
        self, run_id: str, record: AttemptRecord, output: str | None, blobs: Blobs
    ) -> int | None:
        return None

    def acquire_lease(self, run_id: str, holder: Holder) -> None:
        """Make `holder` the one executor of `run_id`, or raise RunBusyError naming the holder."""

    def renew_lease(self, run_id: str, holder: Holder) -> bool:
        """Extend the lease; False when it was lost (expired and taken over)."""
        return True

    def release_lease(self, run_id: str, holder: Holder) -> None: ...

    def lease_holder(self, run_id: str) -> Holder | None:
        return None

    def load(self, run_id: str) -> StoredRun:
        raise StoreError("this engine keeps no runs (store=None); give it a store path")

    def runs(self, plan: str | None = None, status: Status | None = None) -> list[RunRecord]:
        return []

    def history(self, plan: str | None = None) -> list[RunHistory]:
        return []


class SQLiteStore(Store):
    """The embedded default: one SQLite file (or `:memory:`), WAL, synchronous=NORMAL.

    Opening reads the file's header and tables before writing anything: a
    foreign database, a store of a newer or unreadable schema version, or (with
    `create=False`, as read-only commands open it) a missing or empty file is a
    StoreError naming the file, and the file is left exactly as it was.
    """

    durable = True

    def __init__(
        self, path: str | Path = ":memory:", *, create: bool = True, lease_ttl: float = LEASE_TTL
    ) -> None:
        self.path = str(path)
        self.lease_ttl = lease_ttl
        memory = self.path == ":memory:"
        if not memory and not create and not Path(self.path).is_file():
            raise StoreError(f"no store at {self.path!r}")
        try:
            if memory or create:
                self._db = sqlite3.connect(self.path, check_same_thread=False)
            else:  # mode=rw: never create the file
                uri = Path(self.path).resolve().as_uri() + "?mode=rw"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path!r}: {exc}") from exc
        try:
            version = self._recognise(create)
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._db.commit()
        except StoreError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open store {self.path!r}: {exc}") from exc

    def _recognise(self, create: bool) -> int:
        """The file's schema version (0: a new, empty database); reads only."""
        app = self._db.execute("PRAGMA application_id").fetchone()[0]
        rows = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%'"
        )
        tables = {name for (name,) in rows}
        if not tables and app == 0:
            if not create:
                raise StoreError(f"{self.path!r} is an empty database, not a reasoner store")
            return 0
        if app not in (0, APPLICATION_ID) or not {"meta", "runs"} <= tables:
            listed = ", ".join(sorted(tables)[:6]) or "none"
            raise StoreError(
                f"{self.path!r} is not a reasoner store (its tables: {listed}); "
                "give --store a new file or an existing store"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        text = row[0] if row is not None else None
        if not isinstance(text, str) or not text.isdigit():
            raise StoreError(
                f"store {self.path!r} has an unreadable schema version {text!r}; "
                "it was not written by reasoner, or it is damaged"
            )
        if int(text) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path!r} has schema version {text}, newer than this "
                f"library's {SCHEMA_VERSION}; upgrade reasoner to read it"
            )
        return int(text)

    def create_run(self, record: RunRecord, lease: Holder | None = None) -> None:
        try:
            self._db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                (record.run_id, record.plan, record.status, record.created_at,
                 record.model_dump_json()),
            )
        except sqlite3.IntegrityError:
            raise StoreError(
                f"run {record.run_id!r} already exists in {self.path!r}; resume it instead"
            ) from None
        if lease is not None:  # a new run is born leased: one commit for both
            self._put_lease(record.run_id, lease, time.time())
        self._db.commit()

    # ---------------------------------------------------------------- leases
    def _put_lease(self, run_id: str, holder: Holder, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, holder.token, holder.pid, holder.host, now, now + self.lease_ttl),
        )

    def acquire_lease(self, run_id: str, holder: Holder) -> None:
        self._db.commit()  # the lease is its own transaction; flush this tick's writes first
        self._db.execute("BEGIN IMMEDIATE")  # one writer decides: no two processes both win
        try:
            now = time.time()
            live = self._live_lease(run_id, now)
            if live is not None and live[0].token != holder.token:
                other, heartbeat, expires = live
                raise RunBusyError(
                    f"run {run_id!r} is being executed by {other} (last heartbeat "
                    f"{now - heartbeat:.0f} s ago); it can be taken over when that process "
                    f"ends or its lease expires in {expires - now:.0f} s"
                )
            self._put_lease(run_id, holder, now)
        except BaseException:
            self._db.rollback()
            raise
        self._db.commit()

    def renew_lease(self, run_id: str, holder: Holder) -> bool:
        now = time.time()
        cursor = self._db.execute(
            "UPDATE leases SET heartbeat=?, expires=? WHERE run_id=? AND token=?",
            (now, now + self.lease_ttl, run_id, holder.token),
        )
        self._db.commit()
        return cursor.rowcount == 1

    def release_lease(self, run_id: str, holder: Holder) -> None:
        self._db.execute("DELETE FROM leases WHERE run_id=? AND token=?", (run_id, holder.token))
        self._db.commit()

    def lease_holder(self, run_id: str) -> Holder | None:
        """Who executes `run_id` now: the holder of an unexpired lease, if alive."""
        live = self._live_lease(run_id, time.time())
        return None if live is None else live[0]

    def _live_lease(self, run_id: str, now: float) -> tuple[Holder, float, float] | None:
        """(holder, heartbeat, expiry) of the run's lease, unless it expired or its holder died."""
        row = self._db.execute(
            "SELECT token, pid, host, heartbeat, expires FROM leases WHERE run_id=?", (run_id,)
        ).fetchone()
        if row is None or row[4] <= now:
            return None
        holder = Holder(row[0], row[1], row[2])
        return (holder, row[3], row[4]) if holder.alive() else None

    def update_run(self, record: RunRecord) -> None:
        self._db.execute(
            "UPDATE runs SET status=?, record=? WHERE run_id=?",
            (record.status, record.model_dump_json(), record.run_id),
        )

    def put_node(self, run_id: str, record: NodeRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)",
            (run_id, record.name, record.model_dump_json()),
        )

    def delete_nodes(self, run_id: str, names: list[str]) -> None:
        self._db.executemany(
            "DELETE FROM nodes WHERE run_id=? AND name=?", [(run_id, n) for n in names]
        )

    def add_attempt(
        self, run_id: str, record: AttemptRecord, output: str | None, blobs: Blobs
    ) -> int | None:
        if blobs:
            self._db.executemany(
                "INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)",
                [(key, kind, data) for key, (kind, data) in blobs.items()],
            )
        cursor = self._db.execute(
            "INSERT INTO attempts (run_id, node, record, output) VALUES (?, ?, ?, ?)",
            (run_id, record.node, ATTEMPT.dump_json(record), output),
        )
        return cursor.lastrowid

    def add_backtrack(self, run_id: str, seq: int, record: BacktrackRecord) -> None:
        self._db.execute(
            "INSERT INTO backtracks VALUES (?, ?, ?)", (run_id, seq, record.model_dump_json())
        )

    def put_edges(self, run_id: str, edges: list[EdgeScore]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?)",
            [(run_id, e.producer, e.consumer, e.model_dump_json()) for e in edges],
        )

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def load(self, run_id: str) -> StoredRun:
        row = self._db.execute("SELECT record FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r} in store {self.path!r}")
        nodes = {
            rec.name: rec
            for rec in (
                NodeRecord.model_validate_json(text)
                for (text,) in self._db.execute(
                    "SELECT record FROM nodes WHERE run_id=?", (run_id,)
                )
            )
        }
        attempts = [
            StoredAttempt(id, ATTEMPT.validate_json(text), output)
            for id, text, output in self._db.execute(
                "SELECT id, record, output FROM attempts WHERE run_id=? ORDER BY id", (run_id,)
            )
        ]
        backtracks = [
            BacktrackRecord.model_validate_json(text)
            for (text,) in self._db.execute(
                "SELECT record FROM backtracks WHERE run_id=? ORDER BY seq", (run_id,)
            )
        ]
        edge_rows = self._db.execute(
            "SELECT record FROM edges WHERE run_id=? ORDER BY rowid", (run_id,)
        )
        edges = [EdgeScore.model_validate_json(text) for (text,) in edge_rows]
        keys: set[str] = set()
        for attempt in attempts:
            if attempt.output and BLOB_KEY in attempt.output:
                _blob_keys(json.loads(attempt.output), keys)
        blobs, kinds = {}, {}
        for key in keys:
            blob = self._db.execute("SELECT kind, data FROM blobs WHERE key=?", (key,)).fetchone()
            if blob is not None:
                blobs[key], kinds[key] = decode_blob(blob[0], blob[1]), blob[0]
        return StoredRun(
            RunRecord.model_validate_json(row[0]), nodes, attempts, backtracks, edges, blobs, kinds
        )

    def runs(self, plan: str | None = None, status: Status | None = None) -> list[RunRecord]:
        query, args = "SELECT record FROM runs WHERE 1=1", []
        if plan is not None:
            query += " AND plan=?"
            args.append(plan)
        if status is not None:
            query += " AND status=?"
            args.append(status)
        rows = self._db.execute(query + " ORDER BY created_at, run_id", args)
        return [RunRecord.model_validate_json(text) for (text,) in rows]


    def history(self, plan: str | None = None) -> list[RunHistory]:
        """Every run with its attempts and backtracks (no outputs), for summaries."""
        records = self.runs(plan)
        attempts: dict[str, list[AttemptRecord]] = {r.run_id: [] for r in records}
        backtracks: dict[str, list[BacktrackRecord]] = {r.run_id: [] for r in records}
        for run_id, text in self._db.execute("SELECT run_id, record FROM attempts ORDER BY id"):
            if run_id in attempts:
                attempts[run_id].append(ATTEMPT.validate_json(text))
        for run_id, text in self._db.execute("SELECT run_id, record FROM backtracks"):
            if run_id in backtracks:
                backtracks[run_id].append(BacktrackRecord.model_validate_json(text))
        return [RunHistory(r, attempts[r.run_id], backtracks[r.run_id]) for r in records]


def open_store(spec: str | Path | Store | None, *, create: bool = True) -> Store:
    """`None` keeps nothing; a path or ':memory:' opens SQLite; a Store passes through.

    `create=False` (for commands that only read, or resume) refuses a file that
    does not exist instead of creating an empty store there.
    """
    if spec is None:
        return Store()
    if isinstance(spec, Store):
        return spec
    return SQLiteStore(spec, create=create)
