"""Property: pre-flight and the exchange agree on the filters.

For random order requests (BTCUSDT / ETHUSDT / XRPUSDT, every type, prices around the mark on and
off the tick, quantities on and off the step, tiny and huge, flags, time in force, valid and
invalid client ids) sent through ``BinanceFuturesVenue`` to a frozen-market emulator, either
pre-flight refuses the request with a named rule, or the emulator takes the prepared request.
The emulator may still refuse it for a reason pre-flight cannot know (margin, would-trigger,
reduce-only with no position, a duplicate open id, post-only / FOK against the book), but never
for a filter or parameter reason: that would be a hole in pre-flight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.emulator.runner import EmulatorThread
from execution.rules import SymbolRules, round_to_step
from execution.venues.base import (
    CONDITIONAL_TYPES,
    OrderRequest,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    WorkingType,
)
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.errors import OrderRejected, PreflightError
from tests.conformance.support import client_id, emulator_venue, running_emulator

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
#: Refusals that pre-flight exists to prevent (reference §5): precision, price and lot filters,
#: notional, percent price, mandatory / unexpected parameters, type, client id, closePosition.
FILTER_CODES = frozenset(
    {-1111, -4001, -4002, -4003, -4004, -4005, -4006, -4007, -4013, -4014, -4016, -4023, -4024,
     -4164, -1102, -1106, -1116, -4015, -4137, -4120}
)  # fmt: skip
#: Refusals that depend on account or market state, which pre-flight does not see.
STATE_CODES = frozenset({-2019, -2021, -2022, -4116, -5021, -5022})
#: The pre-flight rules a random request may legitimately hit (``execution.rules.preflight``).
PREFLIGHT_RULES = frozenset(
    {"TIME_IN_FORCE", "MANDATORY_PARAM", "PARAM_NOT_REQUIRED", "POSITION_SIDE",
     "CLOSE_POSITION", "CLIENT_ID", "NON_POSITIVE", "LOT_SIZE", "MARKET_LOT_SIZE",
     "PRICE_FILTER", "MIN_NOTIONAL", "PERCENT_PRICE", "MARK_PRICE_UNKNOWN"}
)  # fmt: skip
REGULAR = (OrderType.LIMIT, OrderType.MARKET)
LIMIT_PRICED = (OrderType.LIMIT, OrderType.STOP, OrderType.TAKE_PROFIT)
#: Regular orders weighted up: most of what a bot sends, and the only kinds that fill here.
TYPE_MIX = [OrderType.LIMIT] * 4 + [OrderType.MARKET] * 2 + sorted(CONDITIONAL_TYPES)
#: Around the Algo Order API's bounds, 0.1 and 10 (1 = 1 %).
CALLBACK_RATES = [Decimal(v) for v in ("0.05", "0.1", "1", "2.5", "10", "10.1")]
LIMIT_TIF_MIX = [TimeInForce.GTC] * 3 + [TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTX]
TRIGGERED = (OrderType.STOP, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT,
             OrderType.TAKE_PROFIT_MARKET)  # fmt: skip


@pytest.fixture(scope="module")
def exchange() -> Iterator[EmulatorThread]:
    # A balance no random order can exhaust, and limits no example run can reach: margin and
    # rate limits are not what this property is about.
    with running_emulator(
        balances={"USDT": Decimal(10) ** 12},
        weight_per_minute=1_000_000,
        orders_per_10s=1_000_000,
        orders_per_minute=1_000_000,
    ) as thread:
        yield thread


def _scaled(
    draw: Any, value: Decimal, low: int, usual: int, high: int, *, min_places: int
) -> Decimal:
    """``value * k / 100`` for a drawn ``k`` in [low, high], cut to 6..min_places decimals: the
    result lands on the symbol's grid (tick or step) only by chance. Hypothesis draws its
    simplest value, 0, often: that maps to ``usual`` per cent and to 6 decimals."""
    places = 6 - draw(st.integers(0, 6 - min_places))
    scaled = value * Decimal(usual + draw(st.integers(low - usual, high - usual))) / 100
    return scaled.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def _price(draw: Any, rules: SymbolRules, mark: Decimal) -> Decimal:
    """Mostly 50 % to 150 % of the mark (usually 96 %); sometimes an edge of a filter."""
    edges = [
        mark,
        mark * rules.multiplier_up,  # PERCENT_PRICE bounds
        mark * rules.multiplier_down,
        rules.min_price,
        rules.min_price - rules.tick_size,
        rules.max_price,
        rules.max_price + rules.tick_size,
        -rules.tick_size,
    ]
    if draw(st.integers(0, 99)) < 90:
        return _scaled(draw, mark, 50, 96, 150, min_places=0)
    return draw(st.sampled_from(edges))


def _quantity(draw: Any, rules: SymbolRules, mark: Decimal) -> Decimal:
    """Mostly 0.1x to 5x the minimum notional at the mark, on or off the step; sometimes a
    multiple of the step, or tiny, huge, zero or negative."""
    edges = [
        Decimal("1E-8"),
        rules.step_size / 2,
        rules.min_qty,
        rules.max_qty,
        rules.max_qty + rules.step_size,
        rules.market_max_qty,
        rules.market_max_qty + rules.step_size,
        Decimal(10) ** 9,
        Decimal(0),
    ]
    roll = draw(st.integers(0, 99))
    if roll < 70:
        return _scaled(draw, rules.min_notional / mark, 10, 150, 500, min_places=3)
    if roll < 90:
        return rules.step_size * draw(st.integers(1, 3000))
    return draw(st.sampled_from(edges))


def _client_id(draw: Any) -> str | None:
    roll = draw(st.integers(0, 99))
    if roll < 91:
        return client_id("p")  # fresh: random, but never part of what hypothesis replays
    if roll < 94:
        return None  # fine for LIMIT / MARKET; conditional orders need one
    invalid = ["", "has space", "x" * 37, "trailing-newline\n", "\u00fcnicode", "ok.:/_-AZaz09"]
    return draw(st.sampled_from(invalid))


def _pct(draw: Any, percent: int) -> bool:
    """True ``percent`` % of the time, and never for hypothesis's favourite (simplest) draw, 0:
    the exceptional branch must stay exceptional."""
    return bool(draw(st.integers(0, 99)) >= 100 - percent)


def _request(draw: Any, marks: dict[str, Decimal], rules: dict[str, SymbolRules]) -> OrderRequest:
    """Mostly a well-formed request of a random type (each field the type takes is present),
    with a few per cent of missing or unexpected fields, so that most examples reach the
    filters and the exchange."""
    symbol = draw(st.sampled_from(SYMBOLS))
    rule, mark = rules[symbol], marks[symbol]
    order_type = draw(st.sampled_from(TYPE_MIX))
    conditional = order_type not in REGULAR
    trailing = order_type == OrderType.TRAILING_STOP_MARKET
    closes = order_type in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET) and _pct(draw, 15)

    def field(takes: bool, value: Any) -> Any:
        """``value`` if the type takes it (96 %), or by mistake (4 %)."""
        return value if takes != _pct(draw, 4) else None

    if order_type == OrderType.LIMIT and not _pct(draw, 4):
        tif = draw(st.sampled_from(LIMIT_TIF_MIX))
    else:
        tif = draw(st.sampled_from(list(TimeInForce))) if _pct(draw, 15) else None
    return OrderRequest(
        symbol=symbol,
        side=draw(st.sampled_from(list(Side))),
        type=order_type,
        quantity=field(not closes, _quantity(draw, rule, mark)),
        price=field(order_type in LIMIT_PRICED, _price(draw, rule, mark)),
        trigger_price=field(order_type in TRIGGERED, _price(draw, rule, mark)),
        time_in_force=tif,
        position_side=PositionSide.LONG if _pct(draw, 3) else PositionSide.BOTH,
        reduce_only=_pct(draw, 10),
        close_position=closes or _pct(draw, 2),
        working_type=(
            draw(st.sampled_from(list(WorkingType)))
            if _pct(draw, 50 if conditional else 3)
            else None
        ),
        price_protect=_pct(draw, 20 if conditional else 2),
        activate_price=(
            _price(draw, rule, mark) if (trailing and _pct(draw, 70)) or _pct(draw, 2) else None
        ),
        callback_rate=field(trailing, draw(st.sampled_from(CALLBACK_RATES))),
        client_id=_client_id(draw),
    )


def _submit(venue: BinanceFuturesVenue, request: OrderRequest) -> Exception | None:
    """Send ``request``; its refusal (by pre-flight or by the exchange), or None if accepted."""
    try:
        if request.is_conditional:
            venue.place_algo_order(request)
        else:
            venue.place_order(request)
    except (PreflightError, OrderRejected) as exc:
        return exc
    finally:
        venue.cancel_all(symbol=request.symbol)  # stay far below MAX_NUM_ORDERS
    return None


def _outcome(request: OrderRequest, refusal: Exception | None) -> str:
    """``preflight:<rule>``, ``rejected:<code>`` (only for a refusal pre-flight could not
    foresee) or ``accepted:<type>``; fails the property otherwise."""
    if isinstance(refusal, PreflightError):
        assert refusal.rule in PREFLIGHT_RULES, refusal
        assert refusal.detail, refusal
        return f"preflight:{refusal.rule}"
    if isinstance(refusal, OrderRejected):
        assert refusal.code not in FILTER_CODES, (
            f"pre-flight passed {request!r} but the exchange refused it for a filter: "
            f"{refusal.code} {refusal.message}"
        )
        assert refusal.code in STATE_CODES, (
            f"unexpected refusal {refusal.code} {refusal.message}: {request!r}"
        )
        return f"rejected:{refusal.code}"
    return f"accepted:{request.type}"


def test_preflight_passed_orders_are_never_refused_by_the_exchange_for_a_filter(
    exchange: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    venue = emulator_venue(exchange)
    rules = {symbol: venue.rules_for(symbol) for symbol in SYMBOLS}
    marks = {symbol: venue.mark_price(symbol) for symbol in SYMBOLS}  # frozen market
    outcomes: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        request = _request(data.draw, marks, rules)
        outcomes[_outcome(request, _submit(venue, request))] += 1

    check()

    with capsys.disabled():
        print(f"\npre-flight vs emulator, marks {marks}:")
        for outcome, count in sorted(outcomes.items()):
            print(f"  {outcome:32} {count}")
    kinds = {outcome.split(":")[0] for outcome in outcomes}
    assert kinds >= {"preflight", "accepted"}, outcomes


# Binance does not document which price a trailing stop's MIN_NOTIONAL uses; pre-flight and the
# emulator both use activatePrice (the price it can first trade at), so they judge alike.
def test_trailing_sell_activating_above_market_is_judged_alike_by_preflight_and_exchange(
    exchange: EmulatorThread,
) -> None:
    venue = emulator_venue(exchange)
    rules, mark = venue.rules_for("BTCUSDT"), venue.mark_price("BTCUSDT")
    # The largest quantity below MIN_NOTIONAL at the mark, and the lowest activation price
    # (above the mark) at which that quantity reaches it.
    steps = (rules.min_notional / mark / rules.step_size).to_integral_value(ROUND_CEILING) - 1
    quantity = steps * rules.step_size
    activate = round_to_step(
        rules.min_notional / quantity, rules.tick_size, up=True, origin=rules.min_price
    )
    assert quantity * mark < rules.min_notional <= quantity * activate
    assert activate > mark
    request = OrderRequest(
        symbol="BTCUSDT", side=Side.SELL, type=OrderType.TRAILING_STOP_MARKET,
        quantity=quantity, activate_price=activate, callback_rate=Decimal(1),
        client_id=client_id("trail"),
    )  # fmt: skip
    assert venue.prepare(request) == request  # pre-flight passes it as it is

    try:
        placed = venue.place_algo_order(request)
    finally:
        venue.cancel_all(symbol="BTCUSDT")

    assert placed.status == "NEW"
