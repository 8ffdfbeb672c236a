"""Binance USD-M symbol filters, order rounding, preflight and wire serialization.

Pure: no Django, no network, no clock. Every number is a ``Decimal``; a float never enters the
arithmetic (a float quantity is refused, see ``preflight``), so a value such as
``0.30000000000000004`` cannot reach the venue.

Reference: /work/shared/reference/binance-usdm-futures.md, sections 3 (exchangeInfo and its
filters), 4 (New Order and its parameter rules), 1.2 (the Algo Order API for conditional types)
and 5 (error codes). ``preflight`` refuses locally what the venue would refuse anyway, with a
stable rule code, so a bad order never spends an order-rate-limit slot or reaches the venue.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Any, TypeVar

from execution.venues.base import (
    CONDITIONAL_TYPES,
    OrderRequest,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    WorkingType,
)
from execution.venues.errors import PreflightError

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=StrEnum)

__all__ = [
    "CLIENT_ID_PATTERN",
    "SymbolRules",
    "client_id_valid",
    "format_decimal",
    "parse_exchange_info",
    "preflight",
    "round_price",
    "round_quantity",
    "round_to_step",
    "round_trigger",
    "to_binance_params",
]

#: Binance's rule for ``newClientOrderId`` and ``clientAlgoId`` (reference §1.2, §4.1).
#: Use ``fullmatch`` (as ``client_id_valid`` does): with ``match``, ``$`` also accepts a
#: trailing newline.
CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")

#: Trailing stop callback rate bounds on the Algo Order API, 1 = 1 % (reference §1.2; the
#: legacy /order doc said max 5, which no longer applies to conditional orders).
CALLBACK_RATE_MIN = Decimal("0.1")
CALLBACK_RATE_MAX = Decimal("10")

_ZERO = Decimal(0)

# Arithmetic on exchange values must be exact: the default context (28 digits, half-even)
# could round a quotient or a product and move a price across a tick. With unlimited
# precision, addition, multiplication and divmod are exact; Inexact is trapped so any
# operation that would still round raises instead of silently rounding.
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)

# Types that carry a resting limit price (``price``).
_LIMIT_PRICE_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP, OrderType.TAKE_PROFIT})
# Types that execute at market: their quantity follows MARKET_LOT_SIZE.
_MARKET_TYPES = frozenset(
    {
        OrderType.MARKET,
        OrderType.STOP_MARKET,
        OrderType.TAKE_PROFIT_MARKET,
        OrderType.TRAILING_STOP_MARKET,
    }
)
_STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_MARKET})
_TAKE_PROFIT_TYPES = frozenset({OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_MARKET})
_TRIGGER_TYPES = _STOP_TYPES | _TAKE_PROFIT_TYPES
# closePosition exists only for these two (reference §1.2).
_CLOSE_POSITION_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET})
_REGULAR_TYPES = frozenset({OrderType.LIMIT, OrderType.MARKET})


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's trading rules from ``/fapi/v1/exchangeInfo``.

    A ``Decimal(0)`` limit means "rule disabled", as Binance does. After
    ``parse_exchange_info`` the tick and step sizes are never zero (see the precision fallback).
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    margin_asset: str
    price_precision: int
    quantity_precision: int
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    multiplier_up: Decimal
    multiplier_down: Decimal
    max_num_orders: int
    trigger_protect: Decimal
    order_types: frozenset[str]
    time_in_force: frozenset[str]

    @property
    def tradable(self) -> bool:
        """True only in status TRADING (not PENDING_TRADING, SETTLING, CLOSE, ...)."""
        return self.status == "TRADING"


# --------------------------------------------------------------------------- parsing


def parse_exchange_info(payload: Mapping[str, Any]) -> dict[str, SymbolRules]:
    """Map each symbol of a ``/fapi/v1/exchangeInfo`` payload to its ``SymbolRules``.

    Reads PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MAX_NUM_ORDERS, MIN_NOTIONAL (field
    ``notional``) and PERCENT_PRICE; other filters (POSITION_RISK_CONTROL, ...) are ignored. A
    missing filter or field reads as ``Decimal(0)`` (rule disabled), except tick and step
    sizes, which fall back to ``10**-pricePrecision`` / ``10**-quantityPrecision`` with a
    warning. Raises ``ValueError`` naming the symbol and field on a malformed payload.
    """
    symbols = payload.get("symbols") if isinstance(payload, Mapping) else None
    if not isinstance(symbols, Sequence) or isinstance(symbols, str | bytes):
        raise ValueError("exchangeInfo payload: field 'symbols' is missing or not a list")
    result: dict[str, SymbolRules] = {}
    for index, row in enumerate(symbols):
        rules = _parse_symbol(row, index)
        result[rules.symbol] = rules
    return result


def _parse_symbol(row: Any, index: int) -> SymbolRules:
    if not isinstance(row, Mapping):
        raise ValueError(f"exchangeInfo symbols[{index}] is not an object")
    symbol = row.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"exchangeInfo symbols[{index}]: field 'symbol' is missing or empty")

    price_precision = _int_field(row, "pricePrecision", symbol)
    quantity_precision = _int_field(row, "quantityPrecision", symbol)
    filters = _filters_by_type(row, symbol)

    def dec(filter_type: str, key: str) -> Decimal:
        raw = filters.get(filter_type, {}).get(key)
        return _ZERO if raw is None else _to_decimal(raw, symbol, f"{filter_type}.{key}")

    def step(filter_type: str, key: str, precision_field: str, precision: int) -> Decimal:
        value = dec(filter_type, key)
        if value > 0:
            return value
        # Binance says not to use the precisions as tick/step ("please do not use it as
        # tickSize"); they are only the least-bad guess when the filter is absent.
        fallback = Decimal(1).scaleb(-precision)
        logger.warning(
            "%s: %s.%s is missing or 0; falling back to 10**-%s = %s (from %s)",
            symbol,
            filter_type,
            key,
            precision,
            fallback,
            precision_field,
        )
        return fallback

    max_num_orders = dec("MAX_NUM_ORDERS", "limit")
    if max_num_orders != max_num_orders.to_integral_value():
        raise ValueError(f"{symbol}: MAX_NUM_ORDERS.limit is not an integer: {max_num_orders}")

    trigger_protect_raw = row.get("triggerProtect")
    trigger_protect = (
        _ZERO
        if trigger_protect_raw is None
        else _to_decimal(trigger_protect_raw, symbol, "triggerProtect")
    )
    # The doc's example misspells the field "OrderType"; live payloads say "orderTypes".
    order_types_key = "orderTypes" if "orderTypes" in row or "OrderType" not in row else "OrderType"

    return SymbolRules(
        symbol=symbol,
        status=_str_field(row, "status", symbol),
        base_asset=_str_field(row, "baseAsset", symbol),
        quote_asset=_str_field(row, "quoteAsset", symbol),
        margin_asset=_str_field(row, "marginAsset", symbol),
        price_precision=price_precision,
        quantity_precision=quantity_precision,
        tick_size=step("PRICE_FILTER", "tickSize", "pricePrecision", price_precision),
        min_price=dec("PRICE_FILTER", "minPrice"),
        max_price=dec("PRICE_FILTER", "maxPrice"),
        step_size=step("LOT_SIZE", "stepSize", "quantityPrecision", quantity_precision),
        min_qty=dec("LOT_SIZE", "minQty"),
        max_qty=dec("LOT_SIZE", "maxQty"),
        market_step_size=step(
            "MARKET_LOT_SIZE", "stepSize", "quantityPrecision", quantity_precision
        ),
        market_min_qty=dec("MARKET_LOT_SIZE", "minQty"),
        market_max_qty=dec("MARKET_LOT_SIZE", "maxQty"),
        min_notional=dec("MIN_NOTIONAL", "notional"),
        multiplier_up=dec("PERCENT_PRICE", "multiplierUp"),
        multiplier_down=dec("PERCENT_PRICE", "multiplierDown"),
        max_num_orders=int(max_num_orders),
        trigger_protect=trigger_protect,
        order_types=_str_set_field(row, order_types_key, symbol),
        time_in_force=_str_set_field(row, "timeInForce", symbol),
    )


def _filters_by_type(row: Mapping[str, Any], symbol: str) -> dict[str, Mapping[str, Any]]:
    filters = row.get("filters")
    if not isinstance(filters, Sequence) or isinstance(filters, str | bytes):
        raise ValueError(f"{symbol}: field 'filters' is missing or not a list")
    by_type: dict[str, Mapping[str, Any]] = {}
    for position, entry in enumerate(filters):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("filterType"), str):
            raise ValueError(f"{symbol}: filters[{position}] has no 'filterType'")
        by_type[entry["filterType"]] = entry
    return by_type


def _to_decimal(raw: Any, symbol: str, field: str) -> Decimal:
    # bool is an int subclass: "true" where a number belongs is a malformed payload.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise ValueError(f"{symbol}: {field} is not a number: {raw!r}")
    try:
        # Binance sends strings; a float only appears if the caller decoded JSON numbers as
        # floats, and repr() gives back the literal as written, not its binary expansion.
        value = Decimal(repr(raw) if isinstance(raw, float) else raw)
    except InvalidOperation:
        raise ValueError(f"{symbol}: {field} is not a number: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{symbol}: {field} must be a finite number >= 0, got {raw!r}")
    return value


def _int_field(row: Mapping[str, Any], field: str, symbol: str) -> int:
    raw = row.get(field)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"{symbol}: field {field!r} is missing or not an integer: {raw!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{symbol}: field {field!r} is not an integer: {raw!r}") from None
    if value < 0:
        raise ValueError(f"{symbol}: field {field!r} must be >= 0, got {raw!r}")
    return value


def _str_field(row: Mapping[str, Any], field: str, symbol: str) -> str:
    raw = row.get(field)
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{symbol}: field {field!r} is missing or not a string: {raw!r}")
    return raw


def _str_set_field(row: Mapping[str, Any], field: str, symbol: str) -> frozenset[str]:
    raw = row.get(field)
    if (
        not isinstance(raw, Sequence)
        or isinstance(raw, str | bytes)
        or not all(isinstance(item, str) for item in raw)
    ):
        raise ValueError(f"{symbol}: field {field!r} is missing or not a list of strings")
    return frozenset(raw)


# --------------------------------------------------------------------------- rounding


def round_to_step(value: Decimal, step: Decimal, *, up: bool, origin: Decimal = _ZERO) -> Decimal:
    """Snap ``value`` to ``origin + n * step``, rounding up or down; exact, never via float.

    Binance's filters count from the minimum (``(price - minPrice) % tickSize == 0``), so pass
    the filter's minimum as ``origin``; with ``origin`` 0 this counts from zero. A ``step`` of
    0 means the filter is disabled and returns ``value`` unchanged.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step == 0:
        return value
    with localcontext(_EXACT):
        # Decimal divmod truncates toward zero (unlike int), so the remainder carries the
        # sign of the offset; adjust the truncated quotient to a floor or a ceiling.
        whole, rest = divmod(value - origin, step)
        if rest > 0 and up:
            whole += 1
        elif rest < 0 and not up:
            whole -= 1
        return origin + whole * step


