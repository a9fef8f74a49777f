"""How well the planner turns requests into graphs of blocks, with the old plan router beside it.

The 42 requests of `_planner_set` (14 of one block, 14 of two, 14 of three or four mixing
the language model and the image models), each with its expected graph. For each request,
`reasoner.planner.draft` asks SmolLM2 for a graph spec under constrained decoding (errors
fed back, up to `--attempts` answers). Reported, per third:
- valid: a graph that builds (`Plan.from_spec`) within the attempts; first: at the first answer;
- exact: the same graph as expected: the same blocks, wired the same way, with the same
  parameters and literal inputs (defaults filled in, strings compared without case,
  spaces or trailing punctuation);
- shape: the same up to parameter values and literal inputs;
- ran: the graph's run ends `succeeded` or `degraded` (`--runs 0` skips running);
- calls: model calls per request (one embedder call besides).
Baseline: the router that `reasoner ask` used before (`reasoner.router.route`, one plan of
four and its input) on the single-block third, its choice written as the plan's graph of
blocks: `right plan` when the plan's graph holds the expected block.

    python benchmarks/planner_eval.py [--runs 0] [--attempts 3] [--seed 0]

Prints one line per request, the table, and last one JSON line of figures.
"""

from __future__ import annotations

import itertools
import re
import statistics
import sys
import time
from typing import Any

from _common import options, print_figures
from _planner_set import Case, planner_cases

from reasoner import default_engine, known_plans
from reasoner._exceptions import PlanError, PlanningError
from reasoner.blocks import Blocks, known_blocks
from reasoner.planner import draft
from reasoner.router import Route, route
from reasoner.spec import GraphSpec, Wire, parse_spec

KINDS = ("single", "two", "multi")


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"[\s.!?]+$", "", " ".join(value.lower().split())).replace(" ", "")
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items() if k != "reasoning"}
    return value


def _nodes(spec: GraphSpec, blocks: Blocks) -> list[tuple[str, Any, dict[str, Any]]]:
    """(block, parameters, inputs) per node: defaults filled, wires as node positions."""
    where = {node.id: i for i, node in enumerate(spec.nodes)}
    out = []
    for node in spec.nodes:
        block = blocks[node.block]
        params = _text(block.params.model_validate(node.params).model_dump(mode="json"))
        inputs = {name: (where[given.node],) if isinstance(given, Wire) else _text(given)
                  for name, given in node.inputs.items()}
        out.append((node.block, params, inputs))
    return out


def same_graph(got: GraphSpec, expected: GraphSpec, blocks: Blocks, values: bool) -> bool:
    """Whether some renaming of `got`'s nodes makes it `expected` (with `values`: its
    parameters and literal inputs too)."""
    a, b = _nodes(got, blocks), _nodes(expected, blocks)
    if sorted(n[0] for n in a) != sorted(n[0] for n in b):
        return False
    for order in itertools.permutations(range(len(a))):  # a[order[i]] plays b[i]; 4! at most
        position = {old: new for new, old in enumerate(order)}
        if all(_same_node(a[order[i]], b[i], position, values) for i in range(len(b))):
            return True
    return False


def _same_node(x: tuple[str, Any, dict[str, Any]], y: tuple[str, Any, dict[str, Any]],
               position: dict[int, int], values: bool) -> bool:
    if x[0] != y[0] or set(x[2]) != set(y[2]):
        return False
    for name, given in x[2].items():
        wanted = y[2][name]
        if isinstance(given, tuple) != isinstance(wanted, tuple):
            return False
        if isinstance(given, tuple) and (position[given[0]],) != wanted:
            return False
        if not isinstance(given, tuple) and values and given != wanted:
            return False
    return not values or x[1] == y[1]


def route_as_graph(routed: Route) -> dict[str, Any]:
    """The router's plan and input as the graph of blocks the plan corresponds to."""
    given = routed.input
    if routed.plan == "morph":
        return {"nodes": [{"id": "n1", "block": "morph-digits", "params": {"frames": given["frames"]},
                           "inputs": {"start": {"value": given["source"]},
                                      "end": {"value": given["target"]}}}]}
    if routed.plan == "game24":
        return {"nodes": [{"id": "n1", "block": "solve-24", "params": {"numbers": given["numbers"]}}]}
    if routed.plan == "story":
        params = {"endings": given["endings"]} | ({"topic": given["topic"]} if given["topic"] else {})
        return {"nodes": [{"id": "n1", "block": "outline-story", "params": params},
                          {"id": "n2", "block": "write-story", "inputs": {"outline": {"from": "n1"}}}]}
    first = ({"id": "n1", "block": "solve-word-problem",
              "params": {"question": given["question"]}} if given.get("question") else
             {"id": "n1", "block": "evaluate-expression",
              "params": {"expression": given["expression"]}})
    return {"nodes": [first, {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}},
                      {"id": "n3", "block": "harmonize-digits", "inputs": {"digits": {"from": "n2"}}}]}


