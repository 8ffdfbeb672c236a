"""Exchange filters, rounding, preflight and serialization (pure: no DB, no network)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execution.rules import (
    CLIENT_ID_PATTERN,
    SymbolRules,
    client_id_valid,
    format_decimal,
    parse_exchange_info,
    preflight,
    round_price,
    round_quantity,
    round_to_step,
    round_trigger,
    to_binance_params,
)
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

D = Decimal
SAMPLE = json.loads((Path(__file__).parent / "exchange_info_sample.json").read_text())
RULES = parse_exchange_info(SAMPLE)
BTC = RULES["BTCUSDT"]
ETH = RULES["ETHUSDT"]
XRP = RULES["XRPUSDT"]
MARK = D("41000")

# The autouse cache fixture in tests/conftest.py is function-scoped and harmless here.
HYPOTHESIS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def limit(**overrides: Any) -> OrderRequest:
    """A valid BTCUSDT LIMIT BUY (notional 492), changed by ``overrides``."""
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "quantity": D("0.012"),
        "price": D("41000"),
        "time_in_force": TimeInForce.GTC,
    }
    fields.update(overrides)
    return OrderRequest(**fields)


def stop_market(**overrides: Any) -> OrderRequest:
    """A valid BTCUSDT STOP_MARKET SELL closing the position, changed by ``overrides``."""
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.SELL,
        "type": OrderType.STOP_MARKET,
        "trigger_price": D("39000"),
        "close_position": True,
    }
    fields.update(overrides)
    return OrderRequest(**fields)


def market(**overrides: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.MARKET,
        "quantity": D("0.002"),
    }
    fields.update(overrides)
    return OrderRequest(**fields)


def trailing(**overrides: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.SELL,
        "type": OrderType.TRAILING_STOP_MARKET,
        "quantity": D("0.002"),
        "callback_rate": D("1"),
    }
    fields.update(overrides)
    return OrderRequest(**fields)


def check(
    request: OrderRequest,
    rules: SymbolRules = BTC,
    *,
    mark_price: Decimal | None = MARK,
    dual_side: bool = False,
) -> OrderRequest:
    return preflight(request, rules, mark_price=mark_price, dual_side=dual_side)


def sample_with(symbol: str, mutate: Any) -> dict[str, Any]:
    """A deep copy of the sample payload with ``mutate(row)`` applied to ``symbol``'s row."""
    payload = copy.deepcopy(SAMPLE)
    row = next(r for r in payload["symbols"] if r["symbol"] == symbol)
    mutate(row)
    return payload


def filter_of(row: dict[str, Any], filter_type: str) -> dict[str, Any]:
    return next(f for f in row["filters"] if f["filterType"] == filter_type)


# ----------------------------------------------------------------------------- parsing


def test_parse_exchange_info_reads_every_btcusdt_field_exactly() -> None:
    rules = parse_exchange_info(SAMPLE)["BTCUSDT"]

    assert rules == SymbolRules(
        symbol="BTCUSDT",
        status="TRADING",
        base_asset="BTC",
        quote_asset="USDT",
        margin_asset="USDT",
        price_precision=2,
        quantity_precision=3,
        tick_size=D("0.10"),
        min_price=D("556.80"),
        max_price=D("4529764"),
        step_size=D("0.001"),
        min_qty=D("0.001"),
        max_qty=D("1000"),
        market_step_size=D("0.001"),
        market_min_qty=D("0.001"),
        market_max_qty=D("120"),
        min_notional=D("50"),
        multiplier_up=D("1.0500"),
        multiplier_down=D("0.9500"),
        max_num_orders=200,
        trigger_protect=D("0.0500"),
        order_types=frozenset(
            {
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            }
        ),
        time_in_force=frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"}),
    )


def test_parse_exchange_info_returns_all_three_sample_symbols_keyed_by_name() -> None:
    assert sorted(RULES) == ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
    assert (ETH.tick_size, ETH.min_notional, ETH.market_max_qty) == (D("0.01"), D("20"), D("2000"))


def test_parse_exchange_info_reads_xrpusdt_filters() -> None:
    assert (XRP.tick_size, XRP.min_price, XRP.max_price) == (D("0.0001"), D("0.0143"), D("100000"))
    assert (XRP.step_size, XRP.min_qty, XRP.market_max_qty) == (D("0.1"), D("0.1"), D("2000000"))
    assert (XRP.min_notional, XRP.price_precision, XRP.quantity_precision) == (D("5"), 4, 1)


def test_parse_exchange_info_ignores_unknown_filters_and_values_are_decimals() -> None:
    payload = sample_with("BTCUSDT", lambda row: row["filters"].append({"filterType": "NEW_ONE"}))

    rules = parse_exchange_info(payload)["BTCUSDT"]

    assert rules == BTC
    decimals = [f.name for f in dataclasses.fields(SymbolRules) if f.type == "Decimal"]
    assert all(type(getattr(rules, name)) is Decimal for name in decimals)


def test_parse_exchange_info_missing_filter_disables_its_rules() -> None:
    def drop_min_notional_and_percent(row: dict[str, Any]) -> None:
        row["filters"] = [
            f for f in row["filters"] if f["filterType"] not in {"MIN_NOTIONAL", "PERCENT_PRICE"}
        ]

    rules = parse_exchange_info(sample_with("BTCUSDT", drop_min_notional_and_percent))["BTCUSDT"]

    assert (rules.min_notional, rules.multiplier_up, rules.multiplier_down) == (D(0), D(0), D(0))


