"""The matching engine (``execution.engine``): fills, fees, positions, algo orders, Binance codes.

Pure: no database, no network. A fake clock; prices moved with ``advance``. Defaults: BTCUSDT at
50000, tick 0.10, maker 0.02 %, taker 0.05 %, slippage 0.02 %, leverage 20, 10000 USDT.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from execution.engine import (
    AccountEvent,
    AlgoEvent,
    EngineReject,
    Event,
    FeeSchedule,
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    OrderEvent,
    Trade,
)

D = Decimal
BTC = "BTCUSDT"
ETH = "ETHUSDT"
ACCOUNT = "acct"
T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


BALANCE = D(10000)
SLIPPAGE = D("0.0002")
START_PRICE = D(50000)


def make_engine(
    *, balance: Decimal = BALANCE, slippage: Decimal = SLIPPAGE, price: Decimal = START_PRICE
) -> tuple[MatchingEngine, FakeClock]:
    clock = FakeClock()
    engine = MatchingEngine(
        clock=clock,
        tick_sizes={BTC: D("0.10"), ETH: D("0.01")},
        fees=FeeSchedule(maker=D("0.0002"), taker=D("0.0005")),
        slippage=slippage,
    )
    engine.add_account(ACCOUNT, {"USDT": balance})
    engine.advance(BTC, [(clock(), price)])
    return engine, clock


def move(engine: MatchingEngine, clock: FakeClock, *prices: str) -> None:
    """Walk BTC through ``prices``, one second apart."""
    for price in prices:
        clock.now += 1000
        engine.advance(BTC, [(clock.now, D(price))])


def market(side: str, qty: str, **kwargs: object) -> NewOrder:
    return NewOrder(symbol=BTC, side=side, type="MARKET", quantity=D(qty), **kwargs)  # type: ignore[arg-type]


def limit(side: str, qty: str, price: str, tif: str = "GTC", **kwargs: object) -> NewOrder:
    return NewOrder(
        symbol=BTC, side=side, type="LIMIT", quantity=D(qty), price=D(price), time_in_force=tif,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def algo(side: str, type_: str, trigger: str, qty: str = "0.1", **kwargs: object) -> NewAlgoOrder:
    return NewAlgoOrder(
        symbol=BTC, side=side, type=type_, trigger_price=D(trigger), quantity=D(qty),
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def reject_code(call: Callable[..., object], *args: object, **kwargs: object) -> int:
    """The Binance code ``call`` is refused with (fails the test if it is not refused)."""
    with pytest.raises(EngineReject) as info:
        call(*args, **kwargs)
    return info.value.code


def position_amount(engine: MatchingEngine, side: str = "BOTH") -> Decimal:
    for p in engine.positions(ACCOUNT):
        if p.symbol == BTC and p.position_side == side:
            return p.amount
    return D(0)


def wallet(engine: MatchingEngine) -> Decimal:
    return engine.account(ACCOUNT).balances["USDT"]


# --- market orders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "fill", "amount"),
    [
        # 50000.3 x 1.0002 = 50010.30006 -> up to the tick against the buyer.
        ("BUY", D("50010.4"), D("0.1")),
        # 50000.3 x 0.9998 = 49990.29994 -> down to the tick against the seller.
        ("SELL", D("49990.2"), D("-0.1")),
    ],
)
def test_market_order_fills_at_price_plus_slippage_rounded_against_taker(
    side: str, fill: Decimal, amount: Decimal
) -> None:
    engine, _ = make_engine(price=D("50000.3"))

    order = engine.place_order(ACCOUNT, market(side, "0.1", client_id="m-1"))

    assert (order.status, order.executed_qty, order.avg_price) == ("FILLED", D("0.1"), fill)
    assert order.client_id == "m-1"
    [trade] = engine.trades(ACCOUNT, BTC)
    fee = (D("0.1") * fill * D("0.0005")).quantize(D("0.00000001"))
    assert (trade.price, trade.qty, trade.maker, trade.commission) == (fill, D("0.1"), False, fee)
    assert trade.quote_qty == D("0.1") * fill
    assert trade.realized_pnl == 0
    assert trade.time_ms == T0
    [position] = engine.positions(ACCOUNT)
    assert (position.amount, position.entry_price) == (amount, fill)
    assert wallet(engine) == D(10000) - fee


def test_market_buy_fee_is_notional_times_taker_rate() -> None:
    engine, _ = make_engine(price=D("50000.3"))

    engine.place_order(ACCOUNT, market("BUY", "0.1"))

    # 0.1 x 50010.4 = 5001.04; x 0.0005 = 2.50052.
    assert engine.trades(ACCOUNT, BTC)[0].commission == D("2.50052000")
    assert wallet(engine) == D("9997.49948")


def test_order_without_client_id_gets_a_generated_one() -> None:
    engine, _ = make_engine()

    order = engine.place_order(ACCOUNT, market("BUY", "0.01"))

    assert order.client_id == "emu0000000000000000001"


# --- limit orders -------------------------------------------------------------------------------


def test_resting_buy_limit_does_not_fill_when_price_only_touches_it() -> None:
    engine, clock = make_engine()
    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000"))

    move(engine, clock, "49000")

    assert engine.get_order(ACCOUNT, BTC, order_id=order.order_id).status == "NEW"
    assert engine.trades(ACCOUNT, BTC) == []


def test_resting_buy_limit_fills_at_its_price_as_maker_when_price_trades_through() -> None:
    engine, clock = make_engine()
    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000"))

    move(engine, clock, "49000", "48000")

    filled = engine.get_order(ACCOUNT, BTC, order_id=order.order_id)
    assert (filled.status, filled.avg_price) == ("FILLED", D(49000))
    [trade] = engine.trades(ACCOUNT, BTC)
    # Maker fee: 0.1 x 49000 x 0.0002.
    assert (trade.price, trade.maker, trade.commission) == (D(49000), True, D("0.98000000"))
    assert trade.time_ms == T0 + 2000
    assert position_amount(engine) == D("0.1")


def test_resting_sell_limit_fills_at_its_price_when_a_segment_crosses_it() -> None:
    engine, clock = make_engine()
    order = engine.place_order(ACCOUNT, limit("SELL", "0.1", "51000"))

    move(engine, clock, "51000")
    assert engine.get_order(ACCOUNT, BTC, order_id=order.order_id).status == "NEW"
    move(engine, clock, "52000")

    [trade] = engine.trades(ACCOUNT, BTC)
    assert (trade.side, trade.price, trade.maker) == ("SELL", D(51000), True)
    assert position_amount(engine) == D("-0.1")


def test_marketable_limit_fills_at_once_at_current_price_as_taker() -> None:
    engine, _ = make_engine()

    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "50500"))

    assert (order.status, order.avg_price) == ("FILLED", D(50000))
    [trade] = engine.trades(ACCOUNT, BTC)
    assert (trade.maker, trade.commission) == (False, D("2.50000000"))


def test_post_only_limit_that_would_take_is_rejected_and_not_recorded() -> None:
    engine, _ = make_engine()

    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, limit("BUY", "0.1", "50000", tif="GTX"))

    assert info.value.code == -5022
    assert info.value.msg.startswith("Due to the order could not be executed as maker")
    assert engine.all_orders(ACCOUNT, BTC) == []
    assert engine.trades(ACCOUNT, BTC) == []


def test_post_only_limit_that_would_rest_is_accepted() -> None:
    engine, _ = make_engine()

    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49999.9", tif="GTX"))

    assert order.status == "NEW"


def test_fok_limit_that_cannot_fill_is_rejected_and_not_recorded() -> None:
    engine, _ = make_engine()

    assert reject_code(engine.place_order, ACCOUNT, limit("BUY", "0.1", "49000", "FOK")) == -5021
    assert engine.all_orders(ACCOUNT, BTC) == []


def test_fok_limit_that_can_fill_fills_whole() -> None:
    engine, _ = make_engine()

    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "50000", "FOK"))

    assert (order.status, order.executed_qty) == ("FILLED", D("0.1"))


def test_ioc_leftover_expires_after_the_fillable_part() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))

    # Reduce-only caps the fill at the 0.1 position; IOC must not leave 0.2 resting.
    order = engine.place_order(ACCOUNT, limit("SELL", "0.3", "49000", "IOC", reduce_only=True))

    assert (order.status, order.executed_qty, order.avg_price) == ("EXPIRED", D("0.1"), D(50000))
    assert engine.open_orders(ACCOUNT) == []
    assert position_amount(engine) == 0


def test_ioc_limit_that_cannot_take_expires_instead_of_resting() -> None:
    engine, clock = make_engine()

    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000", "IOC"))
    move(engine, clock, "48000")

    assert (order.status, order.executed_qty) == ("EXPIRED", D(0))
    assert engine.open_orders(ACCOUNT) == []
    assert engine.trades(ACCOUNT, BTC) == []


# --- conditional (algo) orders ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_side", "side", "type_", "trigger", "near", "fill"),
    [
        # Long's stop: SELL on a fall; 49000.3 x 0.9998 = 48990.49994 -> 48990.4.
        ("BUY", "SELL", "STOP_MARKET", "49000.3", "49000.4", D("48990.4")),
        # Long's take-profit: SELL on a rise; 51000.3 x 0.9998 = 50990.09994 -> 50990.0.
        ("BUY", "SELL", "TAKE_PROFIT_MARKET", "51000.3", "51000.2", D("50990.0")),
        # Short's stop: BUY on a rise; 51000.3 x 1.0002 = 51010.50006 -> 51010.6.
        ("SELL", "BUY", "STOP_MARKET", "51000.3", "51000.2", D("51010.6")),
        # Short's take-profit: BUY on a fall; 49000.3 x 1.0002 = 49010.10006 -> 49010.2.
        ("SELL", "BUY", "TAKE_PROFIT_MARKET", "49000.3", "49000.4", D("49010.2")),
    ],
)
def test_conditional_market_triggers_on_touch_and_fills_at_trigger_moved_by_slippage(
    entry_side: str, side: str, type_: str, trigger: str, near: str, fill: Decimal
) -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market(entry_side, "0.1"))
    placed = engine.place_algo(
        ACCOUNT, algo(side, type_, trigger, reduce_only=True, client_id="x-1")
    )

    move(engine, clock, near)
    assert engine.get_algo(ACCOUNT, algo_id=placed.algo_id).status == "NEW"
    move(engine, clock, trigger)

    done = engine.get_algo(ACCOUNT, algo_id=placed.algo_id)
    assert done.status == "FINISHED"
    assert done.actual_order_id is not None
    assert done.trigger_time_ms == T0 + 2000
    child = engine.get_order(ACCOUNT, BTC, order_id=done.actual_order_id)
    assert (child.client_id, child.type, child.orig_type) == ("x-1", "MARKET", type_)
    assert (child.status, child.avg_price, child.stop_price) == ("FILLED", fill, D(trigger))
    assert child.reduce_only is True
    assert engine.trades(ACCOUNT, BTC)[-1].price == fill
    assert position_amount(engine) == 0


def test_stop_market_status_goes_new_triggered_finished_in_events() -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    seen: list[Event] = []
    engine.listeners.append(seen.append)

    engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "49000", reduce_only=True))
    move(engine, clock, "48000")

    statuses = [e.algo.status for e in seen if isinstance(e, AlgoEvent)]
    assert statuses == ["NEW", "TRIGGERED", "FINISHED"]


@pytest.mark.parametrize(
    ("side", "type_", "trigger"),
    [
        ("BUY", "STOP_MARKET", "50000"),  # BUY stop fires at price >= trigger
        ("BUY", "STOP_MARKET", "49000"),
        ("SELL", "STOP_MARKET", "50000"),  # SELL stop fires at price <= trigger
        ("SELL", "STOP_MARKET", "51000"),
        ("BUY", "TAKE_PROFIT_MARKET", "50000"),  # BUY take-profit fires at price <= trigger
        ("BUY", "TAKE_PROFIT_MARKET", "51000"),
        ("SELL", "TAKE_PROFIT_MARKET", "50000"),  # SELL take-profit fires at price >= trigger
        ("SELL", "TAKE_PROFIT_MARKET", "49000"),
    ],
)
def test_conditional_order_that_would_trigger_at_once_is_rejected(
    side: str, type_: str, trigger: str
) -> None:
    engine, _ = make_engine()

    with pytest.raises(EngineReject) as info:
        engine.place_algo(ACCOUNT, algo(side, type_, trigger))

    assert (info.value.code, info.value.msg) == (-2021, "Order would immediately trigger.")
    assert engine.open_algos(ACCOUNT) == []


def test_take_profit_stays_new_after_stop_closes_position_then_expires_reduce_only() -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    stop = engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "49000", reduce_only=True))
    take = engine.place_algo(ACCOUNT, algo("SELL", "TAKE_PROFIT_MARKET", "51000", reduce_only=True))

    move(engine, clock, "48500")

    assert engine.get_algo(ACCOUNT, algo_id=stop.algo_id).status == "FINISHED"
    # Binance does not link them: the platform has to cancel the survivor.
    assert [a.algo_id for a in engine.open_algos(ACCOUNT)] == [take.algo_id]
    assert position_amount(engine) == 0
    trades_before = engine.trades(ACCOUNT, BTC)

    move(engine, clock, "51500")

    expired = engine.get_algo(ACCOUNT, algo_id=take.algo_id)
    assert (expired.status, expired.fail_reason) == ("EXPIRED", "Reduce Only reject")
    assert expired.actual_order_id is None
    assert engine.trades(ACCOUNT, BTC) == trades_before
    assert position_amount(engine) == 0


def test_close_position_stop_closes_the_whole_position() -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    engine.place_order(ACCOUNT, market("BUY", "0.2"))
    placed = engine.place_algo(
        ACCOUNT,
        NewAlgoOrder(
            symbol=BTC, side="SELL", type="STOP_MARKET", trigger_price=D(49000),
            close_position=True,
        ),
    )  # fmt: skip

    move(engine, clock, "48000")

    done = engine.get_algo(ACCOUNT, algo_id=placed.algo_id)
    assert done.actual_order_id is not None
    child = engine.get_order(ACCOUNT, BTC, order_id=done.actual_order_id)
    assert (child.status, child.executed_qty, child.close_position) == ("FILLED", D("0.3"), True)
    assert position_amount(engine) == 0


def test_close_position_stop_with_no_position_expires() -> None:
    engine, clock = make_engine()
    placed = engine.place_algo(
        ACCOUNT,
        NewAlgoOrder(
            symbol=BTC, side="SELL", type="STOP_MARKET", trigger_price=D(49000),
            close_position=True,
        ),
    )  # fmt: skip

    move(engine, clock, "48000")

    expired = engine.get_algo(ACCOUNT, algo_id=placed.algo_id)
    assert (expired.status, expired.fail_reason) == ("EXPIRED", "Reduce Only reject")
    assert engine.trades(ACCOUNT, BTC) == []


def test_stop_limit_triggered_mid_segment_fills_at_the_trigger_price_as_taker() -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    placed = engine.place_algo(
        ACCOUNT, algo("SELL", "STOP", "49000", price=D(48900), reduce_only=True)
    )

    # One segment from 50000 to 48000: at the trigger (49000) a SELL at 48900 is marketable.
    move(engine, clock, "48000")

    done = engine.get_algo(ACCOUNT, algo_id=placed.algo_id)
    assert done.status == "FINISHED"
    trade = engine.trades(ACCOUNT, BTC)[-1]
    assert (trade.price, trade.maker) == (D(49000), False)
    assert position_amount(engine) == 0


def test_conditional_order_is_not_margin_checked_until_it_triggers() -> None:
    engine, clock = make_engine(balance=D(100))

    # 1 BTC at 51000 needs 2550 of margin: accepted now, rejected when it triggers.
    placed = engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "51000", qty="1"))
    move(engine, clock, "52000")

    rejected = engine.get_algo(ACCOUNT, algo_id=placed.algo_id)
    assert (rejected.status, rejected.fail_reason) == ("REJECTED", "Margin is insufficient.")
    assert engine.trades(ACCOUNT, BTC) == []


# --- trailing stop ------------------------------------------------------------------------------


def test_trailing_stop_waits_for_activation_then_fires_on_callback_from_the_high() -> None:
    engine, clock = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    placed = engine.place_algo(
        ACCOUNT,
        NewAlgoOrder(
            symbol=BTC, side="SELL", type="TRAILING_STOP_MARKET", trigger_price=D(0),
            quantity=D("0.1"), reduce_only=True, activate_price=D(51000), callback_rate=D(1),
        ),
    )  # fmt: skip

    # Below activation a 1 % drop does nothing.
    move(engine, clock, "50900", "50300")
    assert engine.get_algo(ACCOUNT, algo_id=placed.algo_id).status == "NEW"
    # Activated; the high is 52000, so it fires at 52000 x 0.99 = 51480.
    move(engine, clock, "52000", "51500")
    assert engine.get_algo(ACCOUNT, algo_id=placed.algo_id).status == "NEW"
    move(engine, clock, "51000")

    assert engine.get_algo(ACCOUNT, algo_id=placed.algo_id).status == "FINISHED"
    # 51480 x 0.9998 = 51469.704 -> 51469.7: the crossing, not the segment's end (51000).
    assert engine.trades(ACCOUNT, BTC)[-1].price == D("51469.7")
    assert position_amount(engine) == 0


def test_trailing_stop_with_activation_at_or_below_price_would_trigger() -> None:
    engine, _ = make_engine()
    request = NewAlgoOrder(
        symbol=BTC, side="SELL", type="TRAILING_STOP_MARKET", trigger_price=D(0),
        quantity=D("0.1"), activate_price=D(50000), callback_rate=D(1),
    )  # fmt: skip

    assert reject_code(engine.place_algo, ACCOUNT, request) == -2021


# --- reduce-only and margin ---------------------------------------------------------------------


def test_reduce_only_order_without_position_is_rejected() -> None:
    engine, _ = make_engine()

    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, market("SELL", "0.1", reduce_only=True))

    assert (info.value.code, info.value.msg) == (-2022, "ReduceOnly Order is rejected.")
    assert engine.all_orders(ACCOUNT, BTC) == []


def test_reduce_only_order_on_the_increasing_side_is_rejected() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))

    assert reject_code(engine.place_order, ACCOUNT, market("BUY", "0.1", reduce_only=True)) == (
        -2022
    )


def test_order_needing_more_margin_than_available_is_rejected() -> None:
    engine, _ = make_engine(balance=D(100))

    # 0.05 x 50000 / 20 = 125 > 100.
    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, market("BUY", "0.05"))

    assert (info.value.code, info.value.msg) == (-2019, "Margin is insufficient.")
    assert engine.all_orders(ACCOUNT, BTC) == []
    assert wallet(engine) == D(100)


def test_order_needing_exactly_the_available_margin_is_accepted() -> None:
    engine, _ = make_engine(balance=D(100))

    order = engine.place_order(ACCOUNT, market("BUY", "0.04"))  # 0.04 x 50000 / 20 = 100

    assert order.status == "FILLED"


def test_reducing_order_never_needs_margin() -> None:
    engine, _ = make_engine(balance=D(100))
    engine.place_order(ACCOUNT, market("BUY", "0.04"))
    assert engine.available_balance(ACCOUNT) == 0

    # Flipping would open 0.01 short, which needs margin; closing exactly does not.
    assert reject_code(engine.place_order, ACCOUNT, market("SELL", "0.05")) == -2019
    order = engine.place_order(ACCOUNT, market("SELL", "0.04"))

    assert order.status == "FILLED"
    assert position_amount(engine) == 0


def test_resting_limit_reserves_margin_for_later_orders() -> None:
    engine, _ = make_engine(balance=D(100))
    engine.place_order(ACCOUNT, limit("BUY", "0.04", "40000"))  # reserves 80

    assert engine.available_balance(ACCOUNT) == D(20)
    assert reject_code(engine.place_order, ACCOUNT, limit("BUY", "0.011", "40000")) == -2019


# --- realized PnL -------------------------------------------------------------------------------


def test_realized_pnl_is_qty_times_exit_minus_entry_and_a_flip_sets_new_entry() -> None:
    engine, clock = make_engine(slippage=D(0))
    engine.place_order(ACCOUNT, market("BUY", "0.2"))
    move(engine, clock, "51000")

    engine.place_order(ACCOUNT, market("SELL", "0.1"))
    engine.place_order(ACCOUNT, market("SELL", "0.3"))  # closes 0.1, opens 0.2 short

    [position] = engine.positions(ACCOUNT)
    assert (position.amount, position.entry_price) == (D("-0.2"), D(51000))
    move(engine, clock, "50000")
    engine.place_order(ACCOUNT, market("BUY", "0.2"))

    pnl = [t.realized_pnl for t in engine.trades(ACCOUNT, BTC)]
    assert pnl == [D(0), D(100), D(100), D(200)]
    fees = D(5) + D("2.55") + D("7.65") + D(5)
    assert wallet(engine) == D(10000) + D(400) - fees
    assert position_amount(engine) == 0


def test_realized_pnl_uses_the_actual_fill_prices_with_slippage() -> None:
    engine, clock = make_engine()
    entry = engine.place_order(ACCOUNT, market("BUY", "0.1")).avg_price
    move(engine, clock, "52000")

    exit_ = engine.place_order(ACCOUNT, market("SELL", "0.1")).avg_price

    assert (entry, exit_) == (D(50010), D("51989.6"))
    assert engine.trades(ACCOUNT, BTC)[-1].realized_pnl == D("0.1") * (exit_ - entry)


def test_adding_to_a_position_averages_the_entry_price() -> None:
    engine, clock = make_engine(slippage=D(0))
    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    move(engine, clock, "52000")

    engine.place_order(ACCOUNT, market("BUY", "0.1"))

    [position] = engine.positions(ACCOUNT)
    assert (position.amount, position.entry_price) == (D("0.2"), D(51000))


# --- hedge mode ---------------------------------------------------------------------------------


def test_hedge_mode_keeps_long_and_short_positions_apart() -> None:
    engine, clock = make_engine(slippage=D(0))
    engine.set_position_mode(ACCOUNT, dual=True)

    engine.place_order(ACCOUNT, market("BUY", "0.1", position_side="LONG"))
    engine.place_order(ACCOUNT, market("SELL", "0.2", position_side="SHORT"))
    move(engine, clock, "51000")
    engine.place_order(ACCOUNT, market("SELL", "0.1", position_side="LONG"))

    assert position_amount(engine, "LONG") == 0
    assert position_amount(engine, "SHORT") == D("-0.2")
    assert engine.trades(ACCOUNT, BTC)[-1].realized_pnl == D(100)
    assert engine.trades(ACCOUNT, BTC)[-1].position_side == "LONG"


def test_hedge_mode_closing_more_than_the_side_holds_is_rejected() -> None:
    engine, _ = make_engine()
    engine.set_position_mode(ACCOUNT, dual=True)
    engine.place_order(ACCOUNT, market("BUY", "0.1", position_side="LONG"))

    request = market("SELL", "0.2", position_side="LONG")

    assert reject_code(engine.place_order, ACCOUNT, request) == -2022


@pytest.mark.parametrize(("dual", "position_side"), [(True, "BOTH"), (False, "LONG")])
def test_position_side_not_matching_the_mode_is_rejected(dual: bool, position_side: str) -> None:
    engine, _ = make_engine()
    if dual:
        engine.set_position_mode(ACCOUNT, dual=True)

    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, market("BUY", "0.1", position_side=position_side))

    assert (info.value.code, info.value.msg) == (
        -4061,
        "Order's position side does not match user's setting.",
    )
    assert engine.all_orders(ACCOUNT, BTC) == []


@pytest.mark.parametrize("dual", [False, True])
def test_position_mode_change_to_the_current_mode_is_rejected(dual: bool) -> None:
    engine, _ = make_engine()
    if dual:
        engine.set_position_mode(ACCOUNT, dual=True)

    with pytest.raises(EngineReject) as info:
        engine.set_position_mode(ACCOUNT, dual=dual)

    assert (info.value.code, info.value.msg) == (-4059, "No need to change position side.")
    assert engine.account(ACCOUNT).dual_side is dual


def test_position_mode_change_with_open_orders_is_rejected() -> None:
    engine, _ = make_engine()
    engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "51000"))

    with pytest.raises(EngineReject) as info:
        engine.set_position_mode(ACCOUNT, dual=True)

    assert info.value.code == -4067
    assert engine.account(ACCOUNT).dual_side is False


def test_position_mode_change_with_a_position_is_rejected() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.1"))

    with pytest.raises(EngineReject) as info:
        engine.set_position_mode(ACCOUNT, dual=True)

    assert info.value.code == -4068
    assert engine.account(ACCOUNT).dual_side is False


# --- client ids, lookups, limits ----------------------------------------------------------------


def test_duplicate_open_client_id_is_rejected_for_regular_orders() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000", client_id="c-1"))

    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, limit("BUY", "0.1", "48000", client_id="c-1"))

    assert (info.value.code, info.value.msg) == (-4116, "ClientOrderId is duplicated.")
    assert len(engine.all_orders(ACCOUNT, BTC)) == 1


def test_duplicate_open_client_id_is_rejected_for_algo_orders_separately() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000", client_id="c-1"))

    # Regular and algo ids are separate namespaces.
    engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "51000", client_id="c-1"))

    request = algo("BUY", "STOP_MARKET", "52000", client_id="c-1")
    assert reject_code(engine.place_algo, ACCOUNT, request) == -4116
    assert len(engine.all_algos(ACCOUNT, BTC)) == 1


def test_client_id_may_be_reused_once_its_order_is_closed() -> None:
    engine, _ = make_engine()
    first = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000", client_id="c-1"))
    engine.cancel_order(ACCOUNT, BTC, client_id="c-1")
    placed = engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "51000", client_id="a-1"))
    engine.cancel_algo(ACCOUNT, client_id="a-1")

    second = engine.place_order(ACCOUNT, limit("BUY", "0.1", "48000", client_id="c-1"))
    again = engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "52000", client_id="a-1"))

    # A lookup by client id finds the latest order carrying it.
    assert engine.get_order(ACCOUNT, BTC, client_id="c-1").order_id == second.order_id
    assert second.order_id != first.order_id
    assert engine.get_algo(ACCOUNT, client_id="a-1").algo_id == again.algo_id != placed.algo_id


def test_cancel_of_unknown_order_is_rejected_with_unknown_order_sent() -> None:
    engine, _ = make_engine()
    filled = engine.place_order(ACCOUNT, market("BUY", "0.1"))

    for call in (
        lambda: engine.cancel_order(ACCOUNT, BTC, order_id=999),
        lambda: engine.cancel_order(ACCOUNT, BTC, client_id="nope"),
        lambda: engine.cancel_order(ACCOUNT, BTC, order_id=filled.order_id),  # not open
        lambda: engine.cancel_algo(ACCOUNT, algo_id=999),
    ):
        with pytest.raises(EngineReject) as info:
            call()
        assert (info.value.code, info.value.msg) == (-2011, "Unknown order sent.")


def test_get_of_unknown_order_is_rejected_with_order_does_not_exist() -> None:
    engine, _ = make_engine()

    for call in (
        lambda: engine.get_order(ACCOUNT, BTC, order_id=999),
        lambda: engine.get_order(ACCOUNT, BTC, client_id="nope"),
        lambda: engine.get_algo(ACCOUNT, algo_id=999),
        lambda: engine.get_algo(ACCOUNT, client_id="nope"),
    ):
        with pytest.raises(EngineReject) as info:
            call()
        assert (info.value.code, info.value.msg) == (-2013, "Order does not exist.")


def test_cancel_closes_order_and_releases_its_margin() -> None:
    engine, _ = make_engine()
    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000", client_id="c-1"))

    canceled = engine.cancel_order(ACCOUNT, BTC, order_id=order.order_id)

    assert canceled.status == "CANCELED"
    assert engine.open_orders(ACCOUNT) == []
    assert engine.available_balance(ACCOUNT) == D(10000)


def test_open_orders_per_symbol_are_capped_at_200() -> None:
    engine, clock = make_engine()
    engine.advance(ETH, [(clock(), D(3000))])
    for n in range(199):
        engine.place_order(ACCOUNT, limit("BUY", "0.001", "40000", client_id=f"c-{n}"))
    engine.place_algo(ACCOUNT, algo("BUY", "STOP_MARKET", "51000", qty="0.001"))

    with pytest.raises(EngineReject) as info:
        engine.place_order(ACCOUNT, limit("BUY", "0.001", "40000"))

    assert (info.value.code, info.value.msg) == (-2025, "Reach max open order limit.")
    assert len(engine.open_orders(ACCOUNT, BTC)) == 199
    # The cap is per symbol.
    other = NewOrder(symbol=ETH, side="BUY", type="LIMIT", quantity=D(1), price=D(2900))
    assert engine.place_order(ACCOUNT, other).status == "NEW"


@pytest.mark.parametrize("leverage", [0, 126])
def test_leverage_outside_1_to_125_is_rejected(leverage: int) -> None:
    engine, _ = make_engine()

    with pytest.raises(EngineReject) as info:
        engine.set_leverage(ACCOUNT, BTC, leverage)

    assert (info.value.code, info.value.msg) == (-4028, f"Leverage {leverage} is not valid")
    assert engine.leverage(ACCOUNT, BTC) == 20


@pytest.mark.parametrize("leverage", [1, 125])
def test_leverage_at_the_bounds_is_accepted(leverage: int) -> None:
    engine, _ = make_engine()

    assert engine.set_leverage(ACCOUNT, BTC, leverage) == leverage
    assert engine.leverage(ACCOUNT, BTC) == leverage


def test_order_on_a_symbol_without_price_is_rejected_as_invalid_symbol() -> None:
    engine, _ = make_engine()
    request = NewOrder(symbol=ETH, side="BUY", type="MARKET", quantity=D(1))

    assert reject_code(engine.place_order, ACCOUNT, request) == -1121


# --- partial fills ------------------------------------------------------------------------------


def test_partial_fill_leaves_order_partially_filled_until_the_rest_fills() -> None:
    engine, clock = make_engine()
    order = engine.place_order(ACCOUNT, limit("BUY", "0.3", "49000"))

    partial = engine.fill_partially(ACCOUNT, order.order_id, D("0.1"))

    assert (partial.status, partial.executed_qty, partial.remaining) == (
        "PARTIALLY_FILLED",
        D("0.1"),
        D("0.2"),
    )
    assert [o.order_id for o in engine.open_orders(ACCOUNT)] == [order.order_id]
    assert position_amount(engine) == D("0.1")

    move(engine, clock, "48000")

    filled = engine.get_order(ACCOUNT, BTC, order_id=order.order_id)
    assert (filled.status, filled.executed_qty, filled.avg_price) == ("FILLED", D("0.3"), D(49000))
    assert [t.qty for t in engine.trades(ACCOUNT, BTC)] == [D("0.1"), D("0.2")]
    assert all(t.maker for t in engine.trades(ACCOUNT, BTC))


def test_partial_fill_of_a_closed_order_is_rejected() -> None:
    engine, _ = make_engine()
    order = engine.place_order(ACCOUNT, market("BUY", "0.1"))

    assert reject_code(engine.fill_partially, ACCOUNT, order.order_id, D("0.1")) == -2013


# --- events -------------------------------------------------------------------------------------


def _describe(event: Event) -> tuple[str, ...]:
    if isinstance(event, OrderEvent):
        return ("ORDER", event.exec_type, event.order.status)
    if isinstance(event, AlgoEvent):
        return ("ALGO", event.algo.status)
    assert isinstance(event, AccountEvent)
    return ("ACCOUNT", event.reason)


def test_listeners_receive_order_algo_and_account_events_in_order() -> None:
    engine, clock = make_engine()
    seen: list[Event] = []
    engine.listeners.append(seen.append)

    engine.place_order(ACCOUNT, market("BUY", "0.1"))
    engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "49000", reduce_only=True))
    move(engine, clock, "48000")

    assert [_describe(e) for e in seen] == [
        ("ORDER", "NEW", "NEW"),
        ("ORDER", "TRADE", "FILLED"),
        ("ACCOUNT", "ORDER"),
        ("ALGO", "NEW"),
        ("ALGO", "TRIGGERED"),
        ("ORDER", "NEW", "NEW"),
        ("ORDER", "TRADE", "FILLED"),
        ("ACCOUNT", "ORDER"),
        ("ALGO", "FINISHED"),
    ]
    assert {e.account for e in seen} == {ACCOUNT}
    account_events = [e for e in seen if isinstance(e, AccountEvent)]
    assert [e.positions[0].amount for e in account_events] == [D("0.1"), D(0)]
    entry_fee = engine.trades(ACCOUNT, BTC)[0].commission
    assert account_events[0].balances == {"USDT": D(10000) - entry_fee}


def test_events_are_snapshots_not_live_objects() -> None:
    engine, clock = make_engine()
    seen: list[Event] = []
    engine.listeners.append(seen.append)
    order = engine.place_order(ACCOUNT, limit("BUY", "0.1", "49000"))

    move(engine, clock, "48000")

    first = seen[0]
    assert isinstance(first, OrderEvent)
    assert first.order.order_id == order.order_id
    assert first.order.status == "NEW"


# --- determinism --------------------------------------------------------------------------------


def _scripted_session() -> tuple[list[Trade], list[tuple[str, ...]]]:
    engine, clock = make_engine()
    seen: list[Event] = []
    engine.listeners.append(seen.append)
    engine.place_order(ACCOUNT, market("BUY", "0.2", client_id="entry"))
    engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "49000.3", "0.2", reduce_only=True))
    engine.place_algo(
        ACCOUNT, algo("SELL", "TAKE_PROFIT_MARKET", "51000.3", "0.1", reduce_only=True)
    )
    engine.place_order(ACCOUNT, limit("BUY", "0.1", "49500"))
    move(engine, clock, "50400", "49400", "51200", "50100", "48800", "49900")
    return engine.trades(ACCOUNT, BTC), [_describe(e) for e in seen]


def test_same_inputs_give_the_same_fills_every_time() -> None:
    first_trades, first_events = _scripted_session()
    second_trades, second_events = _scripted_session()

    assert len(first_trades) == 4
    assert first_trades == second_trades
    assert first_events == second_events


# --- history ------------------------------------------------------------------------------------


def test_forget_history_keeps_open_orders_and_the_newest_closed_with_their_trades() -> None:
    engine, _ = make_engine()
    for n in range(5):  # five filled MARKET orders, each with one trade
        engine.place_order(ACCOUNT, market("BUY" if n % 2 == 0 else "SELL", "0.01"))
    resting = engine.place_order(ACCOUNT, limit("BUY", "0.01", "40000", client_id="resting"))
    stop = engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "45000", "0.01"))
    for _ in range(4):  # four cancelled algo orders
        placed = engine.place_algo(ACCOUNT, algo("SELL", "STOP_MARKET", "45000", "0.01"))
        engine.cancel_algo(ACCOUNT, algo_id=placed.algo_id)
    filled = [o.order_id for o in engine.all_orders(ACCOUNT, BTC) if o.status == "FILLED"]

    forgotten = engine.forget_history(ACCOUNT, keep=2)

    # 3 orders and their 3 trades, 2 algo orders.
    assert forgotten == 8
    assert [o.order_id for o in engine.all_orders(ACCOUNT, BTC) if not o.is_open] == filled[-2:]
    assert [t.order_id for t in engine.trades(ACCOUNT, BTC)] == filled[-2:]
    assert engine.get_order(ACCOUNT, BTC, client_id="resting").status == "NEW"
    assert [a.algo_id for a in engine.open_algos(ACCOUNT, BTC)] == [stop.algo_id]
    assert len(engine.all_algos(ACCOUNT, BTC)) == 3
    assert reject_code(engine.get_order, ACCOUNT, BTC, order_id=filled[0]) == -2013
    assert resting.order_id in {o.order_id for o in engine.open_orders(ACCOUNT, BTC)}


def test_ids_keep_counting_after_history_is_forgotten() -> None:
    engine, _ = make_engine()
    first = engine.place_order(ACCOUNT, market("BUY", "0.01"))
    engine.forget_history(ACCOUNT, keep=0)
    state = engine.dump_state()
    restored, _ = make_engine()
    restored.load_state(state)

    second = restored.place_order(ACCOUNT, market("SELL", "0.01"))

    assert restored.all_orders(ACCOUNT, BTC) == [second]
    assert second.order_id > first.order_id
    assert restored.trades(ACCOUNT, BTC)[0].trade_id > 9_000_001


def test_forget_history_is_a_no_op_within_the_limit() -> None:
    engine, _ = make_engine()
    engine.place_order(ACCOUNT, market("BUY", "0.01"))
    before = engine.dump_state()

    assert engine.forget_history(ACCOUNT, keep=1) == 0
    assert engine.dump_state() == before
