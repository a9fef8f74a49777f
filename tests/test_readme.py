"""The README's set-up commands are the ones CI runs, and its example test really passes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    return re.findall(r"```\n(python -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    main, tests = _commands()[:2]
    assert readme.index(main) < readme.index(tests) < readme.index("## ")
    assert "reasoner run verified-digits" in main and tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci
    assert ci.index(_commands()[1]) > ci.index("pip install -q torch==2.13.0")