@pytest.mark.parametrize("tick", [None, "0", "0.00"])
def test_parse_exchange_info_missing_or_zero_tick_size_falls_back_to_price_precision(
    tick: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    def set_tick(row: dict[str, Any]) -> None:
        price_filter = filter_of(row, "PRICE_FILTER")
        if tick is None:
            del price_filter["tickSize"]
        else:
            price_filter["tickSize"] = tick

    with caplog.at_level(logging.WARNING, logger="execution.rules"):
        rules = parse_exchange_info(sample_with("XRPUSDT", set_tick))["XRPUSDT"]

    assert rules.tick_size == D("0.0001")  # pricePrecision 4
    assert [r.getMessage() for r in caplog.records] == [
        "XRPUSDT: PRICE_FILTER.tickSize is missing or 0; falling back to 10**-4 = 0.0001 "
        "(from pricePrecision)"
    ]


@pytest.mark.parametrize(
    ("filter_type", "attribute"),
    [("LOT_SIZE", "step_size"), ("MARKET_LOT_SIZE", "market_step_size")],
)
def test_parse_exchange_info_zero_step_size_falls_back_to_quantity_precision(
    filter_type: str, attribute: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload = sample_with("ETHUSDT", lambda row: filter_of(row, filter_type).update(stepSize="0"))

    with caplog.at_level(logging.WARNING, logger="execution.rules"):
        rules = parse_exchange_info(payload)["ETHUSDT"]

    assert getattr(rules, attribute) == D("0.001")  # quantityPrecision 3
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "ETHUSDT" in message
    assert f"{filter_type}.stepSize" in message
    assert "0.001" in message


def test_parse_exchange_info_logs_nothing_when_every_step_is_present(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="execution.rules"):
        parse_exchange_info(SAMPLE)

    assert caplog.records == []


@pytest.mark.parametrize("payload", [{}, {"symbols": None}, {"symbols": "BTCUSDT"}])
def test_parse_exchange_info_without_symbols_list_raises(payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'symbols' is missing or not a list"):
        parse_exchange_info(payload)


@pytest.mark.parametrize(
    ("filter_type", "key", "raw"),
    [
        ("PRICE_FILTER", "tickSize", "abc"),
        ("LOT_SIZE", "minQty", "1,5"),
        ("MIN_NOTIONAL", "notional", True),
        ("PERCENT_PRICE", "multiplierUp", "1.05x"),
        ("MARKET_LOT_SIZE", "maxQty", "-5"),
        ("PRICE_FILTER", "maxPrice", "Infinity"),
    ],
)
def test_parse_exchange_info_bad_filter_value_raises_naming_symbol_and_field(
    filter_type: str, key: str, raw: Any
) -> None:
    payload = sample_with("ETHUSDT", lambda row: filter_of(row, filter_type).update({key: raw}))

    with pytest.raises(ValueError, match=rf"^ETHUSDT: {filter_type}\.{key} ") as excinfo:
        parse_exchange_info(payload)

    assert repr(raw) in str(excinfo.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("status", None, "ETHUSDT: field 'status' is missing"),
        ("pricePrecision", "two", "ETHUSDT: field 'pricePrecision' is not an integer: 'two'"),
        ("quantityPrecision", True, "ETHUSDT: field 'quantityPrecision' is missing"),
        ("filters", None, "ETHUSDT: field 'filters' is missing or not a list"),
        ("orderTypes", None, "ETHUSDT: field 'orderTypes' is missing"),
        ("triggerProtect", "x", "ETHUSDT: triggerProtect is not a number: 'x'"),
    ],
)
def test_parse_exchange_info_bad_symbol_field_raises_naming_symbol_and_field(
    field: str, value: Any, expected: str
) -> None:
    def set_field(row: dict[str, Any]) -> None:
        if value is None:
            del row[field]
        else:
            row[field] = value

    with pytest.raises(ValueError, match=re.escape(expected)):
        parse_exchange_info(sample_with("ETHUSDT", set_field))


def test_parse_exchange_info_row_without_symbol_raises_naming_its_index() -> None:
    payload = copy.deepcopy(SAMPLE)
    del payload["symbols"][1]["symbol"]

    with pytest.raises(ValueError, match=re.escape("symbols[1]: field 'symbol'")):
        parse_exchange_info(payload)


@pytest.mark.parametrize(
    ("status", "tradable"),
    [("TRADING", True), ("PENDING_TRADING", False), ("SETTLING", False), ("CLOSE", False)],
)
def test_symbol_rules_tradable_only_in_status_trading(status: str, tradable: bool) -> None:
    assert dataclasses.replace(BTC, status=status).tradable is tradable


# ----------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("value", "step", "up", "origin", "expected"),
    [
        ("41000.05", "0.10", False, "0", "41000.0"),
        ("41000.05", "0.10", True, "0", "41000.1"),
        ("41000.10", "0.10", True, "0", "41000.1"),  # already on the grid: unchanged
        ("41000.10", "0.10", False, "0", "41000.1"),
        # Counted from the minimum, as Binance does: the grid is 0.01, 0.06, 0.11, ...
        ("10.08", "0.05", False, "0.01", "10.06"),
        ("10.08", "0.05", True, "0.01", "10.11"),
        ("10.06", "0.05", False, "0.01", "10.06"),
        # Below the origin the floor/ceiling still hold (Decimal divmod truncates toward 0).
        ("0.0005", "0.002", False, "0.003", "-0.001"),
        ("0.0005", "0.002", True, "0.003", "0.001"),
        ("7.3", "0", False, "0", "7.3"),  # step 0: filter disabled
        (
            "123456789012345678901234567890.123456789",
            "0.001",
            False,
            "0",
            "123456789012345678901234567890.123",
        ),
    ],
)
def test_round_to_step_snaps_to_the_grid_from_origin(
    value: str, step: str, up: bool, origin: str, expected: str
) -> None:
    assert round_to_step(D(value), D(step), up=up, origin=D(origin)) == D(expected)


def test_round_to_step_negative_step_raises() -> None:
    with pytest.raises(ValueError, match="step must be >= 0"):
        round_to_step(D("1"), D("-0.1"), up=False)


@pytest.mark.parametrize(
    ("side", "order_type", "expected"),
    [
        (Side.BUY, OrderType.LIMIT, "41000.0"),
        (Side.SELL, OrderType.LIMIT, "41000.1"),
        (Side.BUY, OrderType.STOP, "41000.0"),
        (Side.SELL, OrderType.STOP, "41000.1"),
        (Side.BUY, OrderType.TAKE_PROFIT, "41000.0"),
        (Side.SELL, OrderType.TAKE_PROFIT, "41000.1"),
        (Side.BUY, OrderType.TRAILING_STOP_MARKET, "41000.0"),  # activation price
        (Side.SELL, OrderType.TRAILING_STOP_MARKET, "41000.1"),
    ],
)
def test_round_price_buys_round_down_and_sells_round_up(
    side: Side, order_type: OrderType, expected: str
) -> None:
    assert round_price(D("41000.05"), BTC, side=side, order_type=order_type) == D(expected)


@pytest.mark.parametrize(
    ("side", "order_type", "expected"),
    [
        (Side.SELL, OrderType.STOP_MARKET, "41000.1"),  # a long's stop triggers no later
        (Side.SELL, OrderType.STOP, "41000.1"),
        (Side.BUY, OrderType.STOP_MARKET, "41000.0"),  # a short's stop triggers no later
        (Side.BUY, OrderType.STOP, "41000.0"),
        (Side.SELL, OrderType.TAKE_PROFIT_MARKET, "41000.0"),
        (Side.SELL, OrderType.TAKE_PROFIT, "41000.0"),
        (Side.BUY, OrderType.TAKE_PROFIT_MARKET, "41000.1"),
        (Side.BUY, OrderType.TAKE_PROFIT, "41000.1"),
    ],
)
def test_round_trigger_rounds_so_the_order_triggers_no_later(
    side: Side, order_type: OrderType, expected: str
) -> None:
    assert round_trigger(D("41000.05"), BTC, side=side, order_type=order_type) == D(expected)


@pytest.mark.parametrize(
    "order_type", [OrderType.MARKET, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET]
)
def test_round_price_for_a_type_without_limit_price_raises(order_type: OrderType) -> None:
    with pytest.raises(ValueError, match="carry no limit price"):
        round_price(D("41000"), BTC, side=Side.BUY, order_type=order_type)


@pytest.mark.parametrize(
    "order_type", [OrderType.LIMIT, OrderType.MARKET, OrderType.TRAILING_STOP_MARKET]
)
def test_round_trigger_for_a_type_without_trigger_raises(order_type: OrderType) -> None:
    with pytest.raises(ValueError, match="carry no trigger price"):
        round_trigger(D("41000"), BTC, side=Side.BUY, order_type=order_type)


@pytest.mark.parametrize(
    ("rules", "value", "market", "expected"),
    [
        (BTC, "0.0019", False, "0.001"),
        (BTC, "0.0019", True, "0.001"),
        (BTC, "0.0009", False, "0"),
        (XRP, "12.39", False, "12.3"),
        (XRP, "12.39", True, "12.3"),
        (XRP, "100", False, "100"),
        (ETH, "1.23456", False, "1.234"),
    ],
)
def test_round_quantity_always_rounds_down(
    rules: SymbolRules, value: str, market: bool, expected: str
) -> None:
    assert round_quantity(D(value), rules, market=market) == D(expected)


def test_round_quantity_uses_market_lot_size_step_only_for_market() -> None:
    rules = dataclasses.replace(BTC, market_step_size=D("0.01"), market_min_qty=D("0.01"))

    assert round_quantity(D("0.019"), rules, market=True) == D("0.01")
    assert round_quantity(D("0.019"), rules, market=False) == D("0.019")


def test_round_quantity_never_returns_a_negative_quantity() -> None:
    rules = dataclasses.replace(BTC, step_size=D("0.002"), min_qty=D("0.003"))

    assert round_quantity(D("0.0005"), rules, market=False) == D(0)


# ----------------------------------------------------------------------------- preflight: pass


def test_preflight_limit_rounds_price_and_quantity_into_a_new_request() -> None:
    request = limit(price=D("41000.07"), quantity=D("0.0125"), client_id="bot-1:sig-9")

    checked = check(request)

    assert checked == limit(price=D("41000.0"), quantity=D("0.012"), client_id="bot-1:sig-9")
    assert request.price == D("41000.07")  # the input is untouched
    assert request.quantity == D("0.0125")


def test_preflight_sell_limit_rounds_price_up() -> None:
    checked = check(limit(side=Side.SELL, price=D("41000.01")))

    assert checked.price == D("41000.1")


def test_preflight_stop_market_close_position_rounds_trigger_up_for_sell() -> None:
    checked = check(stop_market(trigger_price=D("39000.04")))

    assert checked == stop_market(trigger_price=D("39000.1"))


def test_preflight_take_profit_limit_rounds_trigger_and_price() -> None:
    request = OrderRequest(
        symbol="BTCUSDT",
        side=Side.SELL,
        type=OrderType.TAKE_PROFIT,
        quantity=D("0.0109"),
        price=D("42000.01"),
        trigger_price=D("42000.09"),
        reduce_only=True,
    )

    checked = check(request)

    assert (checked.price, checked.trigger_price, checked.quantity) == (
        D("42000.1"),
        D("42000.0"),
        D("0.010"),
    )


def test_preflight_market_uses_market_lot_size_and_mark_price() -> None:
    checked = check(market(quantity=D("0.0029")), mark_price=D("41000"))

    assert checked == market(quantity=D("0.002"))


def test_preflight_trailing_stop_rounds_activation_price_and_keeps_callback_rate() -> None:
    checked = check(trailing(activate_price=D("43000.01"), callback_rate=D("0.1")))

    assert (checked.activate_price, checked.callback_rate) == (D("43000.1"), D("0.1"))


@pytest.mark.parametrize("rate", ["0.1", "10"])
def test_preflight_callback_rate_bounds_are_inclusive(rate: str) -> None:
    assert check(trailing(callback_rate=D(rate))).callback_rate == D(rate)


def test_preflight_hedge_mode_accepts_long_and_short_position_sides() -> None:
    checked = check(limit(position_side=PositionSide.LONG), dual_side=True)

    assert checked.position_side is PositionSide.LONG


def test_preflight_hedge_close_position_sell_long_is_accepted() -> None:
    request = stop_market(position_side=PositionSide.LONG)

    assert check(request, dual_side=True) == request


def test_preflight_coerces_valid_raw_strings_to_enums_and_canonical_symbol() -> None:
    request = limit(symbol="btcusdt", side="SELL", type="LIMIT", time_in_force="GTC")

    checked = check(request)

    assert checked.symbol == "BTCUSDT"
    assert checked.side is Side.SELL
    assert checked.type is OrderType.LIMIT
    assert checked.time_in_force is TimeInForce.GTC


@pytest.mark.parametrize(
    "request_",
    [
        limit(reduce_only=True, quantity=D("0.001")),  # notional 41 < 50 but reduce-only
        stop_market(),  # closePosition: no quantity, exempt
    ],
)
def test_preflight_reduce_only_and_close_position_are_exempt_from_min_notional(
    request_: OrderRequest,
) -> None:
    assert check(request_) is not None


def test_preflight_percent_price_bounds_are_inclusive() -> None:
    # mark 41000: BUY cap 41000 x 1.05 = 43050, SELL floor 41000 x 0.95 = 38950.
    assert check(limit(price=D("43050"))).price == D("43050")
    assert check(limit(side=Side.SELL, price=D("38950"))).price == D("38950")


def test_preflight_without_mark_price_skips_percent_price_for_limit() -> None:
    assert check(limit(price=D("60000")), mark_price=None).price == D("60000")


# ----------------------------------------------------------------------------- preflight: reject


REJECTIONS: list[tuple[str, OrderRequest, dict[str, Any], str, list[str]]] = [
    # (id, request, preflight kwargs, rule, fragments the detail must name)
    ("symbol_mismatch", limit(symbol="ETHUSDT"), {}, "SYMBOL_MISMATCH", ["ETHUSDT", "BTCUSDT"]),
    (
        "not_trading",
        limit(),
        {"rules": dataclasses.replace(BTC, status="SETTLING")},
        "SYMBOL_NOT_TRADING",
        ["BTCUSDT", "SETTLING"],
    ),
    (
        "order_type_not_listed",
        stop_market(),
        {"rules": dataclasses.replace(BTC, order_types=frozenset({"LIMIT", "MARKET"}))},
        "ORDER_TYPE",
        ["STOP_MARKET", "LIMIT", "BTCUSDT"],
    ),
    ("raw_type_unknown", limit(type="LIMIT_MAKER"), {}, "ORDER_TYPE", ["LIMIT_MAKER"]),
    ("side_lowercase", limit(side="buy"), {}, "ENUM", ["side", "'buy'", "BUY", "SELL"]),
    ("tif_unknown", limit(time_in_force="GTE"), {}, "ENUM", ["time_in_force", "'GTE'"]),
    (
        "working_type_unknown",
        stop_market(working_type="LAST_PRICE"),
        {},
        "ENUM",
        ["working_type", "'LAST_PRICE'", "MARK_PRICE"],
    ),
    (
        "position_side_unknown",
        limit(position_side="NONE"),
        {},
        "ENUM",
        ["position_side", "'NONE'"],
    ),
    (
        "float_quantity",
        limit(quantity=0.1),
        {},
        "NOT_DECIMAL",
        ["quantity", "0.1", "float"],
    ),
    ("nan_price", limit(price=D("NaN")), {}, "NOT_DECIMAL", ["price", "NaN"]),
    ("float_mark", limit(), {"mark_price": 41000.0}, "NOT_DECIMAL", ["mark_price", "41000.0"]),
    (
        "tif_not_listed",
        limit(time_in_force=TimeInForce.IOC),
        {"rules": dataclasses.replace(BTC, time_in_force=frozenset({"GTC"}))},
        "TIME_IN_FORCE",
        ["IOC", "GTC", "BTCUSDT"],
    ),
    ("limit_no_tif", limit(time_in_force=None), {}, "MANDATORY_PARAM", ["LIMIT", "timeInForce"]),
    ("limit_no_price", limit(price=None), {}, "MANDATORY_PARAM", ["LIMIT", "price"]),
    ("limit_no_quantity", limit(quantity=None), {}, "MANDATORY_PARAM", ["LIMIT", "quantity"]),
    ("market_no_quantity", market(quantity=None), {}, "MANDATORY_PARAM", ["MARKET", "quantity"]),
    (
        "stop_no_price_no_trigger",
        OrderRequest("BTCUSDT", Side.SELL, OrderType.STOP, quantity=D("0.01")),
        {},
        "MANDATORY_PARAM",
        ["STOP", "price, triggerPrice"],
    ),
    (
        "stop_market_no_trigger",
        stop_market(trigger_price=None),
        {},
        "MANDATORY_PARAM",
        ["STOP_MARKET", "triggerPrice"],
    ),
    (
        "take_profit_market_no_quantity_no_close",
        OrderRequest("BTCUSDT", Side.SELL, OrderType.TAKE_PROFIT_MARKET, trigger_price=D("45000")),
        {},
        "MANDATORY_PARAM",
        ["TAKE_PROFIT_MARKET", "quantity"],
    ),
    (
        "trailing_no_callback",
        trailing(callback_rate=None),
        {},
        "MANDATORY_PARAM",
        ["TRAILING_STOP_MARKET", "callbackRate"],
    ),
    ("trailing_no_quantity", trailing(quantity=None), {}, "MANDATORY_PARAM", ["quantity"]),
    (
        "callback_too_small",
        trailing(callback_rate=D("0.05")),
        {},
        "MANDATORY_PARAM",
        ["callbackRate 0.05", "[0.1, 10]"],
    ),
    (
        "callback_too_large",
        trailing(callback_rate=D("10.5")),
        {},
        "MANDATORY_PARAM",
        ["callbackRate 10.5"],
    ),
    (
        "gtd_without_good_till_date",
        limit(time_in_force=TimeInForce.GTD),
        {},
        "MANDATORY_PARAM",
        ["GTD", "goodTillDate"],
    ),
    (
        "market_with_price",
        market(price=D("41000")),
        {},
        "PARAM_NOT_REQUIRED",
        ["MARKET", "price 41000"],
    ),
    (
        "limit_with_trigger",
        limit(trigger_price=D("40000")),
        {},
        "PARAM_NOT_REQUIRED",
        ["LIMIT", "triggerPrice 40000"],
    ),
    (
        "limit_with_callback",
        limit(callback_rate=D("1")),
        {},
        "PARAM_NOT_REQUIRED",
        ["callbackRate 1"],
    ),
    (
        "limit_with_working_type",
        limit(working_type=WorkingType.MARK_PRICE),
        {},
        "PARAM_NOT_REQUIRED",
        ["workingType MARK_PRICE"],
    ),
    (
        "hedge_with_both",
        limit(),
        {"dual_side": True},
        "POSITION_SIDE",
        ["hedge mode", "LONG or SHORT", "BOTH"],
    ),
    (
        "one_way_with_long",
        limit(position_side=PositionSide.LONG),
        {},
        "POSITION_SIDE",
        ["one-way mode", "BOTH", "LONG"],
    ),
    (
        "reduce_only_in_hedge",
        limit(position_side=PositionSide.SHORT, side=Side.BUY, reduce_only=True),
        {"dual_side": True},
        "REDUCE_ONLY_IN_HEDGE",
        ["reduceOnly", "SHORT"],
    ),
    (
        "close_position_on_limit",
        limit(close_position=True),
        {},
        "CLOSE_POSITION",
        ["STOP_MARKET or TAKE_PROFIT_MARKET", "LIMIT"],
    ),
    (
        "close_position_with_quantity",
        stop_market(quantity=D("0.01")),
        {},
        "CLOSE_POSITION",
        ["quantity 0.01"],
    ),
    (
        "close_position_with_reduce_only",
        stop_market(reduce_only=True),
        {},
        "CLOSE_POSITION",
        ["reduceOnly"],
    ),
    (
        "close_position_buy_long_in_hedge",
        stop_market(side=Side.BUY, position_side=PositionSide.LONG),
        {"dual_side": True},
        "CLOSE_POSITION",
        ["BUY LONG"],
    ),
    ("client_id_space", limit(client_id="bot 1"), {}, "CLIENT_ID", ["'bot 1'"]),
    ("client_id_37_chars", limit(client_id="a" * 37), {}, "CLIENT_ID", ["a" * 37, "36"]),
    ("client_id_empty", limit(client_id=""), {}, "CLIENT_ID", ["''"]),
    ("client_id_newline", limit(client_id="abc\n"), {}, "CLIENT_ID", ["'abc\\n'"]),
    ("quantity_zero", limit(quantity=D("0")), {}, "NON_POSITIVE", ["quantity 0"]),
    ("quantity_negative", limit(quantity=D("-0.01")), {}, "NON_POSITIVE", ["quantity -0.01"]),
    ("price_zero", limit(price=D("0.00")), {}, "NON_POSITIVE", ["price 0"]),
    (
        "trigger_negative",
        stop_market(trigger_price=D("-5")),
        {},
        "NON_POSITIVE",
        ["trigger_price -5"],
    ),
    (
        "activate_zero",
        trailing(activate_price=D("0")),
        {},
        "NON_POSITIVE",
        ["activate_price 0"],
    ),
    ("mark_zero", limit(), {"mark_price": D("0")}, "NON_POSITIVE", ["mark_price 0"]),
    (
        "quantity_rounds_to_zero",
        limit(quantity=D("0.0004")),
        {},
        "LOT_SIZE",
        ["quantity 0.0004", "LOT_SIZE step 0.001", "BTCUSDT"],
    ),
    (
        "market_quantity_rounds_to_zero",
        market(quantity=D("0.0009")),
        {},
        "LOT_SIZE",
        ["quantity 0.0009", "MARKET_LOT_SIZE step 0.001"],
    ),
    (
        "price_below_min",
        limit(price=D("500"), quantity=D("1")),
        {"mark_price": None},
        "PRICE_FILTER",
        ["price 500", "minPrice 556.8", "BTCUSDT"],
    ),
    (
        "price_above_max",
        limit(side=Side.SELL, price=D("4529764.01")),
        {"mark_price": None},
        "PRICE_FILTER",
        ["price 4529764.1", "maxPrice 4529764"],
    ),
    (
        "trigger_below_min",
        stop_market(side=Side.BUY, trigger_price=D("556.79")),  # BUY stop rounds down
        {},
        "PRICE_FILTER",
        ["triggerPrice 556.7", "minPrice 556.8"],
    ),
    (
        "price_rounds_to_zero_without_min",
        limit(price=D("0.05")),
        {"rules": dataclasses.replace(BTC, min_price=D(0)), "mark_price": None},
        "PRICE_FILTER",
        ["price rounds to 0", "tickSize 0.1"],
    ),
    (
        "quantity_below_min",
        limit(quantity=D("0.0049")),
        {"rules": dataclasses.replace(BTC, min_qty=D("0.005"), min_notional=D(0))},
        "LOT_SIZE",
        ["quantity 0.004", "minQty 0.005"],
    ),
    (
        "quantity_above_max",
        limit(quantity=D("1000.001")),
        {},
        "LOT_SIZE",
        ["quantity 1000.001", "maxQty 1000"],
    ),
    (
        "market_quantity_above_max",
        market(quantity=D("120.001")),
        {},
        "MARKET_LOT_SIZE",
        ["quantity 120.001", "maxQty 120"],
    ),
    (
        "market_quantity_below_min",
        market(quantity=D("0.004")),
        {"rules": dataclasses.replace(BTC, market_min_qty=D("0.005"))},
        "MARKET_LOT_SIZE",
        ["quantity 0.004", "minQty 0.005"],
    ),
    (
        "market_without_mark_price",
        market(),
        {"mark_price": None},
        "MARK_PRICE_UNKNOWN",
        ["MARKET", "BTCUSDT", "MIN_NOTIONAL 50"],
    ),
    (
        "trailing_without_activation_or_mark",
        trailing(),
        {"mark_price": None},
        "MARK_PRICE_UNKNOWN",
        ["TRAILING_STOP_MARKET"],
    ),
    (
        "limit_notional",
        limit(quantity=D("0.001")),
        {},
        "MIN_NOTIONAL",
        ["notional 41 ", "(price 41000 x qty 0.001)", "below 50", "BTCUSDT"],
    ),
    (
        "market_notional_uses_mark",
        market(quantity=D("0.001")),
        {"mark_price": D("30000")},
        "MIN_NOTIONAL",
        ["notional 30 ", "(mark price 30000 x qty 0.001)", "below 50"],
    ),
    (
        "stop_market_notional_uses_trigger",
        stop_market(close_position=False, quantity=D("0.001"), trigger_price=D("40000")),
        {"mark_price": D("90000")},
        "MIN_NOTIONAL",
        ["notional 40 ", "(triggerPrice 40000 x qty 0.001)"],
    ),
    (
        "trailing_notional_uses_activation",
        trailing(quantity=D("0.001"), activate_price=D("45000")),
        {"mark_price": D("90000")},
        "MIN_NOTIONAL",
        ["(activatePrice 45000 x qty 0.001)"],
    ),
    (
        "xrp_notional",
        OrderRequest(
            "XRPUSDT",
            Side.BUY,
            OrderType.LIMIT,
            quantity=D("9.9"),
            price=D("0.5"),
            time_in_force=TimeInForce.GTC,
        ),
        {"rules": XRP, "mark_price": D("0.5")},
        "MIN_NOTIONAL",
        ["notional 4.95 ", "(price 0.5 x qty 9.9)", "below 5", "XRPUSDT"],
    ),
    (
        "buy_above_percent_price_cap",
        limit(price=D("43050.1")),
        {},
        "PERCENT_PRICE",
        ["BUY price 43050.1", "mark 41000 x 1.05 = 43050", "BTCUSDT"],
    ),
    (
        "sell_below_percent_price_floor",
        limit(side=Side.SELL, price=D("38949.81")),  # rounds up to 38949.9
        {},
        "PERCENT_PRICE",
        ["SELL price 38949.9", "mark 41000 x 0.95 = 38950"],
    ),
    (
        "stop_limit_price_percent_price",
        OrderRequest(
            "BTCUSDT",
            Side.BUY,
            OrderType.STOP,
            quantity=D("0.01"),
            price=D("44000"),
            trigger_price=D("43000"),
        ),
        {},
        "PERCENT_PRICE",
        ["BUY price 44000", "43050"],
    ),
]


@pytest.mark.parametrize(
    ("request_", "kwargs", "rule", "fragments"),
    [pytest.param(*row[1:], id=row[0]) for row in REJECTIONS],
)
def test_preflight_rejects_with_rule_code_and_values_in_detail(
    request_: OrderRequest, kwargs: dict[str, Any], rule: str, fragments: list[str]
) -> None:
    kwargs = {"rules": BTC, "mark_price": D("41000"), "dual_side": False, **kwargs}
    rules = kwargs.pop("rules")

    with pytest.raises(PreflightError) as excinfo:
        preflight(request_, rules, **kwargs)

    assert excinfo.value.rule == rule
    for fragment in fragments:
        assert fragment in excinfo.value.detail
    assert str(excinfo.value) == f"{rule}: {excinfo.value.detail}"


def test_preflight_every_rule_code_has_a_rejection_case() -> None:
    assert {row[3] for row in REJECTIONS} == {
        "SYMBOL_MISMATCH",
        "SYMBOL_NOT_TRADING",
        "ORDER_TYPE",
        "ENUM",
        "NOT_DECIMAL",
        "TIME_IN_FORCE",
        "MANDATORY_PARAM",
        "PARAM_NOT_REQUIRED",
        "POSITION_SIDE",
        "REDUCE_ONLY_IN_HEDGE",
        "CLOSE_POSITION",
        "CLIENT_ID",
        "NON_POSITIVE",
        "LOT_SIZE",
        "MARKET_LOT_SIZE",
        "PRICE_FILTER",
        "MARK_PRICE_UNKNOWN",
        "MIN_NOTIONAL",
        "PERCENT_PRICE",
    }


def test_preflight_reports_the_earliest_rule_when_several_fail() -> None:
    request = limit(client_id="bad id", quantity=D("0"), time_in_force=None)

    with pytest.raises(PreflightError) as excinfo:
        check(request, dataclasses.replace(BTC, status="CLOSE"))

    assert excinfo.value.rule == "SYMBOL_NOT_TRADING"


def test_preflight_min_notional_is_checked_on_the_rounded_quantity() -> None:
    # 0.00129 x 41000 = 52.89 would pass; the quantity actually sent is 0.001 (notional 41).
    with pytest.raises(PreflightError) as excinfo:
        check(limit(quantity=D("0.00129")))

    assert excinfo.value.rule == "MIN_NOTIONAL"
    assert "qty 0.001)" in excinfo.value.detail


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("0.0125", "0.012"), ("0.012", "0.012"), ("1.9999", "1.999"), ("999.9999", "999.999")],
)
def test_preflight_never_returns_more_quantity_than_requested(quantity: str, expected: str) -> None:
    checked = check(limit(quantity=D(quantity)))

    assert checked.quantity == D(expected)
    assert checked.quantity is not None
    assert checked.quantity <= D(quantity)


