"""reasoner: a multi-step reasoning engine for chained generation.

Define a `Plan` of typed async steps, attach checks, and run it with an
`Engine` that resamples, backtracks, stores every step durably and shares
generators across jobs. Importing this package loads no model code, and its
names load on first use so that `reasoner --help` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasoner import checks
    from reasoner._exceptions import (
        BackendError,
        ClusterError,
        ExpressionError,
        GenerationError,
        GeneratorMissingError,
        InputError,
        LeaseLostError,
        OutputError,
        PlanChangedError,
        PlanError,
        PlanningError,
        ReasonerError,
        RunBusyError,
        StoreError,
        UnknownPlanError,
        UsageError,
    )
    from reasoner.arrays import Array, Image
    from reasoner.context import Context
    from reasoner.engine import Engine, default_engine
    from reasoner.events import Event
    from reasoner.handles import Choice, Choices
    from reasoner.plan import CompiledPlan, Plan, Step
    from reasoner.registry import known_plans, load_plan
    from reasoner.run import Run, StepRun

_EXPORTS = {
    "checks": "reasoner.checks",
    "BackendError": "reasoner._exceptions",
    "GenerationError": "reasoner._exceptions",
    "PlanChangedError": "reasoner._exceptions",
    "UsageError": "reasoner._exceptions",
    "CompiledPlan": "reasoner.plan",
    "ClusterError": "reasoner._exceptions",
    "PlanningError": "reasoner._exceptions",
    "ExpressionError": "reasoner._exceptions",
    "GeneratorMissingError": "reasoner._exceptions",
    "InputError": "reasoner._exceptions",
    "LeaseLostError": "reasoner._exceptions",
    "RunBusyError": "reasoner._exceptions",
    "OutputError": "reasoner._exceptions",
    "PlanError": "reasoner._exceptions",
    "ReasonerError": "reasoner._exceptions",
    "StoreError": "reasoner._exceptions",
    "UnknownPlanError": "reasoner._exceptions",
    "Array": "reasoner.arrays",
    "Image": "reasoner.arrays",
    "Context": "reasoner.context",
    "Engine": "reasoner.engine",
    "default_engine": "reasoner.engine",
    "Event": "reasoner.events",
    "Choice": "reasoner.handles",
    "Choices": "reasoner.handles",
    "Plan": "reasoner.plan",
    "Step": "reasoner.plan",
    "known_plans": "reasoner.registry",
    "load_plan": "reasoner.registry",
    "Run": "reasoner.run",
    "StepRun": "reasoner.run",
}
__all__ = [
    "BackendError",
    "ClusterError",
    "CompiledPlan",
    "GenerationError",
    "PlanChangedError",
    "UsageError",
    "ExpressionError",
    "PlanningError",
    "Array",
    "Choice",
    "Choices",
    "Context",
    "Engine",
    "Event",
    "GeneratorMissingError",
    "Image",
    "InputError",
    "LeaseLostError",
    "OutputError",
    "Plan",
    "PlanError",
    "ReasonerError",
    "Run",
    "RunBusyError",
    "Step",
    "StepRun",
    "StoreError",
    "UnknownPlanError",
    "checks",
    "default_engine",
    "known_plans",
    "load_plan",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reasoner' has no attribute {name!r}")
    value = importlib.import_module(module)
    return value if name == "checks" else getattr(value, name)
