"""`reasoner ask` plans a graph of the project's blocks and runs it; graph spec files run,
draw, resume and show like any plan. The generators are fakes, the model scripted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import reasoner.engine
from reasoner.cli import main
from reasoner.testing import FakeLM, fake_generators

DRAW_AND_READ = [{"block": "draw-number", "inputs": {"number": {"value": 58}}},
                 {"block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}]
SPEC = {"nodes": [{"id": "n1", "block": "evaluate-expression", "params": {"expression": "3 + 4"}},
                  {"id": "n2", "block": "draw-number", "inputs": {"number": {"from": "n1"}}}]}


def writing(nodes: list[dict[str, Any]]) -> FakeLM:
    """A model that writes `nodes` one per call, then the end."""

    def respond(prompt: str, seed: int) -> str:
        written = prompt.rsplit('{"nodes": [', 1)[1].count('{"block"')
        return json.dumps(nodes[written] if written < len(nodes) else {"block": "end"})

    return FakeLM(respond)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's engine on fake generators, the model writing DRAW_AND_READ."""

    def engine_with_fakes(store, device=None):  # noqa: ANN001, ANN202
        return reasoner.engine.Engine(store, generators=fake_generators(lm=writing(DRAW_AND_READ)))

    monkeypatch.setattr(reasoner.engine, "default_engine", engine_with_fakes)


def test_ask_dry_run_prints_the_spec_and_the_graph(fakes: None, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    store = tmp_path / "runs.db"
    assert main(["ask", "handwrite 58 and let the classifier read it", "--dry-run",
                 "--store", str(store)]) == 0
    out = capsys.readouterr().out
    spec_line, mermaid = out.split("\n", 1)
    assert json.loads(spec_line) == {"nodes": [
        {"id": "n1", "block": "draw-number", "inputs": {"number": {"value": 58}}},
        {"id": "n2", "block": "read-digits", "inputs": {"drawing": {"from": "n1"}}}]}
    assert mermaid.startswith("flowchart TD\n")
    assert 'n2["n2 (read-digits): Number"]' in mermaid and "n1 -->|drawing| n2" in mermaid
    assert not store.exists()  # a dry run runs and stores nothing


def test_ask_runs_the_graph_durably_and_it_shows_and_resumes(fakes: None, capsys,  # noqa: ANN001
                                                            tmp_path: Path) -> None:
    store = str(tmp_path / "runs.db")
    assert main(["ask", "handwrite 58 and let the classifier read it", "--store", store]) == 0
    out, err = capsys.readouterr()
    assert err.startswith('graph: {"nodes": [{"id": "n1", "block": "draw-number"')
    run_id, plan, status = out.splitlines()[0].split()
    assert (plan, status) == ("graph", "succeeded")
    assert "  n2: value=58, reasoning=read 5 (p=0.98), 8 (p=0.98)" in out  # field by field
    assert main(["show", run_id, "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"]["nodes"][1]["block"] == "read-digits"
    assert main(["show", run_id, "--store", store]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"  spec: {json.dumps(json.loads(err[7:]))}"
    report = tmp_path / "run.html"
    assert main(["report", run_id, "--store", store, "-o", str(report)]) == 0
    assert "&quot;read-digits&quot;" in report.read_text()  # the spec, in place of an input
    assert main(["resume", run_id, "--store", store]) == 0  # rebuilt from its stored spec
    assert capsys.readouterr().out.startswith(f"{run_id}  graph  succeeded")


def test_a_spec_file_runs_and_draws_like_any_plan(fakes: None, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    spec = tmp_path / "seven.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["graph", str(spec)]) == 0
    assert "n1 -->|number| n2" in capsys.readouterr().out
    assert main(["run", str(spec), "--store", str(tmp_path / "runs.db")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("graph  succeeded") and lines[1] == "  n2: labels=[7]"
    image = tmp_path / f"{lines[0].split()[0]}.png"  # the digits as one strip, beside the store
    assert lines[2] == f"  image: {image}" and image.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("spec", "message"), [
    ({"nodes": [{"id": "n1", "block": "draw-numbr"}]},
     "error: node 'n1': unknown block 'draw-numbr'; did you mean 'draw-number'?"),
    ({"nodes": [{"id": "n1", "block": "draw-number", "inputs": {"number": {"from": "n0"}}}]},
     "error: node 'n1' (draw-number): input 'number' is wired from unknown node 'n0'"),
])
def test_a_bad_spec_file_is_a_usage_error_naming_the_node(capsys, tmp_path: Path,  # noqa: ANN001
                                                          spec: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    assert main(["run", str(path), "--store", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert not (tmp_path / "runs.db").exists()


def test_a_plan_that_takes_an_input_still_needs_one(capsys) -> None:  # noqa: ANN001
    assert main(["run", "morph"]) == 2
    assert capsys.readouterr().err == "error: plan 'morph' needs --input\n"


def test_ask_plans_with_a_users_own_blocks_too(fakes: None, capsys, monkeypatch) -> None:  # noqa: ANN001
    import reasoner.engine

    scale = [{"block": "scale", "inputs": {"number": {"value": 21}}, "params": {"times": 2}}]

    def engine_with_fakes(store, device=None):  # noqa: ANN001, ANN202
        return reasoner.engine.Engine(store, generators=fake_generators(lm=writing(scale)))

    monkeypatch.setattr(reasoner.engine, "default_engine", engine_with_fakes)
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "engine"))  # sample_blocks
    assert main(["ask", "double 21", "--dry-run", "--blocks", "sample_blocks"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[0])["nodes"][0]["block"] == "scale"
    assert main(["ask", "double 21", "--dry-run", "--blocks", "no_such_module"]) == 2
    assert "cannot import the blocks of module 'no_such_module'" in capsys.readouterr().err