# ----------------------------------------------------------------------------- client id


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("x" * 36, True),
        ("bot-7_sig.42:entry/1", True),
        ("ABCxyz019", True),
        ("", False),
        ("x" * 37, False),
        ("has space", False),
        ("trailing\n", False),
        ("ünï", False),
        ("semi;colon", False),
    ],
)
def test_client_id_valid_follows_binance_pattern(value: str, valid: bool) -> None:
    assert client_id_valid(value) is valid
    assert (CLIENT_ID_PATTERN.fullmatch(value) is not None) is valid


# ----------------------------------------------------------------------------- serialization


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (D("1E-5"), "0.00001"),
        (D("50000.10"), "50000.1"),
        (D("100"), "100"),
        (D("1E+2"), "100"),
        (D("100.000"), "100"),
        (D("0E-8"), "0"),
        (D("-0"), "0"),
        (D("-1.50"), "-1.5"),
        (D("0.1") + D("0.2"), "0.3"),
        (D("3") * D("0.1"), "0.3"),
        (D("123456789012345678901234567890.123456789"), "123456789012345678901234567890.123456789"),
    ],
)
def test_format_decimal_writes_plain_exact_text(value: Decimal, expected: str) -> None:
    assert format_decimal(value) == expected


def test_format_decimal_refuses_floats() -> None:
    with pytest.raises(
        TypeError, match=re.escape("needs a Decimal, got float 0.30000000000000004")
    ):
        format_decimal(0.1 + 0.2)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_format_decimal_refuses_non_finite(value: Decimal) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        format_decimal(value)


