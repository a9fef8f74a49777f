"""The `ctx` a step receives: its seed and attempt, generator handles, a logger,
and `spawn` for steps that grow the graph at run time.

Generator handles reached through `ctx` are metered: every call of an async
method is counted by generator name, with the tokens its result reports, in
`ctx.compute`, which the attempt's record keeps.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import random
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from reasoner._exceptions import GeneratorMissingError, OutputError
from reasoner.plan import SPAWN_SEPARATOR, Step
from reasoner.records import CheckRecord, Compute


class RunView(Protocol):
    """What a step may see of the run it is part of (the executor's `Execution` is one)."""

    @property
    def templates(self) -> Mapping[str, Step]: ...

    def verdicts(self, step: str) -> list[CheckRecord]: ...

    def expansion_outputs(self, step: str) -> dict[str, BaseModel]: ...

    def compute(self, step: str) -> Compute: ...


class _Metered:
    """A generator handle whose async calls are counted into an attempt's `Compute`."""

    __slots__ = ("_handle", "_name", "_compute")

    def __init__(self, handle: Any, name: str, compute: Compute) -> None:
        self._handle, self._name, self._compute = handle, name, compute

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._handle, attribute)
        if not inspect.iscoroutinefunction(value):
            return value
        compute, name = self._compute, self._name

        @functools.wraps(value)
        async def metered(*args: Any, **kwargs: Any) -> Any:
            result = await value(*args, **kwargs)
            compute.count(name, result)
            return result

        return metered


@functools.lru_cache(maxsize=65536)  # map runs every input with one seed: the same seeds recur
def derive_seed(run_seed: int, node: str, generation: int, attempt: int) -> int:
    """A 32-bit seed fixed by the run seed and the attempt's place in the run."""
    key = f"{run_seed}\x00{node}\x00{generation}\x00{attempt}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")


class Context:
    """Per-attempt context. Generator handles resolve by name: `ctx.lm`, `ctx.gan`, ..."""

    __slots__ = ("run_id", "step", "seed", "attempt", "generation", "compute", "_step",
                 "_generators", "_run", "_spawned", "_log")  # fmt: skip

    def __init__(
        self,
        run_id: str,
        step: Step,
        node: str,
        seed: int,
        attempt: int,
        generation: int,
        generators: Mapping[str, Any],
        run: RunView | None = None,
    ) -> None:
        self.run_id = run_id
        self.step = node
        self.seed = seed
        self.attempt = attempt
        self.generation = generation
        self.compute = Compute()  # what this attempt has spent so far
        self._step = step
        self._generators = generators
        self._run = run
        self._spawned: list[tuple[str, Step, BaseModel]] = []
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        uses = self._step.options.uses
        if uses and name not in uses:
            raise GeneratorMissingError(
                f"step {self.step!r} uses generator {name!r} but declares uses={uses!r}"
            )
        try:
            return _Metered(self._generators[name], name, self.compute)
        except KeyError:
            known = ", ".join(sorted(self._generators)) or "none"
            raise GeneratorMissingError(
                f"step {self.step!r} asked for generator {name!r}, which this engine does not "
                f"have (it has: {known})"
            ) from None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger("reasoner.step"),
                {"run_id": self.run_id, "step": self.step, "attempt": self.attempt},
            )
        return self._log

    @property
    def rng(self) -> random.Random:
        """A Python RNG seeded with this attempt's seed."""
        return random.Random(self.seed)

    def spawn(self, template: Step | str, key: str, payload: BaseModel) -> str:
        """Add a child node running `template` on `payload` once this attempt succeeds.

        Returns the child's node name, `<this step>/<key>`. Children of a failed
        attempt are discarded with it.
        """
        if self._run is None:
            raise OutputError("spawn needs a running execution")
        templates = self._run.templates
        name = template if isinstance(template, str) else template.name
        if name not in templates:
            known = ", ".join(sorted(templates)) or "none"
            raise OutputError(
                f"step {self.step!r} spawned unknown template {name!r} (templates: {known})"
            )
        step = templates[name]
        if not key or SPAWN_SEPARATOR in key:
            raise OutputError(f"step {self.step!r}: spawn key {key!r} must be non-empty without '/'")
        child = f"{self.step}{SPAWN_SEPARATOR}{key}"
        if any(existing == child for existing, _, _ in self._spawned):
            raise OutputError(f"step {self.step!r} spawned {child!r} twice")
        (param, expected), = ((p, a) for p, a in step.annotations.items() if p not in step.defaults)
        if not isinstance(payload, expected):
            raise OutputError(
                f"template {name!r} takes {getattr(expected, '__name__', expected)} as "
                f"{param!r}, got {type(payload).__name__}"
            )
        self._spawned.append((child, step, payload))
        return child

    def verdicts(self, step: str) -> list[CheckRecord]:
        """The check results of the attempt that stands for `step` (a finished producer)."""
        return [] if self._run is None else self._run.verdicts(step)

    def expansion(self, step: str) -> dict[str, BaseModel]:
        """Outputs of every node spawned below `step` (at any depth) that succeeded."""
        return {} if self._run is None else self._run.expansion_outputs(step)

    def spent(self, step: str) -> Compute:
        """What finished `step` and every node spawned below it spent, all attempts counted."""
        return Compute() if self._run is None else self._run.compute(step)
