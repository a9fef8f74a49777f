"""A finished run's result as `reasoner run` prints it: a line or two, and where its images are.

A plan says it in its own words with `@plan.headline` (verified-digits: the answer
and its confidence). Otherwise the outputs of the run's final steps (the ones no
other step reads) are shown field by field, shortened. Every image field of those
outputs is written as a PNG beside the store, and the `reasoner report` command
that shows the whole run is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reasoner.arrays import encode_png
from reasoner.run import Run

WIDTH = 160  # characters of a shown output line

Headline = Callable[[Run], str]


def final_steps(run: Run) -> list[str]:
    """Static steps with an output that no other step of the run reads, in plan order."""
    read = {producer for producer, _ in run.links}
    return [name for name, step in run.steps.items()
            if step.template is None and step.output is not None and name not in read]


def shorten(text: str, width: int = WIDTH) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[:width - 3].rstrip() + "..."


def _image(value: Any) -> np.ndarray | None:
    """An image field's picture: an image, or a list of same-height images side by side."""
    if isinstance(value, list) and value and all(
            isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] == value[0].shape[0]
            for v in value):
        value = np.concatenate(value, axis=1)  # (h, w1 + w2 + ...)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
        return value
    return None


def _field(value: Any) -> str | None:
    if isinstance(value, np.ndarray) or _image(value) is not None:
        return None  # an image or array: written to a file, not printed
    if isinstance(value, float):
        return f"{value:.3g}"
    return shorten(repr(value) if isinstance(value, list | dict) else str(value), 60)


def default_headline(run: Run) -> str:
    """"step: field=value, ..." for each final step, one line each."""
    lines = []
    for name in final_steps(run):
        output = run.steps[name].output
        shown = [f"{key}={text}" for key, value in output if (text := _field(value)) is not None]
        lines.append(shorten(f"{name}: {', '.join(shown) or 'images only'}"))
    return "\n".join(lines)


def write_images(run: Run, folder: Path) -> list[Path]:
    """Each uint8 image of the final outputs (a list of them as one strip) as
    `<run id>[-<step>-<field>].png` in `folder`."""
    found = [(name, key, image) for name in final_steps(run)
             for key, value in run.steps[name].output if (image := _image(value)) is not None]
    paths = []
    for name, key, image in found:
        path = folder / (f"{run.run_id}.png" if len(found) == 1
                         else f"{run.run_id}-{name}-{key}.png")
        path.write_bytes(encode_png(image))
        paths.append(path)
    return paths


def result_lines(run: Run, headline: Headline | None, store: Path) -> list[str]:
    """The lines printed under the run's status line (nothing for a run without output)."""
    if not any(step.output is not None for step in run.steps.values()):
        return []
    try:
        text = (headline or default_headline)(run)
    except Exception as exc:  # the run is finished and stored: show it anyway
        text = f"{default_headline(run)}\n(the plan's headline failed: {type(exc).__name__}: {exc})"
    lines = [f"  {line}" for line in text.splitlines() if line.strip()][:4]
    images = write_images(run, store.parent)
    if images:
        lines.append(f"  image{'s' if len(images) > 1 else ''}: "
                     + ", ".join(str(path) for path in images))
    lines.append(f"  report: reasoner report {run.run_id} --store {store} "
                 f"-o {run.run_id}.html")
    return lines
