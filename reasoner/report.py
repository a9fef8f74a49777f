"""HTML run reports: one self-contained file per run, and an index for many runs.

A report needs no network: the step graph is inline SVG, images are PNG
data URIs, styles are inline, and there is no script. Each node of the graph
is coloured by its status and, for succeeded steps, by its coherence score;
each edge carries its score. Below the graph come the run's coherence, then
every step: its output (text, images), checks, attempts and seeds.

Every page carries `<meta name="generator" content="reasoner report">` near
its top, so `reasoner report` can tell its own pages from any other file and
overwrite only those; pages are written atomically (`write_report`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from reasoner.arrays import png_data_uri
from reasoner.coherence import Coherence
from reasoner.records import RunRecord
from reasoner.run import Run, StepRun

STATUS_COLOURS = {
    "succeeded": "#2e9e5b", "degraded": "#b7791f", "failed": "#d64541", "skipped": "#9aa0a6",
    "pending": "#c9ced6", "running": "#3b82f6", "interrupted": "#e0a030",
}
NODE_W, NODE_H, GAP_X, GAP_Y = 150, 44, 40, 70
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing leaves the page
GENERATOR = '<meta name="generator" content="reasoner report">'  # marks pages this module wrote
_HEAD = f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n{GENERATOR}\n'

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
.status { padding: 0.1rem 0.5rem; border-radius: 0.6rem; color: white; font-size: 0.85rem; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { border: 1px solid #d0d7de;
  padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; font-size: 0.9rem; }
pre { background: #f6f8fa; padding: 0.6rem; white-space: pre-wrap; max-width: 60rem; }
.step { border-left: 4px solid #d0d7de; padding-left: 1rem; margin: 1.5rem 0; }
img.digit { image-rendering: pixelated; height: 84px; border: 1px solid #d0d7de; margin: 2px; }
.pass { color: #2e9e5b; } .fail { color: #d64541; } svg text { font-family: inherit; }
"""


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#666")
    return f'<span class="status" style="background:{colour}">{status}</span>'


def _node_colour(step: StepRun, score: float | None) -> str:
    if step.status != "succeeded" or score is None:
        return STATUS_COLOURS.get(step.status, "#666")
    if score >= 0.8:
        return STATUS_COLOURS["succeeded"]
    return "#e0a030" if score >= 0.5 else "#e06c30"  # succeeded, but weakly coherent