def test_to_binance_params_limit_uses_new_client_order_id_and_drops_defaults() -> None:
    params = to_binance_params(limit(price=D("41000.10"), client_id="bot-1"))

    assert params == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "positionSide": "BOTH",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.012",
        "price": "41000.1",
        "newClientOrderId": "bot-1",
    }


def test_to_binance_params_stop_market_goes_to_algo_api_with_trigger_price() -> None:
    request = stop_market(
        trigger_price=D("39000.10"),
        working_type=WorkingType.MARK_PRICE,
        price_protect=True,
        client_id="bot-1-sl",
        position_side=PositionSide.LONG,
    )

    params = to_binance_params(request)

    assert params == {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "positionSide": "LONG",
        "type": "STOP_MARKET",
        "algoType": "CONDITIONAL",
        "triggerPrice": "39000.1",
        "workingType": "MARK_PRICE",
        "priceProtect": "TRUE",
        "closePosition": "true",
        "clientAlgoId": "bot-1-sl",
    }


def test_to_binance_params_take_profit_sends_reduce_only_and_price_protect_false() -> None:
    request = OrderRequest(
        symbol="ethusdt",
        side=Side.SELL,
        type=OrderType.TAKE_PROFIT,
        quantity=D("1E-3"),
        price=D("3500.00"),
        trigger_price=D("3499.50"),
        reduce_only=True,
    )

    params = to_binance_params(request)

    assert params == {
        "symbol": "ETHUSDT",
        "side": "SELL",
        "positionSide": "BOTH",
        "type": "TAKE_PROFIT",
        "algoType": "CONDITIONAL",
        "quantity": "0.001",
        "price": "3500",
        "triggerPrice": "3499.5",
        "priceProtect": "FALSE",
        "reduceOnly": "true",
    }
    assert "stopPrice" not in params


