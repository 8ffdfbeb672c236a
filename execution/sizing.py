"""Position sizing from a risk budget: plain data in, a quantity with its reasons out.

Pure: no Django, no network, no clock. Decimal only; a float is refused, never converted.

The size is the largest lot-step quantity whose loss at the stop, fees included, fits the risk
budget, within the notional cap, the exchange's max quantity and the available margin:

    budget        = equity x risk_pct / 100
    per-unit loss = |entry - stop| + entry x entry_fee + stop x taker_fee
    quantity      = min(budget / per-unit loss,
                        max_notional / entry,
                        available x leverage / (entry x (1 + leverage x entry_fee)),
                        max qty)                       rounded DOWN to the lot step

Every quotient is rounded down and the step rounding is down, so ``quantity x per-unit loss``
never exceeds the budget. A quantity that falls below the exchange minimums is skipped, never
rounded up: rounding up would spend more than the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_FLOOR,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

from execution.rules import SymbolRules, format_decimal, round_quantity
from execution.venues.base import Side

__all__ = [
    "BELOW_MIN_NOTIONAL",
    "BELOW_MIN_QTY",
    "INSUFFICIENT_MARGIN",
    "NO_EQUITY",
    "STOP_ON_WRONG_SIDE",
    "SizeDecision",
    "SizeInput",
    "position_size",
]

STOP_ON_WRONG_SIDE = "STOP_ON_WRONG_SIDE"
BELOW_MIN_QTY = "BELOW_MIN_QTY"
BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"
NO_EQUITY = "NO_EQUITY"
INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"

_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_DISPLAY = Decimal("1E-12")

# Sums and products of the inputs are exact (unlimited precision, Inexact trapped), so the
# budget and the per-unit loss are the true values.
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)
# Quotients rarely terminate; rounding them toward -inf (all are positive, so down) keeps each
# bound at or below its true value, and the lot-step rounding after that is down again.
_FLOOR = Context(prec=50, rounding=ROUND_FLOOR, traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True)
class SizeInput:
    """``entry_is_maker``: a resting LIMIT entry pays the maker fee, a MARKET (or crossing)
    entry the taker fee; the stop exit always pays the taker fee. Fees are rates
    (0.0004 = 0.04 %). ``market_entry`` selects MARKET_LOT_SIZE for rounding and minimums."""

    equity: Decimal
    risk_pct: Decimal
    entry_price: Decimal
    stop_price: Decimal
    side: Side
    entry_is_maker: bool
    maker_fee: Decimal
    taker_fee: Decimal
    max_notional: Decimal
    leverage: int
    available_balance: Decimal
    rules: SymbolRules
    market_entry: bool


@dataclass(frozen=True)
class SizeDecision:
    """``quantity`` 0 when skipped; ``risk_amount`` is the loss at the stop, fees included, for
    ``quantity``. ``reason`` None means ok, else one of the module's reason codes; ``detail``
    shows the arithmetic either way."""

    quantity: Decimal
    notional: Decimal
    risk_amount: Decimal
    reason: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (Decimals as plain strings)."""
        return {
            f.name: format_decimal(v) if isinstance(v, Decimal) else v
            for f in fields(self)
            for v in (getattr(self, f.name),)
        }


