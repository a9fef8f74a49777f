"""The Ray backend on a local cluster this module starts (2 CPUs), shut down after.

Plans run on Ray give exactly what they give locally; runs resume across
backends; a generator host or a worker killed mid-run costs nothing that was
committed. Without Ray these tests skip, except on CI (CI=true), where they fail.
The tests share one Ray engine (starting its actors is most of their cost), so
each uses its own job numbers and log file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_plans import Job, relay

from reasoner import Engine, Plan, Run
from reasoner._exceptions import ClusterError
from reasoner.records import ATTEMPT
from reasoner.testing import fake_generators

try:
    import ray
except ImportError:
    if os.environ.get("CI") == "true":
        pytest.fail("CI must test the Ray backend: install the `ray` extra", pytrace=False)
    pytest.skip("Ray is not installed (pip install 'reasoner[ray]')", allow_module_level=True)

HERE = Path(__file__).parent
FAKES = "reasoner.testing:fake_generators"
SEED = 4  # draft fails its check twice on this seed, then passes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster") / "runs.db"


@pytest.fixture(scope="module")
def engine(store: Path) -> Iterator[Engine]:
    """A Ray engine with two workers and the fake generators, on a fresh local cluster."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # workers import cluster_plans
    try:
        engine = Engine(store, backend="ray", workers=2, generators=FAKES)
        try:
            yield engine
        finally:
            asyncio.run(engine.aclose())
    finally:
        ray.shutdown()


def _comparable(run: Run) -> dict[str, Any]:
    """`run.to_json()` without what differs between runs of the same job: ids, times, input."""
    found = run.to_json()
    for varies in ("run_id", "input"):  # the input carries the log file and delay
        del found[varies]
    for backtrack in found["backtracks"]:
        del backtrack["at"]
    return found


async def _local(numbers: range) -> dict[int, dict[str, Any]]:
    """What the local backend gives for these jobs: the reference for every Ray run."""
    engine = Engine(None, generators=fake_generators())
    jobs = [Job(n=n) for n in numbers]
    return {run.input.n: _comparable(run) async for run in engine.map(relay, jobs, seed=SEED)}


def _counts(log: Path) -> Counter[str]:
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


async def _wait_for(log: Path, line: str, times: int = 1) -> None:
    async with asyncio.timeout(30):
        while _counts(log)[line] < times:
            await asyncio.sleep(0.02)


def _committed_attempts(store: Path, run_id: str) -> Counter[str]:
    """Attempts the store holds per "<step> <n>", for every step that has succeeded."""
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT runs.record, attempts.record FROM attempts "
                          "JOIN runs USING (run_id) WHERE run_id LIKE ?", (run_id,)).fetchall()
    finally:
        db.close()
    attempts: Counter[str] = Counter()
    succeeded = set()
    for run_text, attempt_text in rows:
        n = Job.model_validate_json(json.loads(run_text)["input"]).n
        attempt = ATTEMPT.validate_json(attempt_text)
        attempts[f"{attempt.node} {n}"] += 1
        if attempt.status == "succeeded":
            succeeded.add(f"{attempt.node} {n}")
    return Counter({key: count for key, count in attempts.items() if key in succeeded})


