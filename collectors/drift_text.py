"""Text columns in drift's column pass: length in chars and words, bytes on the wire, the categorical domain.

Vectorized on Arrow's UTF-8 buffers: lengths come from Arrow kernels, and the word count (`len(s.split())`
for every cell) is a byte-level scan, so a million texts never become a million Python strings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from collectors.drift_column import Column, categorical_domain

WORD_CHUNK = 1 << 19  # bytes of text per step of the word counter (cache-sized)

# Python's str.split() splits on exactly these characters; the word counter works on UTF-8 bytes, so the
# non-ASCII ones are matched as byte sequences.
_SPACE_BYTE = np.zeros(256, dtype=bool)
_SPACE_BYTE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_WIDE_SPACES = [chr(c).encode() for c in range(0x80, 0x3001) if chr(c).isspace()]


def analyse_text(column: Column, series: pd.Series, null: np.ndarray) -> None:
    """A text column's sizes (`.chars`, `.words`), payload bytes, labels, domain and length range."""
    if series.dtype == np.dtype(object):
        array = pa.array(series.to_numpy(), type=pa.large_string(), from_pandas=True)
    else:
        array = pa.array(series, from_pandas=True)  # Arrow-backed strings: no copy
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    chunks = [chunk if pa.types.is_large_string(chunk.type) else chunk.cast(pa.large_string()) for chunk in chunks]

    def joined(compute) -> np.ndarray:
        return np.concatenate([np.asarray(compute(chunk), dtype=np.float64) for chunk in chunks])

    chars = joined(lambda chunk: pc.utf8_length(chunk).to_numpy(zero_copy_only=False))
    nbytes = joined(lambda chunk: pc.binary_length(chunk).to_numpy(zero_copy_only=False))
    words = joined(_word_counts)
    chars[null] = np.nan
    words[null] = np.nan
    column.sizes[f"{column.name}.chars"] = chars
    column.sizes[f"{column.name}.words"] = words
    column.payload = np.nan_to_num(nbytes)
    column.labels = series[~null] if null.any() else series
    column.domain = categorical_domain(column.labels)
    column.length = [int(np.nanmin(chars)), int(np.nanmax(chars))]


def _word_counts(array: pa.LargeStringArray) -> np.ndarray:
    """len(s.split()) for every string, on the UTF-8 bytes: a word starts at a non-space after a space.

    Works through the bytes in chunks of whole rows (WORD_CHUNK bytes), so the flags stay in cache and
    memory stays flat however long the texts are."""
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + n + 1]
    counts = np.zeros(n, dtype=np.int64)
    if n == 0 or offsets[-1] == offsets[0] or array.buffers()[2] is None:
        return counts
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    row = 0
    while row < n:
        stop = int(np.searchsorted(offsets, offsets[row] + WORD_CHUNK, side="right")) - 1
        stop = min(max(stop, row + 1), n)
        lo, hi = int(offsets[row]), int(offsets[stop])
        if hi > lo:
            space = _spaces(data[lo:hi])
            size = hi - lo
            # the word-start flags, in a buffer padded to whole 8-byte words for _prefix_counts
            start = np.zeros((size // 8 + 1) * 8, dtype=bool)
            np.invert(space, out=start[:size])
            start[1:size] &= space[:-1]
            bounds = offsets[row: stop + 1] - lo
            firsts = bounds[:-1][bounds[:-1] < size]
            start[firsts] = ~space[firsts]
            counts[row:stop] = np.diff(_prefix_counts(start, bounds))
        row = stop
    return counts


_BYTE_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)], dtype=np.uint64)
_POPCOUNT = hasattr(np, "bitwise_count") and np.little_endian


def _prefix_counts(flags: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """How many of `flags` are set before each position. `flags` is padded to a multiple of 8 beyond the last
    position: read as uint64 words, a popcount counts 8 flags at once, and a masked word covers the partial
    word before each position (a plain cumulative sum costs several times more)."""
    if not _POPCOUNT:
        return np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])[positions]
    words = flags.view(np.uint64)
    before = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.bitwise_count(words), out=before[1:])
    group, rest = np.divmod(positions, 8)
    return before[group] + np.bitwise_count(words[group] & _BYTE_MASKS[rest])


def _spaces(data: np.ndarray) -> np.ndarray:
    """Which bytes belong to a character that str.split() splits on (cheap tests first, exact fix-ups after)."""
    space = data <= 0x20
    controls = np.flatnonzero(data < 0x1C)  # of the bytes below 0x1C only \t \n \v \f \r are whitespace
    if len(controls):
        space[controls] = _SPACE_BYTE[data[controls]]
    if data.max() >= 0xC2:  # multi-byte whitespace: U+0085, U+00A0, U+1680, U+2000.., U+3000
        leads = np.flatnonzero(data >= 0xC2)
        for seq in _WIDE_SPACES:
            at = leads[data[leads] == seq[0]]
            at = at[at + len(seq) <= len(data)]
            for k in range(1, len(seq)):
                at = at[data[at + k] == seq[k]]
            for k in range(len(seq)):
                space[at + k] = True
    return space
