"""Benchmark: serving many jobs at once, side by side in one process: what prefix sharing and
continuous batching buy, against the host without them and against transformers.

Workloads (the defaults suit two CPU cores; a GPU takes larger ones through the options):
- (a) samples: `--jobs` jobs, each sampling 8 completions of one long prompt (a ~300-token
  brief ending in the job's topic);
- (b) search: game24-style levels over the states of fixed puzzles (legal moves, so every
  variant sees the same work): each state gets a proposal (a sampled completion after a long
  few-shot header) and a value score (three judgments after a few-shot value header);
- (c) arrivals: `--jobs` single completions arriving as a Poisson process over `--window` s;
- (d) burst: `--burst` single completions at once, and fewer at once for the curve.

Variants: the host as shipped (prefix cache, decode loop that requests join); the host
without sharing (static batches, no cache: the host before this benchmark's issue); the
host with static batches and sharing, to part the two effects; for generation workloads,
`model.generate` hand-batched in chunks of `--max-batch` rows, and transformers'
continuous batching (`generate_batch`'s manager: paged attention, block sharing on).

Figures per workload and variant: generated tokens/s, prompt tokens read (prefill), the best
possible (every distinct prefix of all the prompts read once: the node count of their token
trie), the prefix cache's hit rate against the best possible, p50/p95 latency per job, and
peak memory (CUDA: peak allocated; CPU: peak RSS above the start, sampled every 5 ms).
Writes `serving.png` (throughput and p95 latency against concurrency); the last line
printed is one JSON object of all figures.
    python benchmarks/serving.py [--jobs 64] [--burst 256] [--max-batch 64] [--window 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from generators import Host
from generators import lm as lm_module
from generators.lm import LanguageModel
from plans.game24 import PROPOSE_EXAMPLE, RULES, Puzzle, State, legal_moves, start

TEMPERATURE, TOP_P = 0.8, 0.95
TOPICS = ["a lighthouse keeper", "a lost robot", "the first snow", "a dragon who bakes bread",
          "a city under the sea", "an old violin", "a talking cat", "the last train home"]
BRIEF = (
    "You are the writing assistant of a small children's magazine. Every story you write is "
    "read aloud to children between five and eight years old, so it uses short sentences, "
    "plain words and a warm tone. A story has a clear beginning, a middle where something "
    "goes wrong, and an ending where a character solves the problem by being kind, clever or "
    "brave. Never frighten the reader: a storm may come, but it passes; a character may get "
    "lost, but is found. Give every character a name and one detail the children can "
    "picture, like a red scarf or a squeaky boot. Avoid brand names, real people, violence "
    "and sadness that is not resolved. Do not explain the moral; let the ending show it. "
    "Keep to the present tense unless the story is a memory. Start with the character, not "
    "with the weather. Each story is about one hundred words long and has a title on its "
    "first line. The magazine's readers love animals, small machines, food and journeys, "
    "and they laugh at gentle jokes and surprising sounds. When a topic is unusual, keep the "
    "world familiar around it. Now write the opening sentence of a story on this topic: "
)
MORE_EXAMPLES = """Input: 4 5 6 10
Possible next steps:
4 + 5 = 9 (left: 6 9 10)
5 * 6 = 30 (left: 4 10 30)
10 - 4 = 6 (left: 5 6 6)
10 / 5 = 2 (left: 2 4 6)
Input: 1 3 8 9
Possible next steps:
9 - 1 = 8 (left: 3 8 8)
3 * 8 = 24 (left: 1 9 24)
8 + 1 = 9 (left: 3 9 9)
9 / 3 = 3 (left: 1 3 8)"""
VALUE_HEADER = """Evaluate if the given numbers can reach 24 (sure / likely / impossible).
10 14: 10 + 14 = 24. sure
11 12: 11 + 12 = 23, 12 - 11 = 1, 11 * 12 = 132, 11 / 12 = 0.91. impossible
4 4 10: 4 + 4 + 10 = 18, 4 * 10 - 4 = 36, (10 - 4) * 4 = 24. sure
5 7 8: 5 + 7 + 8 = 20, (8 - 5) * 7 = 21. I cannot obtain 24 now, but numbers are within a
reasonable range. likely
1 3 3: 1 * 3 * 3 = 9, (1 + 3) * 3 = 12. 1 3 3 are all too small. impossible
"""
PUZZLES = [[1, 2, 4, 7], [3, 3, 8, 8], [2, 5, 6, 11], [1, 4, 9, 12], [2, 2, 7, 13],
           [3, 6, 6, 10], [4, 5, 8, 9], [1, 1, 11, 13]]


@dataclass(frozen=True)
class Gen:
    """One completion to generate."""

    prompt: str
    seed: int
    max_new_tokens: int


@dataclass(frozen=True)
class Score:
    """One prompt whose continuations are scored."""

    prompt: str
    continuations: tuple[str, ...]


Job = list[Gen | Score]  # a job's requests, sent together; its latency is the last one's


@dataclass
class Workload:
    name: str
    waves: list[list[Job]]  # sent one wave after the other (search levels); jobs of a wave at once
    arrivals: np.ndarray | None = None  # (c): each job's arrival time, s after the start


@dataclass
class Figures:
    tokens: int = 0
    wall_s: float = 0.0
    prefill: int = 0  # prompt tokens read
    prompt: int = 0  # prompt tokens asked for
    latencies: list[float] = field(default_factory=list)
    peak_mb: float = 0.0

    def row(self, best: int) -> dict[str, float]:
        lat = sorted(self.latencies)
        hit = 1 - self.prefill / self.prompt if self.prompt else 0.0
        best_hit = 1 - best / self.prompt if self.prompt else 0.0
        return {
            "tok_s": self.tokens / self.wall_s,
            "prefill": self.prefill,
            "prefill_over_best": self.prefill / best if best else 0.0,
            "hit_rate": hit,
            "hit_over_best": hit / best_hit if best_hit else 0.0,
            "p50_s": statistics.median(lat),
            "p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
            "peak_mb": self.peak_mb,
        }


# --------------------------------------------------------------------------- the workloads
def samples_workload(jobs: int, new_tokens: int) -> Workload:
    return Workload("a_samples", [[
        [Gen(f"{BRIEF}{TOPICS[j % len(TOPICS)]} (story {j}).", seed=8 * j + s,
             max_new_tokens=new_tokens) for s in range(8)]
        for j in range(jobs)
    ]])


def search_workload(new_tokens: int) -> Workload:
    """Three levels from each puzzle: the start, 5 of its children, 2 of each child's."""
    header = f"{RULES}\n{MORE_EXAMPLES}\n{PROPOSE_EXAMPLE}\n"
    levels: list[list[State]] = [[start(Puzzle(numbers=p)) for p in PUZZLES]]
    for keep in (5, 2):
        levels.append([child for state in levels[-1] for child in legal_moves(state)[:keep]])

    def job(state: State, seed: int) -> Job:
        numbers = " ".join(state.numbers)
        return [Gen(f"{header}Input: {numbers}\nPossible next steps:", seed, new_tokens),
                Score(f"{VALUE_HEADER}{numbers}:", (" sure", " likely", " impossible"))]

    return Workload("b_search", [[job(s, i) for i, s in enumerate(level)] for level in levels])


