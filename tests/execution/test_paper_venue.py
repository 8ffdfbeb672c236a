"""``PaperVenue``: the venue port over the matching engine, fed with real candles.

Pure: no database, no network. Candles from ``execution/emulator/data``; rules from the
emulator's exchangeInfo rows (BTCUSDT: tick 0.10, step 0.001, min notional 50).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import pytest

from execution.emulator.market import DATA_DIR, load_candles
from execution.engine import Event, MatchingEngine
from execution.venues import errors
from execution.venues.base import (
    Kline,
    OrderRequest,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    UserTrade,
    VenueOrder,
)
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.paper import PAPER_LISTEN_KEY, MarketClock, PaperVenue

D = Decimal
BTC = "BTCUSDT"
BTC_FILE = DATA_DIR / "BTCUSDT-1m-2022-01.csv"
TICK = D("0.10")
SLIPPAGE = D("0.0002")
TAKER = D("0.0005")


@functools.cache
def btc_candles() -> tuple[Kline, ...]:
    interval, candles = load_candles(BTC_FILE)
    assert interval == "1m"
    return tuple(candles)


def fed_venue(count: int = 1) -> PaperVenue:
    """A standalone venue with the first ``count`` BTC candles fed."""
    venue = PaperVenue.standalone()
    for candle in btc_candles()[:count]:
        venue.feed(BTC, candle)
    return venue


def slipped(price: Decimal, side: Side) -> Decimal:
    """The engine's documented market fill: price moved by slippage, to the tick against us."""
    if side == Side.BUY:
        return (price * (1 + SLIPPAGE) / TICK).to_integral_value(ROUND_CEILING) * TICK
    return (price * (1 - SLIPPAGE) / TICK).to_integral_value(ROUND_FLOOR) * TICK


def market(side: Side, qty: str, client_id: str | None = None, **kw: Any) -> OrderRequest:
    return OrderRequest(
        symbol=BTC, side=side, type=OrderType.MARKET, quantity=D(qty), client_id=client_id, **kw
    )


def conditional(
    type_: OrderType, trigger: Decimal, client_id: str | None, qty: str = "0.01"
) -> OrderRequest:
    """A long's exit: SELL, reduce-only."""
    return OrderRequest(
        symbol=BTC,
        side=Side.SELL,
        type=type_,
        quantity=D(qty),
        trigger_price=trigger,
        reduce_only=True,
        client_id=client_id,
    )


def recorded_events(venue: PaperVenue) -> list[Event]:
    seen: list[Event] = []
    venue.engine.listeners.append(seen.append)
    return seen


# --- the trio flow on real candles --------------------------------------------------------------


def _run_trio(
    venue: PaperVenue, *, stop_pct: Decimal, take_pct: Decimal, prefix: str
) -> tuple[VenueOrder, VenueOrder, VenueOrder, Kline]:
    """Market entry, reduce-only stop and take-profit with client ids, then candles until one
    exit fills. Returns (entry, stop, take-profit) as last read, and the deciding candle."""
    entry = venue.place_order(market(Side.BUY, "0.01", client_id=f"{prefix}-entry"))
    sl = venue.place_algo_order(
        conditional(OrderType.STOP_MARKET, entry.avg_price * (1 - stop_pct), f"{prefix}-sl")
    )
    tp = venue.place_algo_order(
        conditional(OrderType.TAKE_PROFIT_MARKET, entry.avg_price * (1 + take_pct), f"{prefix}-tp")
    )
    for candle in btc_candles()[1:]:
        venue.feed(BTC, candle)
        sl = venue.get_algo_order(symbol=BTC, client_id=f"{prefix}-sl")
        tp = venue.get_algo_order(symbol=BTC, client_id=f"{prefix}-tp")
        if sl.status != "NEW" or tp.status != "NEW":
            return entry, sl, tp, candle
    raise AssertionError("no exit filled over the whole file")


