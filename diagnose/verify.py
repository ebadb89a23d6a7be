"""The verify stage: build optimized variants of a version, measure their accuracy and latency, confirm a fix.

A diagnosis ends with a fix confirmed by measurement. Variants (ONNX Runtime at each optimization level,
int8 quantization, torch-native quantization and compilation, OpenVINO fp32 and NNCF int8, TensorRT on a GPU) are built by
`profilers.variants`; here each one is checked against the version it came from on the version's own
requests (Polygraphy-style tolerances, cosine, top-1 agreement), then timed by the same interleaved harness,
side by side with the version itself and, in a compare, with the old version, so every ratio comes from one
run. The stage saves the `variants` evidence and the variant samples of the run folder; `fix_section` derives
the Pareto table and the verdict from those alone, so `diagnose analyze` remakes it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.core import stats
from diagnose.core.errors import first_line
from diagnose.core.progress import Bar, status
from diagnose.core.report import FixSection
from diagnose.core.runfolder import RunFolder

# compare's stage builds the few variants most likely to win; `diagnose optimize` builds them all
COMPARE_VARIANTS = ("torch-int8", "ort-all", "ort-int8", "tensorrt-fp16")
ACCURACY_REQUESTS = 64
MIN_COSINE = 0.99  # slo.min_cosine
MAX_ACCURACY_DROP = 0.01  # slo.max_accuracy_drop: top-1 agreement may fall this far below 100%


def _outputs(version, frames: list[pd.DataFrame]) -> list:
    """A version's raw outputs on the frames, each through its own preprocessing."""
    import torch

    with torch.inference_mode():
        return [version(version.prepare(frame)) for frame in frames]  # as timed: a refused dtype is cast


def config_variants(base, old) -> list[tuple[str, object, dict]]:
    """Fixes that are a config change, not a new artifact: the new model with the old version's preprocessing,
    or with the old version's intra-op threads. Each is (name, LoadedVersion, details)."""
    found = []
    old_pre, new_pre = old.manifest, base.manifest
    if (old_pre.preprocess, old_pre.preprocess_sha256()) != (new_pre.preprocess, new_pre.preprocess_sha256()):
        found.append((f"{old.manifest.version}-preprocess", dataclasses.replace(base, preprocess=old.preprocess),
                      {"change": f"preprocess of {old.manifest.version}: {old.manifest.preprocess}"}))
    if old.manifest.serving.threads != base.manifest.serving.threads:
        serving = dataclasses.replace(base.manifest.serving, threads=old.manifest.serving.threads)
        found.append((f"{old.manifest.version}-threads",
                      dataclasses.replace(base, manifest=dataclasses.replace(base.manifest, serving=serving)),
                      {"change": f"serving.threads {base.manifest.serving.threads} -> {old.manifest.serving.threads}"}))
    return found


