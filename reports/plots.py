"""The plots of report.html, drawn by matplotlib as inline SVG: one function per plot, a Report's section in, an
`<svg class="plot" data-plot="...">` string out (or None when the section holds nothing to draw).

matplotlib is imported inside each function, so `import reports` (which the CLI does for `--help`) stays light.
Figures are `matplotlib.figure.Figure` objects drawn to SVG (Agg for any measuring): pyplot and its global figure
manager are never touched, so no window opens, no backend is switched under a caller, and each figure is cleared
when its SVG is written. Text stays text (`svg.fonttype` none); matplotlib escapes it as XML, and every string
from the Report reaches matplotlib through `_text`, which keeps a `$` literal (no mathtext from a model's name).
Like every renderer these plots compute nothing: they draw the Report's figures, and the latency ECDF draws the
samples the Report carries, thinned to a few thousand points.
"""

from __future__ import annotations

import html
import io
import re
from contextlib import contextmanager
from datetime import datetime, timezone

OLD_COLOUR = "#4c72b0"
NEW_COLOUR = "#dd8452"
WORSE = "#c62828"
BETTER = "#2e7d32"
NEUTRAL = "#8a8a8a"
ECDF_POINTS = 2000  # a sample ECDF is drawn through this many quantiles at most
WIDTH_IN = 7.0  # 504 pt: an A4 page's text width at 14 mm margins, a laptop screen's column

_RC = {
    "svg.fonttype": "none",  # text stays <text>: searchable, selectable, small
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "text.usetex": False,
}


def _text(value, limit: int = 60) -> str:
    """A Report string as matplotlib text: shortened, `$` kept literal (a `\\$` is never read as mathtext)."""
    s = " ".join(str(value).split())
    if len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return s.replace("$", r"\$")


@contextmanager
def _figure(kind: str, height_in: float, ncols: int = 1, nrows: int = 1, left: float = 0.6, right: float = 0.15,
            top: float = 0.3, bottom: float = 0.45, wspace: float = 0.25, hspace: float = 0.35, **subplots):
    """A Figure with its axes, under the report's style, margins in inches (fixed margins: a layout engine
    would draw each figure twice over); the SVG's ids are salted with `kind` so that several SVGs inlined in one
    page never share an id."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"diagnose-{kind}"}):
        fig = Figure(figsize=(WIDTH_IN, height_in))
        fig.subplots_adjust(left=left / WIDTH_IN, right=1 - right / WIDTH_IN, top=1 - top / height_in,
                            bottom=bottom / height_in, wspace=wspace, hspace=hspace)
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
        try:
            yield fig, axes
        finally:
            fig.clear()


def _label_in(labels, size: float = 7.5) -> float:
    """Inches that the longest of these tick labels takes (DejaVu Sans: about 0.6 em a character)."""
    return 0.12 + max((len(s) for s in labels), default=0) * 0.6 * size / 72


_PROLOG = re.compile(r"^.*?(?=<svg[\s>])", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE = re.compile(r'\s(width|height)="([0-9.]+)pt"')


def _svg(fig, kind: str, title: str) -> str:
    """The figure as an inline <svg class="plot" data-plot=KIND>: no XML prolog, doctype or metadata, sized by
    CSS (its own width at most, the page's at most), its style rules scoped to plots."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"diagnose-{kind}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1))
    head, rest = svg.split(">", 1)
    width = dict(_SIZE.findall(head)).get("width")
    head = _SIZE.sub("", head)
    style = f' style="max-width:{float(width):.0f}pt"' if width else ""
    head += (f' class="plot" data-plot="{html.escape(kind)}" role="img" aria-label="{html.escape(title)}"{style}')
    rest = rest.replace("<style type=\"text/css\">*{", "<style type=\"text/css\">svg.plot *{", 1)
    return (head + ">" + rest).strip()


def _floats(values) -> list[float]:
    """A JSON row's numbers for plotting: a missing one (None) is a gap."""
    return [float("nan") if v is None else float(v) for v in values]


def _ecdf(samples):
    """(x, y) of a sample's ECDF, through at most ECDF_POINTS quantiles."""
    import numpy as np

    x = np.sort(np.asarray(samples, dtype=float))
    x = x[np.isfinite(x)]
    if len(x) <= ECDF_POINTS:
        return x, np.arange(1, len(x) + 1) / max(len(x), 1)
    p = np.linspace(0.0, 1.0, ECDF_POINTS)
    return np.quantile(x, p), p


# ---- latency ---------------------------------------------------------------------------------------------------------
def latency(report) -> str | None:
    """The ECDF of both versions' latency samples, each one's p50 and p99 marked."""
    lat = report.latency
    if lat is None or not len(lat.old.samples) or not len(lat.new.samples):
        return None
    title = f"latency ECDF of {report.old} and {report.new}"
    with _figure("latency", 2.9) as (fig, axes):
        ax = axes[0][0]
        for label, side, colour in ((report.old, lat.old, OLD_COLOUR), (report.new, lat.new, NEW_COLOUR)):
            x, y = _ecdf(side.samples)
            st = side.stats
            ax.step(x, y, where="post", color=colour, lw=1.6, label=_text(f"{label}: n={st.n}, p50 {st.p50_ms:.3g} ms, "
                                                                           f"p99 {st.p99_ms:.3g} ms"))
            ax.axvline(st.p50_ms, color=colour, ls="--", lw=0.9)
            ax.axvline(st.p99_ms, color=colour, ls=":", lw=1.1)
            ax.annotate("p50", (st.p50_ms, 0.5), xytext=(3, 0), textcoords="offset points", color=colour, fontsize=7)
            ax.annotate("p99", (st.p99_ms, 0.99), xytext=(3, -9), textcoords="offset points", color=colour, fontsize=7)
        ax.set_xlabel(f"latency per batch ({lat.unit})")
        ax.set_ylabel("share of batches at most x")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.25, lw=0.5)
        ax.legend(loc="lower right")
        return _svg(fig, "latency", title)


