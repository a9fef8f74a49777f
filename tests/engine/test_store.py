"""Durability: what is committed, how outputs are stored, and resuming after a kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sample_plans import Task, counted

from reasoner import Engine, StoreError
from reasoner.records import ATTEMPT
from reasoner.store import SCHEMA_VERSION, SQLiteStore

HERE = Path(__file__).parent


def _env(log: Path, delay: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        SAMPLE_LOG=str(log),
        SAMPLE_DELAY=str(delay),
        HF_HUB_OFFLINE="1",
    )
    return env


def _counts(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


async def test_outputs_are_stored_once_with_images_as_png_blobs(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "runs.db")
    run = await engine.run(counted, Task(n=2), seed=3)
    assert run.status == "succeeded" and run.error is None  # n=2 is even: every step passes
    db = sqlite3.connect(tmp_path / "runs.db")
    assert db.execute("SELECT plan, status FROM runs WHERE run_id=?",
                      (run.run_id,)).fetchall() == [("counted", "succeeded")]
    rows = db.execute("SELECT node, record, output FROM attempts WHERE run_id=?",
                      (run.run_id,)).fetchall()
    assert sorted(node for node, _, _ in rows) == sorted(counted.steps)  # one attempt each
    attempts = {node: ATTEMPT.validate_json(record) for node, record, _ in rows}
    assert {attempt.status for attempt in attempts.values()} == {"succeeded"}
    assert [(c.name, c.passed, c.reason) for c in attempts["picture"].checks] == [
        ("bright_enough", True, "mean brightness 0.488 >= threshold 0.300")]
    outputs = {node: json.loads(output) for node, _, output in rows}
    picture = outputs.pop("picture")
    assert outputs == {  # seed 3: start draws 86, each hop adds its own draw
        "start": {"v": 88}, "hop0": {"v": 93}, "hop1": {"v": 100}, "hop2": {"v": 108},
        "hop3": {"v": 112}, "hop4": {"v": 121}, "odd_one_out": {"v": 2}}
    assert picture["caption"] == "number 121"
    assert set(picture) == {"image", "latent", "caption"}
    assert set(picture["image"]) == {"$blob"} and set(picture["latent"]) == {"$blob"}
    kinds = dict(db.execute("SELECT kind, data FROM blobs").fetchall())
    assert kinds["png"].startswith(b"\x89PNG") and kinds["npy"].startswith(b"\x93NUMPY")
    assert len(kinds["png"]) < 28 * 28 + 200  # compact, not a JSON list of floats

    typed = engine.load(run.run_id, counted)  # with its plan: the plan's own models
    assert typed.output("hop4") == run.output("hop4")
    assert np.array_equal(typed.output("picture").image, run.output("picture").image)
    again = engine.load(run.run_id)  # without it: models made from the stored JSON alone
    assert type(again.output("picture")).__name__ == type(run.output("picture")).__name__
    assert type(again.output("picture")) is not type(run.output("picture"))
    assert np.array_equal(again.output("picture").image, run.output("picture").image)
    assert again.output("picture").latent.dtype == np.float32
    assert np.array_equal(again.output("picture").latent, run.output("picture").latent)
    assert again.output("hop4").model_dump() == {"v": 121}
    assert again.to_json() == run.to_json()  # shown identically, images and all
    assert again.links == run.links


async def test_resume_after_cancel_recomputes_nothing_committed(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    log = tmp_path / "log"
    monkeypatch.setenv("SAMPLE_LOG", str(log))
    monkeypatch.setenv("SAMPLE_DELAY", "0.05")
    engine = Engine(tmp_path / "runs.db")
    job = asyncio.create_task(engine.run(counted, Task(n=2), seed=9, run_id="cut"))
    while _counts(log)["hop2"] == 0:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    committed = {n for n, s in engine.load("cut").steps.items() if s.status == "succeeded"}
    assert {"start", "hop0", "hop1"} <= committed and "picture" not in committed

    resumed = await engine.resume("cut")
    assert resumed.status == "succeeded"
    counts = _counts(log)
    assert all(counts[name] == 1 for name in committed)
    assert set(counts) == set(counted.steps)

    fresh = await Engine().run(counted, Task(n=2), seed=9)
    for name in counted.steps:
        assert resumed.output(name).model_dump_json() == fresh.output(name).model_dump_json()


def test_resume_after_kill_minus_9(tmp_path: Path) -> None:
    """Kill a CLI run mid-chain with SIGKILL, resume it, and count step executions."""
    log, db = tmp_path / "log", tmp_path / "runs.db"
    command = [sys.executable, "-m", "reasoner", "run", "sample_plans:counted",
               "--input", '{"n": 4}', "--store", str(db), "--seed", "21", "--json"]
    process = subprocess.Popen(command, env=_env(log, 0.25), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _counts(log)["hop2"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    engine = Engine(db)
    (record,) = engine.runs()
    assert record.status == "running"
    committed = {n for n, s in engine.load(record.run_id).steps.items() if s.status == "succeeded"}
    assert {"start", "hop0", "hop1"} <= committed and "hop4" not in committed
    engine.store.close()
    listed = subprocess.run([sys.executable, "-m", "reasoner", "runs", "--store", str(db), "--json"],
                            env=_env(log, 0), capture_output=True, text=True, check=True)
    assert json.loads(listed.stdout)["status"] == "interrupted"  # its process is gone

    resumed = subprocess.run(
        [sys.executable, "-m", "reasoner", "resume", record.run_id, "--store", str(db), "--json"],
        env=_env(log, 0), capture_output=True, text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    counts = _counts(log)
    assert all(counts[name] == 1 for name in committed), counts
    assert all(counts[name] in (1, 2) for name in counted.steps), counts  # 2: was in flight

    fresh_db = tmp_path / "fresh.db"
    fresh = subprocess.run(
        [sys.executable, "-m", "reasoner", "run", "sample_plans:counted", "--input", '{"n": 4}',
         "--store", str(fresh_db), "--seed", "21", "--json"],
        env=_env(tmp_path / "fresh.log", 0), capture_output=True, text=True, check=True,
    )
    outputs = {k: v["output"] for k, v in json.loads(resumed.stdout)["steps"].items()}
    expected = {k: v["output"] for k, v in json.loads(fresh.stdout)["steps"].items()}
    assert outputs == expected


def test_store_none_keeps_nothing() -> None:
    engine = Engine(store=None)
    run = asyncio.run(engine.run(counted, Task(n=2)))
    assert run.status == "succeeded"
    assert engine.runs() == []
    with pytest.raises(StoreError, match="keeps no runs"):
        asyncio.run(engine.resume(run.run_id))


def test_schema_is_versioned(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    with pytest.raises(StoreError, match="newer than this library"):
        SQLiteStore(tmp_path / "s.db")


async def test_duplicate_run_id_and_unknown_run(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "runs.db")
    await engine.run(counted, Task(n=2), run_id="same")
    with pytest.raises(StoreError, match="already exists"):
        await engine.run(counted, Task(n=2), run_id="same")
    with pytest.raises(StoreError, match="no run 'other'"):
        await engine.resume("other")


async def test_backtracks_and_spawns_survive_a_resume(tmp_path: Path) -> None:
    """A run cut after a backtrack and a spawn resumes into the same final state."""
    from pydantic import BaseModel

    from reasoner import Plan

    class Item(BaseModel):
        k: int

    plan = Plan("grow-and-backtrack", input=Task)
    gate = asyncio.Event()
    calls: Counter[str] = Counter()

    @plan.step
    async def parent(ctx, task: Task) -> Item:
        calls["parent"] += 1
        return Item(k=ctx.generation)

    @plan.step(retries=0)
    async def grow(ctx, parent: Item) -> Item:
        calls["grow"] += 1
        if parent.k == 0:
            raise ValueError("needs a second parent")
        for i in range(3):
            ctx.spawn(leaf, str(i), Item(k=i))
        return parent

    @plan.template
    async def leaf(item: Item) -> Item:
        calls[f"leaf{item.k}"] += 1
        if item.k == 2:
            await gate.wait()
        return item

    @plan.step
    async def total(ctx, grow: Item) -> Item:
        return Item(k=sum(i.k for i in ctx.expansion("grow").values()))

    engine = Engine(tmp_path / "runs.db")
    job = asyncio.create_task(engine.run(plan, Task(n=0), run_id="g"))
    while calls["leaf2"] == 0:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    gate.set()
    run = await engine.resume("g", plan)
    assert run.status == "succeeded" and run.output("total").k == 3
    assert [(b.failed, b.target) for b in run.backtracks] == [("grow", "parent")]
    assert calls == {"parent": 2, "grow": 2, "leaf0": 1, "leaf1": 1, "leaf2": 2}


async def test_resume_refuses_a_plan_whose_graph_changed(tmp_path: Path) -> None:
    from pydantic import BaseModel

    from reasoner import Plan, PlanChangedError

    class N(BaseModel):
        n: int

    def build(extra: bool) -> Plan:
        plan = Plan("shifting", input=N)

        async def first(task: N) -> N:
            return N(n=task.n + 1)

        plan.add_step(first)
        if extra:
            async def second(first: N) -> N:
                return first

            plan.add_step(second)
        return plan

    engine = Engine(tmp_path / "runs.db")
    run = await engine.run(build(False), N(n=1), run_id="r")
    record = engine.store.load("r").record
    assert record.shape is not None and [s.name for s in record.shape.steps] == ["first"]
    with pytest.raises(PlanChangedError, match="plan 'shifting' has changed.*'second' is new"):
        await engine.resume("r", build(True))
    assert (await engine.resume("r", build(False))).outputs == run.outputs  # same graph: fine
