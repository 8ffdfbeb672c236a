"""The emulator's kline market streams and aggregated klines, over the wire.

A real ``EmulatorThread`` on 127.0.0.1, talked to through ``requests`` and ``websockets``. The
module's emulator is frozen (``speed=0``: ``/_emulator/advance`` moves market time, so candle
closes are exact); the fast-market cases start one of their own. No mocks, no database.
Reference: ``/work/shared/reference/binance-usdm-futures.md`` section 8.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from execution.emulator.market import aggregate_klines
from execution.venues.base import Kline
from tests.execution.emulator_fixtures import Harness, wait_until

D = Decimal
MINUTE = 60_000
#: The documented fields of a kline event's ``k`` (reference section 8.2).
KLINE_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}


@contextmanager
def stream(emu: Harness, path: str) -> Iterator[ClientConnection]:
    with connect(emu.ws_url + path, open_timeout=5, close_timeout=2) as ws:
        yield ws


def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def collect(
    ws: ClientConnection,
    seconds: float,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Messages for ``seconds`` (or until ``until(messages)`` holds)."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            messages.append(receive(ws, timeout=left))
        except TimeoutError:
            break
        if until is not None and until(messages):
            break
    return messages


def data(message: dict[str, Any]) -> dict[str, Any]:
    return message.get("data", message)


def closes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [data(m)["k"] for m in messages if "e" in data(m) and data(m)["k"]["x"]]


def rest_klines(emu: Harness, symbol: str, interval: str, **params: Any) -> Any:
    response = emu.http.get(
        f"{emu.base_url}/fapi/v1/klines",
        params={"symbol": symbol, "interval": interval, **params},
        timeout=10,
    )
    return response.status_code, response.json()


def as_kline(row: list[Any]) -> Kline:
    return Kline(
        open_time_ms=row[0], open=D(row[1]), high=D(row[2]), low=D(row[3]), close=D(row[4]),
        volume=D(row[5]), close_time_ms=row[6], quote_volume=D(row[7]), trades=row[8],
        taker_buy_base=D(row[9]), taker_buy_quote=D(row[10]),
    )  # fmt: skip


def same_candle(k: dict[str, Any], row: list[Any]) -> bool:
    fields = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")  # REST's column order
    return [k[f] for f in fields] == row[:11]


# --- klines at aggregated intervals ------------------------------------------------------------


@pytest.mark.parametrize("interval", ["3m", "5m", "15m", "1h"])
def test_rest_klines_from_1m_data_are_the_1m_candles_aggregated(emu_clean: Harness, interval):
    status, rows = rest_klines(emu_clean, "BTCUSDT", interval, limit=4)
    _, ones = rest_klines(emu_clean, "BTCUSDT", "1m", startTime=rows[0][0], limit=1500)
    market = emu_clean.state()["market_time_ms"]

    assert status == 200
    assert [as_kline(r) for r in rows] == aggregate_klines([as_kline(r) for r in ones], interval)
    assert rows[-1][0] <= market <= rows[-1][6]  # the open one, partial, last
    assert D(rows[-1][4]) == D(emu_clean.state()["prices"]["BTCUSDT"])
    assert len(rows) == 4


def test_rest_klines_serve_15m_and_1h_from_5m_data(emu_clean: Harness):
    _, quarters = rest_klines(emu_clean, "XRPUSDT", "15m", limit=3)
    _, hours = rest_klines(emu_clean, "XRPUSDT", "1h", limit=2)
    _, fives = rest_klines(emu_clean, "XRPUSDT", "5m", startTime=hours[0][0], limit=1500)

    assert [as_kline(r) for r in hours] == aggregate_klines([as_kline(r) for r in fives], "1h")
    assert [as_kline(r) for r in quarters] == aggregate_klines(
        [as_kline(r) for r in fives if r[0] >= quarters[0][0]], "15m"
    )
    assert all(r[0] % (15 * MINUTE) == 0 for r in quarters)


@pytest.mark.parametrize(
    ("symbol", "interval"),
    [("BTCUSDT", "2m"), ("BTCUSDT", "7m"), ("XRPUSDT", "1m"), ("XRPUSDT", "3m"), ("XRPUSDT", "2m")],
)
def test_rest_klines_refuse_2m_finer_and_unaligned_intervals_with_1120(
    emu_clean: Harness, symbol, interval
):
    assert rest_klines(emu_clean, symbol, interval) == (
        400,
        {"code": -1120, "msg": "Invalid interval."},
    )


# --- kline streams -----------------------------------------------------------------------------


def test_combined_stream_pushes_the_open_candle_every_250ms_as_binance_shapes_it(
    emu_clean: Harness,
):
    with stream(emu_clean, "/market/stream?streams=btcusdt@kline_1m") as ws:
        messages = collect(ws, 1.2)

    market = emu_clean.state()["market_time_ms"]
    assert 3 <= len(messages) <= 7
    assert all(set(m) == {"stream", "data"} for m in messages)
    assert {m["stream"] for m in messages} == {"btcusdt@kline_1m"}
    event = messages[-1]["data"]
    assert {k: event[k] for k in ("e", "E", "s")} == {"e": "kline", "E": market, "s": "BTCUSDT"}
    k = event["k"]
    assert set(k) == KLINE_KEYS
    assert (k["s"], k["i"], k["x"], k["B"]) == ("BTCUSDT", "1m", False, "0")
    assert k["t"] == market - market % MINUTE
    assert k["T"] == k["t"] + MINUTE - 1
    assert all(isinstance(k[f], str) for f in ("o", "c", "h", "l", "v", "q", "V", "Q"))
    assert D(k["c"]) == D(emu_clean.state()["prices"]["BTCUSDT"])
    _, rows = rest_klines(emu_clean, "BTCUSDT", "1m", limit=1)
    assert same_candle(k, rows[-1])  # the same partial candle REST serves


def test_each_candle_is_sent_closed_once_when_market_time_passes_its_close(emu_clean: Harness):
    with stream(emu_clean, "/market/stream?streams=btcusdt@kline_1m") as ws:
        first = receive(ws)["data"]["k"]
        emu_clean.control("advance", seconds=180)
        messages = collect(ws, 5, until=lambda ms: len(closes(ms)) >= 3)
        messages += collect(ws, 0.6)

    closed = closes(messages)
    assert [k["t"] for k in closed] == [first["t"] + i * MINUTE for i in range(3)]
    _, rows = rest_klines(emu_clean, "BTCUSDT", "1m", startTime=first["t"], limit=3)
    assert all(same_candle(k, row) for k, row in zip(closed, rows, strict=True))
    assert len(closed) == 3  # and no more while the market stands still


def test_an_aggregated_stream_closes_its_5m_candle_built_from_1m(emu_clean: Harness):
    with stream(emu_clean, "/market/stream?streams=btcusdt@kline_5m") as ws:
        first = receive(ws)["data"]["k"]
        emu_clean.control("advance", seconds=300)
        messages = collect(ws, 5, until=lambda ms: len(closes(ms)) >= 1)

    [closed] = closes(messages)
    _, rows = rest_klines(emu_clean, "BTCUSDT", "5m", startTime=first["t"], limit=1)
    assert (closed["t"], closed["i"], closed["T"]) == (
        first["t"],
        "5m",
        first["t"] + 5 * MINUTE - 1,
    )
    assert same_candle(closed, rows[0])


def test_a_fast_market_closes_several_candles_a_second_each_exactly_once(
    emu_fresh: Callable[..., Harness],
):
    emu = emu_fresh(speed=D(600))  # a 1m candle every 0.1 s

    with stream(emu, "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m") as ws:
        messages = collect(ws, 1.5)

    btc = [k for k in closes(messages) if k["s"] == "BTCUSDT"]
    assert len(btc) >= 10
    assert [k["t"] for k in btc] == list(range(btc[0]["t"], btc[-1]["t"] + 1, MINUTE))
    events = [data(m) for m in messages if data(m)["k"]["x"]]
    assert all(e["E"] > e["k"]["T"] for e in events)  # sent once market time passed the close


def test_raw_and_legacy_paths_send_bare_events(emu_clean: Harness):
    for path in ("/market/ws/btcusdt@kline_1m", "/ws/btcusdt@kline_1m"):
        with stream(emu_clean, path) as ws:
            event = receive(ws)
        assert (event["e"], event["k"]["i"]) == ("kline", "1m"), path
    with stream(emu_clean, "/stream?streams=ethusdt@kline_15m") as ws:
        assert receive(ws)["stream"] == "ethusdt@kline_15m"
    with stream(emu_clean, "/market/ws/btcusdt@kline_1m/xrpusdt@kline_1h") as ws:
        symbols = {receive(ws)["s"] for _ in range(4)}
    assert symbols == {"BTCUSDT", "XRPUSDT"}


def test_update_cadence_zero_sends_only_closes(emu_fresh: Callable[..., Harness]):
    emu = emu_fresh(kline_update_ms=0)

    with stream(emu, "/market/stream?streams=btcusdt@kline_1m") as ws:
        quiet = collect(ws, 0.6)
        emu.control("advance", seconds=60)
        after = collect(ws, 3, until=lambda ms: len(ms) >= 1)

    assert quiet == []
    assert [data(m)["k"]["x"] for m in after] == [True]


def test_subscribe_unsubscribe_list_and_the_combined_property(emu_clean: Harness):
    with stream(emu_clean, "/market/ws") as ws:
        assert collect(ws, 0.4) == []  # nothing subscribed, nothing sent
        two = ["btcusdt@kline_1m", "ethusdt@kline_1h"]
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": two, "id": 1}))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 3}))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
        ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 5}))
        ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 6}))
        answers = [m for m in collect(ws, 5, until=lambda ms: sum("id" in m for m in ms) >= 6)
                   if "id" in m]  # fmt: skip
        later = collect(ws, 0.6)

    assert answers == [
        {"result": None, "id": 1},
        {"result": ["btcusdt@kline_1m", "ethusdt@kline_1h"], "id": 2},
        {"result": None, "id": 3},
        {"result": ["ethusdt@kline_1h"], "id": 4},
        {"result": False, "id": 5},
        {"result": None, "id": 6},
    ]
    assert later
    assert {m["stream"] for m in later} == {"ethusdt@kline_1h"}


@pytest.mark.parametrize(
    "name",
    [
        "btcusdt@kline_2m",  # not a Binance interval
        "btcusdt@kline_7m",
        "xrpusdt@kline_1m",  # finer than the data
        "BTCUSDT@kline_1m",  # stream names are lowercase
        "dogeusdt@kline_1m",  # no such symbol
        "btcusdt@aggTrade",  # not emulated
    ],
)
def test_an_unknown_stream_in_the_url_refuses_the_handshake(emu_clean: Harness, name):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{emu_clean.ws_url}/market/stream?streams=btcusdt@kline_1m/{name}", open_timeout=5)

    assert info.value.response.status_code == 400
    assert json.loads(info.value.response.body) == {
        "code": 2,
        "msg": f"Invalid request: invalid stream name(s): {name}",
    }


def test_subscribing_an_unknown_stream_is_an_error_answer_and_changes_nothing(emu_clean: Harness):
    with stream(emu_clean, "/market/ws/btcusdt@kline_1m") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_2m"], "id": 7}))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        answers = [m for m in collect(ws, 5, until=lambda ms: sum("id" in m for m in ms) >= 2)
                   if "id" in m]  # fmt: skip

    assert answers == [
        {"error": {"code": 2, "msg": "Invalid request: invalid stream name(s): ethusdt@kline_2m"},
         "id": 7},
        {"result": ["btcusdt@kline_1m"], "id": 8},
    ]  # fmt: skip


def test_more_than_1024_streams_are_refused_in_the_url_and_in_subscribe(emu_clean: Harness):
    names = [f"btcusdt@kline_{i}m" for i in range(1025)]  # the count is checked first

    with pytest.raises(InvalidStatus) as info:
        connect(f"{emu_clean.ws_url}/market/stream?streams={'/'.join(names)}", open_timeout=5)
    with stream(emu_clean, "/market/ws") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
        answer = next(m for m in collect(ws, 5, until=lambda ms: any("id" in m for m in ms)))

    too_many = "Invalid request: too many streams (1025; at most 1024 per connection)"
    assert info.value.response.status_code == 400
    assert json.loads(info.value.response.body) == {"code": 2, "msg": too_many}
    assert answer == {"error": {"code": 2, "msg": too_many}, "id": 1}


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("{not json", {"code": 3}),
        ('{"method": "SUBSCRIBE", "params": [], "id": -1}',
         {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}),
        ('{"method": "FOO", "id": 1}',
         {"code": 2, "msg": "Invalid request: unknown variant FOO, expected one of SUBSCRIBE, "
                            "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"}),
        ('{"method": "GET_PROPERTY", "params": ["colour"], "id": 1}',
         {"code": 0, "msg": "Unknown property"}),
        ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}',
         {"code": 1, "msg": "Invalid value type: expected Boolean"}),
    ],
)  # fmt: skip
def test_bad_requests_get_binance_error_codes(emu_clean: Harness, request_text, expected):
    with stream(emu_clean, "/market/ws") as ws:
        ws.send(request_text)
        answer = receive(ws)

    assert {k: answer["error"][k] for k in expected} == expected


def test_dropping_market_streams_closes_them_going_away_or_resets_them(emu_clean: Harness):
    with stream(emu_clean, "/market/stream?streams=btcusdt@kline_1m") as closed_ws:
        receive(closed_ws)
        wait_until(lambda: emu_clean.state()["market_streams"]["connections"] == 1)
        state = emu_clean.control("drop_market_streams")
        with pytest.raises(ConnectionClosedOK) as closed:
            collect(closed_ws, 5)
    with stream(emu_clean, "/market/stream?streams=btcusdt@kline_1m") as reset_ws:
        receive(reset_ws)
        emu_clean.control("drop_market_streams", mode="abort")
        with pytest.raises(ConnectionClosedError):
            collect(reset_ws, 5)

    assert state["market_streams"] == {"connections": 0, "streams": 0}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    response = emu_clean.http.post(
        f"{emu_clean.base_url}/_emulator/drop_market_streams", json={"mode": "gently"}, timeout=10
    )
    assert response.status_code == 400


def test_a_listen_key_on_the_legacy_ws_path_is_still_the_user_stream(emu_clean: Harness):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{emu_clean.ws_url}/ws/notAListenKey", open_timeout=5)

    assert info.value.response.status_code == 400
    assert json.loads(info.value.response.body)["code"] == -1125
