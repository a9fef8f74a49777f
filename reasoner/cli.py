"""The `reasoner` command line: list and draw plans, run them over JSONL, inspect runs.

Exit codes follow the error groups of `reasoner._exceptions`: 0 when every
run succeeded or is degraded (it finished, keeping a best effort for a step
whose checks could not be met; `--json` and `show` say which); 1 when some
run failed, or the model could not produce what
was asked (GenerationError); 2 for the caller's mistake (UsageError: bad
arguments, unknown plan, invalid input lines, whose valid lines still run);
3 when the environment failed (BackendError: the store cannot be read or
written, the run is busy in another process, the Ray cluster failed); 128 + N
when signal N (SIGINT, SIGTERM, SIGHUP) stopped a run (the runs in flight are
cancelled cleanly and stay resumable); 141 when standard output was closed
under us (`reasoner runs | head -1`). Imports are deferred so that
`reasoner --help` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasoner.engine import Engine
    from reasoner.events import Event
    from reasoner.plan import Plan
    from reasoner.run import Run
    from reasoner.store import Store

OK, FAILED, USAGE, BACKEND, STDOUT_CLOSED = 0, 1, 2, 3, 128 + 13  # 141: as if killed by SIGPIPE
FINISHED_OK = ("succeeded", "degraded")  # run statuses that exit 0
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # each stops a run cleanly; a second one at once


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reasoner", description="Run chained generation plans with checks and backtracking."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_store(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--store", default="runs.db", help="SQLite file of runs (default runs.db)")
        return p

    plans = sub.add_parser("plans", help="list the plans that can be run")
    plans.add_argument("--json", action="store_true")

    graph = sub.add_parser("graph", help="print a plan's step graph")
    graph.add_argument("plan", help="plan name, module.path:attribute, or a graph spec file.json")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.add_argument("--input", help="JSON input, for plans sized by their input")

    run = with_store(sub.add_parser("run", help="run a plan on one input or a JSONL file"))
    run.add_argument("plan", help="plan name, module.path:attribute, or a graph spec file.json")
    run.add_argument("--input", help="a JSON object, or @file.jsonl (@- for stdin); a graph "
                                     "spec takes none")
    run.add_argument("--jobs", type=int, default=8, help="runs at once (default 8)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    run.add_argument("--device", help="generator device, e.g. cpu or cuda (default: CUDA if any)")
    run.add_argument("--ray", metavar="auto|ADDRESS",
                     help="run on a Ray cluster: auto (the one `ray start --head` started on this "
                          "machine) or its address, e.g. ray://head:10001")
    run.add_argument("--workers", type=int, help="Ray worker actors (default: one per node)")

    ask = with_store(sub.add_parser("ask", help="plan a graph of blocks for a request, run it"))
    ask.add_argument("request", help='what you want, e.g. "work out 3 + 4 and draw it"')
    ask.add_argument("--dry-run", action="store_true",
                     help="print the graph spec as JSON and the graph as mermaid, run nothing")
    ask.add_argument("--attempts", type=int, default=3,
                     help="answers the model may give, each rejected one shown its error "
                          "(default 3)")
    ask.add_argument("--blocks", action="append", default=[], metavar="MODULE",
                     help="also plan with the blocks this module registers (repeatable)")
    ask.add_argument("--seed", type=int, default=0)
    ask.add_argument("--json", action="store_true")
    ask.add_argument("--device")

    resume = with_store(sub.add_parser("resume", help="continue an interrupted run"))
    resume.add_argument("run_id")
    resume.add_argument("--json", action="store_true")
    resume.add_argument("--device")

    show = with_store(sub.add_parser("show", help="show one run's steps, checks and outputs"))
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")

    runs = with_store(sub.add_parser("runs", help="list runs with id, plan, status, start time"))
    runs.add_argument("--plan")
    runs.add_argument("--json", action="store_true")

    report = with_store(sub.add_parser("report", help="write a self-contained HTML report"))
    report.add_argument("run_id", nargs="?", help="one run; without it, every run and an index")
    report.add_argument("-o", "--output", required=True,
                        help="the HTML file for one run, or a folder for an index of runs")
    report.add_argument("--plan", help="with no RUN_ID: only runs of this plan")

    summary = with_store(sub.add_parser("summary", help="success rates, attempts, latencies"))
    summary.add_argument("--plan")
    summary.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from reasoner._exceptions import BackendError, GenerationError, ReasonerError

    try:
        try:
            code = _COMMANDS[args.command](args)
        except ReasonerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = (BACKEND if isinstance(exc, BackendError)
                    else FAILED if isinstance(exc, GenerationError) else USAGE)
        except KeyboardInterrupt:  # a Ctrl-C outside the event loop (run and resume handle theirs)
            print("interrupted; `reasoner runs` lists the runs to resume", file=sys.stderr)
            code = 128 + signal.SIGINT
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _stdout_gone()
        return STDOUT_CLOSED
    return code


def _stdout_gone() -> None:
    """The reader of stdout went away: send what is left to devnull, so exiting is quiet.

    The recipe of Python's `signal` docs (note on SIGPIPE): without it the interpreter's
    final flush of stdout raises again and prints a traceback-like complaint.
    """
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture stdout)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


# ------------------------------------------------------------------ commands
def _plans(args: argparse.Namespace) -> int:
    from reasoner.registry import known_plans

    plans = known_plans()
    for name, plan in sorted(plans.items()):
        summary = plan.description.splitlines()[0] if plan.description else ""
        if args.json:
            print(_dumps({"name": name, "input": plan.input.model_json_schema(),
                          "description": plan.description}))
        else:
            print(f"{name:20} {summary}")
    return OK


def _graph(args: argparse.Namespace) -> int:
    from reasoner.plan import validate_input
    from reasoner.registry import load_plan

    plan = load_plan(args.plan)
    given = validate_input(plan, args.input) if args.input else None
    if given is None and plan.has_planner and plan.examples:  # sized by its input: show one
        request, example = plan.examples[0]
        given = validate_input(plan, json.dumps(example))
        print(f"the graph for the example input {json.dumps(example)} ({request!r}); "
              f"--input draws it for yours", file=sys.stderr)
    compiled = plan.compile(given)
    print(compiled.mermaid() if args.format == "mermaid" else compiled.dot(), end="")
    return OK


def _read_inputs(plan: Plan, spec: str) -> tuple[list[Any], int]:
    """Valid inputs, and how many lines were invalid (each reported with its line).

    Lines end at "\n" only (a trailing "\r" is dropped): a U+2028 or U+0085 inside a
    JSON string is part of its line, as JSON Lines says. Each line is decoded on its
    own, so a line that is not UTF-8 is reported by number like any other bad line.
    """
    from reasoner._exceptions import InputError
    from reasoner.plan import validate_input

    if not spec.startswith("@"):
        return [validate_input(plan, spec)], 0
    source = spec[1:]
    if not source:
        raise InputError("--input @ needs a file name after the @ (or @- for standard input)")
    where, label = ("standard input", "<stdin>") if source == "-" else (source, source)
    data = _read_bytes(source)
    inputs, bad = [], 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            bad += 1
            print(f"{label}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                  f"{exc.start + 1}); save the file as UTF-8", file=sys.stderr)
            continue
        if not line.strip():
            continue
        try:
            inputs.append(validate_input(plan, line))
        except InputError as exc:
            bad += 1
            print(f"{label}:{number}: {exc}", file=sys.stderr)
    if not inputs:
        raise InputError(f"no valid inputs in {where} ({bad} invalid line(s))" if bad
                         else f"no inputs in {where}")
    return inputs, bad


def _read_bytes(source: str) -> bytes:
    from reasoner._exceptions import InputError

    if source == "-":
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        if stream is None:
            raise InputError("cannot read inputs from standard input: it is closed")
        try:
            data = stream.read()
        except OSError as exc:
            raise InputError(f"cannot read inputs from standard input: {exc.strerror}") from exc
        return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read inputs from {source!r}: {exc.strerror}") from exc


def _run(args: argparse.Namespace) -> int:
    from reasoner.registry import load_plan

    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return USAGE
    if args.workers is not None and (args.ray is None or args.workers < 1):
        print("error: --workers needs --ray and must be at least 1", file=sys.stderr)
        return USAGE
    if args.ray is not None and args.device is not None:
        print("error: --device is for local runs; on Ray each generator host takes its actor's GPU",
              file=sys.stderr)
        return USAGE
    plan = load_plan(args.plan)
    if args.input is None and plan.spec is None:
        print(f"error: plan {plan.name!r} needs --input", file=sys.stderr)
        return USAGE
    inputs, bad = _read_inputs(plan, args.input or "{}")
    if bad:
        print(f"{bad} invalid input line(s) skipped; {len(inputs)} will run", file=sys.stderr)
    tracker = _InFlight()
    runs: list[Run] = []

    async def go() -> None:
        from reasoner.progress import JobProgress

        async with _engine(args, tracker, args.store) as engine:
            with JobProgress(engine, total=len(inputs), plan=plan.name):
                mapped = engine.map(plan, inputs, concurrency=args.jobs, seed=args.seed)
                async with aclosing(mapped):  # an error here cancels the runs before the close
                    async for run in mapped:
                        runs.append(run)
                        _print_run(run, args, plan)

    stopped = _drive(go(), tracker, args.store)
    failed = sum(run.status not in FINISHED_OK for run in runs)
    degraded = sum(run.status == "degraded" for run in runs)
    counts = (f"{len(runs) - failed - degraded} succeeded, "
              + (f"{degraded} degraded, " if degraded else "") + f"{failed} failed")
    if stopped is not None:
        print(f"{counts}, {len(tracker.running)} interrupted", file=sys.stderr)
        return stopped
    print(counts, file=sys.stderr)
    return USAGE if bad else (FAILED if failed else OK)


def _ask(args: argparse.Namespace) -> int:
    if args.attempts < 1:
        print("error: --attempts must be at least 1", file=sys.stderr)
        return USAGE
    tracker = _InFlight()
    result: list[tuple[Run, Plan]] = []

    async def go() -> None:
        from reasoner.blocks import Blocks, known_blocks, load_blocks
        from reasoner.planner import draft

        blocks = Blocks(known_blocks(), load_blocks(*args.blocks))
        async with _engine(args, tracker, None if args.dry_run else args.store) as engine:
            drafted = await draft(args.request, engine.generators["lm"],
                                  engine.generators["embedder"], blocks,
                                  seed=args.seed, attempts=args.attempts)
            for i, tried in enumerate(drafted.tries[:-1]):
                print(f"answer {i + 1} rejected: {tried.error}", file=sys.stderr)
            plan = drafted.plan
            spec = _dumps(plan.to_spec().dump())
            if args.dry_run:
                print(spec)
                print(plan.mermaid(), end="", flush=True)
                return
            print(f"graph: {spec}", file=sys.stderr, flush=True)
            result.append((await engine.run(plan, {}, seed=args.seed), plan))

    stopped = _drive(go(), tracker, args.store)
    if stopped is not None:
        return stopped
    if not result:
        return OK
    run, plan = result[0]
    _print_run(run, args, plan)
    return OK if run.status in FINISHED_OK else FAILED


def _resume(args: argparse.Namespace) -> int:
    from reasoner.records import check_run_id

    run_id = check_run_id(args.run_id)
    tracker = _InFlight(run_id)  # unfinished until it says otherwise, even if stopped early
    result: list[Run] = []

    async def go() -> None:
        # create=False: a typo in --store must not create an empty store
        async with _engine(args, tracker, args.store, create=False) as engine:
            result.append(await engine.resume(run_id))

    stopped = _drive(go(), tracker, args.store)
    if stopped is not None:
        return stopped
    from reasoner.registry import known_plans

    _print_run(result[0], args, known_plans().get(result[0].plan))
    return OK if result[0].status in FINISHED_OK else FAILED


@asynccontextmanager
async def _engine(args: argparse.Namespace, tracker: _InFlight, store: str | None, *,
                  create: bool = True) -> AsyncIterator[Engine]:
    """The engine a command runs jobs on: listened to by `tracker`, closed on the way out."""
    from reasoner.engine import Engine, default_engine
    from reasoner.store import open_store

    if getattr(args, "ray", None) is not None:
        engine = Engine(store, backend="ray", address=args.ray, workers=args.workers)
    else:
        opened = open_store(store, create=create)
        try:
            engine = default_engine(opened, device=args.device)
        except BaseException:
            opened.close()
            raise
    engine.subscribe(tracker)
    try:
        yield engine
    finally:
        await engine.aclose()


# ------------------------------------------------------- signals and runs in flight
class _InFlight:
    """An engine listener: the ids of the runs started and not yet finished, in order."""

    def __init__(self, *run_ids: str) -> None:
        self.running: dict[str, None] = dict.fromkeys(run_ids)

    def __call__(self, event: Event) -> None:
        if event.kind == "run_started":
            self.running[event.run_id] = None
        elif event.kind == "run_finished":
            self.running.pop(event.run_id, None)

    def tell_resume(self, store: str) -> None:
        for run_id in self.running:
            print(f"interrupted; resume with: reasoner resume {run_id} --store "
                  f"{shlex.quote(store)}", file=sys.stderr)


class _Stopped(Exception):
    """How a signal ends the event loop: not an error, so not a ReasonerError."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _drive(work: Coroutine[Any, Any, None], tracker: _InFlight, store: str) -> int | None:
    """Run `work` in an event loop; a signal ends it cleanly: the exit code, or None if none came.

    On SIGINT, SIGTERM or SIGHUP the runs in flight are cancelled (the store keeps them
    resumable), each is named with the command that resumes it, and the code is
    128 + the signal. A closed stdout also names them, then leaves to `main`.
    """
    try:
        asyncio.run(_until_signal(work))
    except _Stopped as stop:
        tracker.tell_resume(store)
        if not tracker.running:
            print("interrupted; no run was in flight", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:
        tracker.tell_resume(store)
        raise
    return None


async def _until_signal(work: Coroutine[Any, Any, None]) -> None:
    """Await `work`; the first signal cancels it (clean-up runs), a second one exits at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    numbers: list[int] = []  # the signals handled here
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:  # only if the raw handler below did not get there first
            _exit_at_once(signum)
        received.append(signum)
        task.cancel()
        for number in numbers:  # a second signal acts even while clean-up blocks the loop
            signal.signal(number, _exit_at_once)
        try:
            print(f"{signal.Signals(signum).name}: stopping the runs in flight (again to exit "
                  "at once)", file=sys.stderr, flush=True)
        except OSError:
            pass

    for name in SIGNALS:
        number = getattr(signal, name, None)
        if number is None or signal.getsignal(number) == signal.SIG_IGN:  # nohup's SIGHUP stays
            continue
        try:
            loop.add_signal_handler(number, on_signal, number)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, thread)
            continue
        numbers.append(number)
    try:
        await work
    except asyncio.CancelledError:
        if not received:
            raise
        task.uncancel()
        raise _Stopped(received[0]) from None


def _exit_at_once(signum: int, frame: object = None) -> None:
    """The second signal: no more clean-up. What the store committed is kept, as on a kill."""
    try:
        sys.stdout.flush()
    except Exception:  # closed, or interrupted mid-write: nothing more to save
        pass
    name = signal.Signals(signum).name
    message = (f"{name} again: exiting at once; committed steps are kept, and `reasoner runs` "
               "lists the runs to resume\n")
    try:
        os.write(2, message.encode())
    except OSError:
        pass
    os._exit(128 + signum)


# ------------------------------------------------------------ reading commands
@contextmanager
def _reading(store: str) -> Iterator[Store]:
    """An existing store, for commands that read: never creates or alters a file.

    Runs are read from their records alone (`reasoner.run.read_run`), so a run
    shows the same whether or not its plan can still be imported.
    """
    from reasoner.store import open_store

    opened = open_store(store, create=False)
    try:
        yield opened
    finally:
        opened.close()


def _show(args: argparse.Namespace) -> int:
    from reasoner.records import check_run_id
    from reasoner.run import excerpt, read_run

    run_id = check_run_id(args.run_id)
    with _reading(args.store) as store:
        run = read_run(store.load(run_id))
    if args.json:
        print(_dumps(run.to_json()))
        return OK
    print(f"run {run.run_id}  plan {run.plan}  status {run.status}  seed {run.seed}")
    if run.spec is not None:
        print(f"  spec: {_dumps(run.spec)}")
    if run.error:
        print(f"  error: {run.error}")
    if run.degraded:
        print(f"  degraded: {', '.join(run.degraded)} kept their best attempt")
    print(f"  compute: {run.compute}")
    for backtrack in run.backtracks:
        print(f"  backtrack: {backtrack.failed} -> regenerate {backtrack.target} ({backtrack.reason})")
    for name, step in run.steps.items():
        chosen = (f", attempt {step.standing.attempt} chosen"
                  if step.standing is not None and len(step.attempts) > 1 else "")
        print(f"  {name}: {step.status}, {len(step.attempts)} attempt(s){chosen}, "
              f"seeds {step.seeds}")
        if step.confidence is not None:
            votes = ", ".join(f"{answer} x{n}" for answer, n in step.votes.items())
            print(f"    confidence {step.confidence:.2f} (votes: {votes})")
        for check in step.checks:
            verdict = "pass" if check.passed else "FAIL"
            print(f"    check {check.name}: {verdict} {check.score:.3f} {check.reason}")
        if step.status in ("failed", "degraded") and step.attempts:
            print(f"    {'error' if step.status == 'failed' else 'unmet'}: "
                  f"{(step.standing or step.attempts[-1]).reason}")
        if step.attempts:
            print(f"    compute: {step.compute}")
        if step.output is not None:
            print(f"    output: {excerpt(step.output)}")
    return OK


def _runs(args: argparse.Namespace) -> int:
    with _reading(args.store) as store:
        records = store.runs(args.plan)
        # A "running" run whose process is gone (killed, lease expired) is shown interrupted.
        holders = {r.run_id: store.lease_holder(r.run_id) for r in records if r.status == "running"}
    for record in records:
        started = datetime.fromtimestamp(record.created_at, UTC).isoformat(timespec="seconds")
        status, holder = record.status, holders.get(record.run_id)
        if status == "running" and holder is None:
            status = "interrupted"
        if args.json:
            print(_dumps({"run_id": record.run_id, "plan": record.plan, "status": status,
                          "started": started, "error": record.error,
                          "holder": None if holder is None else str(holder)}))
        else:
            note = record.error or (f"executed by {holder}" if holder else "")
            print(f"{record.run_id}  {record.plan:16} {status:11} {started}"
                  + (f"  {note}" if note else ""))
    return OK


def _report(args: argparse.Namespace) -> int:
    """One run's page to a file, or (no RUN_ID) every run's page and an index into a folder.

    Only files this command wrote are overwritten (never the store, never anything
    else), pages go only into the folder, and each is written atomically.
    """
    from reasoner._exceptions import ReasonerError, UsageError
    from reasoner.records import check_run_id
    from reasoner.report import render_index, render_run
    from reasoner.run import read_run

    output = Path(args.output)
    if args.run_id:
        run_id = check_run_id(args.run_id)
        _check_file_target(output)
        _may_overwrite(output, args.store)
        with _reading(args.store) as store:
            html = render_run(read_run(store.load(run_id)))
        _write(output, html)
        print(f"wrote {output}", file=sys.stderr)
        return OK

    if output.exists() and not output.is_dir():
        raise UsageError(
            f"-o {str(output)!r} is a file; without RUN_ID the report is a folder (an index and "
            "one page per run): give a folder, or a RUN_ID to write one run's page to a file"
        )
    with _reading(args.store) as store:
        records = store.runs(args.plan)
        inside = output.resolve()
        targets: dict[str, Path] = {}
        errors: dict[str, str] = {}
        for record in records:
            try:
                check_run_id(record.run_id)
            except ReasonerError as exc:
                errors[record.run_id] = str(exc)
                continue
            target = output / f"run-{record.run_id}.html"
            if target.resolve().parent != inside:  # what check_run_id promises, checked again
                errors[record.run_id] = f"its page {str(target)!r} would leave the folder"
                continue
            targets[record.run_id] = target
        index = output / "index.html"
        for target in [index, *targets.values()]:  # refuse before writing anything
            _may_overwrite(target, args.store)
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the folder {str(output)!r}: "
                                f"{exc.strerror or exc}") from exc
        pages: dict[str, str] = {}
        for record in records:
            if record.run_id not in targets:
                continue
            try:
                html = render_run(read_run(store.load(record.run_id)))
            except Exception as exc:  # an unreadable record: list it, go on
                errors[record.run_id] = str(exc) if isinstance(exc, ReasonerError) else (
                    f"{type(exc).__name__}: {exc}")
                continue
            _write(targets[record.run_id], html)
            pages[record.run_id] = targets[record.run_id].name
    _write(index, render_index(records, pages, errors))
    for run_id, error in errors.items():
        print(f"run {run_id}: no page: {error}", file=sys.stderr)
    listed = f"; {len(errors)} run(s) listed without a page" if errors else ""
    print(f"wrote {index} and {len(pages)} run page(s){listed}", file=sys.stderr)
    return OK


def _check_file_target(output: Path) -> None:
    """One run's report goes to a file in a folder that exists."""
    from reasoner._exceptions import UsageError

    if output.is_dir():
        raise UsageError(
            f"-o {str(output)!r} is a folder; give a file name for one run's report, or leave "
            "out RUN_ID to write an index of runs into the folder"
        )
    folder = output.parent
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"cannot write {str(output)!r}: the folder {str(folder)!r} {state}")