async def _plan_one(case: Case, index: int, engine: Any, blocks: Blocks, attempts: int,
                    runs: bool) -> dict[str, Any]:
    expected = parse_spec(case.spec)
    start = time.perf_counter()
    row: dict[str, Any] = {"kind": case.kind, "valid": False, "first": False, "exact": False,
                           "shape": False, "ran": False}
    try:
        drafted = await draft(case.request, engine.generators["lm"], engine.generators["embedder"],
                              blocks, seed=index, attempts=attempts)
    except PlanningError as exc:
        row |= {"calls": attempts, "said": str(exc).splitlines()[-1].strip()}
    else:
        got = drafted.plan.to_spec()
        row |= {"calls": drafted.calls, "valid": True, "first": len(drafted.tries) == 1,
                "exact": same_graph(got, expected, blocks, values=True),
                "shape": same_graph(got, expected, blocks, values=False),
                "said": " ".join(f"{n.id}:{n.block}" for n in got.nodes)}
        if runs:
            run = await engine.run(drafted.plan, {}, seed=index)
            row["ran"] = run.status in ("succeeded", "degraded")
            row["said"] += f" -> {run.status}"
    row["seconds"] = time.perf_counter() - start
    return row


async def _route_one(case: Case, index: int, engine: Any, blocks: Blocks) -> dict[str, Any]:
    try:
        routed = await route(engine.generators["lm"], case.request, known_plans(),
                             embedder=engine.generators["embedder"], seed=index)
        got = parse_spec(route_as_graph(routed))
    except (PlanningError, PlanError):
        return {"exact": False, "shape": False, "plan": False, "calls": 6}
    expected = parse_spec(case.spec)
    wanted = expected.nodes[0].block
    return {"exact": same_graph(got, expected, blocks, values=True),
            "shape": same_graph(got, expected, blocks, values=False),
            "plan": any(node.block == wanted for node in got.nodes), "calls": routed.asked}


def _share(rows: list[dict[str, Any]], key: str) -> float:
    return sum(bool(row[key]) for row in rows) / len(rows) if rows else 0.0


async def main() -> dict[str, float]:
    args = options(__doc__, runs=1, attempts=3, seed=0)
    engine = default_engine(None)
    blocks = known_blocks()
    cases = planner_cases(args.seed)
    rows: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for index, case in enumerate(cases):
            row = await _plan_one(case, index, engine, blocks, args.attempts, bool(args.runs))
            rows.append(row)
            marks = "".join(k[0] if row[k] else "." for k in ("valid", "exact", "shape", "ran"))
            print(f"{index:2d} {case.kind:6} {marks} {row['calls']} {row['seconds']:5.1f}s  "
                  f"{case.request[:60]!r}  {row['said']}", flush=True)
        for index, case in enumerate(c for c in cases if c.kind == "single"):
            baseline.append(await _route_one(case, index, engine, blocks))
    finally:
        await engine.aclose()
    figures: dict[str, float] = {}
    print(f"\n{'third':8} {'n':>3} {'valid':>6} {'first':>6} {'exact':>6} {'shape':>6} "
          f"{'ran':>6} {'calls':>6}")
    for kind in (*KINDS, "all"):
        part = [r for r in rows if kind in ("all", r["kind"])]
        values = {key: _share(part, key) for key in ("valid", "first", "exact", "shape", "ran")}
        values["calls"] = statistics.fmean(r["calls"] for r in part)
        print(f"{kind:8} {len(part):3d} " + " ".join(f"{values[k]:6.2f}" for k in
                                                      ("valid", "first", "exact", "shape", "ran",
                                                       "calls")))
        figures |= {f"{kind}_{key}": value for key, value in values.items()}
    router = {key: _share(baseline, key) for key in ("exact", "shape", "plan")}
    router["calls"] = statistics.fmean(r["calls"] for r in baseline)
    print(f"router   {len(baseline):3d}  exact {router['exact']:.2f}  shape {router['shape']:.2f}  "
          f"right plan {router['plan']:.2f}  calls {router['calls']:.2f}  (single-block third)")
    figures |= {f"router_single_{key}": value for key, value in router.items()}
    figures["seconds"] = time.perf_counter() - started
    print(f"({figures['seconds']:.0f} s)", file=sys.stderr)
    return figures


if __name__ == "__main__":
    print_figures(main())