def single_workload(name: str, jobs: int, new_tokens: int,
                    arrivals: np.ndarray | None = None) -> Workload:
    return Workload(name, [[
        [Gen(f"Write a short story about {TOPICS[j % len(TOPICS)]}, number {j}.", seed=j,
             max_new_tokens=new_tokens)] for j in range(jobs)
    ]], arrivals)


def poisson(jobs: int, window_s: float, seed: int = 0) -> np.ndarray:
    gaps = np.random.default_rng(seed).exponential(window_s / jobs, jobs)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def best_prefill(lm: LanguageModel, workload: Workload) -> int:
    """Distinct prefixes of all the prompts: what reading each shared prefix once costs."""
    trie: dict[int, dict] = {}
    nodes = 0
    for wave in workload.waves:
        for job in wave:
            for req in job:
                node = trie
                for token in lm.encode_chat(lm_module.to_messages(req.prompt)):
                    if token not in node:
                        node[token] = {}
                        nodes += 1
                    node = node[token]
    return nodes


# ------------------------------------------------------------------------ measuring helpers
@contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Yields a one-item list that holds the peak memory (MB) above the start on exit."""
    out = [0.0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out[0] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    process = psutil.Process()
    base = peak = process.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.005):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        out[0] = (peak - base) / 2**20


async def run_jobs(workload: Workload, send: Callable[[Job], Awaitable[int]]) -> Figures:
    """Send the workload's jobs (waves one after another, arrivals as given); tokens and
    per-job latency."""
    figures = Figures()
    begin = time.perf_counter()
    for wave in workload.waves:
        wave_start = time.perf_counter()

        async def one(i: int, job: Job, wave_start: float = wave_start) -> None:
            if workload.arrivals is not None:
                await asyncio.sleep(max(0.0, wave_start + workload.arrivals[i] - time.perf_counter()))
            sent = time.perf_counter()
            tokens = await send(job)  # not `figures.tokens += await ...`: that reads, then waits
            figures.tokens += tokens
            figures.latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(i, job) for i, job in enumerate(wave)))
    figures.wall_s = time.perf_counter() - begin
    return figures


async def through_host(lm: LanguageModel, workload: Workload, max_batch: int, *,
                       share: bool, continuous: bool) -> Figures:
    async with Host(str(lm.device), max_batch=max_batch, prefix_cache_mb=512 if share else 0,
                    continuous=continuous) as host:
        await host.load("lm", lambda device: lm)

        async def send(job: Job) -> int:
            outs = await asyncio.gather(*(
                host.lm.generate(r.prompt, max_new_tokens=r.max_new_tokens,
                                 temperature=TEMPERATURE, top_p=TOP_P, seed=r.seed)
                if isinstance(r, Gen) else host.lm.score(r.prompt, list(r.continuations))
                for r in job
            ))
            return sum(o.completion_tokens for o in outs if isinstance(o, lm_module.Generation))

        with peak_memory(lm.device) as peak:
            figures = await run_jobs(workload, send)
        stats = host.stats()
    figures.peak_mb = peak[0]
    for name in ("lm.generate", "lm.score"):
        if name in stats:
            figures.prompt += stats[name].prompt_tokens
            figures.prefill += stats[name].prefill_tokens
    return figures


def _generation_config(lm: LanguageModel, new_tokens: int):
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=new_tokens, do_sample=True, temperature=TEMPERATURE,
                            top_p=TOP_P, eos_token_id=sorted(lm.eos_ids),
                            pad_token_id=lm.tokenizer.pad_token_id)


def _generated(row: Sequence[int], eos: frozenset[int]) -> int:
    """Tokens up to and including the first EOS (the host counts the same way)."""
    return next((i + 1 for i, t in enumerate(row) if t in eos), len(row))


def _rows(lm: LanguageModel, workload: Workload) -> list[tuple[int, list[int], int]]:
    """(job, prompt ids, max new tokens) of every completion of a one-wave workload."""
    assert len(workload.waves) == 1
    return [(j, lm.encode_chat(lm_module.to_messages(r.prompt)), r.max_new_tokens)
            for j, job in enumerate(workload.waves[0]) for r in job if isinstance(r, Gen)]


@torch.inference_mode()
def hand_batched(lm: LanguageModel, workload: Workload, max_batch: int) -> Figures:
    """`model.generate` over left-padded chunks of `max_batch` rows, one chunk after another."""
    rows = _rows(lm, workload)
    figures, done = Figures(), {}
    with peak_memory(lm.device) as peak:
        begin = time.perf_counter()
        for at in range(0, len(rows), max_batch):
            chunk = rows[at : at + max_batch]
            ids, mask = lm._left_pad([ids for _, ids, _ in chunk])
            torch.manual_seed(at)
            out = lm.model.generate(input_ids=ids, attention_mask=mask,
                                    generation_config=_generation_config(lm, chunk[0][2]))
            figures.tokens += sum(_generated(r[ids.shape[1]:].tolist(), lm.eos_ids) for r in out)
            figures.prompt += sum(len(i) for _, i, _ in chunk)
            for job, _, _ in chunk:
                done[job] = time.perf_counter() - begin
        figures.wall_s = time.perf_counter() - begin
    figures.prefill, figures.peak_mb, figures.latencies = figures.prompt, peak[0], list(done.values())
    return figures


def transformers_continuous(lm: LanguageModel, workload: Workload) -> Figures:
    """Transformers' ContinuousBatchingManager (what `generate_batch` runs), with arrivals."""
    from transformers.generation.continuous_batching.utils import WorkloadHints

    rows = _rows(lm, workload)
    at = workload.arrivals if workload.arrivals is not None else np.zeros(len(workload.waves[0]))
    hints = WorkloadHints(max_prompt_length=max(len(i) for _, i, _ in rows),
                          max_generated_length=max(n for _, _, n in rows), num_requests=len(rows))
    figures, finished = Figures(), {}
    with peak_memory(lm.device) as peak, lm.model.continuous_batching_context_manager(
        generation_config=_generation_config(lm, max(n for _, _, n in rows)),
        workload_hints=hints, timeout=60,
    ) as manager:

        def collect() -> None:
            while len(finished) < len(rows):
                result = manager.get_result(timeout=0.05)
                if result is not None and result.is_finished():
                    finished[result.request_id] = (result, time.perf_counter())

        collector = threading.Thread(target=collect)
        begin = time.perf_counter()
        collector.start()
        for r, (job, ids, new) in enumerate(rows):
            time.sleep(max(0.0, begin + at[job] - time.perf_counter()))
            manager.add_request(ids, request_id=f"{job}.{r}", max_new_tokens=new)
        collector.join()
    ends: dict[int, float] = {}
    for key, (result, end) in finished.items():
        job = int(key.split(".")[0])
        ends[job] = max(ends.get(job, 0.0), end)
        figures.tokens += _generated(result.generated_tokens, lm.eos_ids)
    figures.wall_s = max(ends.values()) - begin
    figures.latencies = [ends[j] - begin - at[j] for j in sorted(ends)]
    figures.prompt = figures.prefill = sum(len(i) for _, i, _ in rows)  # its own reads unknown
    figures.peak_mb = peak[0]
    return figures


