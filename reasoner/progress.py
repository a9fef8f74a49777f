"""A progress display for many jobs, fed by the engine's events.

It prints each run's id to stderr as the run starts (so an interrupted batch
can be found and resumed) and keeps a live bar of finished, failed and
running jobs, with steps done and backtracks taken.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reasoner.engine import Engine
from reasoner.events import Event


class JobProgress:
    """Context manager subscribing a rich progress bar to an engine's events."""

    def __init__(self, engine: Engine, total: int, plan: str) -> None:
        self.engine = engine
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.task = self.progress.add_task(plan, total=total, detail="")
        self.failed = self.steps = self.backtracks = self.running = 0
        self._unsubscribe = lambda: None

    def __enter__(self) -> JobProgress:
        self._unsubscribe = self.engine.subscribe(self._on_event)
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._unsubscribe()
        self.progress.stop()

    def _on_event(self, event: Event) -> None:
        if event.kind == "run_started":
            self.running += 1
            self.console.print(f"run {event.run_id} started", style="dim", highlight=False)
        elif event.kind in ("step_succeeded", "step_degraded"):
            self.steps += 1
        elif event.kind == "backtracked":
            self.backtracks += 1
        elif event.kind == "run_finished":
            self.running -= 1
            self.failed += event.data["status"] == "failed"
            self.progress.advance(self.task)
        else:
            return
        self.progress.update(
            self.task,
            detail=f"{self.failed} failed, {self.running} running, {self.steps} steps, "
            f"{self.backtracks} backtracks",
        )
