"""The New investigation page (issue 15, item 8): a compare started from the app runs as a real `diagnose compare`
child on the tiny registry, its progress shows while the page keeps answering, Cancel leaves the run folder marked
INCOMPLETE as Ctrl-C does, and bad input is one line that starts nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import jobs
from diagnose.core.runfolder import RunFolder

ROOT = Path(__file__).resolve().parent.parent

# what a compare wrote to its log with DIAGNOSE_PROGRESS=1: tqdm redraws each line after `\r`, and blanks it at the end
REAL_LOG = (
    "\rLoading both versions 00:00\rLoading both versions 00:01\rLoading both versions 00:05\r"
    "                           \r\rComparing the request logs (schema, drift, request sizes) 00:00\r"
    "                                                               \r\rBenchmarking 4 cells            0/3s \r"
    "Benchmarking 4 cells \u2588\u2588\u2588\u2589       1/3s , 21 rounds\r"
    "Benchmarking 4 cells \u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u258e  2/3s , 39 rounds\r"
    "                                                \r"
)


@pytest.fixture
def runs(tmp_path: Path):
    """The app's runs folder; a compare a failed test left running is stopped."""
    root = tmp_path / "runs"
    yield root
    for job in jobs.listed(root):
        job.cancel()
        job.process.wait(timeout=30)


def open_page(runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("DIAGNOSE_APP_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    at.query_params["page"] = "new"
    return at.run()


def start(at: AppTest, budget: float, **fields: str) -> AppTest:
    """Fill the form's text fields (registry, model, old, new, signals) and the budget, and press Start."""
    for name, value in fields.items():
        at.text_input(key=f"new-{name}").input(str(value))
    at.number_input(key="new-budget").set_value(budget)
    at.button(key="new-start").click()
    at.run()
    assert not at.exception, at.exception
    return at


def shown(element) -> str:
    """An element's text as the user reads it (md() escapes Markdown characters with a backslash)."""
    return str(element.value).replace("\\", "")


def rerun_until(at: AppTest, done, timeout_s: float, what: str) -> AppTest:
    """Rerun the page, as its fragment does every second, until `done(at)`."""
    deadline = time.monotonic() + timeout_s
    while not done(at):
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s; page: {page_text(at)}"
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    return "\n".join(shown(e) for kind in ("markdown", "text", "error", "warning", "success") for e in at.get(kind))


def buttons(at: AppTest) -> list[str]:
    return [button.label for button in at.button]


def test_a_compare_started_from_the_page_finishes_and_opens(tiny_registry, runs, monkeypatch):
    at = start(open_page(runs, monkeypatch), 2, registry=tiny_registry, old="v1", new="v3")
    (job,) = jobs.listed(runs)
    assert job.name.endswith("-default-v1-vs-v3") and job.log.parent == runs / jobs.JOBS_DIR
    assert "Cancel" in buttons(at) and job.state() == jobs.RUNNING  # the page came back while the compare runs
    rerun_until(at, lambda at: "Open" in buttons(at), 60, "Open button")
    assert job.state() == jobs.FINISHED and job.returncode == 0, job.error_line()
    assert (job.folder / "report.json").is_file() and not (job.folder / RunFolder.INCOMPLETE).exists()
    assert job.name in at.sidebar.selectbox(key="run").options  # the full rerun at the end listed it
    next(b for b in at.button if b.label == "Open").click()
    at.run()
    assert at.query_params["page"] == "overview" and at.query_params["run"] == job.name


def test_cancel_marks_the_run_folder_incomplete_as_ctrl_c(tiny_registry, runs, monkeypatch):
    at = start(open_page(runs, monkeypatch), 60, registry=tiny_registry, old="v1", new="v2")
    rerun_until(at, lambda at: "Benchmarking" in page_text(at), 30, "benchmark progress")
    at.button(key="new-start").click()  # a second compare would measure the first one's load
    at.run()
    (error,) = at.error
    assert shown(error).startswith("a compare is already running")
    next(b for b in at.button if b.label == "Cancel").click()
    at.run()
    (job,) = jobs.listed(runs)
    assert job.cancel_requested and "Cancel" not in buttons(at)
    rerun_until(at, lambda at: job.state() != jobs.RUNNING, 20, "end after SIGINT")
    at.run()
    assert job.state() == jobs.CANCELLED and job.returncode == 130  # the CLI's exit code for an interrupt
    marker = (job.folder / RunFolder.INCOMPLETE).read_text()
    assert marker.startswith("interrupted by SIGINT"), marker
    assert f"{job.name}" in page_text(at) and "cancelled" in page_text(at) and "interrupted by SIGINT" in page_text(at)


def test_a_compare_that_fails_shows_its_error_line_and_leaves_no_folder(tiny_registry, runs, monkeypatch):
    at = start(open_page(runs, monkeypatch), 2, registry=tiny_registry, old="v1", new="v9")
    (job,) = jobs.listed(runs)
    rerun_until(at, lambda at: job.state() != jobs.RUNNING, 30, "failure")
    at.run()
    assert job.state() == jobs.FAILED and job.returncode == 2
    (error,) = at.error
    assert shown(error).startswith("diagnose: error:") and "v9" in shown(error)
    assert not job.folder.exists() and "Open" not in buttons(at)  # the reserved folder was empty: removed


@pytest.mark.parametrize("change, line", [
    ({"registry": "no-such-registry"}, "registry folder not found: no-such-registry"),
    ({"old": "  "}, "old version: give a version, e.g. v1"),
    ({"signals": "no-such-signals"}, "signals folder not found: no-such-signals"),
])
def test_bad_input_is_one_line_and_starts_nothing(tiny_registry, runs, monkeypatch, change, line):
    fields = {"registry": tiny_registry, "old": "v1", "new": "v2", **change}
    at = start(open_page(runs, monkeypatch), 2, **fields)
    (error,) = at.error
    assert shown(error) == line
    assert jobs.listed(runs) == [] and not runs.exists()


def test_progress_line_is_the_last_redraw_before_the_bar_was_blanked():
    bar = "\u2588" * 8 + "\u258e"
    assert jobs.progress_line(REAL_LOG) == f"Benchmarking 4 cells {bar} 2/3s , 39 rounds"
    assert jobs.progress_line(REAL_LOG[:REAL_LOG.index("\r\rComparing")]) == "Loading both versions 00:05"
    assert jobs.progress_line("\r   \r\n") == ""
    log = REAL_LOG + "\nTraceback ...\ndiagnose: error: /r/mlp/v9: version not found\n"
    assert jobs.error_line(log) == "diagnose: error: /r/mlp/v9: version not found"
