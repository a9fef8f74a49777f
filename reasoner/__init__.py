"""reasoner: a multi-step reasoning engine for chained generation.

Define a `Plan` of typed async steps, attach checks, and run it with an
`Engine` that resamples, backtracks, stores every step durably and shares
generators across jobs. Importing this package loads no model code.
"""

from reasoner import checks
from reasoner._exceptions import (
    GeneratorMissingError,
    InputError,
    OutputError,
    PlanError,
    ReasonerError,
    StoreError,
    UnknownPlanError,
)
from reasoner.arrays import Array, Image
from reasoner.context import Context
from reasoner.engine import Engine
from reasoner.events import Event
from reasoner.plan import Plan, Step
from reasoner.registry import known_plans, load_plan
from reasoner.run import Run, StepRun

__all__ = [
    "Array",
    "Context",
    "Engine",
    "Event",
    "GeneratorMissingError",
    "Image",
    "InputError",
    "OutputError",
    "Plan",
    "PlanError",
    "ReasonerError",
    "Run",
    "Step",
    "StepRun",
    "StoreError",
    "UnknownPlanError",
    "checks",
    "known_plans",
    "load_plan",
]
