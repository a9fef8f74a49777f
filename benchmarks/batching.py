"""Benchmark: what the generator host's batching buys, measured side by side in one run.

Language model (the default SmolLM2-135M-Instruct), `--jobs` prompts of `--new-tokens`
sampled tokens each:
- burst: all jobs at once through the host, against the same prompts one at a time with
  `model.generate`, and against one hand-batched, left-padded `model.generate` call;
  transformers' continuous batching (`model.generate_batch`) is measured on the burst too;
- spread: the jobs arrive as a Poisson process over `--window` seconds, through the host
  (static batches) and through transformers' `ContinuousBatchingManager`.
GAN (when its weights are present): images/s through the host against one request at a time.
Cold language-model load times, from the GGUF and from the safetensors cache, come first.

Runs on CUDA when present, else CPU. The last line printed is one JSON object of all figures.
    python benchmarks/batching.py [--jobs 32] [--new-tokens 32] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from generators import Host, data
from generators import lm as lm_module
from generators.lm import LanguageModel

TOPICS = [
    "a lighthouse keeper",
    "a lost robot",
    "the first snow",
    "a dragon who bakes bread",
    "a city under the sea",
    "an old violin",
    "a talking cat",
    "the last train home",
    "a garden on the moon",
    "a forgotten library",
    "a brave mouse",
    "a storm at sea",
    "a clockmaker's secret",
    "a desert caravan",
    "a haunted bicycle",
    "a winter market",
    "a kite that flew away",
    "a tiny spaceship",
    "the river's song",
    "a mountain village",
    "a lonely giant",
    "a map with no roads",
    "a festival of lanterns",
    "a painter's dream",
    "an island of birds",
    "a runaway balloon",
    "a fox in the city",
    "a glass forest",
    "the sleepy volcano",
    "a mirror that lies",
    "a detective snail",
    "a midnight bakery",
]


@dataclass(frozen=True)
class BenchConfig:
    jobs: int = 32
    new_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 0.95
    window_s: float = 3.0  # Poisson arrivals spread over about this long
    gan_requests: int = 256
    gan_digits: int = 4
    seed: int = 0


def prompts_for(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


def new_tokens(row: Sequence[int], eos: frozenset[int]) -> int:
    """Generated tokens up to and including the first EOS (the host counts the same way)."""
    for i, token in enumerate(row):
        if token in eos:
            return i + 1
    return len(row)


def sampling_kwargs(cfg: BenchConfig) -> dict[str, object]:
    return {
        "max_new_tokens": cfg.new_tokens,
        "do_sample": True,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
    }


def chat_texts(lm: LanguageModel, prompts: Sequence[str]) -> list[str]:
    return [
        lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


@torch.inference_mode()
def one_at_a_time(lm: LanguageModel, prompts: Sequence[str], cfg: BenchConfig) -> tuple[int, float]:
    tokens, start = 0, time.perf_counter()
    for text in chat_texts(lm, prompts):
        enc = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(lm.device)
        out = lm.model.generate(**enc, **sampling_kwargs(cfg))
        tokens += new_tokens(out[0, enc["input_ids"].shape[1] :].tolist(), lm.eos_ids)
    return tokens, time.perf_counter() - start


@torch.inference_mode()
def hand_batched(lm: LanguageModel, prompts: Sequence[str], cfg: BenchConfig) -> tuple[int, float]:
    start = time.perf_counter()
    enc = lm.tokenizer(
        chat_texts(lm, prompts),
        add_special_tokens=False,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    ).to(lm.device)
    out = lm.model.generate(**enc, **sampling_kwargs(cfg))
    width = enc["input_ids"].shape[1]
    tokens = sum(new_tokens(row[width:].tolist(), lm.eos_ids) for row in out)
    return tokens, time.perf_counter() - start


def arrivals(cfg: BenchConfig) -> np.ndarray:
    """Poisson arrival times (s) of the jobs, the first at 0."""
    gaps = np.random.default_rng(cfg.seed).exponential(cfg.window_s / cfg.jobs, cfg.jobs)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


async def through_host(
    lm: LanguageModel, prompts: Sequence[str], cfg: BenchConfig, at: np.ndarray | None
) -> tuple[int, float, float, float]:
    """(tokens, makespan s, mean latency s, mean batch) with jobs arriving at `at` (or at once)."""
    async with Host(str(lm.device), max_batch=cfg.jobs) as host:
        await host.load("lm", lambda device: lm)
        start = time.perf_counter()

        async def job(i: int, prompt: str) -> tuple[int, float]:
            if at is not None:
                await asyncio.sleep(max(0.0, start + at[i] - time.perf_counter()))
            submitted = time.perf_counter()
            out = await host.lm.generate(
                prompt,
                max_new_tokens=cfg.new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=cfg.seed + i,
            )
            return out.completion_tokens, time.perf_counter() - submitted

        done = await asyncio.gather(*(job(i, p) for i, p in enumerate(prompts)))
        makespan = time.perf_counter() - start
        stats = host.stats()["lm.generate"]
    tokens = sum(t for t, _ in done)
    return tokens, makespan, float(np.mean([lat for _, lat in done])), stats.mean_batch


def continuous_generation_config(lm: LanguageModel, cfg: BenchConfig):
    from transformers import GenerationConfig

    return GenerationConfig(
        **sampling_kwargs(cfg),
        eos_token_id=sorted(lm.eos_ids),
        pad_token_id=lm.tokenizer.pad_token_id,
    )


def continuous_burst(lm: LanguageModel, prompts: Sequence[str], cfg: BenchConfig) -> tuple[int, float]:
    inputs = [lm.encode_chat(lm_module.to_messages(p)) for p in prompts]
    gen_cfg = continuous_generation_config(lm, cfg)
    lm.model.generate_batch(inputs[:2], generation_config=gen_cfg)  # warm-up, untimed
    start = time.perf_counter()
    results = lm.model.generate_batch(inputs, generation_config=gen_cfg)
    elapsed = time.perf_counter() - start
    tokens = sum(new_tokens(r.generated_tokens, lm.eos_ids) for r in results.values())
    return tokens, elapsed


def continuous_spread(
    lm: LanguageModel, prompts: Sequence[str], cfg: BenchConfig, at: np.ndarray
) -> tuple[int, float, float]:
    """(tokens, makespan s, mean latency s) through a ContinuousBatchingManager."""
    from transformers.generation.continuous_batching.utils import WorkloadHints

    inputs = [lm.encode_chat(lm_module.to_messages(p)) for p in prompts]
    hints = WorkloadHints(
        max_prompt_length=max(map(len, inputs)),
        max_generated_length=cfg.new_tokens,
        num_requests=len(inputs),
    )
    submitted: dict[str, float] = {}
    finished: dict[str, tuple[int, float]] = {}
    with lm.model.continuous_batching_context_manager(
        generation_config=continuous_generation_config(lm, cfg), workload_hints=hints, timeout=30
    ) as manager:

        def collect() -> None:
            while len(finished) < len(inputs):
                result = manager.get_result(timeout=0.05)
                if result is not None and result.is_finished():
                    tokens = new_tokens(result.generated_tokens, lm.eos_ids)
                    finished[result.request_id] = (tokens, time.perf_counter())

        collector = threading.Thread(target=collect)
        start = time.perf_counter()
        collector.start()
        for i, ids in enumerate(inputs):
            time.sleep(max(0.0, start + at[i] - time.perf_counter()))
            submitted[f"job{i}"] = time.perf_counter()
            manager.add_request(ids, request_id=f"job{i}", max_new_tokens=cfg.new_tokens)
        collector.join()
    makespan = max(t for _, t in finished.values()) - start
    latency = float(np.mean([t - submitted[k] for k, (_, t) in finished.items()]))
    return sum(n for n, _ in finished.values()), makespan, latency


async def gan_figures(device: str, cfg: BenchConfig) -> dict[str, float]:
    from generators import gan

    if not data.weights_path("gan").is_file():
        print("GAN: no shipped weights yet, skipped")
        return {}
    model = gan.load(device)
    rng = np.random.default_rng(cfg.seed)
    requests = [
        gan.GenerateRequest(tuple(int(d) for d in rng.integers(0, 10, cfg.gan_digits)), seed=i)
        for i in range(cfg.gan_requests)
    ]
    gan.generate_batch(model, requests[:2])  # warm-up
    start = time.perf_counter()
    for req in requests:
        gan.generate_batch(model, [req])
    alone_s = time.perf_counter() - start
    async with Host(device, max_batch=cfg.gan_requests) as host:
        await host.load("gan", lambda d: model)
        start = time.perf_counter()
        await asyncio.gather(*(host.gan.generate(r.labels, seed=r.seed) for r in requests))
        host_s = time.perf_counter() - start
    images = cfg.gan_requests * cfg.gan_digits
    return {
        "gan_one_at_a_time_images_per_s": images / alone_s,
        "gan_host_images_per_s": images / host_s,
        "gan_host_over_one_at_a_time": alone_s / host_s,
    }


def load_times(device: str) -> tuple[float, float, float]:
    """Cold loads of the default model, from the bundled GGUF and from the safetensors cache,
    and the largest logit difference between the two (the conversion must be exact)."""
    from transformers import AutoModelForCausalLM

    lm_module.install()  # a no-op once cached; not timed
    start = time.perf_counter()
    gguf = lm_module.bundled_gguf()
    from_gguf = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    gguf_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = lm_module.load("cpu")
    cache_s = time.perf_counter() - start
    ids = torch.tensor([cached.encode_chat(lm_module.to_messages("Hello there!"))])
    with torch.inference_mode():
        diff = (from_gguf(ids).logits - cached.model(ids).logits).abs().max().item()
    return gguf_s, cache_s, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=BenchConfig.jobs)
    parser.add_argument("--new-tokens", type=int, default=BenchConfig.new_tokens)
    parser.add_argument("--window", type=float, default=BenchConfig.window_s)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-gguf", action="store_true", help="skip the ~40 s GGUF load")
    args = parser.parse_args()
    cfg = BenchConfig(jobs=args.jobs, new_tokens=args.new_tokens, window_s=args.window)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    figures: dict[str, float | str] = {"device": device, "threads": torch.get_num_threads()}
    print(f"device {device}, {torch.get_num_threads()} threads, {cfg}")

    if not args.skip_gguf:
        gguf_s, cache_s, diff = load_times(device)
        figures |= {"load_gguf_s": gguf_s, "load_cache_s": cache_s, "cache_logit_diff": diff}
        print(
            f"cold LM load (CPU): GGUF {gguf_s:.1f} s, safetensors cache {cache_s:.1f} s; "
            f"largest logit difference between the two {diff:.2g}"
        )

    lm = lm_module.load(device)
    prompts = prompts_for(cfg.jobs)
    asyncio.run(through_host(lm, prompts[:2], cfg, None))  # warm-up, untimed

    tokens, host_s, _, host_batch = asyncio.run(through_host(lm, prompts, cfg, None))
    figures["host_tok_s"] = tokens / host_s
    tokens, elapsed = one_at_a_time(lm, prompts, cfg)
    figures["one_at_a_time_tok_s"] = tokens / elapsed
    tokens, elapsed = hand_batched(lm, prompts, cfg)
    figures["hand_batched_tok_s"] = tokens / elapsed
    figures["host_over_one_at_a_time"] = figures["host_tok_s"] / figures["one_at_a_time_tok_s"]
    figures["host_over_hand_batched"] = figures["host_tok_s"] / figures["hand_batched_tok_s"]
    print(f"\nLM burst, {cfg.jobs} jobs x {cfg.new_tokens} tokens (tokens/s):")
    print(f"  one at a time (model.generate)  {figures['one_at_a_time_tok_s']:8.1f}")
    print(f"  hand-batched (model.generate)   {figures['hand_batched_tok_s']:8.1f}")
    print(f"  host (mean batch {host_batch:4.1f})          {figures['host_tok_s']:8.1f}")
    print(f"  host / one at a time  {figures['host_over_one_at_a_time']:5.2f}x  (target >= 4)")
    print(f"  host / hand-batched   {figures['host_over_hand_batched']:5.2f}x  (target >= 0.8)")

    # The manager switches the model to paged attention while it runs and restores it after.
    tokens, elapsed = continuous_burst(lm, prompts, cfg)
    figures["continuous_burst_tok_s"] = tokens / elapsed
    print(f"  continuous batching (generate_batch) {figures['continuous_burst_tok_s']:8.1f}")

    at = arrivals(cfg)
    tokens, makespan, latency, spread_batch = asyncio.run(through_host(lm, prompts, cfg, at))
    figures |= {
        "spread_host_tok_s": tokens / makespan,
        "spread_host_latency_s": latency,
        "spread_host_makespan_s": makespan,
    }
    tokens, makespan, latency = continuous_spread(lm, prompts, cfg, at)
    figures |= {
        "spread_continuous_tok_s": tokens / makespan,
        "spread_continuous_latency_s": latency,
        "spread_continuous_makespan_s": makespan,
    }
    figures["spread_host_over_continuous"] = (
        figures["spread_host_tok_s"] / figures["spread_continuous_tok_s"]
    )
    print(f"\nLM spread: Poisson arrivals over {at[-1]:.1f} s")
    for name in ("host", "continuous"):
        print(
            f"  {name:10} {figures[f'spread_{name}_tok_s']:7.1f} tokens/s, "
            f"mean latency {figures[f'spread_{name}_latency_s']:5.2f} s, "
            f"makespan {figures[f'spread_{name}_makespan_s']:5.2f} s"
        )
    print(f"  host mean batch {spread_batch:.1f}")
    print(f"  host / continuous batching  {figures['spread_host_over_continuous']:5.2f}x")

    gan = asyncio.run(gan_figures(device, cfg))
    if gan:
        figures |= gan
        print(
            f"\nGAN, {cfg.gan_requests} requests x {cfg.gan_digits} digits (images/s): "
            f"one at a time {gan['gan_one_at_a_time_images_per_s']:.0f}, "
            f"host {gan['gan_host_images_per_s']:.0f} "
            f"({gan['gan_host_over_one_at_a_time']:.1f}x)"
        )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