@pytest.mark.parametrize(
    ("stop_pct", "take_pct", "winner"),
    [(D("0.005"), D("0.005"), "sl"), (D("0.01"), D("0.001"), "tp")],
)
def test_trio_exit_fills_at_trigger_moved_by_slippage_and_realized_pnl_matches(
    stop_pct: Decimal, take_pct: Decimal, winner: str
) -> None:
    venue = fed_venue()
    first = btc_candles()[0]

    entry, sl, tp, candle = _run_trio(venue, stop_pct=stop_pct, take_pct=take_pct, prefix="b1")

    # Entry: a MARKET order comes back filled, at the close moved by slippage.
    assert (entry.is_algo, entry.status, entry.type) == (False, "FILLED", OrderType.MARKET)
    assert (entry.client_id, entry.executed_qty) == ("b1-entry", D("0.01"))
    assert entry.avg_price == slipped(first.close, Side.BUY)
    filled, survivor = (sl, tp) if winner == "sl" else (tp, sl)
    assert (filled.is_algo, filled.status, filled.client_id) == (True, "FINISHED", f"b1-{winner}")
    assert filled.trigger_price is not None
    assert filled.actual_order_id is not None
    exit_price = slipped(filled.trigger_price, Side.SELL)
    assert filled.avg_price == exit_price
    # Binance does not link the two exits: the other one is still working.
    assert (survivor.status, survivor.actual_order_id) == ("NEW", None)
    child = venue.get_order(symbol=BTC, venue_id=filled.actual_order_id)
    assert (child.is_algo, child.status, child.client_id) == (False, "FILLED", filled.client_id)
    assert (child.type, child.avg_price, child.reduce_only) == (filled.type, exit_price, True)
    # User trades: the entry and the exit, with the exit's realized PnL.
    opened, closed = venue.user_trades(symbol=BTC)
    assert (opened.order_id, opened.price, opened.realized_pnl) == (
        entry.venue_id,
        entry.avg_price,
        0,
    )
    assert (closed.order_id, closed.side, closed.price) == (child.venue_id, Side.SELL, exit_price)
    assert closed.realized_pnl == D("0.01") * (exit_price - entry.avg_price)
    assert closed.commission == D("0.01") * exit_price * TAKER
    # Stamped with the time of a path vertex of the deciding candle.
    assert closed.time_ms in {candle.open_time_ms + k * 20_000 for k in (1, 2, 3)}
    assert venue.positions() == []
    [balance] = venue.balances()
    assert balance.wallet_balance == (
        D(10000) - opened.commission - closed.commission + closed.realized_pnl
    )
    # The platform cancels the survivor; both kinds are covered by cancel_all.
    venue.cancel_all(symbol=BTC)
    assert venue.open_orders() == []
    assert venue.get_algo_order(symbol=BTC, venue_id=survivor.venue_id).status == "CANCELED"


def test_stop_on_the_first_btc_drop_fills_at_a_pinned_price() -> None:
    venue = fed_venue()

    entry, sl, _, candle = _run_trio(venue, stop_pct=D("0.005"), take_pct=D("0.005"), prefix="p")

    # 46377 x 1.0002 -> 46386.3; stop 46386.3 x 0.995 rounds up to 46154.4 (triggers no later);
    # 46154.4 x 0.9998 = 46145.16912 -> 46145.1. The 59th candle is the first to reach it.
    assert (entry.avg_price, sl.trigger_price, sl.avg_price) == (
        D("46386.3"),
        D("46154.4"),
        D("46145.1"),
    )
    assert candle.open_time_ms == btc_candles()[58].open_time_ms
    assert venue.user_trades(symbol=BTC)[-1].realized_pnl == D("-2.412")


