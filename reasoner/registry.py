"""Finding plans by name in plan packages, or by any `module.path:attribute`.

A module `verified_digits` of a plan package (this project's: `plans`, named in
`reasoner.project`) registers the plan `verified-digits` by exposing a `plan`
attribute; modules whose names start with `_` are skipped. Runs store the
reference they were started with, so `resume` can find the plan again.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from reasoner._exceptions import UnknownPlanError
from reasoner.project import PLAN_PACKAGES

if TYPE_CHECKING:
    from reasoner.plan import CompiledPlan, Plan
    from reasoner.records import RunRecord


def known_plans(packages: Sequence[str] = PLAN_PACKAGES) -> dict[str, Plan]:
    """Every plan in the plan packages, by name."""
    from reasoner.plan import Plan

    found: dict[str, Plan] = {}
    for package_name in packages:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            module = _import(f"{package_name}.{info.name}", info.name.replace("_", "-"))
            plan = getattr(module, "plan", None)
            if isinstance(plan, Plan):
                found.setdefault(plan.name, plan)
    return found


def load_plan(ref: str) -> Plan:
    """Resolve a plan name from the plan packages, `module:attribute`, or a graph spec file
    (`*.json`, built from the plan packages' blocks)."""
    from reasoner.plan import Plan

    if ref.endswith(".json"):
        from reasoner.blocks import known_blocks

        try:
            text = Path(ref).read_bytes()
        except OSError as exc:
            raise UnknownPlanError(f"cannot read the graph spec {ref!r}: {exc.strerror}") from None
        return Plan.from_spec(text, known_blocks())
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


def plan_ref(plan: Plan | CompiledPlan) -> str | None:
    """How to find `plan` again from another process, or None for an unimportable one."""
    package, _, module = plan.module.rpartition(".")
    if package in PLAN_PACKAGES and module == plan.name.replace("-", "_"):
        return plan.name
    if not plan.module or plan.module == "__main__":
        return None
    return f"{plan.module}:{plan.name}"


def stored_plan(record: RunRecord) -> Plan:
    """The plan a stored run was started with: rebuilt from its graph spec and the modules
    of its blocks, or imported by its reference."""
    if record.spec is None:
        return load_plan(record.plan_ref or record.plan)
    from reasoner.blocks import load_blocks
    from reasoner.plan import Plan

    return Plan.from_spec(record.spec, load_blocks(*sorted(set(record.blocks.values()))))
