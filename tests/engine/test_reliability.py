"""Reliability: no bad input, crash or second process loses or duplicates a run.

Real processes where a user would have them: the CLI killed with SIGKILL at
random moments, two resumes racing on one run, a resume while the original
still runs. The plans are in reliability_plans.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from reliability_plans import Task, faulty, non_finite

from reasoner import Engine, InputError, LeaseLostError, Plan, RunBusyError, StoreError
from reasoner.store import SQLiteStore

HERE = Path(__file__).parent


def _env(log: Path, delay: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
               FAULT_LOG=str(log), FAULT_DELAY=str(delay), HF_HUB_OFFLINE="1")
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reasoner", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _stored_attempts(db: Path) -> set[tuple[str, int, int, str]]:
    """(node, generation, attempt, status) of every attempt the store holds (none while the
    run that creates the store has not made its tables yet)."""
    with sqlite3.connect(db) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'attempts'").fetchone() is None:
            return set()
        rows = conn.execute("SELECT record FROM attempts").fetchall()
    return {(r["node"], r["generation"], r["attempt"], r["status"])
            for r in (json.loads(text) for (text,) in rows)}


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _wait_for(predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.01)


async def _interrupted(engine: Engine, plan: Plan, task: Task) -> None:
    """Start run "r" and cancel it 50 ms in, as Ctrl-C would."""
    job = asyncio.create_task(engine.run(plan, task, run_id="r"))
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job


# --------------------------------------------------------------- kill -9 at random
def test_kill_minus_9_at_20_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Fan-out, a backtrack and run-time expansion, killed 20 times and resumed each time."""
    rng = random.Random(1234)
    db, log = tmp_path / "runs.db", tmp_path / "log"
    env = _env(log, 0.04)
    command = [sys.executable, "-m", "reasoner", "run", "reliability_plans:faulty", "--input",
               '{"n": 5}', "--store", str(db), "--seed", "7", "--json"]

    def at_random(process: subprocess.Popen[str], kills: int) -> None:
        seen = len(_lines(log))
        _wait_for(lambda: len(_lines(log)) > seen or process.poll() is not None)  # a step began
        time.sleep(rng.uniform(0.0, 0.09))

    finished, after_kills = _kill_and_resume(command, db, log, env, 20, at_random)
    assert len(after_kills) == 20
    assert finished["status"] == "succeeded"

    fresh = _cli("run", "reliability_plans:faulty", "--input", '{"n": 5}', "--store",
                 str(tmp_path / "fresh.db"), "--seed", "7", "--json",
                 env=_env(tmp_path / "fresh.log", 0))
    expected = json.loads(fresh.stdout)
    assert {k: v["output"] for k, v in finished["steps"].items()} == {
        k: v["output"] for k, v in expected["steps"].items()
    }
    assert finished["backtracks"][0]["target"] == "draft"
    assert any(name.startswith("grow/") for name in finished["steps"])