def test_backtest_over_the_same_candles_twice_gives_identical_trades() -> None:
    def backtest() -> tuple[list[UserTrade], list[tuple[str, str, str]]]:
        venue = PaperVenue.standalone()
        round_no = 0
        for candle in btc_candles()[:720]:
            venue.feed(BTC, candle)
            if venue.positions():
                continue
            # Flat: cancel the exit that survived, then a new trio.
            venue.cancel_all(symbol=BTC)
            round_no += 1
            entry = venue.place_order(market(Side.BUY, "0.01", client_id=f"r{round_no}"))
            for type_, factor in (
                (OrderType.STOP_MARKET, D("0.997")),
                (OrderType.TAKE_PROFIT_MARKET, D("1.003")),
            ):
                venue.place_algo_order(
                    conditional(type_, entry.avg_price * factor, f"r{round_no}-{type_}")
                )
        algos = [
            (a.client_algo_id, a.status, str(a.actual_order_id))
            for a in venue.engine.all_algos(venue.account_id, BTC)
        ]
        return venue.user_trades(symbol=BTC), algos

    first_trades, first_algos = backtest()
    second_trades, second_algos = backtest()

    assert len(first_trades) > 10
    assert first_trades == second_trades
    assert first_algos == second_algos


# --- pre-flight before the engine ---------------------------------------------------------------


def test_order_below_min_notional_is_refused_before_the_engine() -> None:
    venue = fed_venue()
    seen = recorded_events(venue)

    # 0.001 x 46377 = 46.4 < 50.
    with pytest.raises(errors.PreflightError) as info:
        venue.place_order(market(Side.BUY, "0.001"))

    assert info.value.rule == "MIN_NOTIONAL"
    assert seen == []
    assert venue.engine.all_orders(venue.account_id, BTC) == []
    assert venue.balances()[0].wallet_balance == D(10000)


def test_reduce_only_stop_below_min_notional_is_exempt_from_it() -> None:
    venue = fed_venue()
    venue.place_order(market(Side.BUY, "0.01"))

    stop = venue.place_algo_order(
        conditional(OrderType.STOP_MARKET, D(40000), "tiny-sl", qty="0.001")
    )

    assert stop.status == "NEW"


@pytest.mark.parametrize(
    ("request_", "rule"),
    [
        (OrderRequest(symbol="DOGEUSDT", side=Side.BUY, type=OrderType.MARKET, quantity=D(1)),
         "SYMBOL"),
        (OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.MARKET, quantity=D("0.0001")),
         "LOT_SIZE"),
        (OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.LIMIT, quantity=D("0.01"),
                      price=D(50000)),
         "MANDATORY_PARAM"),  # no timeInForce
        (OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.LIMIT, quantity=D("0.01"),
                      price=D(50000), time_in_force=TimeInForce.GTC),
         "PERCENT_PRICE"),  # 50000 > 46377 x 1.05
        (OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.MARKET, quantity=0.01),  # type: ignore[arg-type]
         "NOT_DECIMAL"),
        (OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.MARKET, quantity=D("0.01"),
                      position_side=PositionSide.LONG),
         "POSITION_SIDE"),
    ],
)  # fmt: skip
def test_preflight_refusals_reach_neither_engine_nor_events(
    request_: OrderRequest, rule: str
) -> None:
    venue = fed_venue()
    seen = recorded_events(venue)

    with pytest.raises(errors.PreflightError) as info:
        venue.place_order(request_)

    assert info.value.rule == rule
    assert seen == []
    assert venue.engine.all_orders(venue.account_id, BTC) == []


def test_market_order_before_any_price_is_refused_for_want_of_a_mark() -> None:
    venue = PaperVenue.standalone()

    with pytest.raises(errors.PreflightError) as info:
        venue.place_order(market(Side.BUY, "0.01"))

    assert info.value.rule == "MARK_PRICE_UNKNOWN"


