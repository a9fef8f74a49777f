"""How often the request router picks the right plan with a valid input.

20 requests written for this benchmark (none of them a plan's own example),
each with the plan it should pick. For each, `reasoner.router.route` asks the
language model under schema-constrained decoding, among the two plans whose
examples the sentence embedder finds likeliest; a pick counts when the plan is
right and pydantic accepted the input. Prints each pick and the share
right; the last line is one JSON object.

    python benchmarks/router_eval.py
"""

from __future__ import annotations

import json
import time

from _common import print_figures

from reasoner import default_engine, known_plans
from reasoner._exceptions import PlanningError
from reasoner.router import route

REQUESTS = [
    ("draw the number forty-two in handwriting", "verified-digits"),
    ("A farmer has 7 cows and buys 5 more. How many cows now? Draw the answer.", "verified-digits"),
    ("render 1999 as handwritten digits", "verified-digits"),
    ("compute 17 * 3 and draw it", "verified-digits"),
    ("Mia reads 12 pages a day for 6 days. How many pages did she read?", "verified-digits"),
    ("show a 4 slowly becoming a 9", "morph"),
    ("interpolate between digit 0 and digit 6", "morph"),
    ("make a 10 frame animation from 3 to 8", "morph"),
    ("transform the handwritten 5 into a 2", "morph"),
    ("blend a one into a seven", "morph"),
    ("tell a story about a dragon ending with 'The dragon slept.' and 'The village was safe.'",
     "story"),
    ("two paragraphs ending 'She opened the door.' and 'Nobody was there.'", "story"),
    ("a tale of a robot, ending in 'It learned to sing.', 'The crowd wept.', 'The end.'", "story"),
    ("write a story whose paragraphs end with 'Night fell.' and 'Morning came.'", "story"),
    ("a short story about the sea with endings 'The wave broke.' and 'The sand was cool.'",
     "story"),
    ("reach 24 using 3 3 8 8", "game24"),
    ("can you make 24 from 1, 2, 3, 4?", "game24"),
    ("24 game: 5 5 5 1", "game24"),
    ("use 6 6 6 6 with + - * / to get 24", "game24"),
    ("find an expression equal to 24 with the numbers 2, 7, 8 and 11", "game24"),
]


async def main() -> dict[str, float]:
    plans = known_plans()
    engine = default_engine(None)
    right = valid = 0
    start = time.perf_counter()
    try:
        for i, (request, expected) in enumerate(REQUESTS):
            try:
                routed = await route(engine.generators["lm"], request, plans,
                                      embedder=engine.generators["embedder"], seed=i)
            except PlanningError as exc:
                print(f"  no route   {request!r}: {exc}", flush=True)
                continue
            valid += 1
            right += routed.plan == expected
            mark = "ok " if routed.plan == expected else "BAD"
            print(f"  {mark} {routed.plan:16} {json.dumps(routed.input)}  <- {request!r}",
                  flush=True)
    finally:
        await engine.aclose()
    figures = {"requests": len(REQUESTS), "right_plan_valid_input": right / len(REQUESTS),
               "valid_input": valid / len(REQUESTS),
               "seconds_per_request": (time.perf_counter() - start) / len(REQUESTS)}
    print(f"right plan with a valid input: {right}/{len(REQUESTS)}")
    return figures


if __name__ == "__main__":
    print_figures(main())
