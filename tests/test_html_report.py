"""report.html and report.pdf, on real run folders: one self-contained file that loads nothing, the plots each run's
evidence allows and "not available: <reason>" where it does not, a verdict a real browser shows in its colour, an A4
PDF from a real headless Chromium, and hostile strings from a Report that stay text.

Chromium and pdftoppm are found on PATH (Chromium as reports.pdf finds it); the tests that need them skip without.
"""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from diagnose.analysis import analyze
from diagnose.core.errors import UserError
from diagnose.core.report import CellSummary, Measurement, RuleError, SourceStatus
from reports import html as html_report
from reports import pdf as pdf_report

RUNS = ("regression", "no_regression", "production")
MAX_BYTES = 3 * 1024 * 1024
A4 = 297 / 210


def _chromium() -> str | None:
    try:
        return pdf_report.find_chromium()
    except UserError:
        return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH (apt-get install chromium, "
                                                             "or set DIAGNOSE_CHROMIUM): browser checks skipped")
needs_pdftoppm = pytest.mark.skipif(shutil.which("pdftoppm") is None,
                                    reason="no pdftoppm (apt-get install poppler-utils): PDF page checks skipped")


class Page(HTMLParser):
    """Every start tag with its attributes, the plots (<svg class="plot" data-plot=...>) and the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.plots: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = {k.lower(): (v or "") for k, v in attrs}
        self.tags.append((tag.lower(), attrs))
        if tag.lower() == "svg" and "plot" in attrs.get("class", "").split():
            self.plots.append(attrs.get("data-plot", ""))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def analyzed(report_runs):
    return {name: analyze(report_runs[name]) for name in RUNS}


@pytest.fixture(scope="module")
def pages(analyzed):
    """Each run's report.html, rendered once, with how long the render took."""
    out = {}
    for name, report in analyzed.items():
        start = time.perf_counter()
        page = html_report.render(report)
        out[name] = (page, time.perf_counter() - start)
    return out


def _section(page: str, key: str) -> str:
    found = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert found, f"no {key} section"
    return found.group(1)


def _not_available(report, source: str) -> str:
    return "not available: " + html.escape(report.evidence_sources[source].reason)


# ---- self-contained, safe ---------------------------------------------------------------------------------------------
URL_ATTRS = ("src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data", "background")


def _assert_self_contained(page: str) -> Page:
    parsed = Page(page)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "base", "frame", "audio", "video"}, tags
    for tag, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no event handlers: no JavaScript at all
        for name in URL_ATTRS:
            if name in attrs:
                assert attrs[name].startswith("#"), (tag, name, attrs[name])  # in-page references only (SVG markers)
    assert not re.search(r"url\(\s*['\"]?(?!#)", page), "a url() that is not an in-page reference"
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", page, re.I)
    assert "@import" not in page and "@font-face" not in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page  # the SVGs' prologs were stripped
    csp = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv", "").lower() == "content-security-policy"]
    assert [a["content"] for a in csp] == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    return parsed


@pytest.mark.parametrize("run", RUNS)
def test_the_report_is_one_file_that_loads_nothing(run, pages, analyzed):
    page, _ = pages[run]
    parsed = _assert_self_contained(page)
    assert len(page.encode()) < MAX_BYTES
    report = analyzed[run]
    verdict = [a for t, a in parsed.tags if t == "div" and "verdict" in a.get("class", "").split()]
    assert [a["data-verdict"] for a in verdict] == [report.verdict]
    assert f">{report.verdict.replace('_', ' ')}</div>" in page  # the verdict in words, large, first
    assert html.escape(report.summary) in page
    assert page.index('class="verdict"') < page.index('<section id="latency">')  # the summary comes first
    assert "plot not drawn" not in page


EXPECTED_PLOTS = {"regression": {"latency", "cells", "ops", "timelines", "pareto"},
                  "no_regression": {"latency", "cells"},
                  "production": {"timelines"}}


