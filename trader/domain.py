"""Pure definitions shared by models, services, the API and the admin (no Django imports).

Each bound or format lives here once, so the database constraint, the model validator, the API
error and the admin form all say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

# Binance USD-M perpetuals (BTCUSDT, 1000PEPEUSDT, ETHUSDC) and quarterlies (BTCUSDT_251226).
SYMBOL_PATTERN = r"^[A-Z0-9]{1,20}(USDT|USDC)(_[0-9]{6})?$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)

# Kline intervals, in Binance's own spelling ("1M" is a month, "1m" a minute), plus "2m", which
# Binance does not serve and the platform derives from 1m candles.
INTERVAL_SECONDS = {
    "1m": 60, "2m": 120, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200,
    "1w": 604800, "1M": 2592000,  # a month counted as 30 days
}  # fmt: skip
INTERVALS = tuple(INTERVAL_SECONDS)
#: Intervals Binance does not serve: only ever built from stored 1m candles (ingest.derive).
DERIVED_ONLY_INTERVALS = frozenset({"2m"})
#: Epoch milliseconds, Binance's unit for candle times, to and from aware UTC datetimes.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def to_dt(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


#: The same in milliseconds, Binance's unit for candle times.
INTERVAL_MS = {name: seconds * 1000 for name, seconds in INTERVAL_SECONDS.items()}


@dataclass(frozen=True)
class Bound:
    """An inclusive numeric range with the unit used in error messages."""

    low: Decimal
    high: Decimal
    unit: str = ""

    def problem(self, value: Decimal | int) -> str | None:
        if not (self.low <= Decimal(value) <= self.high):
            return f"must be between {self.low} and {self.high}{self.unit}"
        return None


RISK_PER_TRADE_PCT = Bound(Decimal("0.01"), Decimal("10"), " %")
LEVERAGE = Bound(Decimal(1), Decimal(125), "x")
MAX_POSITION_NOTIONAL = Bound(Decimal(1), Decimal(10_000_000), " USDT")
MAX_OPEN_POSITIONS = Bound(Decimal(1), Decimal(100))
DAILY_LOSS_LIMIT_PCT = Bound(Decimal("0.1"), Decimal("100"), " %")


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` is not a Binance USD-M symbol, or None."""
    if not _SYMBOL_RE.match(symbol):
        return (
            f"{symbol!r} is not a Binance USD-M futures symbol "
            "(upper case, ending in USDT or USDC, e.g. BTCUSDT or BTCUSDT_251226)"
        )
    return None


def interval_problem(interval: str) -> str | None:
    """Why ``interval`` is not a kline interval the platform knows (``INTERVALS``), or None."""
    if interval not in INTERVAL_SECONDS:
        return f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}"
    return None


def mask_api_key(last4: str) -> str:
    """The only form in which an API key is ever displayed."""
    return f"****{last4}"
