"""Plain-text tables of trace diffs and profiles for the terminal."""

from __future__ import annotations


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def render_diff(diff: dict, top: int = 15) -> str:
    s = diff["totals"]
    out = [
        f"old: {diff['old']['path']}",
        f"new: {diff['new']['path']}",
        f"CPU op self time per step: {s['old_self_ms_per_step']:.3f} -> {s['new_self_ms_per_step']:.3f} ms "
        f"({s['delta_self_ms_per_step']:+.3f} ms); steps {s['steps']['old']} vs {s['steps']['new']}",
    ]
    if s["old_flops_per_step"] or s["new_flops_per_step"]:
        out.append(f"FLOPs per step: {s['old_flops_per_step']:.3g} -> {s['new_flops_per_step']:.3g}")
    if diff["findings"]:
        out += ["", "Where the time went:"] + [f"  {i}. {f}" for i, f in enumerate(diff["findings"], 1)]
    titles = {"ops": "operator", "modules": "module", "shapes": "operator | input shapes", "tree": "call path",
              "kernels": "GPU kernel"}
    for name in ("ops", "modules", "tree", "kernels"):
        table = diff["tables"].get(name)
        if not table:
            continue
        rows = [[_short(r["key"]), f"{r['old_calls']:g}", f"{r['new_calls']:g}", f"{r['old_self_us'] / 1000:.3f}",
                 f"{r['new_self_us'] / 1000:.3f}", f"{r['delta_self_us'] / 1000:+.3f}", f"{100 * r['share']:.0f}%", r["status"]]
                for r in table[:top]]
        out += ["", f"By {titles[name]} (per step; self ms):"]
        out += _table([titles[name], "old calls", "new calls", "old ms", "new ms", "delta ms", "share", "status"], rows)
    if s["ops_added"]:
        out += ["", "Ops only in new: " + ", ".join(s["ops_added"])]
    if s["ops_removed"]:
        out += ["Ops only in old: " + ", ".join(s["ops_removed"])]
    return "\n".join(out) + "\n"


def render_profile(summary: dict, top: int = 15) -> str:
    out = [f"{summary['steps']} profiled steps; CPU op self time {summary['self_ms_per_step']:.3f} ms per step; "
           f"estimated FLOPs per step {summary['flops_per_step']:.3g}"]
    for name, title in (("ops", "operator"), ("modules", "module")):
        rows = [[_short(r["key"]), f"{r['calls']:g}", f"{r['self_us'] / 1000:.3f}", f"{r['total_us'] / 1000:.3f}"]
                for r in summary[name][:top]]
        if rows:
            out += ["", f"Top {title}s (per step):"] + _table([title, "calls", "self ms", "total ms"], rows)
    return "\n".join(out)
