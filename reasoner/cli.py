"""The `reasoner` command line: list and draw plans, run them over JSONL, inspect runs.

Exit codes: 0 when every run succeeded, 1 when some run failed, 2 for a usage
or validation error (bad arguments, unknown plan, invalid input lines; valid
lines still run). Imports are deferred so that `reasoner --help` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasoner.engine import Engine
    from reasoner.plan import Plan
    from reasoner.run import Run

OK, FAILED, USAGE = 0, 1, 2


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
    graph.add_argument("plan", help="plan name or module.path:attribute")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.add_argument("--input", help="JSON input, for plans sized by their input")

    run = with_store(sub.add_parser("run", help="run a plan on one input or a JSONL file"))
    run.add_argument("plan", help="plan name or module.path:attribute")
    run.add_argument("--input", required=True, help="a JSON object, or @file.jsonl (@- for stdin)")
    run.add_argument("--jobs", type=int, default=8, help="runs at once (default 8)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    run.add_argument("--device", help="generator device, e.g. cpu or cuda (default: CUDA if any)")
    run.add_argument("--ray", metavar="auto|ADDRESS",
                     help="run on a Ray cluster: auto (the one `ray start --head` started on this "
                          "machine) or its address, e.g. ray://head:10001")
    run.add_argument("--workers", type=int, help="Ray worker actors (default: one per node)")

    ask = with_store(sub.add_parser("ask", help="let the language model pick a plan and input"))
    ask.add_argument("request", help='what you want, e.g. "draw the number forty-two"')
    ask.add_argument("--dry-run", action="store_true", help="print the choice as JSON, run nothing")
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
    from reasoner._exceptions import ReasonerError

    try:
        return _COMMANDS[args.command](args)
    except ReasonerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("interrupted; `reasoner runs` lists the runs to resume", file=sys.stderr)
        return 130


# ------------------------------------------------------------------ commands
def _plans(args: argparse.Namespace) -> int:
    from reasoner.registry import known_plans

    plans = known_plans()
    for name, plan in sorted(plans.items()):
        summary = plan.description.splitlines()[0] if plan.description else ""
        if args.json:
            print(json.dumps({"name": name, "input": plan.input.model_json_schema(),
                              "description": plan.description}))
        else:
            print(f"{name:20} {summary}")
    return OK


def _graph(args: argparse.Namespace) -> int:
    from reasoner.engine import validate_input
    from reasoner.registry import load_plan

    plan = load_plan(args.plan)
    if args.input:
        plan = plan.for_input(validate_input(plan, args.input))
    print(plan.mermaid() if args.format == "mermaid" else plan.dot(), end="")
    return OK


def _read_inputs(plan: Plan, spec: str) -> tuple[list[Any], int]:
    """Valid inputs, and how many lines were invalid (each reported with its line)."""
    from reasoner._exceptions import InputError
    from reasoner.engine import validate_input

    if not spec.startswith("@"):
        return [validate_input(plan, spec)], 0
    source = spec[1:]
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise InputError(f"cannot read inputs from {source!r}: {exc.strerror}") from exc
    inputs, bad = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            inputs.append(validate_input(plan, line))
        except InputError as exc:
            bad += 1
            print(f"{source}:{number}: {exc}", file=sys.stderr)
    return inputs, bad


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
    inputs, bad = _read_inputs(plan, args.input)
    if bad:
        print(f"{bad} invalid input line(s) skipped; {len(inputs)} will run", file=sys.stderr)
    if not inputs:
        return USAGE

    async def go() -> list[Run]:
        from reasoner.engine import Engine, default_engine
        from reasoner.progress import JobProgress

        if args.ray is None:
            engine = default_engine(args.store, device=args.device)
        else:
            engine = Engine(args.store, backend="ray", address=args.ray, workers=args.workers)
        results = []
        try:
            with JobProgress(engine, total=len(inputs), plan=plan.name):
                async for run in engine.map(plan, inputs, concurrency=args.jobs, seed=args.seed):
                    results.append(run)
                    _print_run(run, args.json)
        finally:
            await engine.aclose()
        return results

    runs = asyncio.run(go())
    failed = sum(run.status != "succeeded" for run in runs)
    print(f"{len(runs) - failed} succeeded, {failed} failed", file=sys.stderr)
    return USAGE if bad else (FAILED if failed else OK)


def _ask(args: argparse.Namespace) -> int:
    from reasoner.registry import known_plans

    async def go() -> Run | None:
        from reasoner.engine import default_engine
        from reasoner.planner import choose

        plans = known_plans()
        engine = default_engine(None if args.dry_run else args.store, device=args.device)
        try:
            choice = await choose(engine.generators["lm"], args.request, plans,
                                  embedder=engine.generators["embedder"], seed=args.seed)
            print(choice.model_dump_json(), file=sys.stdout if args.dry_run else sys.stderr,
                  flush=True)
            if args.dry_run:
                return None
            return await engine.run(plans[choice.plan], choice.input, seed=args.seed)
        finally:
            await engine.aclose()

    run = asyncio.run(go())
    if run is None:
        return OK
    _print_run(run, args.json)
    return OK if run.status == "succeeded" else FAILED


def _resume(args: argparse.Namespace) -> int:
    async def go() -> Run:
        from reasoner.engine import default_engine

        engine = default_engine(args.store, device=args.device)
        try:
            return await engine.resume(args.run_id)
        finally:
            await engine.aclose()

    run = asyncio.run(go())
    _print_run(run, args.json)
    return OK if run.status == "succeeded" else FAILED


def _open(store: str) -> Engine:
    from reasoner._exceptions import StoreError
    from reasoner.engine import Engine

    if store != ":memory:" and not Path(store).exists():
        raise StoreError(f"no store at {store!r}")
    return Engine(store)


def _show(args: argparse.Namespace) -> int:
    run = _open(args.store).load(args.run_id)
    if args.json:
        print(json.dumps(run.to_json()))
        return OK
    print(f"run {run.run_id}  plan {run.plan}  status {run.status}  seed {run.seed}")
    if run.error:
        print(f"  error: {run.error}")
    for backtrack in run.backtracks:
        print(f"  backtrack: {backtrack.failed} -> regenerate {backtrack.target} ({backtrack.reason})")
    for name, step in run.steps.items():
        print(f"  {name}: {step.status}, {len(step.attempts)} attempt(s), seeds {step.seeds}")
        for check in step.checks:
            verdict = "pass" if check.passed else "FAIL"
            print(f"    check {check.name}: {verdict} {check.score:.3f} {check.reason}")
        if step.status == "failed" and step.attempts:
            print(f"    error: {step.attempts[-1].reason}")
        if step.output is not None:
            print(f"    output: {_excerpt(step.output.model_dump())}")
    return OK


def _runs(args: argparse.Namespace) -> int:
    for record in _open(args.store).runs(args.plan):
        started = datetime.fromtimestamp(record.created_at, UTC).isoformat(timespec="seconds")
        if args.json:
            print(json.dumps({"run_id": record.run_id, "plan": record.plan,
                              "status": record.status, "started": started,
                              "error": record.error}))
        else:
            print(f"{record.run_id}  {record.plan:16} {record.status:9} {started}"
                  + (f"  {record.error}" if record.error else ""))
    return OK


def _report(args: argparse.Namespace) -> int:
    from reasoner.report import render_index, render_run

    engine = _open(args.store)
    output = Path(args.output)
    if args.run_id:
        output.write_text(render_run(engine.load(args.run_id)))
        print(f"wrote {output}", file=sys.stderr)
        return OK
    output.mkdir(parents=True, exist_ok=True)
    records = engine.runs(args.plan)
    pages = {}
    for record in records:
        page = f"run-{record.run_id}.html"
        (output / page).write_text(render_run(engine.load(record.run_id)))
        pages[record.run_id] = page
    (output / "index.html").write_text(render_index(records, pages))
    print(f"wrote {output / 'index.html'} and {len(pages)} run page(s)", file=sys.stderr)
    return OK


def _summary(args: argparse.Namespace) -> int:
    from reasoner.summary import format_summary, summarize_store

    summary = summarize_store(_open(args.store).store, args.plan)
    print(summary.model_dump_json() if args.json else format_summary(summary))
    return OK


# ------------------------------------------------------------------- output
def _print_run(run: Run, as_json: bool) -> None:
    if as_json:
        print(json.dumps(run.to_json()), flush=True)
    else:
        suffix = f"  {run.error}" if run.error else ""
        print(f"{run.run_id}  {run.plan}  {run.status}{suffix}", flush=True)


def _excerpt(value: Any, limit: int = 160) -> str:
    """A short, readable rendering of an output: arrays by shape, long text cut."""

    def shrink(item: Any) -> Any:
        if hasattr(item, "shape") and hasattr(item, "dtype"):
            return f"<{item.dtype} array {'x'.join(map(str, item.shape))}>"
        if isinstance(item, dict):
            return {k: shrink(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [shrink(v) for v in item]
        return item

    text = json.dumps(shrink(value), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