def _kill_and_resume(command: list[str], db: Path, log: Path, env: dict[str, str], times: int,
                     wait: Callable[[subprocess.Popen[str], int], None],
                     ) -> tuple[Any, list[set[tuple[str, int, int, str]]]]:
    """Run `command`, `wait(process, kills so far)`, kill -9 it, resume; until it finishes
    or has been killed `times` times, then resume it to its end. After every kill the
    store must be intact, and no attempt committed before a kill may start again: not the
    same attempt, and no attempt of a node whose success was committed.
    Returns the finished run's JSON and what the store held after each kill."""
    checkpoints: list[tuple[int, set[tuple[str, int, int, str]]]] = []
    finished, kills = None, 0
    while finished is None and kills < times:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        wait(process, kills)
        process.kill()
        out, _ = process.communicate()
        if process.returncode == 0:  # it finished before the kill landed
            finished = json.loads(out)
            break
        kills += 1
        assert _integrity(db) == "ok"
        checkpoints.append((len(_lines(log)), _stored_attempts(db)))
        with sqlite3.connect(db) as conn:
            (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
        command = [sys.executable, "-m", "reasoner", "resume", run_id, "--store", str(db),
                   "--json"]
    if finished is None:
        result = _cli(*command[3:], env=env)
        assert result.returncode == 0, result.stderr
        finished = json.loads(result.stdout)
    assert _integrity(db) == "ok"
    lines = [line.split(" ") for line in _lines(log)]
    for at, committed in checkpoints:
        attempts = {(n, g, a) for n, g, a, _ in committed}
        done = {(n, g) for n, g, _, status in committed if status == "succeeded"}
        again = [" ".join(line) for line in lines[at:]
                 if (line[0], int(line[1]), int(line[2])) in attempts
                 or (line[0], int(line[1])) in done]
        assert not again, f"committed attempts ran again after a kill: {again}"
    return finished, [committed for _, committed in checkpoints]


def test_kill_minus_9_mid_sampling_and_mid_search_repeats_no_committed_attempt(
    tmp_path: Path,
) -> None:
    """A voted step of 6 samples, killed with some samples committed; then a search, killed
    between and inside its levels. Nothing committed runs again; the result is a clean run's."""
    db, log = tmp_path / "runs.db", tmp_path / "log"
    env = _env(log, 0.05)
    command = [sys.executable, "-m", "reasoner", "run", "reliability_plans:sampled", "--input",
               '{"n": 4}', "--store", str(db), "--seed", "11", "--json"]
    rng = random.Random(99)

    def picked() -> set[tuple[str, int, int, str]]:
        return {a for a in _stored_attempts(db) if a[0] == "pick"} if db.exists() else set()

    def mid_sampling_then_at_random(process: subprocess.Popen[str], kills: int) -> None:
        if kills == 0:  # the first kill lands while the samples are landing
            _wait_for(lambda: 1 <= len(picked()) < 6 or process.poll() is not None)
            return
        seen = len(_lines(log))
        _wait_for(lambda: len(_lines(log)) > seen or process.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.08))

    finished, after_kills = _kill_and_resume(command, db, log, env, 6,
                                             mid_sampling_then_at_random)
    assert len(after_kills) >= 2 and finished["status"] == "succeeded"
    first = {a for a in after_kills[0] if a[0] == "pick"}
    assert 1 <= len(first) < 6, "the first kill should land mid-sampling"
    fresh = _cli("run", "reliability_plans:sampled", "--input", '{"n": 4}', "--store",
                 str(tmp_path / "fresh.db"), "--seed", "11", "--json",
                 env=_env(tmp_path / "fresh.log", 0))
    expected = json.loads(fresh.stdout)
    assert {k: v["output"] for k, v in finished["steps"].items()} == {
        k: v["output"] for k, v in expected["steps"].items()}
    assert finished["steps"]["pick"]["votes"] == expected["steps"]["pick"]["votes"]
    assert finished["steps"]["found"]["output"]["goal"] is not None


