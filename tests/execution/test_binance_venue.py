"""``BinanceFuturesVenue`` against the emulator over real HTTP: error translation (code, message
and HTTP status kept), rate limits and bans, faults with an unknown outcome resolved by client
id, redacted logs, Prometheus counts, the clock offset and skew guard, what goes on the wire
(recvWindow, plain decimals), and the shared Redis governor (DB 13).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from prometheus_client import REGISTRY

from execution.emulator.runner import EmulatorThread
from execution.governor import RateGovernor
from execution.rules import format_decimal
from execution.venues.base import OrderRequest, OrderType, Side, TimeInForce, VenueOrder
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.errors import (
    AuthRejected,
    ClockSkewError,
    NotFound,
    OrderRejected,
    PreflightError,
    RateLimited,
    TimestampRejected,
    UnknownOutcome,
    VenueError,
)
from tests.conformance.support import (
    EMU_KEY,
    EMU_SECRET,
    Book,
    book,
    client_id,
    control,
    data_for,
    emulator_of,
    emulator_venue,
    now_ms,
    running_emulator,
    wait_for_window,
    weight_charged,
)

REDIS_URL = os.environ.get("TEST_VENUE_GOVERNOR_REDIS_URL", "redis://127.0.0.1:6379/13")
IP = "127.0.0.1"
BAN_SECONDS = 30
PLAIN_DECIMAL = re.compile(r"^\d+(\.\d*[1-9])?$")


@pytest.fixture(scope="module")
def exchange() -> Iterator[EmulatorThread]:
    """Binance's default limits; BTCUSDT only."""
    with running_emulator(data=data_for("BTCUSDT")) as thread:
        yield thread


@pytest.fixture
def emu(exchange: EmulatorThread) -> Iterator[EmulatorThread]:
    """The module's emulator with counters and faults reset; orders cancelled afterwards."""
    control(exchange, "reset_limits")
    control(exchange, "faults", latency_ms=0, rate_5xx=0, rate_timeout=0, rate_drop=0, next=[])
    yield exchange
    emulator_venue(exchange).cancel_all(symbol="BTCUSDT")


@pytest.fixture(scope="module")
def tight_exchange() -> Iterator[EmulatorThread]:
    """Tiny limits: 10 weight per minute, 2 orders per 10 s; a 30 s ban. XRPUSDT only."""
    with running_emulator(
        data=data_for("XRPUSDT"), weight_per_minute=10, orders_per_10s=2, ban_seconds=BAN_SECONDS
    ) as thread:
        yield thread


@pytest.fixture
def tight(tight_exchange: EmulatorThread) -> EmulatorThread:
    control(tight_exchange, "reset_limits")
    return tight_exchange


@pytest.fixture
def redis_db13() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def btc(venue: BinanceFuturesVenue) -> Book:
    return book(venue, "BTCUSDT")


def resting_buy(b: Book, cid: str) -> OrderRequest:
    price = b.price_at("0.9")
    return OrderRequest(
        symbol=b.symbol, side=Side.BUY, type=OrderType.LIMIT, quantity=b.qty_for(price),
        price=price, time_in_force=TimeInForce.GTC, client_id=cid,
    )  # fmt: skip


def far_stop_buy(b: Book, cid: str) -> OrderRequest:
    trigger = b.price_at("1.5")
    return OrderRequest(
        symbol=b.symbol, side=Side.BUY, type=OrderType.STOP_MARKET, quantity=b.qty_for(trigger),
        trigger_price=trigger, client_id=cid,
    )  # fmt: skip


def sent(venue: BinanceFuturesVenue) -> dict[str, str]:
    """The parameters of the venue's last request, as they went over the wire."""
    request = venue.client.response.request
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    return dict(parse_qsl(body or urlsplit(request.url).query, keep_blank_values=True))


def errors_counted(error: str, code: int) -> float:
    labels = {"venue": "binance", "error": error, "code": str(code)}
    return REGISTRY.get_sample_value("trader_venue_errors_total", labels) or 0.0


# --- error translation ----------------------------------------------------------------------------


def _min_notional(thread: EmulatorThread) -> None:
    venue = emulator_venue(thread)
    venue.client._request_futures_api(
        "post", "order/test", True,
        data={"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.001", "price": "25000"},
    )  # fmt: skip


def _conditional_on_order_endpoint(thread: EmulatorThread) -> None:
    venue = emulator_venue(thread)
    trigger = btc(venue).price_at("1.5")
    venue.client._request_futures_api(
        "post", "order", True,
        data={"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_MARKET", "quantity": "0.002",
              "stopPrice": format_decimal(trigger)},
    )  # fmt: skip


