"""Candle builders for the pure signals tests (no DB)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np

from signals.strategies.base import Candles

MINUTE_MS = 60_000
KLINES_CSV = Path("/work/shared/data/klines/BTCPERP-1m-2022-01.csv")


def make_candles(
    opens: Sequence[float],
    highs: Sequence[float],
    lows: Sequence[float],
    closes: Sequence[float],
    *,
    interval_ms: int = MINUTE_MS,
    start_ms: int = 1_640_995_200_000,
) -> Candles:
    """Candles from plain lists (equal lengths), one ``interval_ms`` apart."""
    n = len(closes)
    assert len(opens) == len(highs) == len(lows) == n
    return Candles(
        open_time_ms=start_ms + np.arange(n, dtype=np.int64) * interval_ms,
        open=np.asarray(opens, dtype=np.float64),
        high=np.asarray(highs, dtype=np.float64),
        low=np.asarray(lows, dtype=np.float64),
        close=np.asarray(closes, dtype=np.float64),
        volume=np.ones(n, dtype=np.float64),
    )


def from_closes(
    closes: Sequence[float], *, wick: float = 0.05, start: float = 100.0, **kwargs: int
) -> Candles:
    """Candles whose open is the previous close (``start`` for the first) and whose high/low
    stick out ``wick`` beyond the body."""
    close = [float(c) for c in closes]
    opens = [start, *close[:-1]]
    highs = [max(o, c) + wick for o, c in zip(opens, close, strict=True)]
    lows = [min(o, c) - wick for o, c in zip(opens, close, strict=True)]
    return make_candles(opens, highs, lows, close, **kwargs)


def flat(price: float, n: int) -> Candles:
    """A market that never moves."""
    return make_candles([price] * n, [price] * n, [price] * n, [price] * n)


def uptrend_closes(n: int = 70, *, step: float = 0.002, start: float = 100.0) -> list[float]:
    """Every candle ``step`` (relative) above the one before."""
    return [start * (1 + step) ** k for k in range(1, n + 1)]


def breakout_up_closes() -> list[float]:
    """70 rising candles, 5 small pull-back candles, then a close above all of them."""
    rise = uptrend_closes(70)
    pullback = [rise[-1] * (1 - 0.0005 * k) for k in range(1, 6)]
    return [*rise, *pullback, rise[-1] * 1.003]


def mirrored(closes: Sequence[float], around: float = 100.0) -> list[float]:
    """The same path upside down (an uptrend becomes a downtrend)."""
    return [2 * around - c for c in closes]


def sideways_closes(n: int = 80, *, amplitude: float = 0.5, period: int = 10) -> list[float]:
    """A sine around 100: no trend."""
    return [100 + amplitude * float(np.sin(2 * np.pi * k / period)) for k in range(n)]


def random_walk_closes(n: int, *, seed: int, sigma: float = 0.003) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in 100 * np.exp(np.cumsum(rng.normal(0, sigma, n)))]


@dataclass(frozen=True)
class _Row:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@cache
def btc_candles() -> Candles:
    """The real BTC perpetual 1m candles of January 2022 (Decimal -> float at the boundary)."""
    rows: list[_Row] = []
    times: list[int] = []
    with KLINES_CSV.open(newline="") as handle:
        for record in csv.DictReader(handle):
            times.append(int(record["open_time"]))
            rows.append(
                _Row(
                    open=Decimal(record["open"]),
                    high=Decimal(record["high"]),
                    low=Decimal(record["low"]),
                    close=Decimal(record["close"]),
                    volume=Decimal(record["volume"]),
                )
            )
    return Candles.from_rows(rows, times)