# ------------------------------------------------------------------------ leases
def _killed_run(tmp_path: Path) -> tuple[Path, Path, str]:
    """A CLI run of `faulty` killed with SIGKILL after a few steps committed."""
    db, log = tmp_path / "runs.db", tmp_path / "log"
    process = subprocess.Popen(
        [sys.executable, "-m", "reasoner", "run", "reliability_plans:faulty", "--input",
         '{"n": 1}', "--store", str(db), "--seed", "3"],
        env=_env(log, 0.1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(_lines(log)) >= 3)
    process.kill()
    process.wait()
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
    return db, log, run_id


def test_two_resumes_racing_on_a_killed_run_execute_it_once(tmp_path: Path) -> None:
    db, log, run_id = _killed_run(tmp_path)
    before = len(_lines(log))
    env = _env(log, 0.1)
    racers = [subprocess.Popen([sys.executable, "-m", "reasoner", "resume", run_id, "--store",
                                str(db)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in racers]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results  # 3: the environment (a busy run), not a usage error
    (refused,) = [err for code, _, err in results if code == 3]
    assert f"run {run_id!r} is being executed by pid" in refused
    assert "Traceback" not in refused
    started = Counter(_lines(log)[before:])
    assert all(count == 1 for count in started.values()), started  # nothing ran twice
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT record FROM attempts").fetchall()
    records = [json.loads(text) for (text,) in rows]
    keys = Counter((r["node"], r["generation"], r["attempt"]) for r in records)
    assert all(count == 1 for count in keys.values()), keys  # no duplicate attempt rows
    assert _cli("show", run_id, "--store", str(db), "--json", env=env).returncode == 0


def test_a_resume_while_the_original_still_runs_is_refused(tmp_path: Path) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "log"
    env = _env(log, 0.15)
    original = subprocess.Popen(
        [sys.executable, "-m", "reasoner", "run", "reliability_plans:faulty", "--input",
         '{"n": 1}', "--store", str(db), "--seed", "3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_lines(log)) >= 2)
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
    listed = json.loads(_cli("runs", "--store", str(db), "--json", env=env).stdout)
    assert listed["status"] == "running" and listed["holder"] == f"pid {original.pid} on " \
        f"{socket.gethostname()}"
    second = _cli("resume", run_id, "--store", str(db), env=env)
    assert second.returncode == 3
    assert f"is being executed by pid {original.pid} on {socket.gethostname()}" in second.stderr
    assert original.wait(timeout=120) == 0  # the owner finishes undisturbed
    assert Counter(_lines(log))["start 0 1"] == 1


async def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FAULT_DELAY", "0.05")
    db = tmp_path / "runs.db"
    engine = Engine(db)
    await _interrupted(engine, faulty, Task(n=1))
    assert engine.load("r", faulty).status == "interrupted"
    with sqlite3.connect(db) as conn:  # a holder on another machine, alive for 1.5 s more
        conn.execute("INSERT INTO leases VALUES ('r', 'elsewhere', 1, 'other-host', ?, ?)",
                     (time.time(), time.time() + 1.5))
    with pytest.raises(RunBusyError, match="pid 1 on other-host"):
        await engine.resume("r", faulty)
    await asyncio.sleep(1.6)
    run = await engine.resume("r", faulty)
    assert run.status == "succeeded"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # released


async def test_two_resumes_in_one_process_run_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FAULT_DELAY", "0.05")
    engine = Engine(tmp_path / "runs.db")
    await _interrupted(engine, faulty, Task(n=1))
    outcomes = await asyncio.gather(engine.resume("r", faulty), engine.resume("r", faulty),
                                    return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Run", "RunBusyError"]


async def test_a_run_whose_lease_is_taken_over_stops(tmp_path: Path) -> None:
    """A holder suspended past its expiry finds another owner at its next heartbeat."""
    store = SQLiteStore(tmp_path / "runs.db", lease_ttl=0.3)
    plan = Plan("slow", input=Task)

    @plan.step
    async def wait(task: Task) -> Task:
        await asyncio.sleep(30)
        return task

    job = asyncio.create_task(Engine(store).run(plan, Task(n=1), run_id="r"))
    await asyncio.sleep(0.05)
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        conn.execute("UPDATE leases SET token='thief'")
    with pytest.raises(LeaseLostError, match="another process took the run over"):
        await asyncio.wait_for(job, 5)


# -------------------------------------------------------------- non-finite floats
def test_non_finite_floats_round_trip_and_json_stays_standard(tmp_path: Path) -> None:
    db, env = tmp_path / "runs.db", _env(tmp_path / "log", 0)
    ran = _cli("run", "reliability_plans:non_finite", "--input", '{"n": 1}', "--store", str(db),
               "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    printed = json.loads(ran.stdout, parse_constant=lambda token: pytest.fail(f"{token} in JSON"))
    assert printed["steps"]["measure"]["output"] == {
        "value": "NaN", "spread": ["Infinity", "-Infinity", 0.5], "maybe": None}
    run_id = printed["run_id"]
    strict = {"parse_constant": lambda token: pytest.fail(f"{token} in JSON")}
    shown = _cli("show", run_id, "--store", str(db), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout, **strict) == printed
    for listing in (["runs", "--json"], ["summary", "--json"]):
        listed = _cli(*listing, "--store", str(db), env=env)
        assert listed.returncode == 0 and listed.stdout.strip()
        for line in listed.stdout.splitlines():
            json.loads(line, **strict)
    assert _cli("report", run_id, "--store", str(db), "-o", str(tmp_path / "r.html"),
                env=env).returncode == 0
    assert _cli("resume", run_id, "--store", str(db), env=env).returncode == 0

    measure = Engine(db).load(run_id, non_finite).output("measure")
    assert math.isnan(measure.value) and measure.spread == [math.inf, -math.inf, 0.5]


async def test_a_killed_run_with_non_finite_outputs_resumes(tmp_path: Path) -> None:
    plan = Plan("nan-then-wait", input=Task)
    gate = asyncio.Event()

    class Value(BaseModel):
        x: float

    @plan.step
    async def first(task: Task) -> Value:
        return Value(x=-math.inf)

    @plan.step
    async def second(first: Value) -> Value:
        await gate.wait()
        return Value(x=first.x)

    engine = Engine(tmp_path / "runs.db")
    await _interrupted(engine, plan, Task(n=0))
    gate.set()
    run = await engine.resume("r", plan)
    assert run.status == "succeeded" and run.output("second").x == -math.inf


# --------------------------------------------------------- timeouts, sync code
async def test_the_timeout_bounds_the_checks_too() -> None:
    plan = Plan("hung-check", input=Task)

    @plan.step(timeout=0.2)
    async def quick(task: Task) -> Task:
        return task

    @quick.check
    async def never_returns(out: Task) -> bool:
        await asyncio.Event().wait()
        return True

    run = await asyncio.wait_for(Engine().run(plan, Task(n=1)), 5)
    assert run.status == "failed"
    assert run.steps["quick"].attempts[0].error == (
        "timed out after 0.2 s in check 'never_returns'")


async def test_blocking_sync_steps_and_checks_do_not_stall_other_jobs() -> None:
    plan = Plan("blocking", input=Task)
    threads: list[threading.Thread] = []

    @plan.step(timeout=0.3)
    def sleeper(task: Task) -> Task:  # a plain def: runs in a worker thread
        threads.append(threading.current_thread())
        time.sleep(task.n)
        return task

    @sleeper.check
    def slow_check(out: Task) -> bool:
        time.sleep(0.4)
        return True

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(20):
            await asyncio.sleep(0.02)
            ticks += 1

    started = time.perf_counter()
    timed_out, _ = await asyncio.gather(Engine().run(plan, Task(n=1)), ticker())
    assert time.perf_counter() - started < 0.9  # the timeout fired while the thread slept
    assert ticks == 20  # the loop kept turning
    assert threads[0] is not threading.main_thread()
    assert timed_out.steps["sleeper"].attempts[0].error == "timed out after 0.3 s in the step"
    checked = await Engine().run(plan, Task(n=0))
    assert checked.steps["sleeper"].attempts[0].error == (
        "timed out after 0.3 s in check 'slow_check'")


# ------------------------------------------------------------------ bad input
def test_a_foreign_or_unreadable_store_is_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a reasoner store .*customers"):
        SQLiteStore(foreign)
    assert foreign.read_bytes() == before
    ran = _cli("run", "reliability_plans:faulty", "--input", '{"n": 1}', "--store", str(foreign),
               env=_env(tmp_path / "log", 0))
    assert ran.returncode == 3 and "not a reasoner store" in ran.stderr
    assert "Traceback" not in ran.stderr and foreign.read_bytes() == before

    odd = tmp_path / "odd.db"
    SQLiteStore(odd).close()
    with sqlite3.connect(odd) as conn:
        conn.execute("UPDATE meta SET value='two' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="unreadable schema version 'two'"):
        SQLiteStore(odd)
    with pytest.raises(StoreError, match="no store at"):
        SQLiteStore(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:  # what version 1 wrote: no leases, no application id
        conn.execute("DROP TABLE leases")
        conn.execute("PRAGMA application_id=0")
        conn.execute("UPDATE meta SET value='1'")
    store = SQLiteStore(db)
    assert store._db.execute("SELECT value FROM meta").fetchone()[0] == "2"
    assert store._db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


async def test_run_ids_concurrency_and_unstorable_inputs_are_refused_up_front(
        tmp_path: Path) -> None:
    engine = Engine(tmp_path / "runs.db")
    for bad in ("x/../../escaped", "", ".hidden", "a" * 65, "caf\udce9"):
        with pytest.raises(InputError, match="invalid run id"):
            await engine.run(faulty, Task(n=1), run_id=bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="concurrency must be at least 1"):
            await engine.run(faulty, Task(n=1), concurrency=bad)
    with pytest.raises(ValueError, match="max_concurrency"):
        Engine(max_concurrency=0)

    class Text(BaseModel):
        text: str

    echo = Plan("echo", input=Text)

    @echo.step
    async def say(text: Text) -> Text:
        return text

    with pytest.raises(InputError, match="surrogate"):
        await engine.run(echo, {"text": "lone \udc80 surrogate"})
    assert engine.runs() == []  # nothing was started or stored


async def test_map_validates_every_input_before_running_any(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "runs.db")
    inputs: list[object] = [{"n": i} for i in range(11)]
    inputs[4] = {"n": "four"}
    with pytest.raises(InputError, match=r"(?s)1 of 11 inputs are invalid.*item 4: .*field 'n'"):
        async for _ in engine.map(faulty, inputs, concurrency=3):
            pass
    assert engine.runs() == []


async def test_a_caller_leaving_map_leaves_no_run_running(tmp_path: Path) -> None:
    plan = Plan("staggered", input=Task)

    @plan.step
    async def wait(task: Task) -> Task:
        await asyncio.sleep(task.n * 0.05)
        return task

    engine = Engine(tmp_path / "runs.db")
    with pytest.raises(RuntimeError, match="caller"):
        async with contextlib.aclosing(engine.map(plan, [{"n": i} for i in range(8)],
                                                  concurrency=4)) as runs:
            async for _ in runs:
                raise RuntimeError("the caller's loop broke")
    statuses = Counter(record.status for record in engine.runs())
    assert statuses == {"succeeded": 1, "interrupted": 3}, statuses
    for record in engine.runs():
        if record.status == "interrupted":
            assert (await engine.resume(record.run_id, plan)).status == "succeeded"