def test_to_binance_params_trailing_stop_uses_activate_price_and_callback_rate() -> None:
    params = to_binance_params(trailing(activate_price=D("43000.0"), callback_rate=D("0.50")))

    assert params["activatePrice"] == "43000"
    assert params["callbackRate"] == "0.5"
    assert "activationPrice" not in params


@pytest.mark.parametrize("order_type", list(OrderType))
def test_to_binance_params_client_id_key_depends_on_algo_or_regular(
    order_type: OrderType,
) -> None:
    request = OrderRequest("BTCUSDT", Side.BUY, order_type, quantity=D("0.01"), client_id="id-1")

    params = to_binance_params(request)

    if order_type in CONDITIONAL_TYPES:
        assert (params["clientAlgoId"], params["algoType"]) == ("id-1", "CONDITIONAL")
        assert "newClientOrderId" not in params
    else:
        assert params["newClientOrderId"] == "id-1"
        assert "clientAlgoId" not in params
        assert "algoType" not in params
        assert "priceProtect" not in params


def test_to_binance_params_uppercases_raw_enum_strings_and_symbol() -> None:
    request = OrderRequest("btcusdt", "sell", "market", quantity=D("0.01"))  # type: ignore[arg-type]

    params = to_binance_params(request)

    assert (params["symbol"], params["side"], params["type"]) == ("BTCUSDT", "SELL", "MARKET")


