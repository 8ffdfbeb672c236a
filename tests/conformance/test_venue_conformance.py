"""One set of venue cases, run against every target (see ``conftest.py``): the emulator, and the
Binance testnet when credentials are given. A case that passes on the emulator and fails on the
testnet is a place where the emulator (or our reading of Binance) is wrong.

Safe on a real account: only ``/order/test``, BUY limits resting at 96 % of the mark, and
conditional BUYs that cannot trigger (stops at 150 %, take-profits and trailing activation at
60 % of the mark); the ``btc`` fixture cancels everything on BTCUSDT afterwards.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from execution.rules import format_decimal
from execution.venues.base import OrderRequest, OrderType, Side, TimeInForce
from execution.venues.errors import AuthRejected, NotFound, OrderRejected, TimestampRejected
from tests.conformance.support import SYMBOL, Book, Target, client_id


def resting_buy(btc: Book, cid: str, tif: TimeInForce = TimeInForce.GTC) -> OrderRequest:
    price = btc.price_at("0.96")
    return OrderRequest(
        symbol=SYMBOL,
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=btc.qty_for(price),
        price=price,
        time_in_force=tif,
        client_id=cid,
    )


def far_stop_buy(btc: Book, cid: str) -> OrderRequest:
    trigger = btc.price_at("1.5")
    return OrderRequest(
        symbol=SYMBOL,
        side=Side.BUY,
        type=OrderType.STOP_MARKET,
        quantity=btc.qty_for(trigger),
        trigger_price=trigger,
        client_id=cid,
    )


def far_take_profit_buy(btc: Book, cid: str) -> OrderRequest:
    trigger = btc.price_at("0.6")
    return OrderRequest(
        symbol=SYMBOL,
        side=Side.BUY,
        type=OrderType.TAKE_PROFIT_MARKET,
        quantity=btc.qty_for(trigger),
        trigger_price=trigger,
        client_id=cid,
    )


def raw_order_test(target: Target, **params: str) -> Any:
    """POST /fapi/v1/order/test as given: no pre-flight, so the venue's verdict is what we see."""
    return target.venue.client._request_futures_api("post", "order/test", True, data=params)


def open_ids(target: Target) -> dict[str, bool]:
    """Open orders on BTCUSDT: client id -> is_algo."""
    return {o.client_id: o.is_algo for o in target.venue.open_orders(symbol=SYMBOL)}


# --- error families -----------------------------------------------------------------------------


def test_wrong_secret_is_auth_rejected_with_invalid_signature_1022(target: Target) -> None:
    venue = target.venue_with(api_secret="0" * 64)

    with pytest.raises(AuthRejected) as caught:
        venue.balances()

    assert (caught.value.code, caught.value.http_status) == (-1022, 400)
    assert caught.value.message == "Signature for this request is not valid."


def test_timestamp_outside_recv_window_is_timestamp_rejected_then_next_call_resyncs(
    target: Target,
) -> None:
    venue = target.venue_with(api_secret=target.api_secret)
    venue.resync_clock()
    # The host clock jumps 20 s back after a sync: requests now leave stamped 20 s in the
    # past, beyond the 5 s recvWindow.
    venue.client.timestamp_offset -= 20_000

    with pytest.raises(TimestampRejected) as caught:
        venue.balances()

    assert (caught.value.code, caught.value.http_status) == (-1021, 400)
    assert caught.value.message == "Timestamp for this request is outside of the recvWindow."
    assert venue.balances()  # the rejection forced a resync: the next signed call passes


def test_query_of_unknown_client_id_is_not_found_2013(target: Target) -> None:
    with pytest.raises(NotFound) as caught:
        target.venue.get_order(symbol=SYMBOL, client_id=client_id("nope"))

    assert (caught.value.code, caught.value.http_status) == (-2013, 400)
    assert caught.value.message == "Order does not exist."


def test_cancel_of_unknown_client_id_is_not_found_2011(target: Target) -> None:
    with pytest.raises(NotFound) as caught:
        target.venue.cancel_order(symbol=SYMBOL, client_id=client_id("nope"))

    assert (caught.value.code, caught.value.http_status) == (-2011, 400)
    assert caught.value.message == "Unknown order sent."


def test_order_below_min_notional_sent_raw_is_order_rejected_4164(
    target: Target, btc: Book
) -> None:
    rules = btc.rules
    # Half the minimum notional at minQty; a BUY this far below the market is within
    # PERCENT_PRICE (which caps BUYs only from above).
    price = btc.on_tick(min(btc.mark * Decimal("0.96"), rules.min_notional / rules.min_qty / 2))
    assert price >= rules.min_price

    with pytest.raises(OrderRejected) as caught:
        raw_order_test(
            target, symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
            quantity=format_decimal(rules.min_qty), price=format_decimal(price),
        )  # fmt: skip

    assert (caught.value.code, caught.value.http_status) == (-4164, 400)
    assert caught.value.message == (
        f"Order's notional must be no smaller than {format_decimal(rules.min_notional)} "
        "(unless you choose reduce only)."
    )