def _may_overwrite(target: Path, store: str) -> None:
    """Refuse the store itself, and any existing file that is not one of our reports."""
    from reasoner._exceptions import UsageError
    from reasoner.report import is_report

    if any(_same_file(target, Path(store + suffix)) for suffix in ("", "-wal", "-shm", "-journal")):
        raise UsageError(f"refusing to write the report over the store {store!r} (or its "
                            "-wal, -shm or -journal file)")
    if os.path.lexists(target) and not is_report(target):
        raise UsageError(
            f"refusing to overwrite {str(target)!r}: it is not a report written by "
            "`reasoner report`; remove it or choose another name"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing: compare where they would be
        return a.resolve() == b.resolve()


def _write(target: Path, html: str) -> None:
    from reasoner._exceptions import UsageError
    from reasoner.report import write_report

    try:
        write_report(target, html)
    except OSError as exc:
        raise UsageError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc


def _summary(args: argparse.Namespace) -> int:
    from reasoner.summary import format_summary, summarize_store

    with _reading(args.store) as store:
        summary = summarize_store(store, args.plan)
    print(_dumps(summary.model_dump(mode="json")) if args.json else format_summary(summary))
    return OK


# ------------------------------------------------------------------- output
def _print_run(run: Run, args: argparse.Namespace, plan: Plan | None) -> None:
    """The run's status line, then its result and where its images and report are."""
    if args.json:
        print(_dumps(run.to_json()), flush=True)
        return
    from reasoner.headline import result_lines

    suffix = f"  {run.error}" if run.error else ""
    if run.degraded:
        suffix += f"  (best effort kept for {', '.join(run.degraded)})"
    lines = [f"{run.run_id}  {run.plan}  {run.status}{suffix}",
             *result_lines(run, plan.describe_result if plan else None, Path(args.store))]
    print("\n".join(lines), flush=True)


def _dumps(value: Any) -> str:
    """Standard JSON (RFC 8259): never a bare NaN or Infinity.

    Run records already write non-finite floats as the strings "NaN", "Infinity"
    and "-Infinity"; one that reaches here some other way is written the same.
    """
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        from reasoner.run import finite_json

        return json.dumps(finite_json(value), allow_nan=False)


_COMMANDS = {
    "plans": _plans,
    "ask": _ask,
    "graph": _graph,
    "run": _run,
    "resume": _resume,
    "show": _show,
    "runs": _runs,
    "report": _report,
    "summary": _summary,
}