async def test_ray_gives_the_local_results_and_resumes_across_backends(
    engine: Engine, store: Path, tmp_path: Path
) -> None:
    expected = await _local(range(6))
    assert all(run["steps"]["draft"]["attempts"] == 3 for run in expected.values())  # retried
    local = Engine(store, generators=fake_generators())  # the same file, from this process
    try:
        runs = [run async for run in engine.map(relay, [Job(n=n) for n in range(6)], seed=SEED)]
        assert {run.input.n: _comparable(run) for run in runs} == expected
        assert all(_comparable(local.load(run.run_id)) == expected[run.input.n] for run in runs)
        assert {run.run_id for run in runs} <= {record.run_id for record in engine.runs()}

        # Started locally, cut after its first step, finished on Ray, and the other way round.
        log = tmp_path / "log"
        job = Job(n=7, log=str(log), delay=0.3)
        uninterrupted = (await _local(range(7, 8)))[7]
        for start, finish, run_id in [(local, engine, "local-then-ray"),
                                      (engine, local, "ray-then-local")]:
            log.unlink(missing_ok=True)
            task = asyncio.create_task(start.run(relay, job, seed=SEED, run_id=run_id))
            await _wait_for(log, "digits 7")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            committed = _committed_attempts(store, run_id)
            assert "draft 7" in committed and "summary 7" not in committed
            log.unlink()
            resumed = await finish.resume(run_id)
            assert resumed.status == "succeeded"
            assert _comparable(resumed) == uninterrupted
            assert all(_counts(log)[step] == 0 for step in committed)  # nothing ran twice
            assert set(_counts(log)) | set(committed) == {f"{step} 7" for step in relay.steps}

        unimportable = Plan("unimportable", input=Job)
        unimportable.module = "__main__"  # as if defined in the driver's script

        @unimportable.step
        async def only(job: Job) -> Job:
            return job

        with pytest.raises(ClusterError, match="__main__"):
            await engine.run(unimportable, Job(n=1))
    finally:
        local.store.close()


async def _collect(runs: Any) -> list[Run]:
    return [run async for run in runs]


async def _map_and_kill(engine: Engine, log: Path, numbers: range, delay: float, when: str,
                        actor: Callable[[], Any], *, restart: bool,
                        ) -> tuple[asyncio.Task[list[Run]], Any]:
    """Start jobs `numbers` on Ray and, once `when` is logged, kill the `actor()` of then.

    Returns the jobs, still going, and the actor killed.
    """
    jobs = [Job(n=n, log=str(log), delay=delay) for n in numbers]
    running = asyncio.create_task(_collect(engine.map(relay, jobs, seed=SEED)))
    await _wait_for(log, when)
    killed = actor()
    ray.kill(killed, no_restart=not restart)
    return running, killed


async def _assert_as_local(runs: list[Run], numbers: range) -> None:
    assert all(run.status == "succeeded" for run in runs)
    assert {run.input.n: _comparable(run) for run in runs} == await _local(numbers)


async def test_a_killed_generator_host_is_restarted_and_every_run_completes(
    engine: Engine, tmp_path: Path
) -> None:
    running, _ = await _map_and_kill(engine, tmp_path / "log", range(10, 16), 0.15, "digits 10",
                                     lambda: engine.cluster.hosts[0], restart=True)
    await _assert_as_local(await running, range(10, 16))


async def test_a_killed_worker_is_restarted_and_its_jobs_recompute_nothing_committed(
    engine: Engine, store: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    running, _ = await _map_and_kill(engine, log, range(20, 24), 0.4, "echo 20",
                                     lambda: engine.cluster.workers[0], restart=True)
    committed = _committed_attempts(store, "%")  # every one of these must run exactly once
    runs = await running
    await _assert_as_local(runs, range(20, 24))
    executions = _counts(log)
    ours = {step: count for step, count in committed.items() if int(step.split()[1]) >= 20}
    assert ours and all(executions[step] == count for step, count in ours.items())
    assert sum(executions.values()) > sum(len(s.attempts) for r in runs for s in r.steps.values())


async def test_a_worker_lost_for_good_is_replaced_and_its_jobs_finish_elsewhere(
    engine: Engine, tmp_path: Path
) -> None:
    running, lost = await _map_and_kill(engine, tmp_path / "log", range(30, 34), 0.2,
                                        "digits 31", lambda: engine.cluster.workers[1],
                                        restart=False)
    runs = await running
    assert lost not in engine.cluster.workers  # type: ignore[union-attr]
    await _assert_as_local(runs, range(30, 34))
