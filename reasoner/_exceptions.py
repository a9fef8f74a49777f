"""The exceptions this library raises: one base class and a shallow tree.

Errors from lower layers (pydantic, sqlite3, importlib) are translated into
these at the boundary, so callers catch one family and read one message.
"""

from __future__ import annotations


class ReasonerError(Exception):
    """Base class of every error this library raises on purpose."""


class PlanError(ReasonerError):
    """Raised when a plan is built wrong: a cycle, an unknown or duplicate step, a bad type."""


class InputError(ReasonerError):
    """Raised when a run's input fails validation; the message names the field."""


class UnknownPlanError(ReasonerError):
    """Raised when a plan name or `module:attribute` reference resolves to no plan."""


class StoreError(ReasonerError):
    """Raised when the store cannot be opened or holds no such run."""


class RunBusyError(StoreError):
    """Raised when another live process holds the lease of the run to execute; names it."""


class LeaseLostError(StoreError):
    """Raised in a run whose lease expired and was taken over by another process."""


class GeneratorMissingError(ReasonerError):
    """Raised when a step uses a generator (`ctx.lm`, ...) the engine was not given."""


class OutputError(ReasonerError):
    """Raised inside an attempt when a step returns the wrong type or an unstorable value."""


class ExpressionError(ReasonerError, ValueError):
    """Raised when text is not plain arithmetic (numbers, + - * /, parentheses) or overflows."""


class PlanningError(ReasonerError):
    """Raised when the model cannot name a plan and a valid input within its attempts."""


class ClusterError(ReasonerError):
    """Raised when the Ray backend cannot start, reach its actors, or finish a job on them."""
