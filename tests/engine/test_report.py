"""HTML reports and summaries; the report is checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sample_plans import Task, counted

from plans.verified_digits import plan as digits_plan
from reasoner import Engine
from reasoner.cli import main
from reasoner.report import GENERATOR, is_report, render_index, render_run, write_report
from reasoner.summary import summarize_store
from reasoner.testing import FakeLM, fake_generators

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


async def _runs(tmp_path: Path) -> tuple[Engine, list[str]]:
    lm = FakeLM(lambda prompt, seed: "12 + 7 = 20\nAnswer: 20" if seed % 2 else
                "12 + 7 = 19\nAnswer: 19")
    engine = Engine(tmp_path / "runs.db", generators=fake_generators(lm=lm))
    ids = [(await engine.run(digits_plan, {"question": "12 apples and 7 more?"}, seed=s)).run_id
           for s in range(3)]
    ids.append((await engine.run(counted, Task(n=3))).run_id)
    return engine, ids


async def test_report_is_self_contained(tmp_path: Path) -> None:
    engine, ids = await _runs(tmp_path)
    html = render_run(engine.load(ids[0]))
    assert html.count('class="node"') == 3 and "<svg" in html
    assert html.count('src="data:image/png;base64,') >= 3  # two digits and the strip
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html and "<link" not in html


async def test_reports_carry_their_marker_and_are_written_whole(tmp_path: Path) -> None:
    engine, ids = await _runs(tmp_path)
    page = render_run(engine.load(ids[0]))
    records = engine.runs()
    index = render_index(records, {ids[0]: f"run-{ids[0]}.html"}, {ids[1]: "plan gone"})
    for html in (page, index):
        assert GENERATOR in html[:1024]
    assert f"{ids[1]}</td>" in index and "no page: plan gone" in index
    assert ids[2] not in index  # neither written nor failed: not listed

    target = tmp_path / "run.html"
    write_report(target, page)
    assert target.read_text() == page and is_report(target)
    assert [p.name for p in tmp_path.iterdir() if "run.html" in p.name] == ["run.html"]  # no temp
    (tmp_path / "other.html").write_text("<!doctype html><p>mine</p>")
    assert not is_report(tmp_path / "other.html") and not is_report(tmp_path / "runs.db")
    assert not is_report(tmp_path)


async def test_summary_reads_success_attempts_and_reasons(tmp_path: Path) -> None:
    engine, _ = await _runs(tmp_path)
    summary = summarize_store(engine.store, plan="verified-digits")
    assert summary.runs == 3 and summary.succeeded == 3 and summary.success_rate == 1.0
    solve = next(s for s in summary.steps if s.step == "solve")
    assert solve.runs == 3 and solve.mean_attempts > 1 and solve.first_try < 1
    assert summary.failure_reasons[0][0] == "arithmetic_holds: wrong line: N + N = N (is N)"
    everything = summarize_store(engine.store)
    assert everything.runs == 4 and everything.failed == 1
    assert everything.job_latency_s is not None and everything.job_latency_s.p50 > 0


def test_cli_report_and_summary(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import asyncio

    engine, ids = asyncio.run(_runs(tmp_path))
    engine.store.close()
    store = str(tmp_path / "runs.db")
    assert main(["report", ids[0], "--store", store, "-o", str(tmp_path / "one.html")]) == 0
    assert (tmp_path / "one.html").read_text().startswith("<!doctype html>")
    assert main(["report", "--store", store, "-o", str(tmp_path / "all")]) == 0
    index = (tmp_path / "all" / "index.html").read_text()
    assert all(f'href="run-{run_id}.html"' in index for run_id in ids)
    assert main(["summary", "--store", store, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["runs"] == 4
    assert main(["summary", "--store", store, "--plan", "counted"]) == 0
    assert "1 runs of counted: 0 succeeded, 1 failed" in capsys.readouterr().out


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
async def test_report_renders_in_a_real_browser_without_network(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    engine, ids = await _runs(tmp_path)
    page = tmp_path / "run.html"
    page.write_text(render_run(engine.load(ids[1])))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1200,1600",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER or "chromedriver"))
    try:
        driver.get(page.as_uri())
        nodes = driver.execute_script(
            "return [...document.querySelectorAll('#graph g.node')].map(g => "
            "[g.dataset.step, g.getBoundingClientRect().width])")
        assert [name for name, _ in nodes] == ["solve", "render", "harmonize"]
        assert all(width > 100 for _, width in nodes)
        images = driver.execute_script(
            "return [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) >= 3 and all(done and w >= 28 and h == 28 for done, w, h in images)
        requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests
                if m["method"] == "Network.requestWillBeSent"]
        assert page.as_uri() in urls  # the log saw the page load...
        network = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
        assert network == []  # ...and nothing of the page's went to the network
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")

        control = tmp_path / "control.html"  # the same probe does see a page that fetches
        control.write_text('<img src="http://127.0.0.1:9/pixel.png">')
        driver.get(control.as_uri())
        seen = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        assert "http://127.0.0.1:9/pixel.png" in [
            m["params"]["request"]["url"] for m in seen if m["method"] == "Network.requestWillBeSent"]
    finally:
        driver.quit()