def test_to_binance_params_false_booleans_and_none_are_omitted() -> None:
    params = to_binance_params(market(reduce_only=False, close_position=False))

    assert params == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "positionSide": "BOTH",
        "type": "MARKET",
        "quantity": "0.002",
    }


def test_to_binance_params_after_preflight_has_no_exponent_or_float_noise() -> None:
    request = OrderRequest(
        "XRPUSDT",
        Side.BUY,
        OrderType.LIMIT,
        quantity=D("30.000000000000004"),
        price=D("0.1") + D("0.2"),
        time_in_force=TimeInForce.GTC,
    )

    params = to_binance_params(check(request, XRP, mark_price=D("0.3")))

    assert (params["quantity"], params["price"]) == ("30", "0.3")


# ----------------------------------------------------------------------------- properties

quantities = st.decimals(
    min_value=D("0"), max_value=D("5000000"), places=8, allow_nan=False, allow_infinity=False
)
prices = st.decimals(
    min_value=D("0.00000001"),
    max_value=D("5000000"),
    places=8,
    allow_nan=False,
    allow_infinity=False,
)
symbols = st.sampled_from([BTC, ETH, XRP])


def _on_grid(value: Decimal, step: Decimal, origin: Decimal) -> bool:
    return (value - origin) % step == 0