def test_preflight_rounds_quantity_down_and_limit_price_to_the_safe_side() -> None:
    venue = fed_venue()

    order = venue.place_order(
        OrderRequest(
            symbol=BTC,
            side=Side.BUY,
            type=OrderType.LIMIT,
            quantity=D("0.0129"),
            price=D("46000.07"),
            time_in_force=TimeInForce.GTC,
            client_id="rounded",
        )
    )

    assert (order.status, order.quantity, order.price) == ("NEW", D("0.012"), D("46000.0"))


# --- the same port-level refusals as BinanceFuturesVenue ----------------------------------------


@pytest.fixture
def binance() -> BinanceFuturesVenue:
    venue = BinanceFuturesVenue(api_key="k" * 64, api_secret="s" * 64)

    def no_network(*args: object, **kwargs: object) -> None:
        pytest.fail("a port-level refusal must not reach the exchange")

    venue.client.around = no_network
    return venue


PORT_REFUSALS: list[tuple[str, str, OrderRequest]] = [
    ("place_order", "ALGO_ONLY", conditional(OrderType.STOP_MARKET, D(40000), "sl-1")),
    ("place_order", "ALGO_ONLY", conditional(OrderType.TAKE_PROFIT_MARKET, D(50000), "tp-1")),
    ("place_algo_order", "REGULAR_ONLY", market(Side.BUY, "0.01", client_id="m-1")),
    (
        "place_algo_order",
        "REGULAR_ONLY",
        OrderRequest(
            symbol=BTC,
            side=Side.BUY,
            type=OrderType.LIMIT,
            quantity=D("0.01"),
            price=D(46000),
            time_in_force=TimeInForce.GTC,
            client_id="l-1",
        ),
    ),
    ("place_algo_order", "CLIENT_ID", conditional(OrderType.STOP_MARKET, D(40000), None)),
    ("place_algo_order", "CLIENT_ID", conditional(OrderType.STOP_MARKET, D(40000), "")),
]


@pytest.mark.parametrize(("method", "rule", "request_"), PORT_REFUSALS)
def test_paper_refuses_exactly_what_binance_venue_refuses_at_the_port(
    binance: BinanceFuturesVenue, method: str, rule: str, request_: OrderRequest
) -> None:
    paper = fed_venue()
    seen = recorded_events(paper)

    with pytest.raises(errors.PreflightError) as from_binance:
        getattr(binance, method)(request_)
    with pytest.raises(errors.PreflightError) as from_paper:
        getattr(paper, method)(request_)

    assert from_paper.value.rule == from_binance.value.rule == rule
    assert from_paper.value.detail == from_binance.value.detail
    assert seen == []


# --- engine refusals, translated ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "code", "message"),
    [
        (lambda v: v.place_order(market(Side.SELL, "0.01", reduce_only=True)),
         errors.OrderRejected, -2022, "ReduceOnly Order is rejected."),
        (lambda v: v.place_order(market(Side.BUY, "5")),
         errors.OrderRejected, -2019, "Margin is insufficient."),
        (lambda v: v.place_algo_order(conditional(OrderType.STOP_MARKET, D(47000), "s")),
         errors.OrderRejected, -2021, "Order would immediately trigger."),
        (lambda v: v.cancel_order(symbol=BTC, client_id="nope"),
         errors.NotFound, -2011, "Unknown order sent."),
        (lambda v: v.cancel_algo_order(symbol=BTC, venue_id=1),
         errors.NotFound, -2011, "Unknown order sent."),
        (lambda v: v.get_order(symbol=BTC, venue_id=1),
         errors.NotFound, -2013, "Order does not exist."),
        (lambda v: v.get_algo_order(symbol=BTC, client_id="nope"),
         errors.NotFound, -2013, "Order does not exist."),
        (lambda v: v.set_leverage(symbol=BTC, leverage=126),
         errors.OrderRejected, -4028, "Leverage 126 is not valid"),
        (lambda v: v.get_order(symbol="DOGEUSDT", venue_id=1),
         errors.OrderRejected, -1121, "Invalid symbol."),
        (lambda v: v.klines(symbol=BTC, interval="7m"),
         errors.OrderRejected, -1120, "Invalid interval."),
        (lambda v: v.keepalive_listen_key("other"),
         errors.OrderRejected, -1125, "This listenKey does not exist."),
    ],
)  # fmt: skip
def test_refusals_carry_binance_class_code_and_message(
    call: Callable[[PaperVenue], object], error: type[errors.VenueError], code: int, message: str
) -> None:
    venue = fed_venue()

    with pytest.raises(error) as info:
        call(venue)

    assert type(info.value) is error
    assert (info.value.code, info.value.message, info.value.http_status) == (code, message, 400)


