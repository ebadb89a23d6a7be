"""Progress on stderr for every step longer than a second; silent when stderr is not a terminal.

`status` is for steps of unknown length (loading, building): it shows the elapsed time. `Bar` is for
steps measured against a budget (the benchmark: it fills by elapsed seconds) or a count (the eval's scenarios).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager


def _enabled() -> bool:
    flag = os.environ.get("DIAGNOSE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no")
    return sys.stderr.isatty()


@contextmanager
def status(description: str):
    """A ticking "description 3.2s" line while the block runs; yields `say(text)`, which shows what it is on now."""
    if not _enabled():
        yield lambda text: None
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=description, bar_format="{desc} {elapsed}", file=sys.stderr, leave=False)
    stop = threading.Event()

    def tick():
        while not stop.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield lambda text: bar.set_description_str(f"{description}: {text}", refresh=False)
    finally:
        stop.set()
        ticker.join()
        bar.close()


class Bar:
    """A bar over `total` units (seconds of budget, or `unit` such as " scenarios"); `update_to` moves it to an
    absolute position."""

    def __init__(self, total: float, description: str, unit: str = "s"):
        self._bar = None
        if _enabled():
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(total, 1), desc=description, file=sys.stderr, leave=False, unit=unit,
                bar_format="{desc} {bar} {n:.0f}/{total:.0f}{unit} {postfix}",
            )

    def update_to(self, position: float, note: str = "") -> None:
        if self._bar is not None:
            self._bar.n = min(round(position, 1), self._bar.total)
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