def round_price(
    value: Decimal, rules: SymbolRules, *, side: Side, order_type: OrderType
) -> Decimal:
    """Round a limit price (LIMIT, STOP, TAKE_PROFIT) to the tick in the safe direction.

    BUY rounds down and SELL rounds up: we never pay more, nor sell for less, than asked. A
    TRAILING_STOP_MARKET's activation price follows the same rule, which keeps it on the side
    of the market Binance requires (BUY below, SELL above the latest price, else -2021).
    """
    if order_type not in _LIMIT_PRICE_TYPES and order_type != OrderType.TRAILING_STOP_MARKET:
        raise ValueError(f"{order_type} orders carry no limit price")
    return round_to_step(value, rules.tick_size, up=side == Side.SELL, origin=rules.min_price)


def round_trigger(
    value: Decimal, rules: SymbolRules, *, side: Side, order_type: OrderType
) -> Decimal:
    """Round a trigger price to the tick so the order triggers no later than asked.

    A stop SELL (a long's stop) triggers when the price falls to the trigger: round up. A stop
    BUY triggers on a rise: round down. A take-profit triggers on the way in the other
    direction: SELL rounds down, BUY rounds up.
    """
    if order_type in _STOP_TYPES:
        up = side == Side.SELL
    elif order_type in _TAKE_PROFIT_TYPES:
        up = side == Side.BUY
    else:
        raise ValueError(f"{order_type} orders carry no trigger price")
    return round_to_step(value, rules.tick_size, up=up, origin=rules.min_price)