def test_duplicate_open_client_id_is_rejected_and_reusable_after_close() -> None:
    venue = fed_venue()
    limit = OrderRequest(
        symbol=BTC, side=Side.BUY, type=OrderType.LIMIT, quantity=D("0.01"), price=D(46000),
        time_in_force=TimeInForce.GTC, client_id="dup",
    )  # fmt: skip
    first = venue.place_order(limit)

    with pytest.raises(errors.OrderRejected) as info:
        venue.place_order(limit)
    assert info.value.code == -4116
    venue.cancel_order(symbol=BTC, client_id="dup")
    second = venue.place_order(limit)

    assert second.venue_id != first.venue_id
    assert venue.get_order(symbol=BTC, client_id="dup").venue_id == second.venue_id


# --- listing, cancelling, account ---------------------------------------------------------------


def test_open_orders_list_both_kinds_and_cancel_all_cancels_both() -> None:
    venue = fed_venue()
    venue.place_order(market(Side.BUY, "0.01"))
    venue.place_order(
        OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.LIMIT, quantity=D("0.01"),
                     price=D(46000), time_in_force=TimeInForce.GTC, client_id="lim")
    )  # fmt: skip
    venue.place_algo_order(conditional(OrderType.STOP_MARKET, D(45000), "sl"))

    listed = venue.open_orders(symbol=BTC)

    assert [(o.client_id, o.is_algo, o.status) for o in listed] == [
        ("lim", False, "NEW"),
        ("sl", True, "NEW"),
    ]
    assert venue.open_orders() == listed

    venue.cancel_all(symbol=BTC)

    assert venue.open_orders() == []
    assert venue.get_order(symbol=BTC, client_id="lim").status == "CANCELED"
    assert venue.get_algo_order(symbol=BTC, client_id="sl").status == "CANCELED"


def test_cancel_order_and_cancel_algo_order_return_the_canceled_order() -> None:
    venue = fed_venue()
    venue.place_order(market(Side.BUY, "0.01"))
    resting = venue.place_order(
        OrderRequest(symbol=BTC, side=Side.SELL, type=OrderType.LIMIT, quantity=D("0.01"),
                     price=D(47000), time_in_force=TimeInForce.GTC, reduce_only=True)
    )  # fmt: skip
    stop = venue.place_algo_order(conditional(OrderType.STOP_MARKET, D(45000), "sl"))

    canceled = venue.cancel_order(symbol=BTC, venue_id=resting.venue_id)
    canceled_algo = venue.cancel_algo_order(symbol=BTC, client_id="sl")

    assert (canceled.venue_id, canceled.status, canceled.is_algo) == (
        resting.venue_id,
        "CANCELED",
        False,
    )
    assert (canceled_algo.venue_id, canceled_algo.status, canceled_algo.is_algo) == (
        stop.venue_id,
        "CANCELED",
        True,
    )
    assert canceled_algo.raw["client_algo_id"] == "sl"


def test_cancel_without_any_reference_is_a_programming_error() -> None:
    venue = fed_venue()

    with pytest.raises(ValueError, match="give client_id or venue_id"):
        venue.cancel_order(symbol=BTC)