def measure_variants(folder: RunFolder, base, requests: pd.DataFrame, names: list[str] | None, budget_s: float,
                     seed: int = 0, old=None, old_requests: pd.DataFrame | None = None,
                     cache_dir: Path | None = None) -> dict:
    """Build, check and time the variants of `base` (a LoadedVersion); write the evidence; return variants.json.

    With the old version, config variants (its preprocessing or threads on the new model) join the optimized
    ones, and the old version on its own requests is timed alongside as the latency to get back to.
    """
    import torch

    from profilers.harness import BenchmarkPlan, Cell, run_benchmark
    from profilers.variant_samples import batches, calibration_inputs, sample_inputs
    from profilers.variants import build_variants

    torch.set_num_threads(base.manifest.serving.threads)
    batch = base.manifest.serving.batch_size
    samples = sample_inputs(base, requests, batch)
    calibration = calibration_inputs(base, requests) if names is None or "openvino-int8" in names else None
    with status(f"Building optimized variants of {base.manifest.version}") as say:
        variants = build_variants(base, samples, names, cache_dir=cache_dir, on_progress=say,
                                  calibration_inputs=calibration)
    entries, candidates = {}, {}
    for variant in variants:
        entries[variant.name] = variant.to_dict()
        if variant.status == "ok" and variant.name != "torch-eager":  # torch-eager is the version itself
            candidates[variant.name] = variant.as_loaded(base)
    for name, loaded, details in (config_variants(base, old) if old is not None else []):
        entries[name] = {"name": name, "family": "config", "status": "ok", "reason": None, "build_s": 0.0,
                         "cached": False, "artifact": None, "details": details}
        candidates[name] = loaded
    from profilers.accuracy import compare_outputs

    frames = batches(requests, batch, max(1, ACCURACY_REQUESTS // batch))
    with status(f"Checking variants' outputs on {len(frames) * batch} requests"):
        reference = _outputs(base, frames)  # once: every variant is held against the same outputs
        for name in list(candidates):
            try:
                entries[name]["accuracy"] = compare_outputs(reference, _outputs(candidates[name], frames))
            except Exception as exc:  # one variant's failure never stops the others
                reason = f"accuracy run failed: {type(exc).__name__}: {first_line(exc)}"
                entries[name].update(status="failed", reason=reason[:300])
                del candidates[name]

    versions = {"new": base} | candidates
    cells = [Cell("new", "new")] + [Cell(name, "new") for name in candidates]
    request_sets = {"new": requests}
    if old is not None:
        versions["old"] = old
        request_sets["old"] = old_requests
        cells.insert(0, Cell("old", "old"))
    plan = BenchmarkPlan(cells=tuple(cells), budget_s=budget_s, seed=seed)
    with Bar(budget_s, f"Benchmarking {len(cells)} cells (variants side by side)") as bar:
        result = run_benchmark(plan, versions, request_sets, on_progress=bar.update_to)
    for key, reason in result.unavailable.items():
        name = key.split("_model/")[0]
        if name in entries:
            entries[name].update(status="failed", reason=f"could not run the requests: {reason}")
    folder.write_variant_samples(result.samples)
    evidence = {
        "status": "ok",
        "version": base.manifest.version,
        "old": old.manifest.version if old is not None else None,
        "variants": list(entries.values()),
        "cells": [c.key for c in cells],
        "unavailable": result.unavailable,
        "rounds": result.rounds,
        "elapsed_s": round(result.elapsed_s, 3),
        "budget_s": budget_s,
        "accuracy_requests": len(frames) * batch,
        "threads": base.manifest.serving.threads,
        "cpu": _cpu(),
    }
    return folder.write_evidence("variants", evidence)


def _cpu() -> str:
    """The CPU the variants were timed on, for "which runtime wins on this CPU": the answer is the machine's."""
    from collectors.environment import capture

    machine = capture()
    return f"{machine['cpu_model']}, {machine['usable_cores']} cores"


def _thresholds(slo: dict) -> dict:
    return {"p99_ms": slo.get("p99_ms"), "min_cosine": slo.get("min_cosine", MIN_COSINE),
            "max_accuracy_drop": slo.get("max_accuracy_drop", MAX_ACCURACY_DROP)}


def _accuracy_ok(accuracy: dict | None, limits: dict) -> tuple[bool, str]:
    if accuracy is None:
        return True, "the version itself"
    if accuracy["cosine"] is not None and accuracy["cosine"] < limits["min_cosine"]:
        return False, f"cosine {accuracy['cosine']:.4f} < {limits['min_cosine']}"
    top1 = accuracy.get("top1_agreement")
    if top1 is not None and 1 - top1 > limits["max_accuracy_drop"] + 1e-12:
        return False, f"top-1 agreement {100 * top1:.1f}% (drop > {100 * limits['max_accuracy_drop']:g}%)"
    return True, "within the accuracy limits"


def _pareto(rows: list[dict]) -> None:
    """Mark the rows no other row beats on both p99 latency and accuracy drop."""
    for row in rows:
        row["pareto"] = not any(
            other is not row and other["p99_ms"] <= row["p99_ms"] and other["accuracy_drop"] <= row["accuracy_drop"]
            and (other["p99_ms"] < row["p99_ms"] or other["accuracy_drop"] < row["accuracy_drop"])
            for other in rows
        )


def _runs_as(entry: dict, threads: int | None) -> str:
    """How a variant was timed, which is how it would be deployed: its runtime, threads and session options."""
    details = entry.get("details") or {}
    if entry["family"] == "onnxruntime" and "intra_op_num_threads" in details:
        spin = "no spinning" if not details.get("allow_spinning", True) else \
            "pools spin in a run" if details.get("spinning_stops_after_run") else "pools spin"
        extra = ", ".join(f"{k.removeprefix('session.')}={v}" for k, v in sorted((details.get("session_config") or {}).items())
                          if "spinning" not in k)
        return (f"ORT {details['intra_op_num_threads']}x{details.get('inter_op_num_threads', 1)} threads "
                f"{details.get('execution_mode', 'sequential')}, {spin}" + (f", {extra}" if extra else ""))
    if entry["family"] == "openvino" and "inference_num_threads" in details:
        precision = "int8" if "quantization" in details else details.get("inference_precision", "f32")
        return (f"OpenVINO {details.get('device', 'CPU')} {details['inference_num_threads']} threads, "
                f"{details.get('performance_hint', 'LATENCY')} hint, {details.get('num_streams', 1)} stream, {precision}")
    if entry["family"] == "config":
        return details.get("change", "config")
    return f"torch, {threads} threads" if threads else "torch"


def fix_section(folder: RunFolder, slo: dict, seed: int = 0) -> FixSection | None:
    """The `fix` section of report.json: per-variant latency and accuracy, the Pareto front, the verdict."""
    if not folder.has_evidence("variants"):
        return None
    evidence = folder.evidence("variants")
    samples = folder.variant_samples()
    cells = {key: group["latency_ms"].to_numpy() for key, group in samples.groupby("cell")}
    limits = _thresholds(slo)
    version, old_label = evidence["version"], evidence.get("old")
    base = cells.get("new_model/new_requests")
    old = cells.get("old_model/old_requests")
    rows, failed = [], []
    entries = [{"name": version, "family": "baseline", "status": "ok", "accuracy": None}] + evidence["variants"]
    for entry in entries:
        if entry["name"] == "torch-eager":
            continue  # the version as loaded: the baseline row already is that
        key = "new_model/new_requests" if entry["family"] == "baseline" else f"{entry['name']}_model/new_requests"
        if entry["status"] != "ok" or key not in cells or base is None:
            failed.append({"name": entry["name"], "status": entry["status"], "reason": entry.get("reason")
                           or "not measured"})
            continue
        x = cells[key]
        side = stats.summarize(x)
        vs_new = stats.relative_change(base, x, seed=seed, n_boot=1000)
        accuracy = entry.get("accuracy")
        ok, why = _accuracy_ok(accuracy, limits)
        top1 = accuracy.get("top1_agreement") if accuracy else None
        drop = (1 - top1) if top1 is not None else (1 - accuracy["cosine"]) if accuracy else 0.0
        row = {
            "name": entry["name"], "family": entry["family"], "p50_ms": side.p50_ms, "p99_ms": side.p99_ms, "n": side.n,
            "speedup_p50": float(np.median(base) / side.p50_ms), "speedup_p99": float(np.quantile(base, 0.99) / side.p99_ms),
            "p50_pct_vs_new": vs_new.p50_pct, "p50_pct_vs_new_ci": list(vs_new.p50_pct_ci),
            "faster": bool(vs_new.p50_pct_ci[1] < 0),
            "accuracy": accuracy, "accuracy_drop": round(max(0.0, drop), 6), "accuracy_ok": ok, "accuracy_note": why,
            "meets_slo": None if not limits["p99_ms"] else bool(side.p99_ms <= limits["p99_ms"]),
            "build_s": entry.get("build_s"), "cached": entry.get("cached"), "details": entry.get("details", {}),
            "runs_as": _runs_as(entry, evidence.get("threads")),
        }
        if old is not None:
            vs_old = stats.relative_change(old, x, seed=seed, n_boot=1000)
            row["p50_pct_vs_old"] = vs_old.p50_pct
            row["p50_pct_vs_old_ci"] = list(vs_old.p50_pct_ci)
            row["restores_old"] = bool(vs_old.p50_pct_ci[0] <= stats.EQUIVALENCE_PCT)
        rows.append(row)
    rows.sort(key=lambda r: (r["p50_ms"], r["name"]))
    _pareto(rows)
    _openvino_against_onnxruntime(rows, cells, evidence.get("cpu"), seed)
    section = {
        "version": version, "old": old_label, "thresholds": limits, "variants": rows, "not_measured": failed,
        "old_p50_ms": float(np.median(old)) if old is not None else None,
        "rounds": evidence.get("rounds"), "accuracy_requests": evidence.get("accuracy_requests"),
    }
    section.update(_verdict(rows, limits, version, old_label))
    return FixSection.from_dict(section)


def _openvino_against_onnxruntime(rows: list[dict], cells: dict, cpu: str | None, seed: int) -> None:
    """Which runtime wins on this CPU, per OpenVINO row: `vs_onnxruntime` against the fastest ONNX Runtime variant
    of the same precision (fp32 against ort-disabled ... ort-tuned, int8 against ort-int8 and ort-int8-static).

    Public comparisons of the two on CPU point both ways, so the table says which won here, measured side by side:
    OpenVINO's p50 against ONNX Runtime's with a bootstrap CI; a winner only when the CI excludes zero and the change
    is past the 1% noise floor, else a tie.
    """
    where = f"OpenVINO against ONNX Runtime on {cpu or 'this CPU'}"
    for row in rows:
        if row["family"] != "openvino":
            continue
        precision = "int8" if "int8" in row["name"] else "fp32"
        peers = [r for r in rows if r["family"] == "onnxruntime" and ("int8" in r["name"]) == (precision == "int8")]
        if not peers:
            row["vs_onnxruntime"] = {"against": None, "winner": None, "p50_pct": None, "p50_pct_ci": None,
                                     "summary": f"{where}: no ONNX Runtime {precision} variant was measured beside {row['name']}"}
            continue
        peer = min(peers, key=lambda r: (r["p50_ms"], r["name"]))
        delta = stats.relative_change(cells[f"{peer['name']}_model/new_requests"], cells[f"{row['name']}_model/new_requests"],
                                      seed=seed, n_boot=1000)
        low, high = delta.p50_pct_ci
        if high < 0 and delta.p50_pct <= -stats.NOISE_FLOOR_PCT:
            winner, verdict = "openvino", f"OpenVINO wins, {-delta.p50_pct:.1f}% faster"
        elif low > 0 and delta.p50_pct >= stats.NOISE_FLOOR_PCT:
            winner, verdict = "onnxruntime", f"ONNX Runtime wins, OpenVINO {delta.p50_pct:.1f}% slower"
        else:
            winner, verdict = "tie", "no difference past the noise"
        caveat = [f"{r['name']} is outside the accuracy limits ({r['accuracy_note']})"
                  for r in (row, peer) if not r["accuracy_ok"]]
        row["vs_onnxruntime"] = {
            "against": peer["name"], "winner": winner, "p50_pct": delta.p50_pct, "p50_pct_ci": [low, high],
            "summary": (f"{where}: {row['name']} p50 {row['p50_ms']:.2f} ms vs {peer['name']} {peer['p50_ms']:.2f} ms: "
                        f"{verdict} (OpenVINO {delta.p50_pct:+.1f}% [{low:+.1f}%, {high:+.1f}%] at p50)"
                        + (f"; {'; '.join(caveat)}" if caveat else "")),
        }


def _verdict(rows: list[dict], limits: dict, version: str, old_label: str | None) -> dict:
    candidates = [r for r in rows if r["family"] != "baseline" and r["accuracy_ok"] and r["faster"]]
    slo = limits["p99_ms"]
    good = [r for r in candidates if r["meets_slo"] is not False]
    if old_label is not None:
        restoring = [r for r in good if r.get("restores_old")]
    else:
        restoring = good
    best = min(restoring or good or candidates, key=lambda r: (r["p99_ms"], r["name"]), default=None)
    if best is None:
        reasons = [f"{r['name']}: {r['accuracy_note']}" if not r["accuracy_ok"] else f"{r['name']}: not faster than {version}"
                   for r in rows if r["family"] != "baseline"]
        return {"status": "none", "best": None,
                "verdict": "no variant meets the SLO: " + ("; ".join(reasons[:4]) if reasons else "no variant could be built")}
    top1 = best["accuracy"].get("top1_agreement") if best["accuracy"] else None
    quality = f"top-1 agreement {100 * top1:.1f}%" if top1 is not None else f"cosine {best['accuracy']['cosine']:.4f}"
    speed = f"{best['speedup_p50']:.1f}x faster than {version} at p50"
    slo_text = f"p99 {best['p99_ms']:.1f} ms <= SLO {slo:g} ms" if slo else f"p99 {best['p99_ms']:.1f} ms"
    if best in restoring:
        back = f", back to {old_label}'s latency ({best['p50_pct_vs_old']:+.1f}% at p50)" if old_label else ""
        return {"status": "confirmed", "best": best["name"],
                "verdict": f"fix confirmed: {best['name']} {slo_text}, {speed}{back}, {quality}"}
    if best in good:
        return {"status": "partial", "best": best["name"],
                "verdict": f"partial fix: {best['name']} {slo_text}, {speed}, {quality}; still "
                           f"{best['p50_pct_vs_old']:+.1f}% vs {old_label} at p50"}
    return {"status": "none", "best": best["name"],
            "verdict": f"no variant meets the SLO: the lowest p99 within accuracy, {best['name']}'s, is "
                       f"{best['p99_ms']:.1f} ms > SLO {slo:g} ms ({speed}, {quality})"}


def model_side_leads(verdict: str, model_effect) -> bool:
    """Compare's default for the stage: a settled regression whose change is mostly the model's (a fix can help).
    `model_effect` is the factorial's model Effect, None without a factorial."""
    if verdict != "regression":
        return False
    if model_effect is None:  # no factorial: the model side is all there is to optimize
        return True
    return bool(model_effect.significant) and (model_effect.share or 0) >= 0.5


def optimize_command(version: str, model: str | None, registry: str | None, requests_path: Path | None,
                     names: list[str] | None, budget_s: float, seed: int, out: Path | None, as_json: bool) -> str:
    """`diagnose optimize VERSION`: every variant built, checked and timed against the version; the Pareto table."""
    import json

    from diagnose.core.runfolder import new_dir, write_json
    from diagnose.registry import version_with_requests
    from profilers.runners import load_version
    from reports.sections import render_fix

    manifest, requests = version_with_requests(registry, model, version, requests_path)
    name = manifest.name
    folder = RunFolder.create(out or new_dir(Path("runs"), f"{name}-{version}-optimize"))
    with status(f"Loading {name} {version}"):
        loaded = load_version(manifest)
    measure_variants(folder, loaded, requests, names, budget_s, seed)
    fix = fix_section(folder, dict(manifest.slo), seed)
    write_json(folder.file(RunFolder.FIX_JSON), fix.to_dict())
    folder.write(RunFolder.FIX_MD, f"# {name} {version}: optimized variants\n\n" + render_fix(fix))
    folder.finish()
    if as_json:
        return json.dumps(fix.to_dict(), indent=2) + "\n"
    return render_fix(fix) + f"\nrun folder: {folder.path}\n"