def round_quantity(value: Decimal, rules: SymbolRules, *, market: bool) -> Decimal:
    """Round a quantity DOWN to the lot step (MARKET_LOT_SIZE when ``market``), never below 0.

    Down, always: an order must never be larger than the caller asked for (risk sized it).
    """
    if market:
        step, origin = rules.market_step_size, rules.market_min_qty
    else:
        step, origin = rules.step_size, rules.min_qty
    rounded = round_to_step(value, step, up=False, origin=origin)
    # Counting from a minimum that is not a multiple of the step can land below zero for a
    # tiny input; a negative quantity means nothing, so report it as zero.
    return max(rounded, _ZERO)


# --------------------------------------------------------------------------- preflight


def client_id_valid(value: str) -> bool:
    """True when ``value`` is acceptable to Binance as newClientOrderId / clientAlgoId."""
    return isinstance(value, str) and CLIENT_ID_PATTERN.fullmatch(value) is not None


def preflight(
    request: OrderRequest,
    rules: SymbolRules,
    *,
    mark_price: Decimal | None,
    dual_side: bool,
) -> OrderRequest:
    """Validate ``request`` against ``rules`` and return a new, rounded ``OrderRequest``.

    Price, trigger and activation price are rounded to the tick in the safe direction, the
    quantity down to the lot step; the input is never modified and the returned quantity is
    never above the requested one. ``mark_price`` feeds MIN_NOTIONAL for market orders and
    PERCENT_PRICE; ``dual_side`` is the account's position mode (hedge when True).

    Raises ``PreflightError(rule, detail)``; rules in checking order: SYMBOL_MISMATCH,
    SYMBOL_NOT_TRADING, ORDER_TYPE, ENUM, NOT_DECIMAL, TIME_IN_FORCE, MANDATORY_PARAM,
    PARAM_NOT_REQUIRED, POSITION_SIDE, REDUCE_ONLY_IN_HEDGE, CLOSE_POSITION, CLIENT_ID,
    NON_POSITIVE, LOT_SIZE (rounds to zero), PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE,
    MARK_PRICE_UNKNOWN, MIN_NOTIONAL, PERCENT_PRICE. MAX_NUM_ORDERS needs the open-order
    count and is left to the caller.
    """
    symbol = rules.symbol
    if not isinstance(request.symbol, str) or request.symbol.upper() != symbol:
        raise PreflightError(
            "SYMBOL_MISMATCH", f"request symbol {request.symbol!r} checked against {symbol} rules"
        )
    if not rules.tradable:
        raise PreflightError("SYMBOL_NOT_TRADING", f"{symbol} status is {rules.status}")
    if request.type not in rules.order_types:
        raise PreflightError(
            "ORDER_TYPE",
            f"order type {request.type!s} is not among {sorted(rules.order_types)} for {symbol}",
        )
    req = _coerce_enums(request, symbol)
    _check_decimals(req, symbol, mark_price)
    if req.time_in_force is not None and req.time_in_force not in rules.time_in_force:
        raise PreflightError(
            "TIME_IN_FORCE",
            f"timeInForce {req.time_in_force} is not among {sorted(rules.time_in_force)} "
            f"for {symbol}",
        )
    _check_mandatory(req, symbol)
    _check_not_required(req, symbol)
    _check_position_mode(req, symbol, dual_side)
    _check_close_position(req, symbol, dual_side)
    if req.client_id is not None and not client_id_valid(req.client_id):
        raise PreflightError(
            "CLIENT_ID",
            f"client id {req.client_id!r} does not match {CLIENT_ID_PATTERN.pattern} "
            "(1 to 36 of A-Z a-z 0-9 . : / _ -)",
        )
    _check_positive(req, symbol, mark_price)
    rounded = _rounded(req, rules)
    _check_price_filter(rounded, rules)
    _check_lot_size(rounded, rules)
    _check_min_notional(rounded, rules, mark_price)
    _check_percent_price(rounded, rules, mark_price)
    return rounded


