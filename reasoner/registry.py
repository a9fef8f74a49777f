"""Finding plans by name: the `plans` package, or any `module.path:attribute`.

A module in the `plans` package named `verified_digits` registers the plan
`verified-digits` by exposing a `plan` attribute. Runs store the reference
they were started with, so `resume` can find the plan again.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
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
        module = _import(f"{PLANS_PACKAGE}.{info.name}", info.name.replace("_", "-"))
        plan = getattr(module, "plan", None)
        if isinstance(plan, Plan):
            found[plan.name] = plan
    return found


def load_plan(ref: str) -> Plan:
    """Resolve a plan name from the `plans` package, or `module:attribute`."""
    from reasoner.plan import Plan

    if ":" in ref:
        module_name, _, attribute = ref.partition(":")
        module_name, attribute = module_name.strip(), attribute.strip()
        if not module_name or not attribute or ":" in attribute:
            raise UnknownPlanError(
                f"invalid plan reference {ref!r}: use a plan name, or module.path:attribute "
                "with both sides given"
            )
        module = _import(module_name, ref)
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


def _import(module_name: str, ref: str) -> ModuleType:
    """Import a plan's module; any failure, in finding it or in running it, is an UnknownPlanError.

    A module that raises while it is imported (a RuntimeError at its top level,
    a SyntaxError, a missing dependency) is named with its error, never a traceback.
    """
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UnknownPlanError(
            f"cannot import module {module_name!r} for plan {ref!r}: {detail}"
        ) from exc


def plan_ref(plan: Plan) -> str | None:
    """How to find `plan` again from another process, or None for an unimportable one."""
    if plan.module == f"{PLANS_PACKAGE}.{plan.name.replace('-', '_')}":
        return plan.name
    if not plan.module or plan.module == "__main__":
        return None
    return f"{plan.module}:{plan.name}"