@pytest.mark.parametrize("run", RUNS)
def test_each_run_has_the_plots_its_evidence_allows(run, pages, analyzed):
    page, _ = pages[run]
    report = analyzed[run]
    plots = Page(page).plots
    expected = set(EXPECTED_PLOTS[run]) | ({"drift"} if report.drift and report.drift.distributions else set())
    assert set(plots) == expected and len(plots) == len(expected), plots
    assert len(re.findall(r"<svg\b", page)) == len(plots)  # every svg is a plot, tagged


def test_a_run_without_signals_profile_or_variants_says_why(pages, analyzed):
    page, _ = pages["no_regression"]
    report = analyzed["no_regression"]
    assert report.timelines is None and report.profile is None and report.fix is None
    assert _not_available(report, "prometheus") in _section(page, "signals")
    assert _not_available(report, "profile") in _section(page, "profile")
    assert _not_available(report, "variants") in _section(page, "fix")
    assert "not measured" not in _section(page, "latency")  # the lab measured it: the table is there
    assert "<table>" in _section(page, "latency") and "p99" in _section(page, "latency")


def test_a_production_only_run_shows_production_and_says_the_lab_did_not_measure(pages, analyzed):
    page, _ = pages["production"]
    report = analyzed["production"]
    assert report.latency is None and report.timelines is not None
    assert _not_available(report, "benchmark") in _section(page, "latency")
    signals = _section(page, "signals")
    assert html.escape(report.production.describe()) in signals
    assert signals.index(html.escape(report.production.describe())) < signals.index('data-plot="timelines"')
    assert "memory" in signals and "limit" in signals  # the memory panel with its limit


def test_the_regression_run_lays_out_its_causes_fix_and_gate(pages, analyzed):
    page, elapsed = pages["regression"]
    report = analyzed["regression"]
    top = report.hypotheses[0]
    glance = re.search(r'<section class="glance" id="summary">(.*?)</section>', page, re.S).group(1)
    assert html.escape(top.cause) in glance and html.escape(report.fix.verdict) in glance
    assert f">{report.gate.status}</span>" in glance and html.escape(report.gate.checks[0].message) in glance
    causes = _section(page, "causes")
    assert all(html.escape(line) in causes for line in top.evidence)
    assert all(html.escape(name) in _section(page, "fix") for name in (v["name"] for v in report.fix.variants))
    assert html.escape(report.reproduce[0]) in _section(page, "reproduce")
    assert elapsed < 20  # a few seconds at most even on a loaded 2-core machine (about 1.5 s idle)


def test_the_compare_keeps_report_html_in_the_run_folder(report_runs):
    page = (report_runs["no_regression"] / "report.html").read_text()
    _assert_self_contained(page)
    assert 'data-plot="latency"' in page


def test_a_large_sample_is_drawn_through_a_few_thousand_points(analyzed):
    report = analyzed["no_regression"]
    rng = np.random.default_rng(0)
    big = dataclasses.replace(report.latency, old=Measurement(rng.gamma(4.0, 1.0, 300_000)),
                              new=Measurement(rng.gamma(4.0, 1.1, 300_000)))
    start = time.perf_counter()
    page = html_report.render(dataclasses.replace(report, latency=big))
    assert time.perf_counter() - start < 20
    svg = re.search(r'<svg[^>]*data-plot="latency".*?</svg>', page, re.S).group(0)
    assert len(svg) < 400_000 and len(page.encode()) < MAX_BYTES


def test_import_reports_stays_light():
    code = "import sys, reports; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---- hostile strings --------------------------------------------------------------------------------------------------
CLOSE = '"><script>alert(1)</script>'
IMG = "<img src=x onerror=alert(1)>"