def _coerce_enums(request: OrderRequest, symbol: str) -> OrderRequest:
    """Turn raw strings that name a valid member into the enum; refuse anything else."""
    time_in_force = request.time_in_force
    working_type = request.working_type
    return dataclasses.replace(
        request,
        symbol=symbol,
        side=_member(request.side, Side, "side", symbol),
        type=_member(request.type, OrderType, "type", symbol),
        position_side=_member(request.position_side, PositionSide, "position_side", symbol),
        time_in_force=(
            None
            if time_in_force is None
            else _member(time_in_force, TimeInForce, "time_in_force", symbol)
        ),
        working_type=(
            None
            if working_type is None
            else _member(working_type, WorkingType, "working_type", symbol)
        ),
    )


def _member(value: object, enum_cls: type[_E], name: str, symbol: str) -> _E:
    if isinstance(value, enum_cls):
        return value
    # Exact values only: "buy" is not a member, and guessing at case would hide a bug.
    if isinstance(value, str) and value in {member.value for member in enum_cls}:
        return enum_cls(value)
    raise PreflightError(
        "ENUM",
        f"{name} {value!r} is not one of {[member.value for member in enum_cls]} for {symbol}",
    )


def _decimal_fields(request: OrderRequest) -> tuple[tuple[str, Any], ...]:
    return (
        ("quantity", request.quantity),
        ("price", request.price),
        ("trigger_price", request.trigger_price),
        ("activate_price", request.activate_price),
        ("callback_rate", request.callback_rate),
    )


