"""The `reasoner` command line under hostile or careless use, driven as a user would.

Every case runs `python -m reasoner ...` in a subprocess and checks the exit
code, the message, that no traceback is printed, and that stored data and
unrelated files are left exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PLAN = "sample_plans:counted"
MARKER = '<meta name="generator" content="reasoner report">'


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", SAMPLE_DELAY="0")
    env.pop("SAMPLE_LOG", None)
    env.update(extra)
    return env


def _default_signals() -> None:
    """In the child: SIGINT, SIGTERM and SIGHUP as a terminal would deliver them.

    A background job of a non-interactive shell starts with SIGINT ignored, which
    the child would inherit (and rightly respect).
    """
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "reasoner", *args], cwd=cwd, env=env or _env(),
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True, timeout=120,
    )
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(errors="replace"),
                                      result.stderr.decode(errors="replace"))
    assert "Traceback" not in out.stderr, out.stderr
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, str]:
    """A store holding one succeeded run of `counted`: (store path, run id)."""
    db = tmp_path / "runs.db"
    result = cli("run", PLAN, "--input", '{"n": 2}', "--store", str(db), "--json")
    assert result.returncode == 0, result.stderr
    return db, json.loads(result.stdout)["run_id"]


# ------------------------------------------------------------------ A: overwriting
def test_report_never_writes_over_the_store(tmp_path: Path, stored: tuple[Path, str]) -> None:
    db, run_id = stored
    before = _digest(db)
    for target in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        result = cli("report", run_id, "--store", str(db), "-o", str(target))
        assert result.returncode == 2
        assert f"refusing to write the report over the store {str(db)!r}" in result.stderr
    result = cli("report", run_id, "--store", "runs.db", "-o", str(db), cwd=tmp_path)  # same file
    assert result.returncode == 2 and "refusing to write the report over the store" in result.stderr
    assert _digest(db) == before
    assert not Path(f"{db}-wal").exists() or MARKER not in Path(f"{db}-wal").read_text("latin-1")
    listed = cli("runs", "--store", str(db), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["run_id"] == run_id


def test_report_overwrites_only_its_own_reports_atomically(tmp_path: Path,
                                                           stored: tuple[Path, str]) -> None:
    db, run_id = stored
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    result = cli("report", run_id, "--store", str(db), "-o", str(notes))
    assert result.returncode == 2
    assert f"refusing to overwrite {str(notes)!r}: it is not a report" in result.stderr
    assert notes.read_text() == "<p>my notes</p>"

    page = tmp_path / "run.html"
    for _ in range(2):  # written, then overwritten: it is a report this command wrote
        result = cli("report", run_id, "--store", str(db), "-o", str(page))
        assert result.returncode == 0, result.stderr
        assert MARKER in page.read_text()[:300] and run_id in page.read_text()
    assert _files(tmp_path) == {"runs.db", "notes.html", "run.html"}  # no temporary left over

    folder = tmp_path / "all"
    folder.mkdir()
    (folder / "index.html").write_text("hand-written index")
    result = cli("report", "--store", str(db), "-o", str(folder))
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert "index.html" in result.stderr
    assert _files(folder) == {"index.html"}  # refused before writing any page
    assert (folder / "index.html").read_text() == "hand-written index"
    (folder / "index.html").unlink()
    for _ in range(2):
        result = cli("report", "--store", str(db), "-o", str(folder))
        assert result.returncode == 0, result.stderr
    assert _files(folder) == {"index.html", f"run-{run_id}.html"}
    assert MARKER in (folder / "index.html").read_text()


# ------------------------------------------------------------------ B: paths and ids
def test_run_ids_from_the_command_line_are_checked(tmp_path: Path,
                                                   stored: tuple[Path, str]) -> None:
    db, _ = stored
    before = _files(tmp_path)
    for args in (["report", "x/../../escaped", "-o", str(tmp_path / "out.html")],
                 ["show", "../runs"], ["resume", "x/../../escaped"], ["show", ".hidden"]):
        result = cli(*args, "--store", str(db))
        assert result.returncode == 2, args
        assert "invalid run id" in result.stderr and args[1] in result.stderr
    assert _files(tmp_path) == before
    assert not (tmp_path.parent / "escaped.html").exists()


def test_index_never_leaves_its_folder(tmp_path: Path, stored: tuple[Path, str]) -> None:
    from reasoner.records import RunRecord
    from reasoner.store import SQLiteStore

    db, run_id = stored
    store = SQLiteStore(db)  # a run made by other means, with an id unusable as a file name
    store.create_run(RunRecord(run_id="x/../../escaped", plan="counted", plan_ref=PLAN,
                               input='{"n": 2}', created_at=time.time(), status="failed"))
    store.close()
    folder = tmp_path / "deep" / "out"
    result = cli("report", "--store", str(db), "-o", str(folder))
    assert result.returncode == 0, result.stderr
    assert _files(tmp_path) == {"runs.db", "deep", "deep/out", "deep/out/index.html",
                                f"deep/out/run-{run_id}.html"}
    assert not list(tmp_path.parent.glob("escaped*"))
    index = (folder / "index.html").read_text()
    assert f'href="run-{run_id}.html"' in index
    assert "x/../../escaped" in index and "invalid run id" in index
    assert "run x/../../escaped: no page: invalid run id" in result.stderr


def test_runs_read_without_their_plan(tmp_path: Path, stored: tuple[Path, str]) -> None:
    """show, report, runs and summary never import the plan: a run outlives its module."""
    db, good = stored
    modules = tmp_path / "modules"
    modules.mkdir()
    source = ("from pydantic import BaseModel\nfrom reasoner import Plan\n\n"
              "class N(BaseModel):\n    n: int\n\n"
              "plan = Plan({name!r}, input=N)\n\n"
              "@plan.step\nasync def double(x: N) -> N:\n    return N(n=2 * x.n)\n")
    ids = {}
    for name in ("vanishing", "turning"):
        (modules / f"{name}.py").write_text(source.format(name=name))
        env = _env(PYTHONPATH=os.pathsep.join([str(HERE), str(modules)]))
        result = cli("run", f"{name}:plan", "--input", '{"n": 1}', "--store", str(db), "--json",
                     env=env)
        assert result.returncode == 0, result.stderr
        ids[name] = json.loads(result.stdout)["run_id"]
    (modules / "vanishing.py").unlink()  # its module is gone...
    (modules / "turning.py").write_text('raise RuntimeError("boom")\n')  # ...or now raises

    env = _env(PYTHONPATH=os.pathsep.join([str(HERE), str(modules)]))
    folder = tmp_path / "index"
    result = cli("report", "--store", str(db), "-o", str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert _files(folder) == {"index.html", *(f"run-{i}.html" for i in [good, *ids.values()])}
    page = (folder / f"run-{ids['turning']}.html").read_text()
    assert 'data-step="double"' in page and "<th>n</th><td><code>2</code>" in page

    shown = cli("show", ids["vanishing"], "--store", str(db), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["steps"]["double"]["output"] == {"n": 2}
    listed = cli("runs", "--store", str(db), env=env)
    assert listed.returncode == 0 and ids["turning"] in listed.stdout
    summary = cli("summary", "--store", str(db), "--json", env=env)
    assert summary.returncode == 0, summary.stderr

    resumed = cli("resume", ids["turning"], "--store", str(db), env=env)
    assert resumed.returncode == 2 and "RuntimeError: boom" in resumed.stderr


# ------------------------------------------------------------------ C and D: JSONL
def test_jsonl_lines_end_at_newline_only(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes('{"n": 2, "note": "a\u2028b"}\r\n{"n": 4, "note": "c\u0085d\u2029"}\n'
                       '{"n": "x"}\n{"n": 6}\n'.encode())
    db = tmp_path / "runs.db"
    result = cli("run", PLAN, "--input", f"@{inputs}", "--store", str(db), "--json")
    assert result.returncode == 2  # line 3 is invalid, and it is line 3
    assert f"{inputs}:3: invalid input for plan 'counted': field 'n'" in result.stderr
    assert "1 invalid input line(s) skipped; 3 will run" in result.stderr
    assert sorted(json.loads(line)["input"]["n"] for line in result.stdout.splitlines()) == [2, 4, 6]


def test_jsonl_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    inputs = tmp_path / "latin.jsonl"
    inputs.write_bytes(b'{"n": 2}\n{"n": 4, "note": "caf\xe9"}\n{"n": 6}\n')
    db = tmp_path / "runs.db"
    result = cli("run", PLAN, "--input", f"@{inputs}", "--store", str(db), "--json")
    assert result.returncode == 2
    assert f"{inputs}:2: not valid UTF-8" in result.stderr
    assert "1 invalid input line(s) skipped; 2 will run" in result.stderr
    assert sorted(json.loads(line)["input"]["n"] for line in result.stdout.splitlines()) == [2, 6]

    only = tmp_path / "only.jsonl"
    only.write_bytes(b'\xff\xfe{"n": 1}\n')
    result = cli("run", PLAN, "--input", f"@{only}", "--store", str(db))
    assert result.returncode == 2 and f"{only}:1: not valid UTF-8" in result.stderr
    assert f"error: no valid inputs in {only}" in result.stderr


@pytest.mark.parametrize("content", ["", "\n\n   \n\r\n"], ids=["empty", "blank-lines"])
def test_no_inputs_is_an_error(tmp_path: Path, content: str) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(content)
    db = tmp_path / "runs.db"
    result = cli("run", PLAN, "--input", f"@{inputs}", "--store", str(db))
    assert result.returncode == 2 and result.stderr.strip() == f"error: no inputs in {inputs}"
    result = cli("run", PLAN, "--input", "@-", "--store", str(db), stdin=content)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no inputs in standard input"
    assert not db.exists()


# ------------------------------------------------------------------ E: report targets
def test_report_output_targets_that_cannot_work(tmp_path: Path, stored: tuple[Path, str]) -> None:
    db, run_id = stored
    result = cli("report", run_id, "--store", str(db), "-o", str(tmp_path / "missing" / "r.html"))
    assert result.returncode == 2
    assert f"the folder {str(tmp_path / 'missing')!r} does not exist" in result.stderr
    (tmp_path / "folder").mkdir()
    result = cli("report", run_id, "--store", str(db), "-o", str(tmp_path / "folder"))
    assert result.returncode == 2 and "is a folder; give a file name" in result.stderr
    afile = tmp_path / "a.html"
    afile.write_text("x")
    result = cli("report", "--store", str(db), "-o", str(afile))
    assert result.returncode == 2 and f"-o {str(afile)!r} is a file" in result.stderr
    assert afile.read_text() == "x"
    assert _files(tmp_path) == {"runs.db", "folder", "a.html"}


# ------------------------------------------------------------------ F: plan references
def test_bad_plan_references_are_clear_errors(tmp_path: Path) -> None:
    for ref in (":plan", "sample_plans:", ":"):
        result = cli("run", ref, "--input", '{"n": 1}', "--store", str(tmp_path / "r.db"))
        assert result.returncode == 2
        assert f"error: invalid plan reference {ref!r}" in result.stderr
    result = cli("run", "raising_plan:plan", "--input", '{"n": 1}', "--store",
                 str(tmp_path / "r.db"))
    assert result.returncode == 2
    assert ("error: cannot import module 'raising_plan' for plan 'raising_plan:plan': "
            "RuntimeError: boom") in result.stderr
    result = cli("graph", "no_such_module_here:plan")
    assert result.returncode == 2
    assert "cannot import module 'no_such_module_here'" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    assert not (tmp_path / "r.db").exists()


# ------------------------------------------------------------------ G: closed stdout
def _with_closed_stdout(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: the first write fails with EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "reasoner", *args], stdout=write,
                              stderr=subprocess.PIPE, env=env, text=True, timeout=120)
    finally:
        os.close(write)


def test_closed_stdout_is_quiet_in_every_command(tmp_path: Path, stored: tuple[Path, str]) -> None:
    db, run_id = stored
    for args in (["plans"], ["graph", PLAN], ["runs", "--store", str(db), "--json"],
                 ["show", run_id, "--store", str(db)], ["summary", "--store", str(db), "--json"],
                 ["run", PLAN, "--input", '{"n": 2}', "--store", str(db), "--json"]):
        result = _with_closed_stdout(args, _env())
        assert result.returncode == 141, (args, result.stderr)
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
        assert "BrokenPipe" not in result.stderr, result.stderr


def test_runs_piped_into_head(tmp_path: Path) -> None:
    from reasoner.records import RunRecord
    from reasoner.store import SQLiteStore

    db = tmp_path / "many.db"
    store = SQLiteStore(db)  # more than a pipe holds, so the writer sees the reader leave
    for i in range(2000):
        store.create_run(RunRecord(run_id=f"r{i:05d}", plan="counted", plan_ref=PLAN,
                                   input='{"n": 1}', created_at=1e9 + i))
    store.close()
    command = f"'{sys.executable}' -m reasoner runs --json --store '{db}' | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 141)
    assert result.stderr == ""
    assert json.loads(result.stdout)["run_id"] == "r00000"


# ------------------------------------------------------------------ H: signals
class _Child:
    """A CLI process whose stderr is collected line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "reasoner", *args], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, preexec_fn=_default_signals)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, found: Callable[[], object], what: str, timeout: float = 60) -> object:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = found()
            if value:
                return value
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.process.kill()
        pytest.fail(f"never saw {what}; stderr: {''.join(self.lines)}")

    def run_id(self) -> str:
        def started() -> str | None:
            for line in self.lines:
                if match := re.match(r"run (\S+) started", line):
                    return match.group(1)
            return None

        return str(self.wait_for(started, "a run id"))

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.process.returncode, "".join(self.lines)


