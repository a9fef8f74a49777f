"""Finding plans by name: the `plans` package, or any `module.path:attribute`.

A module in the `plans` package named `verified_digits` registers the plan
`verified-digits` by exposing a `plan` attribute. Runs store the reference
they were started with, so `resume` can find the plan again.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from reasoner._exceptions import UnknownPlanError

if TYPE_CHECKING:
    from reasoner.plan import Plan

PLANS_PACKAGE = "plans"


def known_plans() -> dict[str, Plan]:
    """Every plan in the `plans` package, by name."""
    from reasoner.plan import Plan

    try:
        package = importlib.import_module(PLANS_PACKAGE)
    except ImportError:
        return {}
    found: dict[str, Plan] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PLANS_PACKAGE}.{info.name}")
        plan = getattr(module, "plan", None)
        if isinstance(plan, Plan):
            found[plan.name] = plan
    return found


def load_plan(ref: str) -> Plan:
    """Resolve a plan name from the `plans` package, or `module:attribute`."""
    from reasoner.plan import Plan

    if ":" in ref:
        module_name, _, attribute = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownPlanError(
                f"cannot import module {module_name!r} for plan {ref!r}: {exc}"
            ) from exc
        candidate = getattr(module, attribute, None)
        if not isinstance(candidate, Plan):  # the attribute may be the plan's name instead
            candidate = next(
                (v for v in vars(module).values() if isinstance(v, Plan) and v.name == attribute),
                None,
            )
        if candidate is None:
            raise UnknownPlanError(f"module {module_name!r} has no plan {attribute!r}")
        return candidate
    plans = known_plans()
    if ref not in plans:
        known = ", ".join(sorted(plans)) or "none"
        raise UnknownPlanError(f"unknown plan {ref!r}; known plans: {known}")
    return plans[ref]


def plan_ref(plan: Plan) -> str | None:
    """How to find `plan` again from another process, or None for an unimportable one."""
    if plan.module == f"{PLANS_PACKAGE}.{plan.name.replace('-', '_')}":
        return plan.name
    if not plan.module or plan.module == "__main__":
        return None
    return f"{plan.module}:{plan.name}"
