"""The evaluation benchmarks' shared ends: integer options in, figures as one JSON line out.

Imported as `_common`: the benchmarks run as scripts (`python benchmarks/NAME.py`), which puts
this folder on the path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Coroutine
from typing import Any


def options(doc: str, **defaults: int) -> argparse.Namespace:
    """`--NAME N` for each default, the help headed by the benchmark's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def print_figures(figures: Coroutine[Any, Any, dict[str, float]]) -> None:
    """Run the benchmark; its figures, rounded, are the last line so a script can parse them."""
    print(json.dumps({k: round(v, 4) for k, v in asyncio.run(figures).items()}))