def _check_decimals(request: OrderRequest, symbol: str, mark_price: Decimal | None) -> None:
    for name, value in (*_decimal_fields(request), ("mark_price", mark_price)):
        if value is None:
            continue
        # A float carries binary noise (0.1 is 0.1000000000000000055...) and mixing it with
        # Decimal raises anyway; an int is exact but is almost always a caller's slip too.
        if not isinstance(value, Decimal) or not value.is_finite():
            raise PreflightError(
                "NOT_DECIMAL",
                f"{name} {value!r} ({type(value).__name__}) must be a finite Decimal for {symbol}",
            )


def _check_mandatory(request: OrderRequest, symbol: str) -> None:
    order_type = request.type
    missing: list[str] = []
    if order_type == OrderType.LIMIT and request.time_in_force is None:
        missing.append("timeInForce")
    if order_type in _LIMIT_PRICE_TYPES and request.price is None:
        missing.append("price")
    if order_type in _TRIGGER_TYPES and request.trigger_price is None:
        missing.append("triggerPrice")
    if order_type == OrderType.TRAILING_STOP_MARKET and request.callback_rate is None:
        missing.append("callbackRate")
    # Only STOP_MARKET / TAKE_PROFIT_MARKET may close without a quantity; for any other type a
    # closePosition flag is refused later (CLOSE_POSITION), so it must not excuse a quantity.
    if request.quantity is None and not request.close_position:
        missing.append("quantity")
    if missing:
        raise PreflightError(
            "MANDATORY_PARAM", f"{order_type} order on {symbol} needs {', '.join(missing)}"
        )
    rate = request.callback_rate
    if (
        order_type == OrderType.TRAILING_STOP_MARKET
        and rate is not None
        and not CALLBACK_RATE_MIN <= rate <= CALLBACK_RATE_MAX
    ):
        raise PreflightError(
            "MANDATORY_PARAM",
            f"callbackRate {format_decimal(rate)} is outside "
            f"[{CALLBACK_RATE_MIN}, {CALLBACK_RATE_MAX}] for {symbol}",
        )
    if request.time_in_force == TimeInForce.GTD:
        # Binance requires goodTillDate with GTD, and OrderRequest has no field to carry it.
        raise PreflightError(
            "MANDATORY_PARAM",
            f"timeInForce GTD on {symbol} needs goodTillDate, which OrderRequest cannot carry",
        )


