"""The market clock: what time it is on the market the platform trades.

Against Binance (live or testnet) market time is the wall clock in UTC. The emulator can replay
its candles faster than real time (``speed``, for the ``make run`` demo, where a 1m candle closes
every few seconds); with ``MARKET_CLOCK=emulator`` every market-time decision of the platform
(which candle has closed, how old the newest candle is, the strategies' ``now``, risk's data
age) reads the emulator's clock instead, so the same code runs at either pace.

The emulator's clock is read from ``GET <BINANCE_BASE_URL>/_emulator/state`` (market time and
speed), anchored to the local wall clock and re-read every ``MARKET_CLOCK_RESYNC_S``. Times
that must be wall time (order timestamps, recvWindow, cooldowns, signal expiry) never go
through here.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import requests
from django.conf import settings

from trader.domain import to_dt

_lock = threading.Lock()
#: (wall ms at the reading, market ms at the reading, speed, monotonic time of the reading)
_anchor: tuple[int, int, Decimal, float] | None = None


class MarketClockError(RuntimeError):
    """The emulator's clock could not be read (``MARKET_CLOCK=emulator``)."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _emulator_root() -> str:
    base = str(settings.BINANCE_BASE_URL or "").rstrip("/")
    if not base:
        raise MarketClockError("MARKET_CLOCK=emulator needs BINANCE_BASE_URL (the emulator's root)")
    return base[: -len("/fapi")] if base.endswith("/fapi") else base


def _read_emulator() -> tuple[int, int, Decimal, float]:
    url = f"{_emulator_root()}/_emulator/state"
    before = _wall_ms()
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
        state = response.json()
        market_ms, speed = int(state["market_time_ms"]), Decimal(str(state["speed"]))
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise MarketClockError(f"cannot read the emulator's clock at {url}: {exc}") from exc
    after = _wall_ms()
    return (before + after) // 2, market_ms, speed, time.monotonic()


def market_now_ms() -> int:
    """Market time now, in epoch milliseconds."""
    global _anchor
    if getattr(settings, "MARKET_CLOCK", "wall") != "emulator":
        return _wall_ms()
    with _lock:
        resync = float(getattr(settings, "MARKET_CLOCK_RESYNC_S", 30.0))
        if _anchor is None or time.monotonic() - _anchor[3] > resync:
            _anchor = _read_emulator()
        wall0, market0, speed, _ = _anchor
    # speed 0: the emulator's market time is frozen (tests advance it explicitly).
    return market0 + int(Decimal(_wall_ms() - wall0) * speed)


def market_now() -> datetime:
    """Market time now, an aware UTC datetime."""
    return to_dt(market_now_ms())


def market_speed() -> Decimal:
    """How many market seconds pass per wall second (1 against Binance)."""
    if getattr(settings, "MARKET_CLOCK", "wall") != "emulator":
        return Decimal(1)
    market_now_ms()
    anchor = _anchor
    return (anchor[2] if anchor is not None else Decimal(1)) or Decimal(1)


def market_to_wall(moment: datetime) -> datetime:
    """The wall-clock time at which the market clock shows ``moment`` (for expiries)."""
    speed = market_speed()
    ahead = (moment - market_now()).total_seconds()
    return datetime.now(UTC) + timedelta(seconds=float(Decimal(str(ahead)) / speed))


def reset() -> None:
    """Forget the emulator's clock (tests, or after the emulator restarted)."""
    global _anchor
    with _lock:
        _anchor = None
