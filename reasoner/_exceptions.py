"""The exceptions this library raises, grouped by who has to act.

    ReasonerError
    ├── UsageError              the caller's mistake: fix the plan, input or call (CLI exit 2)
    │   ├── PlanError
    │   │   └── PlanChangedError
    │   ├── InputError
    │   ├── UnknownPlanError
    │   └── GeneratorMissingError
    ├── BackendError            the store or the cluster failed: fix or retry the environment (exit 3)
    │   ├── StoreError
    │   │   ├── RunBusyError
    │   │   └── LeaseLostError
    │   └── ClusterError
    └── GenerationError         a step's or a model's output is unusable (exit 1, like a failed run)
        ├── OutputError
        ├── ExpressionError
        └── PlanningError

Errors from lower layers (pydantic, sqlite3, importlib, Ray) are translated into
these at the boundary, so callers catch one family and read one message. Inside a
run, a step's failure is data (a failed attempt), not an exception.
"""

from __future__ import annotations


class ReasonerError(Exception):
    """Base class of every error this library raises on purpose."""


# ------------------------------------------------------------------ the caller's
class UsageError(ReasonerError):
    """Base of the errors the caller fixes: what was given is wrong."""


class PlanError(UsageError):
    """Raised when a plan is built wrong: a cycle, an unknown or duplicate step, a bad type."""


class PlanChangedError(PlanError):
    """Raised by resume when the plan's graph is no longer the one the run was started with."""


class InputError(UsageError):
    """Raised when a run's input, run id or input file is invalid; the message names the field."""


class UnknownPlanError(UsageError):
    """Raised when a plan name or `module:attribute` reference resolves to no plan."""


class GeneratorMissingError(UsageError):
    """Raised when a step uses a generator (`ctx.lm`, ...) the engine was not given."""


# ---------------------------------------------------------------- the backend's
class BackendError(ReasonerError):
    """Base of the errors of the environment a run needs: its store, its cluster."""


class StoreError(BackendError):
    """Raised when the store cannot be opened, read or written, or holds no such run."""


class RunBusyError(StoreError):
    """Raised when another live process holds the lease of the run to execute; names it."""


class LeaseLostError(StoreError):
    """Raised in a run whose lease expired and was taken over by another process."""


class ClusterError(BackendError):
    """Raised when the Ray backend cannot start, reach its actors, or finish a job on them."""


# ------------------------------------------------------------------ the model's
class GenerationError(ReasonerError):
    """Base of the errors about generated content: what a step or a model produced is unusable."""


class OutputError(GenerationError):
    """Raised inside an attempt when a step returns the wrong type or an unstorable value."""


class ExpressionError(GenerationError, ValueError):
    """Raised when text is not plain arithmetic (numbers, + - * /, parentheses) or overflows."""


class PlanningError(GenerationError):
    """Raised when the model cannot name a plan and a valid input within its attempts."""