def _check_not_required(request: OrderRequest, symbol: str) -> None:
    """Refuse parameters the type does not take: the venue answers -1106 / -1104 to those."""
    order_type = request.type
    extra: list[str] = []
    if request.price is not None and order_type not in _LIMIT_PRICE_TYPES:
        extra.append(f"price {format_decimal(request.price)}")
    if request.trigger_price is not None and order_type not in _TRIGGER_TYPES:
        extra.append(f"triggerPrice {format_decimal(request.trigger_price)}")
    if order_type != OrderType.TRAILING_STOP_MARKET:
        if request.activate_price is not None:
            extra.append(f"activatePrice {format_decimal(request.activate_price)}")
        if request.callback_rate is not None:
            extra.append(f"callbackRate {format_decimal(request.callback_rate)}")
    # The regular /fapi/v1/order endpoint no longer documents these since the algo migration.
    if order_type in _REGULAR_TYPES:
        if request.working_type is not None:
            extra.append(f"workingType {request.working_type}")
        if request.price_protect:
            extra.append("priceProtect TRUE")
    if extra:
        raise PreflightError(
            "PARAM_NOT_REQUIRED", f"{order_type} order on {symbol} does not take {', '.join(extra)}"
        )


def _check_position_mode(request: OrderRequest, symbol: str, dual_side: bool) -> None:
    side = request.position_side
    if dual_side and side == PositionSide.BOTH:
        raise PreflightError(
            "POSITION_SIDE", f"hedge mode needs positionSide LONG or SHORT, got {side} on {symbol}"
        )
    if not dual_side and side != PositionSide.BOTH:
        raise PreflightError(
            "POSITION_SIDE", f"one-way mode needs positionSide BOTH, got {side} on {symbol}"
        )
    if dual_side and request.reduce_only:
        raise PreflightError(
            "REDUCE_ONLY_IN_HEDGE",
            f"reduceOnly cannot be sent in hedge mode (positionSide {side} on {symbol})",
        )


def _check_close_position(request: OrderRequest, symbol: str, dual_side: bool) -> None:
    if not request.close_position:
        return
    if request.type not in _CLOSE_POSITION_TYPES:
        raise PreflightError(
            "CLOSE_POSITION",
            f"closePosition works only with STOP_MARKET or TAKE_PROFIT_MARKET, "
            f"not {request.type} on {symbol}",
        )
    if request.quantity is not None:
        raise PreflightError(
            "CLOSE_POSITION",
            f"closePosition cannot be sent with quantity {format_decimal(request.quantity)} "
            f"on {symbol}",
        )
    if request.reduce_only:
        raise PreflightError(
            "CLOSE_POSITION", f"closePosition cannot be sent with reduceOnly on {symbol}"
        )
    # Closing a LONG means selling it; BUY+LONG or SELL+SHORT would open, not close.
    if dual_side and (
        (request.side == Side.BUY and request.position_side == PositionSide.LONG)
        or (request.side == Side.SELL and request.position_side == PositionSide.SHORT)
    ):
        raise PreflightError(
            "CLOSE_POSITION",
            f"closePosition with {request.side} {request.position_side} would not close "
            f"anything on {symbol}",
        )


def _check_positive(request: OrderRequest, symbol: str, mark_price: Decimal | None) -> None:
    values = (*_decimal_fields(request)[:4], ("mark_price", mark_price))
    for name, value in values:
        if value is not None and value <= 0:
            raise PreflightError(
                "NON_POSITIVE", f"{name} {format_decimal(value)} must be > 0 for {symbol}"
            )


def _is_market(order_type: OrderType) -> bool:
    return order_type in _MARKET_TYPES