def _would_trigger(thread: EmulatorThread) -> None:
    venue = emulator_venue(thread)
    b = btc(venue)
    venue.place_algo_order(
        OrderRequest(
            symbol="BTCUSDT", side=Side.BUY, type=OrderType.STOP_MARKET, quantity=b.qty_for(b.mark),
            trigger_price=b.price_at("0.9"), client_id=client_id("trig"),
        )
    )  # fmt: skip


def _offset(thread: EmulatorThread, offset_ms: int) -> None:
    venue = emulator_venue(thread)
    venue.resync_clock()
    venue.client.timestamp_offset += offset_ms  # the host clock jumped after the sync
    venue.balances()


ERROR_CASES = [
    pytest.param(
        _min_notional, OrderRejected, -4164, 400,
        "Order's notional must be no smaller than 50 (unless you choose reduce only).",
        id="order-rejected-min-notional",
    ),
    pytest.param(
        _conditional_on_order_endpoint, OrderRejected, -4120, 400,
        "Order type not supported for this endpoint. "
        "Please use the Algo Order API endpoints instead.",
        id="order-rejected-conditional-on-order-endpoint",
    ),
    pytest.param(
        _would_trigger, OrderRejected, -2021, 400, "Order would immediately trigger.",
        id="order-rejected-would-trigger",
    ),
    pytest.param(
        lambda t: emulator_venue(t, api_key="UnknownKey0000000000").balances(),
        AuthRejected, -2015, 401, "Invalid API-key, IP, or permissions for action.",
        id="auth-unknown-key",
    ),
    pytest.param(
        lambda t: emulator_venue(t, api_key="not-a-key").balances(),
        AuthRejected, -2014, 401, "API-key format invalid.",
        id="auth-malformed-key",
    ),
    pytest.param(
        lambda t: emulator_venue(t, api_secret="wrong-secret").balances(),
        AuthRejected, -1022, 400, "Signature for this request is not valid.",
        id="auth-bad-signature",
    ),
    pytest.param(
        lambda t: emulator_venue(t).get_order(symbol="BTCUSDT", client_id="never-placed"),
        NotFound, -2013, 400, "Order does not exist.",
        id="not-found-query",
    ),
    pytest.param(
        lambda t: emulator_venue(t).get_algo_order(symbol="BTCUSDT", client_id="never-placed"),
        NotFound, -2013, 400, "Order does not exist.",
        id="not-found-algo-query",
    ),
    pytest.param(
        lambda t: emulator_venue(t).cancel_order(symbol="BTCUSDT", client_id="never-placed"),
        NotFound, -2011, 400, "Unknown order sent.",
        id="not-found-cancel",
    ),
    pytest.param(
        lambda t: _offset(t, -20_000),
        TimestampRejected, -1021, 400, "Timestamp for this request is outside of the recvWindow.",
        id="timestamp-behind",
    ),
    pytest.param(
        lambda t: _offset(t, 5_000),
        TimestampRejected, -1021, 400,
        "Timestamp for this request was 1000ms ahead of the server's time.",
        id="timestamp-ahead",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("trigger", "error", "code", "status", "message"), ERROR_CASES)
def test_venue_error_is_translated_keeping_binance_code_message_and_http_status(
    emu: EmulatorThread,
    trigger: Callable[[EmulatorThread], Any],
    error: type[VenueError],
    code: int,
    status: int,
    message: str,
) -> None:
    with pytest.raises(VenueError) as caught:
        trigger(emu)

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.http_status, caught.value.message) == (
        code, status, message,
    )  # fmt: skip
    assert str(caught.value) == f"{message} (code {code})"


def _until_rate_limited(venue: BinanceFuturesVenue, *, status: int) -> list[RateLimited]:
    """Call an unsigned weight-1 endpoint until the venue answers ``status``; every RateLimited
    seen on the way (at most 40 calls: a new minute may reset the count once)."""
    seen: list[RateLimited] = []
    for _ in range(40):
        try:
            venue.server_time_ms()
        except RateLimited as exc:
            seen.append(exc)
            if exc.http_status == status:
                return seen
    raise AssertionError(f"no {status} in 40 calls; saw {[e.http_status for e in seen]}")