def _layout(run: Run) -> dict[str, tuple[int, int]]:
    """Layered layout: a node sits one layer below its deepest producer."""
    producers: dict[str, list[str]] = defaultdict(list)
    for src, dst in run.links:
        producers[dst].append(src)
    depth: dict[str, int] = {}

    def layer(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            parents = [p for p in producers.get(name, []) if p in run.steps and p not in seen]
            depth[name] = 1 + max((layer(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    rows: dict[int, list[str]] = defaultdict(list)
    for name in run.steps:
        rows[layer(name)].append(name)
    return {name: (col, row) for row, names in rows.items() for col, name in enumerate(names)}


def graph_svg(run: Run, coherence: Coherence) -> str:
    positions = _layout(run)
    scores = {s.step: s.score for s in coherence.steps}
    edge_scores = {(e.producer, e.consumer): e for e in coherence.edges}
    columns = max((c for c, _ in positions.values()), default=0) + 1
    rows = max((r for _, r in positions.values()), default=0) + 1
    width, height = columns * (NODE_W + GAP_X) + GAP_X, rows * (NODE_H + GAP_Y)

    def centre(name: str) -> tuple[float, float]:
        col, row = positions[name]
        return GAP_X + col * (NODE_W + GAP_X) + NODE_W / 2, GAP_Y / 2 + row * (NODE_H + GAP_Y)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="graph" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="step graph of run {escape(run.run_id)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/>'
             '</marker></defs>']
    for src, dst in run.links:
        if src not in positions or dst not in positions:
            continue
        (x1, y1), (x2, y2) = centre(src), centre(dst)
        edge = edge_scores.get((src, dst))
        parts.append(f'<line class="edge" x1="{x1:.0f}" y1="{y1 + NODE_H:.0f}" x2="{x2:.0f}" '
                     f'y2="{y2 - 2:.0f}" stroke="#57606a" marker-end="url(#arrow)"/>')
        if edge is not None:
            parts.append(f'<text x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + NODE_H + y2) / 2:.0f}" '
                         f'font-size="11" fill="#57606a">{edge.metric} {edge.score:.2f}</text>')
    blocks = {node["id"]: node["block"] for node in (run.spec or {}).get("nodes", [])}
    for name, step in run.steps.items():
        x, y = centre(name)
        score = scores.get(name)
        label = name if len(name) <= 20 else "…" + name[-19:]
        detail = step.status + (f" · {score:.2f}" if score is not None else "")
        if step.confidence is not None:
            detail += f" · {step.confidence:.0%} agree"
        shown = blocks.get(name, detail)  # a spec node: its block (the colour says the rest)
        parts.append(
            f'<g class="node" data-step="{escape(name)}" data-status="{step.status}">'
            f'<title>{escape(name)}: {detail}</title>'
            f'<rect x="{x - NODE_W / 2:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="8" '
            f'fill="{_node_colour(step, score)}"/>'
            f'<text x="{x:.0f}" y="{y + 18:.0f}" text-anchor="middle" font-size="13" '
            f'fill="white">{escape(label)}</text>'
            f'<text x="{x:.0f}" y="{y + 35:.0f}" text-anchor="middle" font-size="11" '
            f'fill="white">{escape(shown)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _value_html(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 and value.ndim in (2, 3):
            return f'<img class="digit" alt="image {value.shape}" src="{png_data_uri(value)}">'
        return f"<code>{value.dtype} array {'x'.join(map(str, value.shape))}</code>"
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
        return "".join(_value_html(v) for v in value)
    if isinstance(value, str):
        return f"<pre>{escape(value)}</pre>"
    return f"<code>{escape(json.dumps(value, default=str))}</code>"


def _output_html(step: StepRun) -> str:
    if step.output is None:
        return "<p><em>no output</em></p>"
    rows = "".join(f"<tr><th>{escape(field)}</th><td>{_value_html(value)}</td></tr>"
                   for field, value in step.output.__dict__.items())
    return f'<table class="output">{rows}</table>'


def _attempts_html(step: StepRun) -> str:
    rows = []
    for a in step.attempts:
        status = a.status + (" (chosen)" if a is step.standing and len(step.attempts) > 1 else "")
        checks = "<br>".join(
            f'<span class="{"pass" if c.passed else "fail"}">{escape(c.name)} {c.score:.2f}</span> '
            f"{escape(c.reason)}" for c in a.checks)
        error = f'<br><span class="fail">{escape(a.error)}</span>' if a.error else ""
        rows.append(f"<tr><td>{a.generation}.{a.attempt}</td><td>{a.seed}</td><td>{status}</td>"
                    f"<td>{a.duration_s * 1000:.1f} ms</td><td>{escape(str(a.compute))}</td>"
                    f"<td>{checks}{error}</td></tr>")
    votes = ", ".join(f"{escape(answer)} ×{n}" for answer, n in step.votes.items())
    tally = (f"<p>confidence {step.confidence:.2f} · votes: {votes}</p>"
             if step.confidence is not None else "")
    return (f"{tally}<table class=\"attempts\"><tr><th>gen.attempt</th><th>seed</th>"
            "<th>status</th><th>time</th><th>compute</th><th>checks</th></tr>"
            f"{''.join(rows)}</table>")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_run(run: Run) -> str:
    """The report of one run as a complete HTML document."""
    coherence = run.coherence()
    started = datetime.fromtimestamp(run.created_at, UTC).isoformat(timespec="seconds")
    edges = "".join(
        f"<tr><td>{escape(e.producer)} → {escape(e.consumer)}</td><td>{e.metric}</td>"
        f"<td>{e.score:.3f}</td><td>{escape(e.detail)}</td></tr>" for e in coherence.edges)
    steps = "".join(
        f'<section class="step" id="step-{escape(name)}"><h3>{escape(name)} {_badge(step.status)}'
        f"</h3>{_output_html(step)}{_attempts_html(step)}</section>"
        for name, step in run.steps.items())
    backtracks = "".join(f"<li>{escape(b.failed)} failed: regenerated {escape(b.target)} "
                         f"({escape(b.reason)})</li>" for b in run.backtracks)
    return f"""{_HEAD}<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(run.plan)} run {escape(run.run_id)}</title><style>{CSS}</style></head>
<body><h1>{escape(run.plan)} · run {escape(run.run_id)} {_badge(run.status)}</h1>
<p>seed {run.seed} · started {started}{f" · {run.duration_s:.2f} s" if run.duration_s else ""}
· compute: {escape(str(run.compute))}</p>
{f'<p class="fail">{escape(run.error)}</p>' if run.error else ""}
{f'<p>degraded (best effort kept): {escape(", ".join(run.degraded))}</p>' if run.degraded else ""}
<pre>{escape(run.input.model_dump_json(indent=2) if run.spec is None
            else json.dumps(run.spec, indent=2))}</pre>
<h2>Step graph</h2>{graph_svg(run, coherence)}
<h2>Coherence</h2>
<table><tr><th>min step</th><td>{_fmt(coherence.min_step)}</td><th>mean step</th>
<td>{_fmt(coherence.mean_step)}</td></tr><tr><th>min edge</th><td>{_fmt(coherence.min_edge)}</td>
<th>mean edge</th><td>{_fmt(coherence.mean_edge)}</td></tr>
<tr><th>weakest</th><td colspan="3">{escape(coherence.weakest or "–")} ({_fmt(coherence.weakest_score)})
</td></tr></table>
{f"<table><tr><th>edge</th><th>metric</th><th>score</th><th>detail</th></tr>{edges}</table>"
  if edges else ""}
{f"<h2>Backtracks</h2><ul>{backtracks}</ul>" if backtracks else ""}
<h2>Steps</h2>{steps}
</body></html>
"""


def render_index(
    records: list[RunRecord], pages: dict[str, str], errors: dict[str, str] | None = None
) -> str:
    """A table of runs linking to each run's page (`pages`: run id -> relative path).

    `errors` (run id -> why) lists the runs whose page could not be written, with the
    reason in place of a link: a run whose plan cannot be loaded any more, say.
    """
    errors = errors or {}

    def row(r: RunRecord) -> str:
        if r.run_id in pages:
            name, note = f'<a href="{escape(pages[r.run_id])}">{escape(r.run_id)}</a>', ""
        else:
            name = escape(r.run_id)
            note = f'<br><span class="fail">no page: {escape(errors[r.run_id])}</span>'
        started = datetime.fromtimestamp(r.created_at, UTC).isoformat(timespec="seconds")
        return (f"<tr><td>{name}</td><td>{escape(r.plan)}</td><td>{_badge(r.status)}</td>"
                f"<td>{started}</td><td>{escape(r.error or '')}{note}</td></tr>")

    rows = "".join(row(r) for r in records if r.run_id in pages or r.run_id in errors)
    succeeded = sum(r.status == "succeeded" for r in records)
    unreadable = f" · {len(errors)} without a page" if errors else ""
    return f"""{_HEAD}<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>runs</title><style>{CSS}</style></head>
<body><h1>{len(records)} runs · {succeeded} succeeded{unreadable}</h1>
<table id="runs"><tr><th>run</th><th>plan</th><th>status</th><th>started</th><th>error</th></tr>
{rows}</table></body></html>
"""


def is_report(path: str | Path) -> bool:
    """Whether `path` is a regular file that this module wrote (it carries GENERATOR)."""
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return False
    return GENERATOR.encode() in head


def write_report(path: str | Path, html: str) -> None:
    """Write `html` to `path` atomically: a temporary file in the same folder, then os.replace.

    A reader (or a crash) sees the old page or the new one, never half of one.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as a plain open() would have made it, not 0600
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
