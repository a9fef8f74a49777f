"""Per-step overhead of this engine against LangGraph and a bare asyncio floor.

Two graphs of no-op steps, a 100-step chain and a 10-wide fan-out/fan-in,
run through:
- this engine in memory (`store=None`) and durable (SQLite file, WAL);
- LangGraph without a checkpointer and with `langgraph-checkpoint-sqlite`'s
  AsyncSqliteSaver (the benchmark-only `bench` extra);
- bare asyncio: the same coroutines, each run as its own task and awaited in
  dependency order (what any DAG runner must at least do), and, for scale,
  plain sequential awaits with no tasks at all.
Everything runs in one process, interleaved round by round, so machine noise
hits all sides alike; the garbage collector runs before each timed block.
Prints microseconds per step and the ratios; the last line is one JSON object
with every figure.

    python benchmarks/overhead.py [--rounds 7] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import operator
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypedDict

from pydantic import BaseModel

from reasoner import Engine, Plan

CHAIN, WIDTH = 100, 10


class Token(BaseModel):
    n: int


async def noop(previous: Token) -> Token:
    return previous


async def gather(parts: list[Token]) -> Token:
    return Token(n=len(parts))


# ------------------------------------------------------------------ this engine
def chain_plan() -> Plan:
    plan = Plan("chain", input=Token, max_backtracks=0)

    async def first(token: Token) -> Token:
        return token

    plan.add_step(first, name="s0")
    for i in range(1, CHAIN):
        plan.add_step(noop, name=f"s{i}", inputs={"previous": f"s{i - 1}"})
    return plan


def fan_plan() -> Plan:
    plan = Plan("fan", input=Token, max_backtracks=0)

    async def root(token: Token) -> Token:
        return token

    plan.add_step(root)
    for i in range(WIDTH):
        plan.add_step(noop, name=f"b{i}", inputs={"previous": "root"})
    plan.add_step(gather, inputs={"parts": [f"b{i}" for i in range(WIDTH)]})
    return plan


# -------------------------------------------------------------------- langgraph
class ChainState(TypedDict):
    n: int


class FanState(TypedDict):
    n: int
    parts: Annotated[list[int], operator.add]


def langgraph_chain(checkpointer: object | None) -> object:
    from langgraph.graph import END, START, StateGraph

    async def step(state: ChainState) -> dict[str, int]:
        return {"n": state["n"]}

    graph = StateGraph(ChainState)
    for i in range(CHAIN):
        graph.add_node(f"s{i}", step)
        graph.add_edge(START if i == 0 else f"s{i - 1}", f"s{i}")
    graph.add_edge(f"s{CHAIN - 1}", END)
    return graph.compile(checkpointer=checkpointer)


def langgraph_fan(checkpointer: object | None) -> object:
    from langgraph.graph import END, START, StateGraph

    async def root(state: FanState) -> dict[str, int]:
        return {"n": state["n"]}

    async def branch(state: FanState) -> dict[str, list[int]]:
        return {"parts": [state["n"]]}

    async def join(state: FanState) -> dict[str, int]:
        return {"n": len(state["parts"])}

    graph = StateGraph(FanState)
    graph.add_node("root", root)
    graph.add_node("join", join)
    graph.add_edge(START, "root")
    for i in range(WIDTH):
        graph.add_node(f"b{i}", branch)
        graph.add_edge("root", f"b{i}")
        graph.add_edge(f"b{i}", "join")
    graph.add_edge("join", END)
    return graph.compile(checkpointer=checkpointer)


# ---------------------------------------------------------------- asyncio floor
async def tasks_chain() -> Token:
    token = Token(n=0)
    for _ in range(CHAIN):
        token = await asyncio.create_task(noop(token))
    return token


async def tasks_fan() -> Token:
    root = await asyncio.create_task(noop(Token(n=0)))
    parts = await asyncio.gather(*(asyncio.create_task(noop(root)) for _ in range(WIDTH)))
    return await asyncio.create_task(gather(list(parts)))


async def awaits_chain() -> Token:
    token = Token(n=0)
    for _ in range(CHAIN):
        token = await noop(token)
    return token


async def awaits_fan() -> Token:
    root = await noop(Token(n=0))
    parts = [await noop(root) for _ in range(WIDTH)]
    return await gather(parts)


# ------------------------------------------------------------------------ timing
async def per_step_us(job: Callable[[int], Awaitable[object]], runs: int, steps: int) -> float:
    gc.collect()  # no side pays for the garbage another one left behind
    start = time.perf_counter()
    for i in range(runs):
        await job(i)
    return (time.perf_counter() - start) / (runs * steps) * 1e6


async def main(rounds: int, runs: int) -> dict[str, float]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    plans = {"chain": (chain_plan(), CHAIN), "fan": (fan_plan(), WIDTH + 2)}
    memory_engine = Engine(store=None)
    durable_engine = Engine(tmp / "engine.db")
    samples: dict[str, list[float]] = {}

    async with AsyncSqliteSaver.from_conn_string(str(tmp / "langgraph.db")) as saver:
        graphs = {
            "chain": (langgraph_chain(None), langgraph_chain(saver)),
            "fan": (langgraph_fan(None), langgraph_fan(saver)),
        }
        floors = {"chain": (tasks_chain, awaits_chain), "fan": (tasks_fan, awaits_fan)}
        config = {"recursion_limit": CHAIN + 10}
        for round_ in range(rounds + 1):  # round 0 warms everything up and is dropped
            for shape, (plan, steps) in plans.items():
                memory_graph, durable_graph = graphs[shape]
                tasks_floor, awaits_floor = floors[shape]
                jobs: dict[str, Callable[[int], Awaitable[object]]] = {
                    "engine_memory": lambda i, p=plan: memory_engine.run(p, Token(n=i)),
                    "engine_durable": lambda i, p=plan: durable_engine.run(p, Token(n=i)),
                    "langgraph_memory": lambda i, g=memory_graph: g.ainvoke(
                        {"n": i}, config=config),
                    "langgraph_durable": lambda i, g=durable_graph, r=round_: g.ainvoke(
                        {"n": i}, config={**config, "configurable": {"thread_id": f"{r}-{i}"}}),
                    "asyncio_tasks": lambda i, f=tasks_floor: f(),
                    "asyncio_awaits": lambda i, f=awaits_floor: f(),
                }
                for name, job in jobs.items():
                    figure = await per_step_us(job, runs, steps)
                    if round_:
                        samples.setdefault(f"{shape}_{name}_us", []).append(figure)

    figures = {key: statistics.median(values) for key, values in samples.items()}
    for shape in plans:
        f = {k.removeprefix(f"{shape}_").removesuffix("_us"): v
             for k, v in figures.items() if k.startswith(shape)}
        figures[f"{shape}_langgraph_over_engine_memory"] = f["langgraph_memory"] / f["engine_memory"]
        figures[f"{shape}_langgraph_over_engine_durable"] = (
            f["langgraph_durable"] / f["engine_durable"])
        figures[f"{shape}_engine_memory_over_asyncio_tasks"] = (
            f["engine_memory"] / f["asyncio_tasks"])
    return figures


def report(figures: dict[str, float]) -> None:
    for shape, label in (("chain", f"{CHAIN}-step chain"), ("fan", f"{WIDTH}-wide fan-out/in")):
        print(f"{label}, microseconds per step (median of rounds):")
        for name in ("engine_memory", "engine_durable", "langgraph_memory", "langgraph_durable",
                     "asyncio_tasks", "asyncio_awaits"):
            print(f"  {name:18} {figures[f'{shape}_{name}_us']:9.1f}")
        ratio = {k.removeprefix(f"{shape}_"): v for k, v in figures.items()}
        print(f"  LangGraph / engine, in memory: {ratio['langgraph_over_engine_memory']:6.1f}x"
              "  (target >= 15x)")
        print(f"  LangGraph / engine, durable:   {ratio['langgraph_over_engine_durable']:6.1f}x"
              "  (target >= 15x)")
        print(f"  engine / asyncio tasks floor:  {ratio['engine_memory_over_asyncio_tasks']:6.2f}x"
              "  (target <= 2.5x)")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="runs per graph per round")
    args = parser.parse_args()
    report(asyncio.run(main(args.rounds, args.runs)))