@HYPOTHESIS
@given(value=quantities, rules=symbols, market_=st.booleans())
def test_round_quantity_property_never_above_input_and_on_the_lot_grid(
    value: Decimal, rules: SymbolRules, market_: bool
) -> None:
    rounded = round_quantity(value, rules, market=market_)
    step = rules.market_step_size if market_ else rules.step_size
    origin = rules.market_min_qty if market_ else rules.min_qty

    assert D(0) <= rounded <= value
    assert rounded == 0 or _on_grid(rounded, step, origin)
    assert value - rounded < step or rounded == 0


@HYPOTHESIS
@given(value=prices, rules=symbols)
def test_round_price_property_buy_limit_never_above_and_sell_never_below(
    value: Decimal, rules: SymbolRules
) -> None:
    buy = round_price(value, rules, side=Side.BUY, order_type=OrderType.LIMIT)
    sell = round_price(value, rules, side=Side.SELL, order_type=OrderType.LIMIT)

    assert buy <= value <= sell
    assert sell - buy in {D(0), rules.tick_size}
    assert _on_grid(buy, rules.tick_size, rules.min_price)
    assert _on_grid(sell, rules.tick_size, rules.min_price)


@HYPOTHESIS
@given(
    value=st.decimals(min_value=-1000, max_value=1000, places=6),
    step=st.decimals(min_value=D("0.000001"), max_value=50, places=6),
    origin=st.decimals(min_value=0, max_value=100, places=6),
)
def test_round_to_step_property_brackets_value_one_step_apart(
    value: Decimal, step: Decimal, origin: Decimal
) -> None:
    down = round_to_step(value, step, up=False, origin=origin)
    up = round_to_step(value, step, up=True, origin=origin)

    assert down <= value <= up
    assert up - down == (0 if _on_grid(value, step, origin) else step)
    assert _on_grid(down, step, origin)
    assert _on_grid(up, step, origin)


@HYPOTHESIS
@given(
    quantity=st.decimals(min_value=D("0.00000001"), max_value=2000, places=8),
    price=st.decimals(min_value=600, max_value=100000, places=4),
    side=st.sampled_from(list(Side)),
)
def test_preflight_property_never_returns_more_than_requested(
    quantity: Decimal, price: Decimal, side: Side
) -> None:
    request = limit(side=side, quantity=quantity, price=price)

    try:
        checked = preflight(request, BTC, mark_price=None, dual_side=False)
    except PreflightError:
        return
    assert checked.quantity is not None
    assert checked.quantity <= quantity
    assert checked.price is not None
    assert (checked.price <= price) if side == Side.BUY else (checked.price >= price)
