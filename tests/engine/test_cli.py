"""The `reasoner` command line, run in-process: output shapes, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoner.cli import main

PLAN = "sample_plans:counted"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_instant_and_imports_no_models() -> None:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "reasoner", "--help"], capture_output=True,
                            text=True, check=True)
    assert time.perf_counter() - start < 3  # generous for a loaded CI box; ~0.2 s here
    assert "resume" in result.stdout
    probe = "import sys, reasoner.cli, reasoner.engine; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_run_json_shape_and_show(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    db = str(tmp_path / "runs.db")
    code, out, err = run_cli(capsys, "run", PLAN, "--input", '{"n": 2}', "--store", db,
                             "--seed", "4", "--json")
    assert code == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert set(result) >= {"run_id", "plan", "status", "steps"}
    assert result["plan"] == "counted" and result["status"] == "succeeded"
    assert f"run {result['run_id']} started" in err
    picture = result["steps"]["picture"]
    assert picture["status"] == "succeeded" and picture["attempts"] == 1
    assert picture["output"]["image"].startswith("data:image/png;base64,")
    assert picture["checks"] == [{"name": "bright_enough", "passed": True,
                                  "score": picture["checks"][0]["score"],
                                  "reason": picture["checks"][0]["reason"]}]

    code, out, _ = run_cli(capsys, "show", result["run_id"], "--store", db, "--json")
    assert code == 0 and json.loads(out) == result
    code, out, _ = run_cli(capsys, "show", result["run_id"], "--store", db)
    assert "picture: succeeded, 1 attempt(s)" in out and "<uint8 array 28x28>" in out
    code, out, _ = run_cli(capsys, "runs", "--store", db)
    assert out.startswith(result["run_id"]) and "succeeded" in out


def test_jsonl_with_bad_lines_runs_the_good_ones(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"n": 2}\n{"n": "two"}\n\n{"n": 3}\nnot json\n{"n": 6}\n')
    db = str(tmp_path / "runs.db")
    code, out, err = run_cli(capsys, "run", PLAN, "--input", f"@{inputs}", "--store", db,
                             "--jobs", "2", "--json")
    assert code == 2  # a validation error, although the good lines ran
    assert f"{inputs}:2: invalid input for plan 'counted': field 'n'" in err
    assert f"{inputs}:5: invalid input" in err
    assert "2 invalid input line(s) skipped; 3 will run" in err
    statuses = sorted((r["input"]["n"], r["status"]) for r in map(json.loads, out.splitlines()))
    assert statuses == [(2, "succeeded"), (3, "failed"), (6, "succeeded")]


def test_failed_run_exits_1_with_the_reason(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code, out, err = run_cli(capsys, "run", PLAN, "--input", '{"n": 3}', "--store",
                             str(tmp_path / "r.db"))
    assert code == 1
    assert "failed  step 'odd_one_out' failed: ValueError: n=3 is odd" in out
    assert "0 succeeded, 1 failed" in err


def test_usage_errors_exit_2(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = run_cli(capsys, "run", "no-such-plan", "--input", "{}")
    assert code == 2 and "unknown plan 'no-such-plan'; known plans:" in err
    code, _, err = run_cli(capsys, "run", "sample_plans:nothing", "--input", "{}")
    assert code == 2 and "has no plan 'nothing'" in err
    code, _, err = run_cli(capsys, "run", PLAN, "--input", '{"m": 1}')
    assert code == 2 and "field 'n': Field required" in err
    code, _, err = run_cli(capsys, "show", "abc", "--store", str(tmp_path / "missing.db"))
    assert code == 2 and "no store at" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2


def test_graph_and_plans(capsys) -> None:  # noqa: ANN001
    code, out, _ = run_cli(capsys, "graph", PLAN)
    assert code == 0 and out.startswith("flowchart TD") and "hop3 -->|previous| hop4" in out
    code, out, _ = run_cli(capsys, "graph", PLAN, "--format", "dot")
    assert code == 0 and '"hop4" -> "picture"' in out
    code, out, _ = run_cli(capsys, "plans", "--json")
    assert code == 0
    names = [json.loads(line)["name"] for line in out.splitlines()]
    from reasoner import known_plans

    assert names == sorted(known_plans())