def _rounded(request: OrderRequest, rules: SymbolRules) -> OrderRequest:
    side, order_type, symbol = request.side, request.type, rules.symbol
    requested = quantity = request.quantity
    if requested is not None:
        market = _is_market(order_type)
        quantity = round_quantity(requested, rules, market=market)
        if quantity <= 0:
            filter_name = "MARKET_LOT_SIZE" if market else "LOT_SIZE"
            step = rules.market_step_size if market else rules.step_size
            raise PreflightError(
                "LOT_SIZE",
                f"quantity {format_decimal(requested)} rounds down to 0 with "
                f"{filter_name} step {format_decimal(step)} for {symbol}",
            )
    price = request.price
    if price is not None:
        price = round_price(price, rules, side=side, order_type=order_type)
    trigger = request.trigger_price
    if trigger is not None:
        trigger = round_trigger(trigger, rules, side=side, order_type=order_type)
    activate = request.activate_price
    if activate is not None:
        activate = round_price(activate, rules, side=side, order_type=order_type)
    return dataclasses.replace(
        request, quantity=quantity, price=price, trigger_price=trigger, activate_price=activate
    )


def _check_price_filter(request: OrderRequest, rules: SymbolRules) -> None:
    symbol = rules.symbol
    for name, value in (
        ("price", request.price),
        ("triggerPrice", request.trigger_price),
        ("activatePrice", request.activate_price),
    ):
        if value is None:
            continue
        if value <= 0:
            raise PreflightError(
                "PRICE_FILTER",
                f"{name} rounds to {format_decimal(value)} with tickSize "
                f"{format_decimal(rules.tick_size)} for {symbol}",
            )
        if rules.min_price and value < rules.min_price:
            raise PreflightError(
                "PRICE_FILTER",
                f"{name} {format_decimal(value)} is below minPrice "
                f"{format_decimal(rules.min_price)} for {symbol}",
            )
        if rules.max_price and value > rules.max_price:
            raise PreflightError(
                "PRICE_FILTER",
                f"{name} {format_decimal(value)} is above maxPrice "
                f"{format_decimal(rules.max_price)} for {symbol}",
            )


def _check_lot_size(request: OrderRequest, rules: SymbolRules) -> None:
    quantity = request.quantity
    if quantity is None:
        return
    if _is_market(request.type):
        rule, minimum, maximum = "MARKET_LOT_SIZE", rules.market_min_qty, rules.market_max_qty
    else:
        rule, minimum, maximum = "LOT_SIZE", rules.min_qty, rules.max_qty
    if minimum and quantity < minimum:
        raise PreflightError(
            rule,
            f"quantity {format_decimal(quantity)} is below minQty {format_decimal(minimum)} "
            f"for {rules.symbol}",
        )
    if maximum and quantity > maximum:
        raise PreflightError(
            rule,
            f"quantity {format_decimal(quantity)} is above maxQty {format_decimal(maximum)} "
            f"for {rules.symbol}",
        )


def _check_min_notional(
    request: OrderRequest, rules: SymbolRules, mark_price: Decimal | None
) -> None:
    quantity = request.quantity
    # Reduce-only and close-position orders are exempt (-4164: "unless you choose reduce
    # only"); closePosition carries no quantity at all.
    if not rules.min_notional or quantity is None or request.reduce_only:
        return
    order_type = request.type
    reference: Decimal | None
    if order_type in _LIMIT_PRICE_TYPES:
        label, reference = "price", request.price
    elif order_type in _TRIGGER_TYPES:
        # A conditional market order fills around its trigger, not today's mark.
        label, reference = "triggerPrice", request.trigger_price
    elif order_type == OrderType.TRAILING_STOP_MARKET and request.activate_price is not None:
        label, reference = "activatePrice", request.activate_price
    else:
        label, reference = "mark price", mark_price
    if reference is None:
        raise PreflightError(
            "MARK_PRICE_UNKNOWN",
            f"{order_type} order on {rules.symbol} needs the mark price to check "
            f"MIN_NOTIONAL {format_decimal(rules.min_notional)}",
        )
    with localcontext(_EXACT):
        notional = reference * quantity
    if notional < rules.min_notional:
        raise PreflightError(
            "MIN_NOTIONAL",
            f"notional {format_decimal(notional)} ({label} {format_decimal(reference)} x qty "
            f"{format_decimal(quantity)}) is below {format_decimal(rules.min_notional)} "
            f"for {rules.symbol}",
        )