def _steps_logged(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_stops_a_run_cleanly_and_it_resumes(tmp_path: Path, signum: int) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "log"
    child = _Child(["run", PLAN, "--input", '{"n": 2}', "--store", str(db), "--seed", "3"],
                   _env(SAMPLE_DELAY="0.3", SAMPLE_LOG=str(log)))
    run_id = child.run_id()
    child.wait_for(lambda: "hop0" in _steps_logged(log), "the chain under way")
    child.process.send_signal(signum)
    code, stderr = child.finish()
    assert code == 128 + signum, stderr
    assert f"interrupted; resume with: reasoner resume {run_id} --store {db}" in stderr
    assert "Traceback" not in stderr
    listed = cli("runs", "--store", str(db), "--json")
    assert json.loads(listed.stdout)["status"] not in ("succeeded", "failed")

    resumed = cli("resume", run_id, "--store", str(db), "--json", env=_env(SAMPLE_LOG=str(log)))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    assert _steps_logged(log).count("start") == 1  # committed before the signal: not run again


def test_signal_stops_a_resume_cleanly(tmp_path: Path) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "log"
    child = _Child(["run", PLAN, "--input", '{"n": 2}', "--store", str(db)],
                   _env(SAMPLE_DELAY="0.3", SAMPLE_LOG=str(log)))
    run_id = child.run_id()
    child.wait_for(lambda: "hop0" in _steps_logged(log), "the chain under way")
    child.process.send_signal(signal.SIGTERM)
    assert child.finish()[0] == 143

    done = len(_steps_logged(log))
    child = _Child(["resume", run_id, "--store", str(db)],
                   _env(SAMPLE_DELAY="0.3", SAMPLE_LOG=str(log)))
    child.wait_for(lambda: len(_steps_logged(log)) > done, "the resumed run under way")
    child.process.send_signal(signal.SIGHUP)
    code, stderr = child.finish()
    assert code == 129, stderr
    assert f"interrupted; resume with: reasoner resume {run_id} --store {db}" in stderr
    assert cli("resume", run_id, "--store", str(db)).returncode == 0


def test_second_signal_during_clean_up_exits_at_once(tmp_path: Path) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "log"
    child = _Child(["run", "sample_plans:stubborn", "--input", '{"n": 2}', "--store", str(db)],
                   _env(SAMPLE_DELAY="60", SAMPLE_CLEANUP="60", SAMPLE_LOG=str(log)))
    run_id = child.run_id()
    child.wait_for(lambda: "linger" in _steps_logged(log), "the step under way")
    child.process.send_signal(signal.SIGTERM)
    child.wait_for(lambda: "cleanup" in _steps_logged(log), "the clean-up under way")
    sent = time.time()
    child.process.send_signal(signal.SIGINT)
    code, stderr = child.finish(timeout=30)
    assert time.time() - sent < 20  # not the 60 s clean-up
    assert code == 130, stderr
    assert "Traceback" not in stderr
    (last,) = [line for line in stderr.splitlines() if "again" in line and "exiting" in line]
    assert last.startswith("SIGINT again: exiting at once")

    resumed = cli("resume", run_id, "--store", str(db), "--json")  # the store is still whole
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"


# ------------------------------------------------------------------ I: read-only commands
def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    for args in (["resume", "X"], ["show", "X"], ["runs"], ["summary"],
                 ["report", "-o", "out"], ["report", "X", "-o", "x.html"]):
        result = cli(*args, "--store", "typo.db", cwd=tmp_path)
        assert result.returncode == 3, args  # a StoreError: the environment's group
        assert "no store at 'typo.db'" in result.stderr
        assert _files(tmp_path) == set(), args


def test_read_only_commands_leave_a_foreign_database_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('keep me')")
    db.commit()
    db.close()
    before = _digest(foreign)
    for args in (["runs"], ["resume", "X"], ["summary"]):
        result = cli(*args, "--store", str(foreign))
        assert result.returncode == 3 and str(foreign) in result.stderr, args
    assert _digest(foreign) == before
    assert _files(tmp_path) == {"notes.db"}


# ------------------------------------------------------------------ J: standard JSON
