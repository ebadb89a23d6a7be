"""Size features and the schema of one request log, and the schema changes between two (TFDV-style).

`schema_diff` names each change in one sentence (a column added, a dtype or rank changed, nulls appearing, a
length range moving, new categorical values); `check_expected` holds a log against the manifest's optional
`inputs.schema`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from collectors.drift_column import CATEGORICAL_MAX_UNIQUE
from collectors.drift_profile import Profile

NULLS_POINTS = 0.05  # a null share moving by more than 5 points is a finding
LENGTH_MOVE = 0.5  # a length bound moving by more than 50% (of the old maximum) is a finding
TEXT_DTYPES = {"object", "str", "string", "string[python]", "string[pyarrow]", "large_string[pyarrow]", "string[pyarrow_numpy]"}


def size_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per request, how big it is: text chars/words, list len/dims/elements, bytes, and payload_bytes."""
    profile = Profile(frame)
    return pd.DataFrame({name: values for name, (_, values) in profile.sizes().items()}, index=frame.index, dtype=np.float64)


def schema(frame: pd.DataFrame) -> dict:
    """A JSON-able schema of a request log: kind, dtype, nulls, rank, length, shape and domain per column."""
    return Profile(frame).schema()


def _jsonc(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def share_text(share: float) -> str:
    return f"{share * 100:.3g}%"


def _finding(column: str, change: str, old, new, text: str) -> dict:
    return {"column": column, "change": change, "old": old, "new": new, "text": text}


def _range_moved(old: list, new: list) -> bool:
    """Ranges that do not overlap, or a bound that moved by more than half the old maximum."""
    if old[1] < new[0] or new[1] < old[0]:
        return True
    scale = max(abs(old[1]), 1)
    return abs(new[0] - old[0]) > LENGTH_MOVE * scale or abs(new[1] - old[1]) > LENGTH_MOVE * scale


def _nulls_finding(name: str, old_share: float, new_share: float) -> dict | None:
    crossed = (old_share == 0) != (new_share == 0)
    if not crossed and abs(new_share - old_share) <= NULLS_POINTS:
        return None
    if old_share == 0:
        what = "nulls appeared"
    elif new_share == 0:
        what = "nulls disappeared"
    else:
        what = "null share changed"
    text = f"column {name!r}: {what} ({share_text(old_share)} -> {share_text(new_share)} of rows)"
    return _finding(name, "nulls", old_share, new_share, text)


def _list_text(values: list, limit: int = 10) -> str:
    shown = [v[:37] + "..." if isinstance(v, str) and len(v) > 40 else v for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return repr(shown) + more


def schema_diff(old: dict, new: dict) -> list[dict]:
    """Every schema change between two `schema()` results, one finding per (column, change)."""
    findings = []
    old_cols, new_cols = old.get("columns", {}), new.get("columns", {})
    for name in sorted(set(old_cols) | set(new_cols)):
        a, b = old_cols.get(name), new_cols.get(name)
        if a is None:
            findings.append(_finding(name, "added", None, b["kind"], f"column {name!r} added ({b['kind']}, {b['dtype']})"))
            continue
        if b is None:
            text = f"column {name!r} removed (was {a['kind']}, {a['dtype']})"
            findings.append(_finding(name, "removed", a["kind"], None, text))
            continue
        nulls = _nulls_finding(name, a["null_share"], b["null_share"])
        if nulls:
            findings.append(nulls)
        if a["kind"] != b["kind"]:
            findings.append(_finding(name, "kind", a["kind"], b["kind"], f"column {name!r}: kind {a['kind']} -> {b['kind']}"))
            continue
        kind = a["kind"]
        if kind == "empty":
            continue
        # text, list and bytes dtypes only say how pandas stores the cells (object, str, Arrow); list elements
        # are compared through element_dtype
        if a["dtype"] != b["dtype"] and kind not in ("text", "list", "bytes"):
            findings.append(_finding(name, "dtype", a["dtype"], b["dtype"], f"column {name!r}: {a['dtype']} -> {b['dtype']}"))
        if a["element_dtype"] and b["element_dtype"] and a["element_dtype"] != b["element_dtype"]:
            findings.append(_finding(name, "element_dtype", a["element_dtype"], b["element_dtype"],
                                     f"column {name!r}: list elements {a['element_dtype']} -> {b['element_dtype']}"))
        if a["rank"] != b["rank"]:
            findings.append(_finding(name, "rank", a["rank"], b["rank"],
                                     f"column {name!r}: list nesting depth (rank) {a['rank']} -> {b['rank']}"))
        elif a["shape"] and b["shape"] and a["shape"] != b["shape"]:
            pairs = zip(a["shape"], b["shape"], strict=False)
            moved = any((oa[0] == oa[1] and ob[0] == ob[1]) or _range_moved(oa, ob) for oa, ob in pairs)
            if moved:
                findings.append(_finding(name, "shape", a["shape"], b["shape"],
                                         f"column {name!r}: shape {_jsonc(a['shape'])} -> {_jsonc(b['shape'])}"))
        if a["length"] and b["length"] and _range_moved(a["length"], b["length"]):
            findings.append(_finding(name, "length", a["length"], b["length"],
                                     f"column {name!r}: length range {a['length']} -> {b['length']}"))
        if a["domain"] is not None and a["domain"] != b["domain"]:
            if b["domain"] is None:
                text = f"column {name!r}: {len(a['domain'])} distinct values -> more than {CATEGORICAL_MAX_UNIQUE}"
            else:
                added = [v for v in b["domain"] if v not in a["domain"]]
                removed = [v for v in a["domain"] if v not in b["domain"]]
                text = f"column {name!r}: values added {_list_text(added)}, removed {_list_text(removed)}"
            findings.append(_finding(name, "domain", a["domain"], b["domain"], text))
    return sorted(findings, key=lambda f: (f["column"], f["change"]))


def _canonical_dtype(name) -> str:
    try:
        return str(pd.api.types.pandas_dtype(name))
    except (TypeError, ValueError):
        return str(name)


def check_expected(expected: dict, frame_schema: dict) -> list[dict]:
    """Hold a request log's schema against the manifest's `inputs.schema` (every key optional)."""
    if not expected:  # well formed: the manifest validates inputs.schema when it is read
        return []
    columns = frame_schema.get("columns", {})
    findings = []
    for name, spec in expected.items():
        name = str(name)
        spec = spec or {}
        got = columns.get(name)
        if got is None:
            text = f"column {name!r}: expected by inputs.schema, missing from the requests"
            findings.append(_finding(name, "missing", spec, None, text))
            continue
        if "kind" in spec and spec["kind"] != got["kind"]:
            text = f"column {name!r}: expected {spec['kind']}, requests hold {got['kind']}"
            findings.append(_finding(name, "kind", spec["kind"], got["kind"], text))
        if spec.get("dtype"):
            want = str(spec["dtype"])
            have = got["element_dtype"] if got["kind"] == "list" else got["dtype"]
            text_ok = got["kind"] == "text" and want in TEXT_DTYPES
            if have is not None and got["kind"] != "empty" and not text_ok and _canonical_dtype(want) != _canonical_dtype(have):
                findings.append(_finding(name, "dtype", want, have, f"column {name!r}: expected {want}, requests hold {have}"))
        if "rank" in spec and spec["rank"] is not None and int(spec["rank"]) != got["rank"]:
            findings.append(_finding(name, "rank", int(spec["rank"]), got["rank"],
                                     f"column {name!r}: expected rank {spec['rank']}, requests hold rank {got['rank']}"))
        elif spec.get("shape") is not None and got["kind"] == "list":
            finding = _shape_check(name, list(spec["shape"]), got)
            if finding:
                findings.append(finding)
        if spec.get("nullable") is False and got["nulls"] > 0:
            text = f"column {name!r}: expected no nulls, requests hold {got['nulls']} ({share_text(got['null_share'])} of rows)"
            findings.append(_finding(name, "nulls", False, got["nulls"], text))
    for name in columns:
        if name not in {str(k) for k in expected}:
            findings.append(_finding(name, "unexpected", None, columns[name]["kind"],
                                     f"column {name!r}: in the requests, not in inputs.schema"))
    return sorted(findings, key=lambda f: (f["column"], f["change"]))


def _shape_check(name: str, want: list, got: dict) -> dict | None:
    """`want` lists every dim (outer length first, len == rank) or the inner dims only (len == rank - 1)."""
    ranges = ([got["length"]] if got["length"] else [[0, 0]]) + (got["shape"] or [])
    if len(want) == got["rank"] - 1:
        ranges = ranges[1:]
    if len(want) != len(ranges):
        return _finding(name, "shape", want, ranges, f"column {name!r}: expected shape {_jsonc(want)} ({len(want)} dims), "
                        f"requests hold rank {got['rank']} lists")
    bad = any(w is not None and (r[0] != int(w) or r[1] != int(w)) for w, r in zip(want, ranges, strict=True))
    if bad:
        text = f"column {name!r}: expected shape {_jsonc(want)}, requests hold {_jsonc(ranges)}"
        return _finding(name, "shape", want, ranges, text)
    return None