# ---- cells and the factorial -----------------------------------------------------------------------------------------
CELL_ORDER = ("old_model/old_requests", "new_model/old_requests", "old_model/new_requests", "new_model/new_requests")


def cells(report) -> str | None:
    """Each benchmark cell's median, and the factorial's model, input and interaction effects with their CIs."""
    keys = [k for k in CELL_ORDER if k in report.cells] + sorted(k for k in report.cells if k not in CELL_ORDER)
    att = report.attribution
    effects = [(name, att.effect(name)) for name in ("model", "input", "interaction")] if att else []
    effects = [(name, e) for name, e in effects if e is not None]
    if not keys and not effects:
        return None
    from matplotlib.ticker import MaxNLocator

    panels = [p for p, have in (("cells", keys), ("effects", effects)) if have]
    labels = {"cells": [k.replace("_", " ") for k in keys], "effects": [name for name, _ in effects]}
    left = _label_in(labels[panels[0]]) + 0.1
    gap = _label_in(labels[panels[-1]]) + 0.4 if len(panels) == 2 else 0.0
    axis = (WIDTH_IN - left - 0.2 - gap) / len(panels)
    with _figure("cells", 2.2, ncols=len(panels), left=left, right=0.2, wspace=gap / axis) as (fig, axes):
        for ax, panel in zip(axes[0], panels, strict=True):
            if panel == "cells":
                medians = [report.cells[k].p50_ms for k in keys]
                colours = [NEW_COLOUR if k.startswith("new_model") else OLD_COLOUR for k in keys]
                y = range(len(keys))
                ax.barh(y, medians, color=colours, height=0.6)
                ax.set_yticks(list(y), [_text(k, 40) for k in labels["cells"]])
                ax.invert_yaxis()
                for i, m in enumerate(medians):
                    ax.annotate(f"{m:.3g}", (m, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
                ax.set_xlabel("median latency per batch (ms)")
                ax.set_title("benchmark cells (model x requests)")
                ax.margins(x=0.15)
            else:
                names = [name for name, _ in effects]
                values = [e.effect_ms for _, e in effects]
                lo = [e.effect_ms - e.ci_ms[0] for _, e in effects]
                hi = [e.ci_ms[1] - e.effect_ms for _, e in effects]
                colours = [(WORSE if e.effect_ms > 0 else BETTER) if e.significant else NEUTRAL for _, e in effects]
                y = range(len(names))
                ax.barh(y, values, color=colours, height=0.6, xerr=[lo, hi], error_kw={"lw": 0.9, "capsize": 3})
                ax.set_yticks(list(y), names)
                ax.invert_yaxis()
                ax.axvline(0, color="#333333", lw=0.8)
                ax.xaxis.set_major_locator(MaxNLocator(5))
                ax.set_xlabel("effect on the median (ms), 95% CI")
                ax.set_title("model or inputs? (grey: CI spans zero)")
        return _svg(fig, "cells", "benchmark cells and the factorial's effects")


# ---- the profile -----------------------------------------------------------------------------------------------------
def ops(report, rows: int = 10) -> str | None:
    """The operators that moved the most: self time per step, new minus old, as horizontal bars."""
    table = ((report.profile and report.profile.tables.get("ops")) or [])[:rows]
    table = [r for r in table if r.get("delta_self_us") is not None]
    if not table:
        return None
    keys = [_text(r["key"], 48) for r in table]
    with _figure("ops", 0.6 + 0.24 * len(table), left=_label_in(keys) + 0.1, right=0.3, top=0.1) as (fig, axes):
        ax = axes[0][0]
        deltas = [r["delta_self_us"] / 1000 for r in table]
        y = range(len(table))
        ax.barh(y, deltas, color=[WORSE if d > 0 else BETTER for d in deltas], height=0.65)
        ax.set_yticks(list(y), keys)
        ax.invert_yaxis()
        ax.axvline(0, color="#333333", lw=0.8)
        for i, r in enumerate(table):
            share = "" if r.get("share") is None else f" ({100 * r['share']:.0f}%)"
            ax.annotate(f"{deltas[i]:+.2f} ms{share}", (deltas[i], i),
                        xytext=(3 if deltas[i] >= 0 else -3, 0), textcoords="offset points", va="center",
                        ha="left" if deltas[i] >= 0 else "right", fontsize=7)
        ax.set_xlabel("change in self time per step (ms), new - old")
        ax.margins(x=0.25)
        return _svg(fig, "ops", "operators whose self time changed the most")


# ---- production signals over time ------------------------------------------------------------------------------------
_SCALE = {"bytes": (2.0 ** 30, "GiB"), "ratio": (0.01, "%")}


def timelines(report) -> str | None:
    """One panel per production signal against time (UTC), with the deploy and the detected change point marked,
    and the memory limit as a line."""
    tl = report.timelines
    series = [s for s in (tl.series if tl else ()) if s.t and any(v is not None for v in s.values)]
    if not series:
        return None
    from matplotlib.ticker import FuncFormatter

    start = min(min(s.t) for s in series)
    end = max(max(s.t) for s in series)
    step = next((s for s in (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200) if (end - start) / s <= 8),
                86400 * (int((end - start) / 86400 / 8) + 1))
    ticks = [t for t in range(int(start // step * step), int(end) + step, step) if start <= t <= end]

    def utc(seconds: float, _pos=None) -> str:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%H:%M" if step < 86400 else "%m-%d %H:%M")

    with _figure("timelines", 0.45 + 1.25 * len(series), nrows=len(series), sharex=True, hspace=0.55) as (fig, axes):
        for row, s in zip(axes, series, strict=True):
            ax = row[0]
            div, unit = _SCALE.get(s.unit, (1.0, s.unit))
            values = [float("nan") if v is None else v / div for v in s.values]
            ax.plot(s.t, values, color=NEW_COLOUR if s.name.startswith("latency") else OLD_COLOUR, lw=1.2)
            if s.limit is not None:
                ax.axhline(s.limit / div, color=WORSE, ls="-.", lw=1, label=_text(f"limit {s.limit / div:.3g} {unit}"))
            if tl.deployed_at_s is not None:
                ax.axvline(tl.deployed_at_s, color="#222222", ls="--", lw=1, label="deploy")
            if tl.change_point_s is not None:
                ax.axvline(tl.change_point_s, color=WORSE, ls=":", lw=1.4, label="change point")
            ax.set_title(_text(f"{s.label} ({unit})", 90), loc="left")
            ax.grid(alpha=0.25, lw=0.5)
            if s.limit is not None or ax is axes[0][0]:
                ax.legend(loc="upper left", ncols=3)
        last = axes[-1][0]
        last.set_xticks(ticks)
        last.xaxis.set_major_formatter(FuncFormatter(utc))
        last.set_xlim(start, end)
        last.set_xlabel(f"time (UTC), {datetime.fromtimestamp(start, tz=timezone.utc):%Y-%m-%d}")
        return _svg(fig, "timelines", "production signals across the deploy")


# ---- drift -----------------------------------------------------------------------------------------------------------
def drift(report, cols: int = 3) -> str | None:
    """Old against new per feature: overlaid ECDFs through the evidence's quantiles (numbers), grouped bars of
    the top categories' shares (categories)."""
    rows = [d for d in ((report.drift and report.drift.distributions) or ()) if d.get("quantiles") or d.get("categories")]
    if not rows:
        return None
    cols = min(cols, len(rows))
    nrows = -(-len(rows) // cols)
    categorical = any(d.get("categories") for d in rows)
    with _figure("drift", 0.35 + 2.0 * nrows, ncols=cols, nrows=nrows, left=0.55, top=0.3,
                 bottom=0.65 if categorical else 0.4, wspace=0.35, hspace=0.8 if categorical else 0.6) as (fig, axes):
        flat = [ax for row in axes for ax in row]
        for ax, d in zip(flat, rows, strict=False):
            flag = "DRIFT" if d.get("drift") else "no drift"
            ax.set_title(_text(f"{d['feature']} ({d.get('method')}, {flag})", 44), fontsize=8,
                         color=WORSE if d.get("drift") else "#222222")
            if d.get("quantiles"):
                q = d["quantiles"]
                ax.step(_floats(q["old"]), q["p"], where="post", color=OLD_COLOUR, lw=1.4, label=_text(report.old, 20))
                ax.step(_floats(q["new"]), q["p"], where="post", color=NEW_COLOUR, lw=1.4, ls="--",
                        label=_text(report.new, 20))
                ax.set_ylim(0, 1.02)
                ax.set_ylabel("ECDF")
            else:
                c = d["categories"]
                x = range(len(c["values"]))
                ax.bar([i - 0.2 for i in x], _floats(c["old"]), width=0.4, color=OLD_COLOUR, label=_text(report.old, 20))
                ax.bar([i + 0.2 for i in x], _floats(c["new"]), width=0.4, color=NEW_COLOUR, label=_text(report.new, 20))
                ax.set_xticks(list(x), [_text(v, 12) for v in c["values"]], rotation=30, ha="right")
                ax.set_ylabel("share")
            ax.grid(alpha=0.25, lw=0.5)
            ax.legend(loc="lower right" if d.get("quantiles") else "upper right", fontsize=6.5)
        for ax in flat[len(rows):]:
            ax.set_axis_off()
        return _svg(fig, "drift", "request feature distributions, old against new")


# ---- the fix's Pareto front -----------------------------------------------------------------------------------------
def pareto(report) -> str | None:
    """Each measured variant's p99 against its accuracy drop (the one the Pareto front was formed on: 1 - top-1
    agreement, else 1 - cosine), the front highlighted and labelled, the SLO and the old version's p99 as lines."""
    fix = report.fix
    variants = [v for v in (fix.variants if fix else ()) if v.get("p99_ms") is not None and v.get("accuracy_drop") is not None]
    if not variants:
        return None
    with _figure("pareto", 3.0, right=2.2) as (fig, axes):
        ax = axes[0][0]
        for v in variants:
            x, y = 100 * v["accuracy_drop"], v["p99_ms"]
            front = bool(v.get("pareto"))
            colour = (BETTER if v.get("accuracy_ok") else WORSE) if front else NEUTRAL
            ax.scatter([x], [y], s=46 if front else 24, color=colour, marker="o" if v.get("accuracy_ok") else "X",
                       edgecolors="#222222" if front else "none", linewidths=0.7, zorder=3)
            ax.annotate(_text(v["name"], 30), (x, y), xytext=(5, 3), textcoords="offset points",
                        fontsize=7.5 if front else 6.5, fontweight="bold" if front else "normal",
                        color="#111111" if front else "#666666")
        slo = (fix.thresholds or {}).get("p99_ms")
        if slo:
            ax.axhline(slo, color=WORSE, ls="-.", lw=1, label=f"SLO p99 {slo:g} ms")
        if report.latency is not None:
            ax.axhline(report.latency.old.stats.p99_ms, color=OLD_COLOUR, ls="--", lw=1,
                       label=_text(f"{report.old} p99 {report.latency.old.stats.p99_ms:.3g} ms"))
        limit = (fix.thresholds or {}).get("max_accuracy_drop")
        if limit is not None:
            ax.axvline(100 * limit, color="#555555", ls=":", lw=1, label=f"max accuracy drop {100 * limit:g}%")
        ax.scatter([], [], s=46, color=BETTER, edgecolors="#222222", label="Pareto front")
        ax.scatter([], [], s=24, color=NEUTRAL, label="dominated")
        ax.scatter([], [], s=24, color=NEUTRAL, marker="X", label="outside the accuracy limits")
        ax.set_xlabel("accuracy drop vs the version (%): 1 - top-1 agreement, else 1 - cosine")
        ax.set_ylabel("p99 latency per batch (ms)")
        ax.set_ylim(bottom=0)
        ax.margins(x=0.12, y=0.12)
        ax.grid(alpha=0.25, lw=0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return _svg(fig, "pareto", "variants: p99 latency against accuracy drop")