# ----------------------------------------------------------------------------------- main
VARIANTS = {  # name: (share, continuous)
    "host": (True, True),
    "no_sharing": (False, False),
    "static_shared": (True, False),
}


async def measure(lm: LanguageModel, workload: Workload, max_batch: int, *,
                  variants: Sequence[str], baselines: bool) -> dict[str, Figures]:
    out = {}
    for name in variants:
        share, continuous = VARIANTS[name]
        out[name] = await through_host(lm, workload, max_batch, share=share, continuous=continuous)
    if baselines:
        if workload.arrivals is None:
            out["hand_batched"] = hand_batched(lm, workload, max_batch)
        out["generate_batch"] = transformers_continuous(lm, workload)
    return out


def report(title: str, rows: dict[str, Figures], best: int) -> dict[str, dict[str, float]]:
    print(f"\n{title} (best possible prefill {best} tokens)")
    print(f"  {'variant':15} {'tok/s':>7} {'prefill':>8} {'x best':>6} {'hit':>5} "
          f"{'hit/best':>8} {'p50 s':>6} {'p95 s':>6} {'peak MB':>8}")
    table = {}
    for name, fig in rows.items():
        row = table[name] = fig.row(best)
        print(f"  {name:15} {row['tok_s']:7.1f} {row['prefill']:8d} "
              f"{row['prefill_over_best']:6.2f} {row['hit_rate']:5.2f} {row['hit_over_best']:8.2f} "
              f"{row['p50_s']:6.2f} {row['p95_s']:6.2f} {row['peak_mb']:8.0f}")
    return table