def test_positions_and_balances_reflect_the_open_position() -> None:
    venue = fed_venue()
    entry = venue.place_order(market(Side.BUY, "0.01"))

    [position] = venue.positions(symbol=BTC)
    [balance] = venue.balances()

    assert (position.position_side, position.amount) == (PositionSide.BOTH, D("0.01"))
    assert (position.entry_price, position.mark_price) == (entry.avg_price, D(46377))
    assert position.unrealized_pnl == D("0.01") * (D(46377) - entry.avg_price)
    fee = D("0.01") * entry.avg_price * TAKER
    assert balance.asset == "USDT"
    assert balance.wallet_balance == D(10000) - fee
    assert balance.unrealized_pnl == position.unrealized_pnl
    # Available: wallet + unrealized - 0.01 x 46377 / 20 of position margin.
    assert balance.available_balance == (
        balance.wallet_balance + position.unrealized_pnl - D("0.01") * D(46377) / 20
    )
    assert venue.positions(symbol="ETHUSDT") == []


def test_user_trades_select_by_from_id_or_start_time() -> None:
    venue = fed_venue(3)
    first = venue.place_order(market(Side.BUY, "0.01"))
    venue.feed(BTC, btc_candles()[3])
    second = venue.place_order(market(Side.BUY, "0.01"))
    trades = venue.user_trades(symbol=BTC)

    assert [t.order_id for t in trades] == [first.venue_id, second.venue_id]
    assert venue.user_trades(symbol=BTC, from_id=trades[1].trade_id) == trades[1:]
    assert venue.user_trades(symbol=BTC, start_ms=trades[1].time_ms) == trades[1:]
    assert trades[1].time_ms - trades[0].time_ms == 60_000


def test_position_mode_switch_is_idempotent_and_refused_with_a_position() -> None:
    venue = fed_venue()

    venue.set_position_mode(dual=False)  # -4059 "no need to change" is success
    venue.set_position_mode(dual=True)
    venue.set_position_mode(dual=True)
    assert venue.position_mode_dual() is True
    venue.place_order(market(Side.BUY, "0.01", position_side=PositionSide.LONG))

    with pytest.raises(errors.OrderRejected) as info:
        venue.set_position_mode(dual=False)

    assert info.value.code == -4068
    assert venue.position_mode_dual() is True


def test_hedge_mode_orders_pass_preflight_and_keep_sides_apart() -> None:
    venue = fed_venue()
    venue.set_position_mode(dual=True)

    venue.place_order(market(Side.BUY, "0.01", position_side=PositionSide.LONG))
    venue.place_order(market(Side.SELL, "0.02", position_side=PositionSide.SHORT))

    assert [(p.position_side, p.amount) for p in venue.positions()] == [
        (PositionSide.LONG, D("0.01")),
        (PositionSide.SHORT, D("-0.02")),
    ]


def test_set_leverage_changes_the_margin_needed() -> None:
    venue = PaperVenue.standalone(balances={"USDT": D(100)})
    venue.feed(BTC, btc_candles()[0])

    # 0.05 x 46377 = 2318.85: 115.9 of margin at x20, 23.2 at x100.
    with pytest.raises(errors.OrderRejected):
        venue.place_order(market(Side.BUY, "0.05"))
    assert venue.set_leverage(symbol=BTC, leverage=100) == 100

    assert venue.place_order(market(Side.BUY, "0.05")).status == "FILLED"


def test_listen_key_is_a_fixed_fake_accepted_back() -> None:
    venue = PaperVenue.standalone()

    key = venue.create_listen_key()
    venue.keepalive_listen_key(key)
    venue.close_listen_key(key)

    assert key == PAPER_LISTEN_KEY


# --- market data and time -----------------------------------------------------------------------


