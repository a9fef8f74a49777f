"""The `reasoner` command line, run in-process: output shapes, errors and exit codes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reasoner.arrays import decode_png
from reasoner.cli import main

PLAN = "sample_plans:counted"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "reasoner", "--help"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("usage: reasoner [-h] COMMAND ...")
    commands = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")]
    assert commands == ["plans", "graph", "run", "ask", "resume", "show", "runs", "report",
                        "summary"]
    # That --help loads no model code is pinned by tests/test_layering.py.


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
                                  "score": pytest.approx(0.5110744, abs=1e-6),
                                  "reason": "mean brightness 0.511 >= threshold 0.300"}]
    assert picture["output"]["caption"] == "number 309"  # seed 4: start 284, five hops to 309
    assert {name: step["output"] for name, step in result["steps"].items()
            if name.startswith(("start", "hop", "odd"))} == {
        "start": {"v": 284}, "hop0": {"v": 293}, "hop1": {"v": 293}, "hop2": {"v": 302},
        "hop3": {"v": 305}, "hop4": {"v": 309}, "odd_one_out": {"v": 2}}

    code, out, _ = run_cli(capsys, "show", result["run_id"], "--store", db, "--json")
    assert code == 0 and json.loads(out) == result
    code, out, _ = run_cli(capsys, "show", result["run_id"], "--store", db)
    assert out.splitlines()[0] == f"run {result['run_id']}  plan counted  status succeeded  seed 4"
    assert "picture: succeeded, 1 attempt(s)" in out
    assert "check bright_enough: pass 0.511 mean brightness 0.511 >= threshold 0.300" in out
    assert ('output: {"image": "<uint8 array 28x28>", "latent": "<float32 array 16>", '
            '"caption": "number 309"}') in out
    code, out, _ = run_cli(capsys, "runs", "--store", db)
    assert out.startswith(result["run_id"]) and "succeeded" in out


def test_a_run_ends_with_its_result_and_writes_its_images_beside_the_store(
    capsys, tmp_path: Path,  # noqa: ANN001
) -> None:
    db = tmp_path / "runs.db"
    code, out, err = run_cli(capsys, "run", PLAN, "--input", '{"n": 2}', "--store", str(db),
                             "--seed", "4")
    assert code == 0, err
    run_id = out.split()[0]
    assert out.splitlines() == [
        f"{run_id}  counted  succeeded",
        "  picture: caption=number 309",  # the final steps' outputs, images left out
        "  odd_one_out: v=2",
        f"  image: {tmp_path / (run_id + '.png')}",
        f"  report: reasoner report {run_id} --store {db} -o {run_id}.html"]
    written = decode_png((tmp_path / f"{run_id}.png").read_bytes())
    stored = json.loads(run_cli(capsys, "show", run_id, "--store", str(db), "--json")[1])
    assert np.array_equal(written, decode_png(base64.b64decode(
        stored["steps"]["picture"]["output"]["image"].split(",", 1)[1])))


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
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2


def test_environment_errors_exit_3(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = run_cli(capsys, "show", "abc", "--store", str(tmp_path / "missing.db"))
    assert code == 3 and "no store at" in err  # a StoreError: the environment, not the call
    assert not (tmp_path / "missing.db").exists()


def test_graph_and_plans(capsys) -> None:  # noqa: ANN001
    code, out, _ = run_cli(capsys, "graph", PLAN)
    assert code == 0 and out.startswith("flowchart TD") and "hop3 -->|previous| hop4" in out
    code, out, _ = run_cli(capsys, "graph", PLAN, "--format", "dot")
    assert code == 0 and '"hop4" -> "picture"' in out
    code, out, err = run_cli(capsys, "graph", "story")  # sized by its input: the example's
    assert code == 0 and "paragraph_0 -->|previous| paragraph_1" in out
    assert err.startswith('the graph for the example input {"endings": ["The cat came home."')
    code, out, _ = run_cli(capsys, "plans", "--json")
    assert code == 0
    listed = {entry["name"]: entry for entry in map(json.loads, out.splitlines())}
    assert list(listed) == ["game24", "morph", "story", "verified-digits"]  # sorted
    assert listed["game24"]["input"]["required"] == ["numbers"]
    assert listed["morph"]["input"]["required"] == ["source", "target"]
    assert listed["story"]["input"]["required"] == ["endings"]
    assert "required" not in listed["verified-digits"]["input"]  # question or expression
    assert listed["morph"]["description"].startswith(
        "morph: one handwritten digit turning smoothly into another.")
    code, out, _ = run_cli(capsys, "plans")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(listed)


def test_a_degraded_run_exits_0_and_says_what_was_kept(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    db = str(tmp_path / "runs.db")
    code, out, err = run_cli(capsys, "run", "sample_plans:hedged", "--input", '{"n": 1}',
                             "--store", db, "--seed", "2")
    assert code == 0, err
    run_id = out.split()[0]
    shown = json.loads(run_cli(capsys, "show", run_id, "--store", db, "--json")[1])
    assert out.splitlines() == [  # the plan's own headline, then where the report is
        f"{run_id}  hedged  degraded  (best effort kept for polish)",
        f"  kept {shown['steps']['polish']['output']['v']} after 6 attempts",
        f"  report: reasoner report {run_id} --store {db} -o {run_id}.html"]
    assert err.splitlines()[-1] == "0 succeeded, 1 degraded, 0 failed"
    guess, polish = shown["steps"]["guess"], shown["steps"]["polish"]
    assert shown["status"] == "degraded" and polish["status"] == "degraded"
    # polish backtracked into guess twice (3 rounds of 5 samples) before keeping its best
    assert len(shown["backtracks"]) == 2 and guess["attempts"] == 15
    assert sum(guess["votes"].values()) == 5  # the standing round's votes
    assert guess["confidence"] == max(guess["votes"].values()) / 5
    assert polish["chosen"] in (1, 2) and polish["error"].startswith("perfect: ")
    code, out, _ = run_cli(capsys, "show", run_id, "--store", db)
    assert "degraded: polish kept their best attempt" in out
    assert f"confidence {guess['confidence']:.2f} (votes: " in out
    assert "polish: degraded, 6 attempt(s), attempt" in out and "unmet: perfect: " in out
    code, out, _ = run_cli(capsys, "summary", "--store", db)
    assert "0 succeeded, 1 degraded, 0 failed" in out
