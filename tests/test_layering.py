"""Layering: the engine loads no model code, no model framework and no Ray.

`reasoner` is the engine; `generators` (torch, transformers) and `ray` sit above
it and are loaded only by what asks for them (`default_engine`, the Ray backend,
the `reasoner_models` fixture), never by importing a module of the engine. Each
check runs in a fresh interpreter, so that nothing this test session has already
imported can hide a violation. The modules are listed at test time, so a new
module of the package is covered as soon as it exists.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import reasoner

HEAVY = ("generators", "torch", "transformers", "ray")
NOT_ENGINE = {
    "reasoner.cluster",  # the Ray backend: importing it is asking for Ray
    "reasoner.__main__",  # runs the command line when imported
}


def engine_modules() -> list[str]:
    return sorted(
        module.name for module in pkgutil.walk_packages(reasoner.__path__, "reasoner.")
        if module.name not in NOT_ENGINE
    )


def heavy_modules_after(code: str) -> dict[str, list[str]]:
    """Run `code` in a fresh interpreter; which HEAVY packages it left in sys.modules.

    The answer maps each HEAVY top-level name that was loaded to the first few of
    its modules, so a failure shows what came in.
    """
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = {name: sorted(m for m in sys.modules if m == name or m.startswith(name + '.'))[:5]\n"
        "          for name in heavy}\n"
        "print(json.dumps({name: mods for name, mods in loaded.items() if mods}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_package_has_engine_modules_to_check() -> None:
    modules = engine_modules()
    # The core of the engine is always among them; a broken listing would pass vacuously.
    assert {"reasoner.cli", "reasoner.engine", "reasoner.executor", "reasoner.plan",
            "reasoner.store"} <= set(modules)


@pytest.mark.parametrize("module", engine_modules())
def test_importing_an_engine_module_loads_no_model_code_and_no_ray(module: str) -> None:
    assert heavy_modules_after(f"import reasoner\nimport {module}") == {}


def test_importing_every_engine_module_together_loads_none_either() -> None:
    imports = "\n".join(f"import {module}" for module in engine_modules())
    assert heavy_modules_after(f"import reasoner\n{imports}") == {}


def test_the_command_lines_help_loads_no_model_code_and_no_ray() -> None:
    """`reasoner --help`: import the CLI and let it print its help, as the script does."""
    code = (
        "import contextlib, io, reasoner.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        reasoner.cli.main(['--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "assert 'usage: reasoner' in out.getvalue(), out.getvalue()\n"
    )
    assert heavy_modules_after(code) == {}