def plot(curve: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in curve.items():
        levels = sorted(points)
        left.plot(levels, [points[n]["tok_s"] for n in levels], marker="o", label=name)
        right.plot(levels, [points[n]["p95_s"] for n in levels], marker="o", label=name)
    for ax, label in ((left, "generated tokens/s"), (right, "p95 latency per job (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("jobs at once")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend()
    fig.suptitle(f"Serving single completions ({'GPU' if torch.cuda.is_available() else 'CPU'})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = lm_module.load(device)
    print(f"device {device}, {torch.get_num_threads()} threads, {vars(args)}")
    warm = single_workload("warm", 4, 4)
    await measure(lm, warm, args.max_batch, variants=list(VARIANTS), baselines=True)

    figures: dict[str, object] = {"device": device}
    workloads = [
        (samples_workload(args.jobs, args.new_tokens), True),
        (search_workload(args.new_tokens), False),  # a mix of scores and generations
        (single_workload("c_arrivals", args.jobs, 2 * args.new_tokens,
                         poisson(args.jobs, args.window)), True),
    ]
    for workload, baselines in workloads:
        rows = await measure(lm, workload, args.max_batch, variants=list(VARIANTS),
                             baselines=baselines)
        figures[workload.name] = report(workload.name, rows, best_prefill(lm, workload))

    curve: dict[str, dict[int, dict[str, float]]] = {}
    levels = sorted({max(1, args.burst // 16), max(1, args.burst // 4), args.burst})
    for level in levels:
        workload = single_workload(f"d_burst_{level}", level, 2 * args.new_tokens)
        rows = await measure(lm, workload, args.max_batch, variants=["host", "no_sharing"],
                             baselines=True)
        table = report(workload.name, rows, best_prefill(lm, workload))
        for name, row in table.items():
            curve.setdefault(name, {})[level] = row
        if level == args.burst:
            figures["d_burst"] = table
    path = Path(__file__).with_name("serving.png")
    plot(curve, path)
    print(f"\nwrote {path}")

    a, b, c, d = (figures[k] for k in ("a_samples", "b_search", "c_arrivals", "d_burst"))
    targets = {
        "a_prefill_over_best": a["host"]["prefill_over_best"],  # type: ignore[index]
        "a_speedup_over_no_sharing": a["host"]["tok_s"] / a["no_sharing"]["tok_s"],  # type: ignore[index]
        "b_prefill_over_best": b["host"]["prefill_over_best"],  # type: ignore[index]
        "b_speedup_over_no_sharing": b["host"]["tok_s"] / b["no_sharing"]["tok_s"],  # type: ignore[index]
        "b_hit_over_best": b["host"]["hit_over_best"],  # type: ignore[index]
        "c_speedup_over_static": c["host"]["tok_s"] / c["no_sharing"]["tok_s"],  # type: ignore[index]
        "c_p95_over_static": c["host"]["p95_s"] / c["no_sharing"]["p95_s"],  # type: ignore[index]
        "d_over_generate_batch": d["host"]["tok_s"] / d["generate_batch"]["tok_s"],  # type: ignore[index]
        "d_over_hand_batched": d["host"]["tok_s"] / d["hand_batched"]["tok_s"],  # type: ignore[index]
    }
    print("\ntargets (CPU: a, b prefill <= 1.2x best and >= 1.5x no sharing; b hit >= 0.9 of "
          "best; c >= 1.2x static at p95 no worse; GPU: d >= 1x generate_batch, hand-batched)")
    for name, value in targets.items():
        print(f"  {name:28} {value:6.2f}")
    figures["targets"] = targets
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--burst", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = asyncio.run(main_async(args))

    def rounded(value: object) -> object:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return round(value, 3) if isinstance(value, float) else value

    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
