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


async def test_the_readme_search_example_runs_and_finds_signs() -> None:
    """The user's own search shown in the README, run as written on the fake LM."""
    from reasoner import Engine
    from reasoner.testing import fake_generators

    readme = (ROOT / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
               if "Search(plan" in block]
    namespace: dict[str, object] = {"__name__": "readme_search"}
    exec(compile(code, "README.md", "exec"), namespace)  # our own documentation, not model output
    run = await Engine(store=None, generators=fake_generators()).run(
        namespace["plan"], {"numbers": [3, 5, 2, 7], "target": 3})
    found = run.output("answer")
    assert run.status == "succeeded" and found.goal is not None
    assert found.goal.state.total == 3 and found.spent.lm_calls >= 1
    assert sum(1 for name in run.steps if name.startswith("solve/")) == found.levels
