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
The executor commits a finished step before its dependants start, so a run
killed at any point resumes from exactly what was committed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reasoner._exceptions import StoreError
from reasoner.arrays import BLOB_KEY, decode_blob
from reasoner.coherence import EdgeScore
from reasoner.records import ATTEMPT, AttemptRecord, BacktrackRecord, NodeRecord, RunRecord, Status

SCHEMA_VERSION = 1

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
"""

Blobs = dict[str, tuple[str, bytes]]


def dump_output(output: BaseModel) -> tuple[str, Blobs]:
    """A step output as JSON, with each Image/Array field moved out into a blob."""
    sink: Blobs = {}
    return output.model_dump_json(context={"blob_sink": sink}), sink


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


@dataclass
class StoredAttempt:
    id: int
    record: AttemptRecord
    output: str | None


@dataclass
class StoredRun:
    """Everything a store holds about one run, enough to show or resume it."""

    record: RunRecord
    nodes: dict[str, NodeRecord]
    attempts: list[StoredAttempt]
    backtracks: list[BacktrackRecord]
    edges: list[EdgeScore] = field(default_factory=list)
    blobs: dict[str, Any] = field(default_factory=dict)  # key -> decoded array


@dataclass
class RunHistory:
    record: RunRecord
    attempts: list[AttemptRecord]
    backtracks: list[BacktrackRecord]


class Store:
    """The store interface; this base keeps nothing (`Engine(store=None)`)."""

    durable = False

    def create_run(self, record: RunRecord) -> None: ...
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

    def load(self, run_id: str) -> StoredRun:
        raise StoreError("this engine keeps no runs (store=None); give it a store path")

    def runs(self, plan: str | None = None, status: Status | None = None) -> list[RunRecord]:
        return []

    def history(self, plan: str | None = None) -> list[RunHistory]:
        return []


class SQLiteStore(Store):
    """The embedded default: one SQLite file (or `:memory:`), WAL, synchronous=NORMAL."""

    durable = True

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path!r}: {exc}") from exc
        if row is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._db.commit()
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path!r} has schema version {row[0]}, newer than this "
                f"library's {SCHEMA_VERSION}; upgrade reasoner to read it"
            )

    def create_run(self, record: RunRecord) -> None:
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
        self._db.commit()

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
        blobs = {}
        for key in keys:
            blob = self._db.execute("SELECT kind, data FROM blobs WHERE key=?", (key,)).fetchone()
            if blob is not None:
                blobs[key] = decode_blob(blob[0], blob[1])
        return StoredRun(
            RunRecord.model_validate_json(row[0]), nodes, attempts, backtracks, edges, blobs
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


def open_store(spec: str | Path | Store | None) -> Store:
    """`None` keeps nothing; a path or ':memory:' opens SQLite; a Store passes through."""
    if spec is None:
        return Store()
    if isinstance(spec, Store):
        return spec
    return SQLiteStore(spec)
