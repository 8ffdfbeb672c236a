"""Position sizing from a risk budget (pure: no DB, no clock, Decimal only)."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal, Inexact, localcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from execution.rules import SymbolRules
from execution.sizing import (
    BELOW_MIN_NOTIONAL,
    BELOW_MIN_QTY,
    INSUFFICIENT_MARGIN,
    NO_EQUITY,
    STOP_ON_WRONG_SIDE,
    SizeDecision,
    SizeInput,
    position_size,
)
from execution.venues.base import Side

D = Decimal

# BTCUSDT's filters as the exchangeInfo sample has them.
BTC = SymbolRules(
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
    order_types=frozenset({"LIMIT", "MARKET", "STOP_MARKET"}),
    time_in_force=frozenset({"GTC", "IOC", "FOK", "GTX"}),
)
ETH = dataclasses.replace(
    BTC,
    symbol="ETHUSDT",
    base_asset="ETH",
    tick_size=D("0.01"),
    min_price=D("39.86"),
    max_qty=D("10000"),
    market_max_qty=D("2000"),
    min_notional=D("20"),
)

# A BUY limit entry resting as maker: budget 100 USDT, 1000 USDT from entry to stop.
BASE = SizeInput(
    equity=D("10000"),
    risk_pct=D("1"),
    entry_price=D("40000"),
    stop_price=D("39000"),
    side=Side.BUY,
    entry_is_maker=True,
    maker_fee=D("0.0002"),
    taker_fee=D("0.0004"),
    max_notional=D("100000"),
    leverage=10,
    available_balance=D("5000"),
    rules=BTC,
    market_entry=False,
)


def size(**overrides: Any) -> SizeDecision:
    return position_size(dataclasses.replace(BASE, **overrides))


def skipped(reason: str, detail: str) -> SizeDecision:
    return SizeDecision(
        quantity=D("0"), notional=D("0"), risk_amount=D("0"), reason=reason, detail=detail
    )


# ----------------------------------------------------------------------------- exact sizes


def test_limit_buy_as_maker_is_sized_to_the_budget_including_both_fees() -> None:
    # budget        = 10000 x 1 / 100                               = 100
    # per-unit loss = |40000 - 39000| + 40000 x 0.0002 + 39000 x 0.0004
    #               = 1000 + 8 + 15.6                               = 1023.6
    # qty           = 100 / 1023.6 = 0.0976944... -> step 0.001     = 0.097
    # notional      = 0.097 x 40000                                 = 3880
    # loss at stop  = 0.097 x 1023.6                                = 99.2892  (<= 100)
    decision = size()

    assert decision == SizeDecision(
        quantity=D("0.097"),
        notional=D("3880"),
        risk_amount=D("99.2892"),
        reason=None,
        detail=(
            "budget 100 USDT (10000 x 1%), per-unit loss 1023.6 "
            "(|40000 - 39000| + 40000 x 0.0002 + 39000 x 0.0004); "
            "bound by risk: 0.097694411879; step 0.001 -> qty 0.097; "
            "notional 3880 USDT, loss at stop 99.2892 USDT"
        ),
    )
    assert decision.ok is True


def test_fees_shrink_the_size_below_the_fee_free_quantity() -> None:
    # Without fees: 100 / 1000 = 0.1 exactly, and the loss at the stop is the whole budget.
    fee_free = size(maker_fee=D("0"), taker_fee=D("0"))

    assert (fee_free.quantity, fee_free.risk_amount) == (D("0.1"), D("100"))
    assert size().quantity == D("0.097")


def test_market_sell_pays_taker_on_entry_and_exit() -> None:
    # budget        = 5000 x 2 / 100                                = 100
    # per-unit loss = |2000 - 2050| + 2000 x 0.0005 + 2050 x 0.0005
    #               = 50 + 1 + 1.025                                = 52.025
    # qty           = 100 / 52.025 = 1.92215... -> step 0.001       = 1.922
    # loss at stop  = 1.922 x 52.025                                = 99.99205
    decision = size(
        equity=D("5000"),
        risk_pct=D("2"),
        entry_price=D("2000"),
        stop_price=D("2050"),
        side=Side.SELL,
        entry_is_maker=False,
        maker_fee=D("0.0002"),
        taker_fee=D("0.0005"),
        leverage=5,
        rules=ETH,
        market_entry=True,
    )

    assert (decision.quantity, decision.notional, decision.risk_amount, decision.reason) == (
        D("1.922"),
        D("3844"),
        D("99.99205"),
        None,
    )


def test_market_entry_rounds_down_to_the_market_lot_step() -> None:
    # per-unit loss = 1000 + 40000 x 0.0004 + 39000 x 0.0004 = 1031.6
    # qty = 100 / 1031.6 = 0.09693...: MARKET step 0.01 -> 0.09, LIMIT step 0.001 -> 0.096
    rules = dataclasses.replace(BTC, market_step_size=D("0.01"), market_min_qty=D("0.01"))

    market = size(rules=rules, market_entry=True, entry_is_maker=False)
    crossing_limit = size(rules=rules, market_entry=False, entry_is_maker=False)

    assert (market.quantity, market.risk_amount) == (D("0.09"), D("92.844"))
    assert (crossing_limit.quantity, crossing_limit.risk_amount) == (D("0.096"), D("99.0336"))


def test_rebate_maker_fee_is_not_counted_on() -> None:
    # A -0.0001 maker fee is sized as 0: per-unit loss = 1000 + 0 + 15.6 = 1015.6,
    # qty = 100 / 1015.6 = 0.09846... -> 0.098, loss 0.098 x 1015.6 = 99.5288.
    decision = size(maker_fee=D("-0.0001"))

    assert (decision.quantity, decision.risk_amount) == (D("0.098"), D("99.5288"))


# ----------------------------------------------------------------------------- caps


def test_max_notional_caps_the_size() -> None:
    # 2000 / 40000 = 0.05 < 0.0976 from the risk budget; loss 0.05 x 1023.6 = 51.18.
    decision = size(max_notional=D("2000"))

    assert (decision.quantity, decision.notional, decision.risk_amount) == (
        D("0.05"),
        D("2000"),
        D("51.18"),
    )
    assert "bound by max notional: 0.05;" in decision.detail


def test_margin_caps_the_size_including_the_opening_fee() -> None:
    # available x leverage / (entry x (1 + leverage x maker fee))
    #   = 100 x 10 / (40000 x 1.002) = 1000 / 40080 = 0.02495... -> 0.024
    # 0.025 would not fit: margin 0.025 x 40000 / 10 = 100, plus fee 1000 x 0.0002 = 0.2.
    decision = size(available_balance=D("100"))

    assert (decision.quantity, decision.notional, decision.risk_amount) == (
        D("0.024"),
        D("960"),
        D("24.5664"),
    )
    assert "bound by margin: 0.0249500998;" in decision.detail


def test_higher_leverage_lifts_the_margin_cap() -> None:
    # 100 x 20 / (40000 x 1.004) = 2000 / 40160 = 0.0498... -> 0.049
    decision = size(available_balance=D("100"), leverage=20)

    assert decision.quantity == D("0.049")


def test_exchange_max_qty_caps_the_size() -> None:
    rules = dataclasses.replace(BTC, max_qty=D("0.05"))

    decision = size(
        rules=rules,
        equity=D("1000000"),
        max_notional=D("10000000"),
        available_balance=D("1000000"),
    )

    assert decision.quantity == D("0.05")
    assert "bound by max qty: 0.05;" in decision.detail


def test_market_entry_uses_the_market_max_qty() -> None:
    rules = dataclasses.replace(BTC, market_max_qty=D("0.03"))

    decision = size(rules=rules, market_entry=True, entry_is_maker=False)

    assert decision.quantity == D("0.03")


# ----------------------------------------------------------------------------- skips


def test_budget_below_one_lot_is_skipped_below_min_qty() -> None:
    # budget 100 x 0.5 / 100 = 0.5; 0.5 / 1023.6 = 0.000488... -> 0 < min qty 0.001
    decision = size(equity=D("100"), risk_pct=D("0.5"))

    assert decision == skipped(
        BELOW_MIN_QTY,
        "qty 0 < min qty 0.001; budget 0.5 USDT (100 x 0.5%), per-unit loss 1023.6 "
        "(|40000 - 39000| + 40000 x 0.0002 + 39000 x 0.0004); "
        "bound by risk: 0.000488472059; step 0.001 -> qty 0",
    )


def test_min_notional_skips_instead_of_rounding_up_past_the_budget() -> None:
    # budget 1000 x 0.15 / 100 = 1.5; 1.5 / 1023.6 = 0.00146... -> 0.001;
    # 0.001 x 40000 = 40 < 50. Rounding up to 0.002 would lose 2.0472 > 1.5 at the stop.
    decision = size(equity=D("1000"), risk_pct=D("0.15"))

    assert decision == skipped(
        BELOW_MIN_NOTIONAL,
        "notional 40 USDT < min notional 50 USDT; budget 1.5 USDT (1000 x 0.15%), "
        "per-unit loss 1023.6 (|40000 - 39000| + 40000 x 0.0002 + 39000 x 0.0004); "
        "bound by risk: 0.001465416178; step 0.001 -> qty 0.001",
    )


def test_market_entry_checks_the_market_min_qty() -> None:
    # 0.0969 from the budget is above LOT_SIZE min 0.001 but below MARKET_LOT_SIZE min 0.1.
    rules = dataclasses.replace(BTC, market_min_qty=D("0.1"), market_step_size=D("0.1"))

    decision = size(rules=rules, market_entry=True, entry_is_maker=False)

    assert decision.reason == BELOW_MIN_QTY
    assert decision.detail.startswith("qty 0 < min qty 0.1; ")
    assert decision.quantity == D("0")


def test_margin_too_small_for_one_lot_is_insufficient_margin() -> None:
    # 3 x 10 / 40080 = 0.000748... -> 0 < 0.001, and margin is what bound it.
    decision = size(available_balance=D("3"))

    assert decision.reason == INSUFFICIENT_MARGIN
    assert decision.detail.startswith(
        "qty 0 < min qty 0.001: available 3 USDT x leverage 10 is too small; "
    )
    assert (decision.quantity, decision.notional, decision.risk_amount) == (D(0), D(0), D(0))


def test_margin_too_small_for_min_notional_is_insufficient_margin() -> None:
    # 4.5 x 10 / 40080 = 0.00112... -> 0.001; notional 40 < 50.
    decision = size(available_balance=D("4.5"))

    assert decision.reason == INSUFFICIENT_MARGIN
    assert decision.detail.startswith(
        "notional 40 USDT < min notional 50 USDT: available 4.5 USDT x leverage 10 is too small; "
    )


@pytest.mark.parametrize("available", [D("0"), D("-12.5")])
def test_no_available_balance_is_insufficient_margin(available: Decimal) -> None:
    assert size(available_balance=available) == skipped(
        INSUFFICIENT_MARGIN, f"available balance {available} USDT"
    )


@pytest.mark.parametrize("equity", [D("0"), D("-250")])
def test_no_equity_is_skipped(equity: Decimal) -> None:
    assert size(equity=equity) == skipped(NO_EQUITY, f"equity {equity} USDT")


@pytest.mark.parametrize(
    ("side", "stop", "detail"),
    [
        (Side.BUY, D("40100"), "BUY stop 40100 is not below entry 40000"),
        (Side.BUY, D("40000"), "BUY stop 40000 is not below entry 40000"),
        (Side.SELL, D("39900"), "SELL stop 39900 is not above entry 40000"),
        (Side.SELL, D("40000"), "SELL stop 40000 is not above entry 40000"),
    ],
)
def test_stop_on_wrong_side_of_entry_is_skipped(side: Side, stop: Decimal, detail: str) -> None:
    assert size(side=side, stop_price=stop) == skipped(STOP_ON_WRONG_SIDE, detail)


def test_stop_on_wrong_side_is_reported_before_no_equity() -> None:
    assert size(stop_price=D("41000"), equity=D("0")).reason == STOP_ON_WRONG_SIDE


def test_max_notional_zero_sizes_nothing() -> None:
    decision = size(max_notional=D("0"))

    assert decision.reason == BELOW_MIN_QTY
    assert "bound by max notional: 0;" in decision.detail


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field", ["equity", "risk_pct", "entry_price", "stop_price", "taker_fee"])
def test_float_amount_is_refused(field: str) -> None:
    with pytest.raises(TypeError, match=f"{field} must be a Decimal, got float"):
        size(**{field: 0.1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"entry_price": D("0")}, "prices must be positive"),
        ({"stop_price": D("-1")}, "prices must be positive"),
        ({"risk_pct": D("0")}, r"risk_pct must be in \(0, 100\]"),
        ({"risk_pct": D("100.1")}, r"risk_pct must be in \(0, 100\]"),
        ({"leverage": 0}, "leverage must be an int >= 1"),
        ({"leverage": True}, "leverage must be an int >= 1"),
        ({"max_notional": D("-1")}, "max_notional must be >= 0"),
        ({"equity": D("NaN")}, "equity must be finite"),
        ({"market_entry": True, "entry_is_maker": True}, "a MARKET entry always pays the taker"),
    ],
)
def test_invalid_input_raises(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        size(**overrides)


def test_decision_as_dict_is_json_ready() -> None:
    data = size().as_dict()

    assert json.loads(json.dumps(data)) == data
    assert (data["quantity"], data["notional"], data["risk_amount"], data["reason"]) == (
        "0.097",
        "3880",
        "99.2892",
        None,
    )


# ----------------------------------------------------------------------------- property

HYPOTHESIS = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=300
)
STEPS = [D("0.001"), D("0.01"), D("0.1"), D("1")]


@st.composite
def size_inputs(draw: st.DrawFn) -> SizeInput:
    entry = draw(st.decimals(D("0.0001"), D("100000"), places=4))
    # Stop between 0.01 % and 50 % away from the entry, on the loss side.
    fraction = draw(st.decimals(D("0.0001"), D("0.5"), places=4))
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    distance = max((entry * fraction).quantize(D("0.0001")), D("0.0001"))
    stop = entry - distance if side == Side.BUY else entry + distance
    if stop <= 0:
        stop = entry / 2
    step = draw(st.sampled_from(STEPS))
    min_qty = step * draw(st.sampled_from([0, 1, 3]))
    market = draw(st.booleans())
    rules = dataclasses.replace(
        BTC,
        step_size=step,
        min_qty=min_qty,
        market_step_size=step * 10,
        market_min_qty=step * 10,
        min_notional=draw(st.sampled_from([D("0"), D("5"), D("50")])),
        max_qty=draw(st.sampled_from([D("0"), D("1000"), D("7.5")])),
    )
    return SizeInput(
        equity=draw(st.decimals(D("0.01"), D("10000000"), places=2)),
        risk_pct=draw(st.decimals(D("0.01"), D("100"), places=2)),
        entry_price=entry,
        stop_price=stop,
        side=side,
        entry_is_maker=not market and draw(st.booleans()),
        maker_fee=draw(st.decimals(D("0"), D("0.001"), places=5)),
        taker_fee=draw(st.decimals(D("0"), D("0.001"), places=5)),
        max_notional=draw(st.decimals(D("0"), D("10000000"), places=2)),
        leverage=draw(st.integers(1, 125)),
        available_balance=draw(st.decimals(D("0.01"), D("1000000"), places=2)),
        rules=rules,
        market_entry=market,
    )


@HYPOTHESIS
@given(inp=size_inputs())
def test_stop_out_loss_including_fees_never_exceeds_the_budget(inp: SizeInput) -> None:
    decision = position_size(inp)
    event(decision.reason or "sized")

    if decision.reason is not None:
        assert (decision.quantity, decision.notional, decision.risk_amount) == (0, 0, 0)
        return
    with localcontext() as exact:
        # Unlimited-looking precision with Inexact trapped: every comparison below is exact.
        exact.prec = 200
        exact.traps[Inexact] = True
        _assert_within_every_bound_and_maximal(inp, decision)


def _assert_within_every_bound_and_maximal(inp: SizeInput, decision: SizeDecision) -> None:
    qty, entry, stop = decision.quantity, inp.entry_price, inp.stop_price
    entry_fee = inp.maker_fee if inp.entry_is_maker else inp.taker_fee
    # The realized loss if the stop fills exactly at its price, fees on both legs.
    loss = qty * abs(entry - stop) + qty * entry * entry_fee + qty * stop * inp.taker_fee
    budget = inp.equity * inp.risk_pct / 100
    assert decision.risk_amount == loss
    assert loss <= budget
    assert decision.notional == qty * entry <= inp.max_notional
    # Initial margin (notional / leverage) plus the opening fee fits the available balance;
    # multiplied through by the leverage to stay exact.
    assert (
        qty * entry + qty * entry * entry_fee * inp.leverage <= inp.available_balance * inp.leverage
    )
    step = inp.rules.market_step_size if inp.market_entry else inp.rules.step_size
    min_qty = inp.rules.market_min_qty if inp.market_entry else inp.rules.min_qty
    max_qty = inp.rules.market_max_qty if inp.market_entry else inp.rules.max_qty
    assert qty > 0
    assert qty >= min_qty
    assert (qty - min_qty) % step == 0
    assert decision.notional >= inp.rules.min_notional
    # And it is the largest such quantity: one more step breaks a bound.
    more = qty + step
    assert (
        more * (abs(entry - stop) + entry * entry_fee + stop * inp.taker_fee) > budget
        or more * entry > inp.max_notional
        or more * entry * (1 + inp.leverage * entry_fee) > inp.available_balance * inp.leverage
        or (max_qty > 0 and more > max_qty)
    )