def test_price_off_tick_sent_raw_is_order_rejected_4014(target: Target, btc: Book) -> None:
    price = btc.price_at("0.96") + btc.rules.tick_size / 2

    with pytest.raises(OrderRejected) as caught:
        raw_order_test(
            target, symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
            quantity=format_decimal(btc.qty_for(price)), price=format_decimal(price),
        )  # fmt: skip

    assert (caught.value.code, caught.value.http_status) == (-4014, 400)
    assert caught.value.message == "Price not increased by tick size."


def test_quantity_beyond_precision_sent_raw_is_order_rejected_1111(
    target: Target, btc: Book
) -> None:
    price = btc.price_at("0.96")
    quantity = btc.qty_for(price) + Decimal(1).scaleb(-btc.rules.quantity_precision - 1)

    with pytest.raises(OrderRejected) as caught:
        raw_order_test(
            target, symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
            quantity=format_decimal(quantity), price=format_decimal(price),
        )  # fmt: skip

    assert (caught.value.code, caught.value.http_status) == (-1111, 400)
    assert caught.value.message == "Precision is over the maximum defined for this asset."


def test_conditional_type_on_regular_order_endpoint_is_order_rejected_4120(
    target: Target, btc: Book
) -> None:
    trigger = btc.price_at("1.5")
    params = {
        "symbol": SYMBOL, "side": "BUY", "type": "STOP_MARKET",
        "quantity": format_decimal(btc.qty_for(trigger)), "stopPrice": format_decimal(trigger),
        "newClientOrderId": client_id("4120"),
    }  # fmt: skip

    with pytest.raises(OrderRejected) as caught:
        target.venue.client._request_futures_api("post", "order", True, data=params)

    assert (caught.value.code, caught.value.http_status) == (-4120, 400)
    assert caught.value.message == (
        "Order type not supported for this endpoint. "
        "Please use the Algo Order API endpoints instead."
    )
    assert params["newClientOrderId"] not in open_ids(target)


def test_stop_that_would_trigger_at_once_is_order_rejected_2021(target: Target, btc: Book) -> None:
    cid = client_id("2021")
    trigger = btc.price_at("0.9")  # a BUY stop below the market fires on placement
    # Reduce-only: even if it did fire, it could not open a position.
    request = OrderRequest(
        symbol=SYMBOL, side=Side.BUY, type=OrderType.STOP_MARKET, quantity=btc.rules.min_qty,
        trigger_price=trigger, reduce_only=True, client_id=cid,
    )  # fmt: skip

    with pytest.raises(OrderRejected) as caught:
        target.venue.place_algo_order(request)

    assert (caught.value.code, caught.value.http_status) == (-2021, 400)
    assert caught.value.message == "Order would immediately trigger."
    assert cid not in open_ids(target)


def test_second_open_order_with_same_client_id_is_order_rejected_4116(
    target: Target, btc: Book
) -> None:
    cid = client_id("dup")
    first = target.venue.place_order(resting_buy(btc, cid))

    with pytest.raises(OrderRejected) as caught:
        target.venue.place_order(resting_buy(btc, cid))

    assert (caught.value.code, caught.value.http_status) == (-4116, 400)
    assert caught.value.message == "ClientOrderId is duplicated."
    assert [o.venue_id for o in target.venue.open_orders(symbol=SYMBOL)] == [first.venue_id]


# --- order types --------------------------------------------------------------------------------


@pytest.mark.parametrize("tif", [TimeInForce.GTC, TimeInForce.GTX])
def test_limit_buy_below_market_rests_then_cancels_by_client_id(
    target: Target, btc: Book, tif: TimeInForce
) -> None:
    cid = client_id(f"lim{tif}")
    request = resting_buy(btc, cid, tif)

    placed = target.venue.place_order(request)
    queried = target.venue.get_order(symbol=SYMBOL, client_id=cid)
    cancelled = target.venue.cancel_order(symbol=SYMBOL, client_id=cid)

    assert (placed.status, placed.is_algo, placed.client_id) == ("NEW", False, cid)
    assert (placed.type, placed.side, placed.price, placed.quantity) == (
        OrderType.LIMIT, Side.BUY, request.price, request.quantity,
    )  # fmt: skip
    assert (placed.executed_qty, placed.raw["timeInForce"]) == (Decimal(0), tif.value)
    assert (queried.venue_id, queried.status) == (placed.venue_id, "NEW")
    assert (cancelled.venue_id, cancelled.status) == (placed.venue_id, "CANCELED")
    assert cid not in open_ids(target)


def test_market_order_validates_through_test_order_without_placing(
    target: Target, btc: Book
) -> None:
    request = OrderRequest(
        symbol=SYMBOL, side=Side.BUY, type=OrderType.MARKET, quantity=btc.qty_for(btc.mark),
        client_id=client_id("mkt"),
    )  # fmt: skip
    positions_before = target.venue.positions(symbol=SYMBOL)

    target.venue.test_order(request)  # raises on refusal

    assert open_ids(target) == {}
    assert target.venue.positions(symbol=SYMBOL) == positions_before