def test_weight_over_the_limit_is_rate_limited_429_with_retry_after(tight: EmulatorThread) -> None:
    venue = emulator_venue(tight)

    first = _until_rate_limited(venue, status=429)[0]

    assert (first.code, first.http_status, first.retry_after_s, first.banned_until_ms) == (
        -1003, 429, float(BAN_SECONDS), None,
    )  # fmt: skip
    assert first.message == (
        "Too many requests; current limit is 10 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    )


def test_repeated_429s_become_a_418_ban_rate_limited_with_banned_until(
    tight: EmulatorThread,
) -> None:
    venue = emulator_venue(tight)

    ban = _until_rate_limited(venue, status=418)[-1]

    banned_until = tight.call(lambda: emulator_of(tight).banned_until[IP])
    assert (ban.code, ban.http_status, ban.retry_after_s, ban.banned_until_ms) == (
        -1003, 418, float(BAN_SECONDS), banned_until,
    )  # fmt: skip
    assert ban.message == (
        f"Way too many requests; IP({IP}) banned until {banned_until}. "
        "Please use the websocket for live updates to avoid bans."
    )


def test_orders_over_the_10s_limit_are_rate_limited_1015(tight: EmulatorThread) -> None:
    venue = emulator_venue(tight)
    xrp = book(venue, "XRPUSDT")
    price = xrp.price_at("0.9")
    wait_for_window(10_000, 3_000)
    errors: list[RateLimited] = []
    for _ in range(3):  # the third order in the window is one too many
        try:
            venue.client._request_futures_api(
                "post", "order", True,
                data={"symbol": "XRPUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                      "quantity": format_decimal(xrp.qty_for(price)),
                      "price": format_decimal(price)},
            )  # fmt: skip
        except RateLimited as exc:
            errors.append(exc)
    venue.cancel_all(symbol="XRPUSDT")

    assert [(e.code, e.http_status, e.retry_after_s) for e in errors] == [
        (-1015, 429, float(BAN_SECONDS))
    ]
    assert errors[0].message == "Too many new orders; current limit is 2 orders per 10 SECOND."


# --- unknown outcome ------------------------------------------------------------------------------

FAULTS = [
    pytest.param(
        "timeout", -1007, 408,
        "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
        True, id="timeout",
    ),
    pytest.param("drop", 0, None, "ConnectionError calling {path}", True, id="drop"),
    pytest.param(
        "5xx", -1001, 503, "Internal error; unable to process your request. Please try again.",
        False, id="5xx",
    ),
]  # fmt: skip


@pytest.mark.parametrize("algo", [False, True], ids=["regular", "algo"])
@pytest.mark.parametrize(("fault", "code", "status", "message", "executed"), FAULTS)
def test_fault_on_placement_is_unknown_outcome_resolved_by_client_id(
    emu: EmulatorThread,
    fault: str,
    code: int,
    status: int | None,
    message: str,
    executed: bool,
    algo: bool,
) -> None:
    venue = emulator_venue(emu)
    b, cid = btc(venue), client_id(fault)
    emulator = emulator_of(emu)
    emu.call(lambda: emulator.faults.next_faults.append(fault))
    place = venue.place_algo_order if algo else venue.place_order
    request = far_stop_buy(b, cid) if algo else resting_buy(b, cid)

    with pytest.raises(UnknownOutcome) as caught:
        place(request)

    path = "algoOrder" if algo else "order"
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert caught.value.message == message.format(path=path)
    assert emu.call(lambda: list(emulator.faults.next_faults)) == []
    resolve = venue.get_algo_order if algo else venue.get_order
    if executed:  # the order went through although the caller was not told
        order: VenueOrder = resolve(symbol="BTCUSDT", client_id=cid)
        assert (order.client_id, order.status, order.is_algo) == (cid, "NEW", algo)
    else:  # refused before execution: nothing to find
        with pytest.raises(NotFound) as missing:
            resolve(symbol="BTCUSDT", client_id=cid)
        assert missing.value.code == -2013


# --- logs and metrics -----------------------------------------------------------------------------


def test_venue_error_is_logged_with_redacted_payload_and_never_the_key_or_secret(
    emu: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="execution.venues.binance")
    venue = emulator_venue(emu)
    b, cid = btc(venue), client_id("log")
    request = OrderRequest(
        symbol="BTCUSDT", side=Side.BUY, type=OrderType.STOP_MARKET, quantity=b.qty_for(b.mark),
        trigger_price=b.price_at("0.9"), client_id=cid,
    )  # fmt: skip

    with pytest.raises(OrderRejected):
        venue.place_algo_order(request)

    signature = sent(venue)["signature"]
    records = [r for r in caplog.records if r.name == "execution.venues.binance"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert line.startswith(f"venue binance {venue.account_key} POST /algoOrder -> OrderRejected")
    assert f"'clientAlgoId': '{cid}'" in line
    assert "'signature': '****'" in line
    for secret in (signature, EMU_SECRET, EMU_KEY):
        assert secret not in caplog.text


def test_venue_errors_are_counted_in_prometheus_by_class_and_code(emu: EmulatorThread) -> None:
    venue = emulator_venue(emu)
    before = {
        key: errors_counted(*key)
        for key in (("NotFound", -2013), ("NotFound", -2011), ("OrderRejected", -2013))
    }

    for _ in range(2):
        with pytest.raises(NotFound):
            venue.get_order(symbol="BTCUSDT", client_id="never-placed")
    with pytest.raises(NotFound):
        venue.cancel_order(symbol="BTCUSDT", client_id="never-placed")

    after = {key: errors_counted(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("NotFound", -2013): 2.0,
        ("NotFound", -2011): 1.0,
        ("OrderRejected", -2013): 0.0,
    }


# --- clock --------------------------------------------------------------------------------------


def test_wall_clock_5s_behind_resyncs_to_offset_5000_and_signed_calls_pass(
    emu: EmulatorThread,
) -> None:
    venue = emulator_venue(emu, wall_ms=lambda: now_ms() - 5_000, max_clock_skew_ms=10_000)

    offset = venue.resync_clock()
    balances = venue.balances()
    placed = venue.place_order(resting_buy(btc(venue), client_id("clock")))

    assert 4_750 <= offset <= 5_250  # loopback round trips blur the measurement a little
    assert [b.asset for b in balances] == ["USDT"]
    assert placed.status == "NEW"


def test_skew_beyond_threshold_raises_clock_skew_before_any_signed_request(
    emu: EmulatorThread,
) -> None:
    venue = emulator_venue(emu, wall_ms=lambda: now_ms() + 3_000, max_clock_skew_ms=1_000)
    charged = weight_charged(emu)

    with pytest.raises(ClockSkewError) as caught:
        venue.balances()

    skew = caught.value.skew_ms
    assert -3_250 <= skew <= -2_750
    assert caught.value.threshold_ms == 1_000
    assert str(caught.value) == (
        f"clock skew against the venue is {skew} ms (threshold 1000 ms) after a resync; "
        "fix the host clock (NTP) before trading"
    )
    # Two measurements of /fapi/v1/time (weight 1 each) reached the emulator, and nothing else:
    # /fapi/v3/balance (weight 5) never went out.
    assert weight_charged(emu) - charged == 2
    assert urlsplit(venue.client.response.request.url).path == "/fapi/v1/time"


# --- the wire -----------------------------------------------------------------------------------


def test_signed_requests_carry_recv_window_from_settings_not_python_binance_default(
    emu: EmulatorThread,
) -> None:
    venue = emulator_venue(emu, recv_window_ms=3_000)

    venue.balances()
    query = sent(venue)
    venue.place_order(resting_buy(btc(venue), client_id("rw")))
    body = sent(venue)

    assert urlsplit(venue.client.response.request.url).path == "/fapi/v1/order"
    assert (query["recvWindow"], body["recvWindow"]) == ("3000", "3000")


def test_order_decimals_go_on_the_wire_as_plain_strings(emu: EmulatorThread) -> None:
    venue = emulator_venue(emu)
    b = btc(venue)
    # Prices as a multiple of 10 written with an exponent ("4.234E+4"), quantities with
    # trailing zeros: str() of these would put "E+4" and "0.0030000" on the wire.
    low, high = (int(b.mark * Decimal(f) / 10) for f in ("0.9", "1.5"))
    price, trigger = Decimal(low).scaleb(1), Decimal(high).scaleb(1)
    quantity = Decimal("0.0030000")
    assert "E" in str(price)
    assert "E" in str(trigger)

    venue.place_order(
        OrderRequest(
            symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=quantity,
            price=price, time_in_force=TimeInForce.GTC, client_id=client_id("wire"),
        )
    )  # fmt: skip
    regular = sent(venue)
    venue.place_algo_order(
        OrderRequest(
            symbol="BTCUSDT", side=Side.BUY, type=OrderType.STOP_MARKET, quantity=quantity,
            trigger_price=trigger, client_id=client_id("wire"),
        )
    )  # fmt: skip
    algo = sent(venue)
    venue.place_algo_order(
        OrderRequest(
            symbol="BTCUSDT", side=Side.BUY, type=OrderType.TRAILING_STOP_MARKET,
            quantity=quantity, activate_price=price, callback_rate=Decimal("1.50"),
            client_id=client_id("wire"),
        )
    )  # fmt: skip
    trailing = sent(venue)

    assert (regular["price"], regular["quantity"]) == (str(low * 10), "0.003")
    assert (algo["triggerPrice"], algo["quantity"]) == (str(high * 10), "0.003")
    assert (trailing["activatePrice"], trailing["callbackRate"]) == (str(low * 10), "1.5")
    numbers = ("price", "quantity", "triggerPrice", "activatePrice", "callbackRate")
    for params in (regular, algo, trailing):
        for name in set(numbers) & set(params):
            assert PLAIN_DECIMAL.match(params[name]), (name, params[name])


@pytest.mark.parametrize("cid", ["with:colon", "with/slash"])
def test_client_id_python_binance_cannot_sign_in_a_body_is_refused_before_any_request(
    emu: EmulatorThread, cid: str
) -> None:
    # Binance allows ':' and '/' in client ids, but python-binance signs the raw value and
    # sends it percent-encoded: the exchange would answer -1022, as if the secret were wrong.
    venue = emulator_venue(emu)
    request = resting_buy(btc(venue), cid)
    charged = weight_charged(emu)

    with pytest.raises(PreflightError) as caught:
        venue.place_order(request)

    assert caught.value.rule == "CLIENT_ID"
    assert weight_charged(emu) == charged
    assert venue.open_orders(symbol="BTCUSDT") == []


def test_trailing_stop_without_activate_price_is_sized_at_the_mark_and_accepted(
    emu: EmulatorThread,
) -> None:
    venue = emulator_venue(emu)
    b = btc(venue)
    request = OrderRequest(
        symbol="BTCUSDT", side=Side.SELL, type=OrderType.TRAILING_STOP_MARKET,
        quantity=b.qty_for(b.mark), callback_rate=Decimal(1),
        client_id=client_id("trail"),
    )  # fmt: skip

    placed = venue.place_algo_order(request)

    assert (placed.is_algo, placed.status, placed.type, placed.trigger_price) == (
        True, "NEW", OrderType.TRAILING_STOP_MARKET, None,
    )  # fmt: skip


# --- the shared governor --------------------------------------------------------------------------


def test_governor_weight_follows_the_venues_used_weight_header(
    emu: EmulatorThread, redis_db13: redis.Redis
) -> None:
    governor = RateGovernor(redis_db13, ip_key="venue-test")
    governed = emulator_venue(emu, governor=governor)
    other = emulator_venue(emu)  # another client on the same IP, outside the governor
    wait_for_window(60_000, 5_000)

    for _ in range(3):
        other.balances()  # /time once (1), then /balance (5) each time: 16
    governed.balances()  # /time (1) and /balance (5): 22 in all

    header = int(governed.client.response.headers["X-MBX-USED-WEIGHT-1M"])
    assert header == 22
    assert governor.state()["weight_used_1m"] == header


def test_418_seen_by_one_venue_makes_another_sharing_the_governor_refuse_without_a_request(
    tight: EmulatorThread, redis_db13: redis.Redis
) -> None:
    _until_rate_limited(emulator_venue(tight), status=418)  # a client outside the governor
    governor = RateGovernor(redis_db13, ip_key="venue-test")
    first = emulator_venue(tight, governor=governor)
    with pytest.raises(RateLimited) as seen:
        first.server_time_ms()
    banned_until = tight.call(lambda: emulator_of(tight).banned_until[IP])
    control(tight, "reset_limits")  # the emulator lifts the ban: a request would now succeed
    charged = weight_charged(tight)

    with pytest.raises(RateLimited) as refused:
        emulator_venue(tight, governor=governor).server_time_ms()

    assert (seen.value.http_status, seen.value.banned_until_ms) == (418, banned_until)
    assert governor.state()["banned_until_ms"] == banned_until
    assert (refused.value.code, refused.value.http_status, refused.value.banned_until_ms) == (
        -1003, 418, banned_until,
    )  # fmt: skip
    assert weight_charged(tight) == charged  # the emulator saw no request
    emulator_venue(tight).server_time_ms()  # while a client outside the governor gets through
    assert weight_charged(tight) == charged + 1