def test_klines_return_fed_candles_filtered_by_start_end_and_limit() -> None:
    venue = fed_venue(10)
    candles = btc_candles()[:10]

    assert venue.klines(symbol=BTC, interval="1m") == list(candles)
    assert venue.klines(symbol=BTC, interval="1m", limit=3) == list(candles[-3:])
    assert venue.klines(
        symbol=BTC, interval="1m", start_ms=candles[2].open_time_ms, limit=3
    ) == list(candles[2:5])
    assert venue.klines(
        symbol=BTC, interval="1m", start_ms=candles[2].open_time_ms, end_ms=candles[3].open_time_ms
    ) == list(candles[2:4])
    assert venue.klines(symbol=BTC, interval="5m") == []
    assert venue.klines(symbol="ETHUSDT", interval="1m") == []


def test_klines_keep_the_last_1500_candles() -> None:
    venue = fed_venue(1600)

    kept = venue.klines(symbol=BTC, interval="1m", limit=5000)

    assert kept == list(btc_candles()[100:1600])


def test_feed_refuses_a_candle_that_does_not_follow_the_last_one() -> None:
    venue = fed_venue(2)

    with pytest.raises(ValueError, match="does not follow"):
        venue.feed(BTC, btc_candles()[1])
    with pytest.raises(ValueError, match="no rules"):
        venue.feed("DOGEUSDT", btc_candles()[2])


def test_feed_moves_market_time_along_the_intrabar_path() -> None:
    venue = PaperVenue.standalone()
    candle = btc_candles()[0]
    stamps: list[tuple[int, Decimal | None]] = []
    venue.engine.listeners.append(
        lambda _: stamps.append((venue.server_time_ms(), venue.mark_price(BTC)))
    )
    venue.feed_price(BTC, D(46300), candle.open_time_ms - 1)
    venue.place_order(market(Side.SELL, "0.01"))
    venue.place_algo_order(
        OrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.STOP_MARKET,
                     trigger_price=D(46380), reduce_only=True, quantity=D("0.01"),
                     client_id="short-sl")
    )  # fmt: skip
    stamps.clear()

    # Bullish: open 46319 -> low 46319 -> high 46385 -> close 46377; the stop fires going up.
    venue.feed(BTC, candle)

    assert venue.server_time_ms() == candle.close_time_ms + 1
    assert stamps[0] == (candle.open_time_ms + 40_000, D(46385))
    assert venue.user_trades(symbol=BTC)[-1].price == slipped(D(46380), Side.BUY)


def test_a_given_clock_is_used_as_is() -> None:
    now = [1_800_000_000_000]
    venue = PaperVenue.standalone(clock=lambda: now[0])

    venue.feed(BTC, btc_candles()[0])
    order = venue.place_order(market(Side.BUY, "0.01"))

    assert venue.server_time_ms() == now[0]
    assert order.update_time_ms == now[0]


def test_market_clock_never_goes_back() -> None:
    clock = MarketClock(5)

    clock.advance_to(10)
    clock.advance_to(7)

    assert clock() == 10


def test_standalone_builds_rules_from_the_emulator_rows_and_one_engine() -> None:
    venue = PaperVenue.standalone(symbols=("BTCUSDT", "XRPUSDT"))

    rules = venue.symbol_rules()

    assert sorted(rules) == ["BTCUSDT", "XRPUSDT"]
    assert (rules[BTC].tick_size, rules[BTC].min_notional) == (D("0.10"), D(50))
    assert venue.engine.tick_sizes == {BTC: D("0.10"), "XRPUSDT": D("0.0001")}
    assert isinstance(venue.engine, MatchingEngine)
    assert venue.name == "paper"
    with pytest.raises(ValueError, match="no exchangeInfo row"):
        PaperVenue.standalone(symbols=("DOGEUSDT",))


def test_constructor_refuses_an_account_the_engine_does_not_have() -> None:
    engine = MatchingEngine(clock=lambda: 0, tick_sizes={})

    with pytest.raises(ValueError, match="does not exist"):
        PaperVenue(engine=engine, account_id="ghost", rules={}, clock=lambda: 0)