def _conditional(btc: Book, order_type: OrderType, cid: str) -> OrderRequest:
    if order_type == OrderType.STOP_MARKET:
        return far_stop_buy(btc, cid)
    if order_type == OrderType.TAKE_PROFIT_MARKET:
        return far_take_profit_buy(btc, cid)
    low = btc.price_at("0.6")
    if order_type == OrderType.STOP:
        # Limit price within PERCENT_PRICE (BUY <= mark x 1.05); the trigger is far above.
        price = btc.price_at("1.04")
        fields: dict[str, Any] = {"trigger_price": btc.price_at("1.5"), "price": price}
    elif order_type == OrderType.TAKE_PROFIT:
        fields = {"trigger_price": low, "price": low}
    else:  # TRAILING_STOP_MARKET: a BUY activates only once the price falls to 60 %.
        fields = {"activate_price": low, "callback_rate": Decimal("1")}
    return OrderRequest(
        symbol=SYMBOL, side=Side.BUY, type=order_type, quantity=btc.qty_for(low),
        client_id=cid, **fields,
    )  # fmt: skip


@pytest.mark.parametrize(
    "order_type",
    [
        OrderType.STOP_MARKET,
        OrderType.TAKE_PROFIT_MARKET,
        OrderType.STOP,
        OrderType.TAKE_PROFIT,
        OrderType.TRAILING_STOP_MARKET,
    ],
)
def test_conditional_order_is_an_algo_order_queried_and_cancelled_by_client_algo_id(
    target: Target, btc: Book, order_type: OrderType
) -> None:
    cid = client_id(order_type.value[:8].lower())
    request = _conditional(btc, order_type, cid)

    placed = target.venue.place_algo_order(request)
    queried = target.venue.get_algo_order(symbol=SYMBOL, client_id=cid)
    cancelled = target.venue.cancel_algo_order(symbol=SYMBOL, client_id=cid)

    assert (placed.is_algo, placed.status, placed.client_id, placed.type) == (
        True, "NEW", cid, order_type,
    )  # fmt: skip
    assert (placed.side, placed.quantity, placed.trigger_price) == (
        Side.BUY, request.quantity, request.trigger_price,
    )  # fmt: skip
    if request.price is not None:
        assert placed.price == request.price
    assert (queried.venue_id, queried.status, queried.is_algo) == (placed.venue_id, "NEW", True)
    assert (cancelled.venue_id, cancelled.status) == (placed.venue_id, "CANCELED")
    assert cid not in open_ids(target)


def test_open_orders_lists_regular_and_algo_orders(target: Target, btc: Book) -> None:
    limit_id, stop_id = client_id("ol-lim"), client_id("ol-stop")
    target.venue.place_order(resting_buy(btc, limit_id))
    target.venue.place_algo_order(far_stop_buy(btc, stop_id))

    listed = open_ids(target)

    assert listed == {limit_id: False, stop_id: True}


def test_cancel_all_cancels_regular_and_algo_orders(target: Target, btc: Book) -> None:
    limit_id, tp_id = client_id("ca-lim"), client_id("ca-tp")
    target.venue.place_order(resting_buy(btc, limit_id))
    target.venue.place_algo_order(far_take_profit_buy(btc, tp_id))

    target.venue.cancel_all(symbol=SYMBOL)

    assert target.venue.open_orders(symbol=SYMBOL) == []
    assert target.venue.get_order(symbol=SYMBOL, client_id=limit_id).status == "CANCELED"
    assert target.venue.get_algo_order(symbol=SYMBOL, client_id=tp_id).status == "CANCELED"


# --- account reads ------------------------------------------------------------------------------


def _decimals(obj: object, names: tuple[str, ...]) -> dict[str, type]:
    return {name: type(getattr(obj, name)) for name in names}


def test_balances_parse_to_decimals(target: Target) -> None:
    balances = target.venue.balances()

    assert "USDT" in {b.asset for b in balances}
    names = ("wallet_balance", "available_balance", "unrealized_pnl")
    for balance in balances:
        assert _decimals(balance, names) == dict.fromkeys(names, Decimal)
    usdt = next(b for b in balances if b.asset == "USDT")
    assert usdt.wallet_balance > 0


def test_positions_parse_to_decimals(target: Target) -> None:
    positions = target.venue.positions()

    names = ("amount", "entry_price", "mark_price", "unrealized_pnl")
    for position in positions:
        assert _decimals(position, names) == dict.fromkeys(names, Decimal)
    if target.seeded_position is not None:
        seeded = [p for p in positions if p.symbol == target.trade_symbol]
        assert [p.amount for p in seeded] == [target.seeded_position]
        assert seeded[0].entry_price > 0


def test_user_trades_parse_to_decimals(target: Target) -> None:
    trades = target.venue.user_trades(symbol=target.trade_symbol)

    names = ("price", "qty", "quote_qty", "commission", "realized_pnl")
    for trade in trades:
        assert _decimals(trade, names) == dict.fromkeys(names, Decimal)
        assert trade.quote_qty == pytest.approx(trade.price * trade.qty, rel=Decimal("1e-6"))
    if target.seeded_trades is not None:
        assert [(t.side, t.qty) for t in trades] == target.seeded_trades