def _hostile(analyzed):
    """The regression report with a hostile string in every field a renderer shows (and `$` signs, which
    matplotlib would read as mathtext)."""
    r, production = analyzed["regression"], analyzed["production"]
    hyp = dataclasses.replace(r.hypotheses[0], cause="x.<script>", summary=IMG, evidence=(CLOSE,),
                              next_steps=(IMG, f"$ echo {CLOSE}", f"PromQL: {IMG}"), missing=(IMG,))
    ops = [dict(row, key=CLOSE) if i == 0 else row for i, row in enumerate(r.profile.tables["ops"])]
    modules = [dict(row, key=IMG) for row in r.profile.tables["modules"]]
    profile = dataclasses.replace(r.profile, tables={**r.profile.tables, "ops": ops, "modules": modules},
                                  findings=(IMG,) + r.profile.findings, traces={"old": CLOSE, "new": IMG}, logdir=IMG)
    distributions = (
        {"feature": CLOSE, "drift": True, "method": "ks", "quantiles": {"p": [0, 0.5, 1], "old": [1, 2, 3], "new": [2, 3, 5]}},
        {"feature": IMG, "drift": False, "method": "chi2",
         "categories": {"values": [CLOSE, "cost $5 and $6"], "old": [0.5, 0.5], "new": [0.3, 0.7]}},
    )
    drift = dataclasses.replace(
        r.drift, distributions=distributions, latency_tie={"status": "ok", "text": IMG},
        drifted=({"feature": CLOSE, "method": IMG, "statistic": 0.5, "p_adjusted": 0.001, "old_mean": 1.0,
                  "new_mean": 2.0, "drift": True},),
        schema_changes=({"column": CLOSE, "change": "added", "old": None, "new": "int", "text": IMG},))
    series = r.timelines.series
    timelines = dataclasses.replace(r.timelines, series=(dataclasses.replace(series[0], label=CLOSE, unit=IMG),) + series[1:])
    fix = dataclasses.replace(r.fix, verdict=IMG, best=CLOSE,
                              variants=(dict(r.fix.variants[0], name=CLOSE, runs_as=IMG),) + r.fix.variants[1:],
                              not_measured=({"name": IMG, "status": "failed", "reason": CLOSE},))
    gate = dataclasses.replace(r.gate, checks=(dataclasses.replace(r.gate.checks[0], message=IMG),) + r.gate.checks[1:])
    return dataclasses.replace(
        r, model="<script>alert(1)</script>", old=CLOSE, new=IMG + " $x$", summary=IMG, hypotheses=(hyp,) + r.hypotheses[1:],
        cells={**r.cells, CLOSE: CellSummary(1, 1.0, 0.1, 0.9, 10.0, IMG)}, profile=profile, drift=drift,
        timelines=timelines, fix=fix, gate=gate, warnings=(IMG,), incomplete=IMG, tool={"name": CLOSE, "version": IMG},
        production=dataclasses.replace(production.production, metric=CLOSE, server_label=IMG),
        environment={"old": {"cpu_model": CLOSE, "libraries": {IMG: "1"}}, "new": {"cpu_model": IMG, "python": CLOSE}},
        reproduce=(f"diagnose analyze {CLOSE}",),
        evidence_sources={**r.evidence_sources, "host": SourceStatus("unavailable", IMG)},
        unjudged=({"cause": CLOSE, "missing": IMG},), rule_errors=(RuleError(CLOSE, (IMG,), CLOSE),),
        baseline={"dir": CLOSE, "version": IMG, "started_at": None}, run=dataclasses.replace(r.run, dir=CLOSE))


