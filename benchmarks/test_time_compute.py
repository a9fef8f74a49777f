"""Quality against test-time compute for each plan: a single pass, sampling, search, at several budgets.

All on the shipped SmolLM2-135M on this machine's device, in one process, on sets the
project makes itself with fixed seeds (each part's docstring states its set):
- verified-digits (`_ttc_digits.py`): right answers and the precision of `succeeded`
  for one LM pass, the plan voting over N = 1, 2, 4, 8, 16 checked samples, and the
  plan as shipped;
- game24 (`_ttc_game24.py`): solved share on hard puzzles for one direct pass, and
  the search and random legal moves at equal numbers of proposals;
- story (`_ttc_story.py`): every ending present and mean coherence for one LM pass
  writing every paragraph, and the paragraph-by-paragraph plan.
Each plan's baseline runs in the same process as its methods. The points measured are
kept in `benchmarks/test_time_compute.json`, replacing that plan's earlier points, so
the plans can be measured in separate invocations (`--plans game24`). Prints one table
of every kept point (compute is the mean per input; wall time is the whole set's),
writes `benchmarks/test_time_compute.png` (one panel per plan, quality against LM calls,
or against proposals for game24), and ends with one JSON line of the headline figures.

    python benchmarks/test_time_compute.py [--plans digits,game24,story] [--problems 50]
        [--puzzles 50] [--stories 20] [--jobs 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import asdict
from pathlib import Path

import _ttc_digits
import _ttc_game24
import _ttc_story
from _compute import Point

from reasoner import default_engine

PNG = Path(__file__).with_suffix(".png")
KEPT = Path(__file__).with_suffix(".json")
ORDER = ("verified-digits", "game24", "story")


async def measure(args: argparse.Namespace) -> list[Point]:
    engine = default_engine(None)
    points: list[Point] = []
    try:
        lm = engine.generators["lm"]  # loaded before any clock starts
        await lm.generate("Hello", max_new_tokens=1)
        await engine.generators["embedder"].similarity("a", "b")
        if "digits" in args.plans:
            points += await _ttc_digits.measure(engine, args.problems, [1, 2, 4, 8, 16],
                                                args.jobs)
        if "game24" in args.plans:
            points += await _ttc_game24.measure(engine, args.puzzles, (12, 36, 100), args.jobs)
        if "story" in args.plans:
            points += await _ttc_story.measure(engine, args.stories, [1, 2], args.jobs)
    finally:
        await engine.aclose()
    return points


def table(points: list[Point]) -> str:
    head = (f"{'plan':16} {'method':8} {'N/budget':>8} {'quality':>8} {'LM calls':>9} "
            f"{'tokens':>8} {'proposals':>9} {'wall s':>7}  extra")
    rows = [head, "-" * len(head)]
    for p in points:
        extra = ", ".join(f"{k} {v:.3g}" for k, v in p.extra.items())
        rows.append(f"{p.plan:16} {p.method:8} {p.setting:8d} {p.quality:8.3f} "
                    f"{p.lm_calls:9.1f} {p.generated_tokens:8.0f} {p.proposals:9.1f} "
                    f"{p.wall_s:7.0f}  {extra}")
    return "\n".join(rows)


def plot(points: list[Point]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = list(dict.fromkeys(p.plan for p in points))
    fig, axes = plt.subplots(1, len(plans), figsize=(5.2 * len(plans), 4.2), squeeze=False)
    for ax, name in zip(axes[0], plans, strict=True):
        mine = [p for p in points if p.plan == name]
        by_proposals = name == "game24"
        for method in dict.fromkeys(p.method for p in mine):
            shown = [p for p in mine if p.method == method]
            xs = [max(p.proposals if by_proposals else p.lm_calls, 0.5) for p in shown]
            ax.plot(xs, [p.quality for p in shown], marker="o", label=method)
            if method == "random" and "random_expected" in shown[0].extra:
                ax.plot(xs, [p.extra["random_expected"] for p in shown], linestyle=":",
                        color="grey", label="random (exact expectation)")
        ax.set_xscale("log")
        ax.set_xlabel("proposals per puzzle" if by_proposals else "LM calls per input")
        ax.set_ylabel({"verified-digits": "right answers", "game24": "solved",
                       "story": "mean coherence"}.get(name, "quality"))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Quality against test-time compute, SmolLM2-135M")
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)


def headline(points: list[Point]) -> dict[str, float]:
    """The figures the targets are read from."""
    figures: dict[str, float] = {}
    digits = {(p.method, p.setting): p for p in points if p.plan == "verified-digits"}
    if digits:
        single = digits[("single", 1)].quality
        best = max((p for p in digits.values() if p.method == "vote"), key=lambda p: p.quality)
        shipped = next(p for p in digits.values() if p.method == "plan")
        figures |= {"digits_single_right": single, "digits_best_vote_right": best.quality,
                    "digits_best_vote_n": best.setting,
                    "digits_right_ratio": best.quality / single if single else math.inf,
                    "digits_best_vote_precision": best.extra["precision"],
                    "digits_plan_right": shipped.quality,
                    "digits_plan_precision": shipped.extra["precision"]}
    game = {(p.method, p.setting): p for p in points if p.plan == "game24"}
    for (method, budget), p in game.items():
        if method == "search":
            expected = game[("random", budget)].extra["random_expected"]
            figures |= {f"game24_search_solved_{budget}": p.quality,
                        f"game24_random_solved_{budget}": game[("random", budget)].quality,
                        f"game24_random_expected_{budget}": expected,
                        f"game24_search_over_random_{budget}":
                            p.quality / expected if expected else math.inf}
    story = [p for p in points if p.plan == "story"]
    if story:
        single = next(p for p in story if p.method == "single")
        best = max((p for p in story if p.method != "single"), key=lambda p: p.quality)
        figures |= {"story_single_coherence": single.quality,
                    "story_plan_coherence": best.quality,
                    "story_plan_all_endings": best.extra["every_ending"],
                    "story_single_all_endings": single.extra["every_ending"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="digits,game24,story",
                        help="comma-separated: digits, game24, story")
    for name, default in (("problems", 50), ("puzzles", 50), ("stories", 20), ("jobs", 32)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    args.plans = set(args.plans.split(","))
    measured = asyncio.run(measure(args))
    fresh = {p.plan for p in measured}
    kept = [Point(**p) for p in json.loads(KEPT.read_text())] if KEPT.exists() else []
    points = sorted([*(p for p in kept if p.plan not in fresh), *measured],
                    key=lambda p: ORDER.index(p.plan))
    KEPT.write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")
    print(table(points))
    plot(points)
    print(f"wrote {PNG}")
    print(json.dumps({k: round(v, 4) if math.isfinite(v) else str(v)
                      for k, v in headline(points).items()}))


if __name__ == "__main__":
    main()