def position_size(inp: SizeInput) -> SizeDecision:
    """Size an entry so that a stop-out, fees included, loses at most the risk budget.

    Skips (quantity 0, with a reason) on a stop on the wrong side of the entry, no equity, no
    available balance, or a quantity below the exchange minimums; when the margin cap is what
    pushed it below them the reason is INSUFFICIENT_MARGIN. Raises ``TypeError`` for a
    non-Decimal amount and ``ValueError`` for an input no caller should send (non-positive
    prices, a leverage below 1, a risk percentage outside (0, 100], a MARKET entry as maker).
    """
    _validate(inp)
    asset = inp.rules.quote_asset
    entry, stop = inp.entry_price, inp.stop_price

    if (inp.side == Side.BUY and stop >= entry) or (inp.side == Side.SELL and stop <= entry):
        where = "below" if inp.side == Side.BUY else "above"
        return _skip(
            STOP_ON_WRONG_SIDE,
            f"{inp.side} stop {_n(stop)} is not {where} entry {_n(entry)}",
        )
    if inp.equity <= 0:
        return _skip(NO_EQUITY, f"equity {_n(inp.equity)} {asset}")
    if inp.available_balance <= 0:
        return _skip(INSUFFICIENT_MARGIN, f"available balance {_n(inp.available_balance)} {asset}")

    # A rebate (negative maker fee) is not counted on: treating it as 0 only sizes smaller.
    entry_fee = max(inp.maker_fee if inp.entry_is_maker else inp.taker_fee, _ZERO)
    exit_fee = max(inp.taker_fee, _ZERO)
    with localcontext(_EXACT):
        budget = inp.equity * inp.risk_pct / _HUNDRED
        per_unit_loss = abs(entry - stop) + entry * entry_fee + stop * exit_fee
        margin_per_unit = entry * (_ONE + inp.leverage * entry_fee)
        buying_power = inp.available_balance * inp.leverage
    with localcontext(_FLOOR):
        bounds: list[tuple[str, Decimal]] = [
            ("risk", budget / per_unit_loss),
            ("max notional", inp.max_notional / entry),
            # Initial margin (notional / leverage) plus the opening fee must fit the balance.
            ("margin", buying_power / margin_per_unit),
        ]
    max_qty = inp.rules.market_max_qty if inp.market_entry else inp.rules.max_qty
    if max_qty > 0:  # 0 = filter disabled
        bounds.append(("max qty", max_qty))
    # min() keeps the first of equal bounds, so a tie is reported as the risk bound.
    bound_name, raw_qty = min(bounds, key=lambda bound: bound[1])

    quantity = round_quantity(raw_qty, inp.rules, market=inp.market_entry)
    step = inp.rules.market_step_size if inp.market_entry else inp.rules.step_size
    min_qty = inp.rules.market_min_qty if inp.market_entry else inp.rules.min_qty
    with localcontext(_EXACT):
        notional = quantity * entry
        risk_amount = quantity * per_unit_loss

    how = (
        f"budget {_n(budget)} {asset} ({_n(inp.equity)} x {_n(inp.risk_pct)}%), per-unit loss "
        f"{_n(per_unit_loss)} (|{_n(entry)} - {_n(stop)}| + {_n(entry)} x {_n(entry_fee)} + "
        f"{_n(stop)} x {_n(exit_fee)}); bound by {bound_name}: {_short(raw_qty)}; "
        f"step {_n(step)} -> qty {_n(quantity)}"
    )
    below_min_qty = quantity <= 0 or quantity < min_qty
    below_min_notional = notional < inp.rules.min_notional
    if below_min_qty or below_min_notional:
        if below_min_qty:
            code, why = BELOW_MIN_QTY, f"qty {_n(quantity)} < min qty {_n(min_qty)}"
        else:
            code = BELOW_MIN_NOTIONAL
            why = (
                f"notional {_n(notional)} {asset} < min notional "
                f"{_n(inp.rules.min_notional)} {asset}"
            )
        if bound_name == "margin":
            code = INSUFFICIENT_MARGIN
            why = (
                f"{why}: available {_n(inp.available_balance)} {asset} x leverage "
                f"{inp.leverage} is too small"
            )
        return _skip(code, f"{why}; {how}")

    return SizeDecision(
        quantity=quantity,
        notional=notional,
        risk_amount=risk_amount,
        reason=None,
        detail=f"{how}; notional {_n(notional)} {asset}, loss at stop {_n(risk_amount)} {asset}",
    )


def _skip(code: str, detail: str) -> SizeDecision:
    return SizeDecision(
        quantity=_ZERO, notional=_ZERO, risk_amount=_ZERO, reason=code, detail=detail
    )


def _n(value: Decimal) -> str:
    return format_decimal(value)


def _short(value: Decimal) -> str:
    """A bound for display: at most 12 decimals, truncated (the arithmetic keeps every digit)."""
    if value.adjusted() >= 30:  # too large to quantize within _FLOOR's 50 digits; shown whole
        return _n(value)
    with localcontext(_FLOOR):
        return _n(value.quantize(_DISPLAY))


def _validate(inp: SizeInput) -> None:
    for name in (
        "equity",
        "risk_pct",
        "entry_price",
        "stop_price",
        "maker_fee",
        "taker_fee",
        "max_notional",
        "available_balance",
    ):
        value = getattr(inp, name)
        if not isinstance(value, Decimal):
            raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
        if not value.is_finite():
            raise ValueError(f"{name} must be finite, got {value}")
    if inp.entry_price <= 0 or inp.stop_price <= 0:
        raise ValueError(f"prices must be positive: entry {inp.entry_price}, stop {inp.stop_price}")
    if not 0 < inp.risk_pct <= _HUNDRED:
        raise ValueError(f"risk_pct must be in (0, 100], got {inp.risk_pct}")
    if inp.max_notional < 0:
        raise ValueError(f"max_notional must be >= 0, got {inp.max_notional}")
    if isinstance(inp.leverage, bool) or not isinstance(inp.leverage, int) or inp.leverage < 1:
        raise ValueError(f"leverage must be an int >= 1, got {inp.leverage!r}")
    if inp.market_entry and inp.entry_is_maker:
        raise ValueError("a MARKET entry always pays the taker fee (entry_is_maker=True)")
    if inp.side not in (Side.BUY, Side.SELL):
        raise ValueError(f"side must be BUY or SELL, got {inp.side!r}")
