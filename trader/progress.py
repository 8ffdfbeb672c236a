"""A one-line progress bar for commands (stderr, redrawn with ``\\r``): no dependency."""

from __future__ import annotations

import time
from typing import TextIO

#: The bar redraws at most this often (seconds), and always at the end.
REDRAW_S = 0.2


class ProgressBar:
    """``LABEL [#####---]  42.0%  12,000/28,500 candles  3,512 candles/s  ETA 0:00:05``.

    ``update`` takes the amount done and the total; the rate and ETA are measured from the
    first update (or given, when the caller knows better)."""

    def __init__(self, stream: TextIO, *, unit: str, rate_unit: str = "", width: int = 30):
        self.stream = stream
        self.unit = unit
        self.rate_unit = rate_unit or f"{unit}/s"
        self.width = width
        self._started: float | None = None
        self._drawn_at = 0.0
        self._shown = False

    def update(
        self,
        label: str,
        done: int,
        total: int,
        *,
        rate: float | None = None,
        eta_s: float | None = None,
    ) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        if now - self._drawn_at < REDRAW_S and done < total:
            return
        self._drawn_at = now
        elapsed = now - self._started
        if rate is None:
            rate = done / elapsed if elapsed > 0 else 0.0
        if eta_s is None and rate > 0:
            eta_s = max(0.0, (total - done) / rate)
        percent = 100.0 if total <= 0 else min(100.0, 100.0 * done / total)
        filled = int(self.width * percent / 100)
        eta = "--:--:--" if eta_s is None else clock(eta_s)
        self.stream.write(
            f"\r{label} [{'#' * filled}{'-' * (self.width - filled)}] {percent:5.1f}%  "
            f"{done:,}/{total:,} {self.unit}  {rate:,.0f} {self.rate_unit}  ETA {eta} "
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