def _check_percent_price(
    request: OrderRequest, rules: SymbolRules, mark_price: Decimal | None
) -> None:
    price = request.price
    if mark_price is None or price is None or request.type not in _LIMIT_PRICE_TYPES:
        return
    with localcontext(_EXACT):
        cap = mark_price * rules.multiplier_up
        floor = mark_price * rules.multiplier_down
    if request.side == Side.BUY and rules.multiplier_up and price > cap:
        raise PreflightError(
            "PERCENT_PRICE",
            f"BUY price {format_decimal(price)} is above mark {format_decimal(mark_price)} x "
            f"{format_decimal(rules.multiplier_up)} = {format_decimal(cap)} for {rules.symbol}",
        )
    if request.side == Side.SELL and rules.multiplier_down and price < floor:
        raise PreflightError(
            "PERCENT_PRICE",
            f"SELL price {format_decimal(price)} is below mark {format_decimal(mark_price)} x "
            f"{format_decimal(rules.multiplier_down)} = {format_decimal(floor)} "
            f"for {rules.symbol}",
        )


# --------------------------------------------------------------------------- serialization


def format_decimal(value: Decimal) -> str:
    """Plain decimal text for the wire: no exponent, no trailing zeros, exact.

    ``Decimal("1E-5")`` -> ``"0.00001"``, ``Decimal("50000.10")`` -> ``"50000.1"``,
    ``Decimal("1E+2")`` -> ``"100"``. Floats are refused (their binary noise is exactly what
    this exists to keep off the wire).
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"format_decimal needs a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"cannot send a non-finite number: {value}")
    if value.is_zero():
        return "0"  # also turns "-0" and "0E-8" into "0"
    # format "f" writes every digit without rounding; normalize() would round to the
    # context's 28 digits, so trailing zeros are stripped by hand.
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _wire_enum(value: object) -> str:
    return str(value).upper()


def to_binance_params(request: OrderRequest) -> dict[str, str]:
    """Binance parameters for a (preflighted) request, every value a string.

    Conditional types go to the Algo Order API: ``algoType=CONDITIONAL``, ``triggerPrice``
    (never the legacy ``stopPrice``), ``activatePrice`` (not ``activationPrice``), and the
    client id as ``clientAlgoId``; regular types send it as ``newClientOrderId``. Defaults are
    omitted (reduceOnly/closePosition false, None values) except ``positionSide``, which is
    always sent (it must be sent in hedge mode and BOTH is right in one-way mode);
    ``priceProtect`` is always sent for conditional types as "TRUE"/"FALSE".
    """
    conditional = request.type in CONDITIONAL_TYPES
    params: dict[str, str] = {
        "symbol": request.symbol.upper(),
        "side": _wire_enum(request.side),
        "positionSide": _wire_enum(request.position_side),
        "type": _wire_enum(request.type),
    }
    if conditional:
        params["algoType"] = "CONDITIONAL"
    if request.time_in_force is not None:
        params["timeInForce"] = _wire_enum(request.time_in_force)
    for key, value in (
        ("quantity", request.quantity),
        ("price", request.price),
        ("triggerPrice", request.trigger_price),
        ("activatePrice", request.activate_price),
        ("callbackRate", request.callback_rate),
    ):
        if value is not None:
            params[key] = format_decimal(value)
    if request.working_type is not None:
        params["workingType"] = _wire_enum(request.working_type)
    # priceProtect is the one boolean Binance spells in capitals.
    if conditional or request.price_protect:
        params["priceProtect"] = "TRUE" if request.price_protect else "FALSE"
    if request.reduce_only:
        params["reduceOnly"] = "true"
    if request.close_position:
        params["closePosition"] = "true"
    if request.client_id is not None:
        params["clientAlgoId" if conditional else "newClientOrderId"] = request.client_id
    return params