def test_hostile_strings_in_a_report_stay_text(analyzed):
    page = html_report.render(_hostile(analyzed))
    parsed = _assert_self_contained(page)
    assert "<script" not in page.lower()
    tags = [re.sub(r'"[^"]*"', '""', tag) for tag in re.findall(r"<[a-zA-Z][^>]*>", page)]  # quoted values are text
    assert not [tag for tag in tags if re.search(r"\son\w+\s*=", tag, re.I)]  # no onerror= (or any on...=) attribute
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    # shown, escaped, not dropped
    assert html.escape(CLOSE) in page and html.escape(IMG) in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # every plot is still drawn, the hostile names in them as escaped SVG text
    plots = Page(page).plots
    assert set(plots) == {"latency", "cells", "ops", "timelines", "drift", "pareto"} and "plot not drawn" not in page
    for kind in ("ops", "drift", "pareto", "timelines"):
        svg = re.search(rf'<svg[^>]*data-plot="{kind}".*?</svg>', page, re.S).group(0)
        assert "&lt;script&gt;" in svg, kind
        assert "<script" not in svg.lower()
    latency = re.search(r'<svg[^>]*data-plot="latency".*?</svg>', page, re.S).group(0)
    assert "&gt; $x$: n=" in latency  # a $ stays a dollar sign: no mathtext from a version's name


# ---- a real browser ---------------------------------------------------------------------------------------------------
def _screenshot(page: str, tmp_path) -> np.ndarray:
    from matplotlib import image

    source, png = tmp_path / "report.html", tmp_path / "shot.png"
    source.write_text(page, encoding="utf-8")
    command = pdf_report.chromium_command(CHROMIUM, tmp_path, f"--screenshot={png}", "--window-size=1200,1600",
                                          source.as_uri())
    result = pdf_report.run_chromium(command)
    assert png.exists(), result.stderr.decode(errors="replace")[-2000:]
    return image.imread(str(png))[..., :3]


def _near(pixels: np.ndarray, colour: str, tolerance: float = 0.12) -> np.ndarray:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    return (np.abs(pixels - rgb) <= tolerance).all(axis=-1)


def _not_white(pixels: np.ndarray) -> float:
    return float((pixels < 0.94).any(axis=-1).mean())


@needs_chromium
@pytest.mark.parametrize("run", ["regression", "production"])
def test_chromium_shows_the_verdict_in_its_colour(run, pages, analyzed, tmp_path):
    shot = _screenshot(pages[run][0], tmp_path)
    assert shot.shape[:2] == (1600, 1200)
    colour = html_report.VERDICT_COLOURS[analyzed[run].verdict]
    assert colour == "#c62828"  # both runs regressed: red
    top = shot[:300]
    assert _near(top, colour).sum() > 3000  # the verdict badge and band, in the first screenful's top
    assert not _near(top, html_report.VERDICT_COLOURS["no_regression"]).sum() > 3000
    assert _not_white(shot) > 0.03  # text, tables and plots: not a blank page


@needs_chromium
@needs_pdftoppm
def test_the_pdf_is_a4_pages_that_are_not_blank(analyzed, tmp_path):
    data = pdf_report.render(analyzed["regression"])
    assert data.startswith(b"%PDF")
    (tmp_path / "report.pdf").write_bytes(data)
    result = subprocess.run(["pdftoppm", "-r", "40", "-png", str(tmp_path / "report.pdf"), str(tmp_path / "page")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    from matplotlib import image

    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2
    for path in pages:
        pixels = image.imread(str(path))[..., :3]
        height, width = pixels.shape[:2]
        assert abs(height / width - A4) < 0.02, (path.name, width, height)
        assert _not_white(pixels) > 0.002, path.name
    first = image.imread(str(pages[0]))[..., :3]
    assert _near(first[: first.shape[0] // 4], html_report.VERDICT_COLOURS["regression"]).sum() > 50


def test_without_a_browser_the_pdf_says_what_to_install(analyzed, monkeypatch, tmp_path):
    monkeypatch.delenv("DIAGNOSE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no browser on it
    with pytest.raises(UserError, match="PDF needs a headless Chromium: apt-get install chromium, or set "
                                        "DIAGNOSE_CHROMIUM to its path"):
        pdf_report.render(analyzed["no_regression"])
    monkeypatch.setenv("DIAGNOSE_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(UserError, match="DIAGNOSE_CHROMIUM=.*is not an executable"):
        pdf_report.render(analyzed["no_regression"])
