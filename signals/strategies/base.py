"""The strategy contract: pure (no Django, no clock, no network), deterministic.

``Strategy.evaluate(*, candles, state, params, now) -> list[Decision]`` looks at a window of
closed candles (oldest first, the candle that just closed last) and says ARM or DISARM. The
candles arrive as float64 arrays, converted once from the stored Decimals at the boundary
(``Candles.from_rows``), because TA-Lib computes on float64; the prices a decision carries are
``Decimal`` again (``to_price``), and execution rounds them to the symbol's tick before sending.
``state`` is what the chain knows besides the candles: the regime of this candle and of the
previous one, and which side the strategy is armed on (from its last decisions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class CandleLike(Protocol):
    """What ``Candles.from_rows`` reads (``ingest.models.Kline`` and the venue ``Kline`` fit)."""

    @property
    def open(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal: ...


@dataclass(frozen=True, eq=False)
class Candles:
    """A window of closed candles as float64 arrays of equal length, oldest first."""

    open_time_ms: npt.NDArray[np.int64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def from_rows(cls, rows: Sequence[CandleLike], open_times_ms: Sequence[int]) -> Candles:
        """The one Decimal -> float64 conversion (prices here are for indicators only)."""
        return cls(
            open_time_ms=np.asarray(open_times_ms, dtype=np.int64),
            open=np.array([float(r.open) for r in rows], dtype=np.float64),
            high=np.array([float(r.high) for r in rows], dtype=np.float64),
            low=np.array([float(r.low) for r in rows], dtype=np.float64),
            close=np.array([float(r.close) for r in rows], dtype=np.float64),
            volume=np.array([float(r.volume) for r in rows], dtype=np.float64),
        )


class Action(StrEnum):
    ARM = "ARM"
    DISARM = "DISARM"


@dataclass(frozen=True)
class Decision:
    """ARM: enter ``side`` (BUY/SELL) by ``entry_type`` (MARKET, or LIMIT at ``entry_price``),
    protected by ``stop_price`` and optionally ``take_profit_price``, valid until
    ``expires_at`` (market time). ``reference_price``: the price the decision was made at (the
    last close), which execution sizes a MARKET entry from. DISARM: withdraw unfilled entries,
    because ``reason``."""

    action: Action
    reason: str
    side: str = ""
    entry_type: str = ""
    entry_price: Decimal | None = None
    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    reference_price: Decimal | None = None
    expires_at: datetime | None = None

    @classmethod
    def arm(
        cls,
        *,
        side: str,
        entry_type: str,
        stop_price: Decimal,
        reason: str,
        reference_price: Decimal,
        entry_price: Decimal | None = None,
        take_profit_price: Decimal | None = None,
        expires_at: datetime | None = None,
    ) -> Decision:
        return cls(
            action=Action.ARM,
            reason=reason,
            side=side,
            entry_type=entry_type,
            entry_price=entry_price,
            stop_price=stop_price,
            take_profit_price=take_profit_price,
            reference_price=reference_price,
            expires_at=expires_at,
        )

    @classmethod
    def disarm(cls, reason: str) -> Decision:
        return cls(action=Action.DISARM, reason=reason)


@dataclass(frozen=True)
class StrategyState:
    """What the chain passes besides the candles. ``regime``/``previous_regime``: the
    ``signals.regime.Regime`` values of this candle and of the one before (None when unknown);
    ``armed_side``: BUY/SELL if the strategy's last decision for these params was an ARM not
    yet disarmed, else None; ``extra``: anything else a strategy wants to see."""

    regime: str | None = None
    previous_regime: str | None = None
    armed_side: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def candle_interval(candles: Candles, extra: Mapping[str, Any] | None = None) -> timedelta:
    """The candles' interval: ``extra["interval_ms"]`` when the chain passes it, else the
    smallest positive spacing of ``open_time_ms`` (the smallest, so a gap in the window does
    not stretch it). ValueError when neither gives one."""
    given = (extra or {}).get("interval_ms")
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given <= 0:
            raise ValueError(f"interval_ms must be a positive integer, got {given!r}")
        return timedelta(milliseconds=given)
    steps = np.diff(candles.open_time_ms)
    steps = steps[steps > 0]
    if not len(steps):
        raise ValueError("cannot tell the interval: fewer than two distinct candle times")
    return timedelta(milliseconds=int(steps.min()))


def protective_prices_ok(
    side: str, *, reference: Decimal, stop: Decimal, take_profit: Decimal | None
) -> bool:
    """Stop beyond the reference price against the trade, take-profit beyond it in favour:
    BUY stop < reference < TP, SELL stop > reference > TP, all positive (what the platform
    requires of an ARM)."""
    if stop <= 0 or reference <= 0 or (take_profit is not None and take_profit <= 0):
        return False
    if side == "BUY":
        return stop < reference and (take_profit is None or take_profit > reference)
    if side == "SELL":
        return stop > reference and (take_profit is None or take_profit < reference)
    return False


def to_price(value: float) -> Decimal:
    """A float computed by an indicator back to a Decimal (10 significant places are plenty;
    execution rounds to the tick)."""
    if not np.isfinite(value):
        raise ValueError(f"not a finite price: {value}")
    return Decimal(repr(float(value))).quantize(Decimal("1e-10")).normalize()


class Strategy:
    """A trading strategy: a key, a JSON Schema for its params, a warm-up length, and
    ``evaluate``. Subclasses are registered with ``@register``."""

    key: ClassVar[str]
    #: JSON Schema (draft 2020-12) of the params object; validated when a bot is saved.
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    #: Closed candles needed before the first decision.
    warmup: ClassVar[int] = 0
    #: A disabled strategy is never evaluated and cannot be chosen for a new bot.
    enabled: ClassVar[bool] = True
    #: Whether the chain evaluates it on candle closes (``manual`` is driven by the API only).
    evaluated: ClassVar[bool] = True

    @classmethod
    def warmup_for(cls, params: Mapping[str, Any]) -> int:
        """Warm-up for these params (longer look-backs need more candles)."""
        return cls.warmup

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> list[str]:
        """Errors JSON Schema cannot express (one field against another), each naming its
        field; called by ``validate_strategy_params`` once the params fit the schema."""
        return []

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The ``default`` of every property of ``params_schema``."""
        properties = cls.params_schema.get("properties", {})
        return {name: spec["default"] for name, spec in properties.items() if "default" in spec}

    @classmethod
    def resolved_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` over the schema defaults: ``{}`` means all defaults."""
        return {**cls.defaults(), **params}

    def evaluate(
        self,
        *,
        candles: Candles,
        state: StrategyState,
        params: Mapping[str, Any],
        now: datetime,
    ) -> list[Decision]:
        raise NotImplementedError
