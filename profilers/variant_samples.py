"""The request batches a variant is built from: its export's example inputs, the evidence for which dimensions are
dynamic, its calibration data and its tuning workload.

Taken from the version's own request log, spread evenly over it so inputs of varied sizes show their dynamic axes.
Deterministic: the same log gives the same batches, so a TorchServe worker of `diagnose serve --variant` finds the
variant the parent built in the content-hashed cache instead of building it again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SAMPLE_BATCHES = 8


def spread(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """`count` rows spread evenly over the log."""
    picks = np.unique(np.linspace(0, len(frame) - 1, min(count, len(frame))).astype(int))
    return frame.iloc[picks]


def batches(frame: pd.DataFrame, batch_size: int, limit: int) -> list[pd.DataFrame]:
    """Up to `limit` consecutive batches of `batch_size` rows (one short batch when the log is smaller)."""
    rows = min(len(frame), limit * batch_size)
    return [frame.iloc[i : i + batch_size] for i in range(0, rows - batch_size + 1, batch_size)] or [frame.iloc[:batch_size]]


def sample_inputs(version, requests: pd.DataFrame, batch_size: int, count: int = SAMPLE_BATCHES) -> list:
    """`count` prepared batches of `batch_size` rows: what the compare times, so what a variant must run."""
    return [version.prepare(f) for f in batches(spread(requests, count * batch_size), batch_size, count)]


def serving_samples(version, requests: pd.DataFrame, max_batch: int, count: int = SAMPLE_BATCHES) -> list:
    """Prepared batches of 1 up to `max_batch` rows: a server with dynamic batching calls the model with any batch
    size up to its batch_size, so the variant's batch dimension must be dynamic too (an export sees it so only
    when its samples vary in it)."""
    sizes = [1 + (i * (max_batch - 1)) // max(1, count - 1) for i in range(count)] if max_batch > 1 else [1] * count
    rows = spread(requests, sum(sizes))
    starts = np.cumsum([0, *sizes[:-1]])
    return [version.prepare(rows.iloc[s : s + n]) for s, n in zip(starts, sizes, strict=True) if len(rows.iloc[s : s + n])]


def calibration_inputs(version, requests: pd.DataFrame) -> list:
    """The version's own requests as openvino-int8 calibrates on them: up to 300 (NNCF's subset size, fewer when
    the log holds fewer), spread over the log, each prepared alone so a sample is one request as NNCF counts it."""
    from profilers.openvino_variants import CALIBRATION_SAMPLES

    rows = spread(requests, CALIBRATION_SAMPLES)
    return [version.prepare(rows.iloc[[i]]) for i in range(len(rows))]
