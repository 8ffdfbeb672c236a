"""The Binance USD-M futures emulator over the wire.

A real ``EmulatorThread`` on 127.0.0.1 (frozen market: ``speed=0``), talked to through an
unmodified python-binance ``Client`` and through plain ``requests`` with hand-built query
strings, bodies and HMACs for the wire-level cases. No mocks, no database.
Reference: ``/work/shared/reference/binance-usdm-futures.md``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus, urlencode

import pytest
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from execution.emulator.server import AccountSpec
from tests.execution.emulator_fixtures import (
    Harness,
    flip_char,
    now_ms,
    sign,
    to_tick,
    wait_for_window,
    wait_until,
)

D = Decimal
SLIPPAGE = D("0.0002")  # EmulatorConfig's default
TAKER_FEE = D("0.0005")  # FeeSchedule's default
BAD_SIGNATURE = {"code": -1022, "msg": "Signature for this request is not valid."}
BAD_KEY = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
TOO_OLD = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
TOO_NEW = {
    "code": -1021,
    "msg": "Timestamp for this request was 1000ms ahead of the server's time.",
}
BAD_RECV_WINDOW = {"code": -1130, "msg": "Data sent for parameter 'recvWindow' is not valid."}
SWITCH_ALGO = {
    "code": -4120,
    "msg": "Order type not supported for this endpoint. "
    "Please use the Algo Order API endpoints instead.",
}
NO_SUCH_ORDER = {"code": -2013, "msg": "Order does not exist."}
# The documented field names of the user data stream events (reference section 7.5).
ORDER_TRADE_UPDATE_KEYS = {
    "s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "N", "n", "T",
    "t", "b", "a", "m", "R", "wt", "ot", "ps", "cp", "rp", "pP", "si", "ss", "V", "pm", "gtd",
    "er",
}  # fmt: skip
ALGO_UPDATE_KEYS = {
    "caid", "aid", "at", "o", "s", "S", "ps", "f", "q", "X", "ai", "ap", "aq", "act", "tp", "p",
    "V", "wt", "pm", "cp", "pP", "R", "tt", "gtd", "rm",
}  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------


def signed_payload(secret: str, params: str) -> str:
    """``params`` followed by ``&signature=<HMAC of params>``."""
    return f"{params}&signature={sign(secret, params)}"


def used_weight(response: requests.Response) -> int:
    return int(response.headers["X-MBX-USED-WEIGHT-1M"])


def client_weight(client: Client) -> int:
    return used_weight(client.response)


def api_error(call: Callable[[], Any]) -> BinanceAPIException:
    """The ``BinanceAPIException`` that ``call`` raises."""
    with pytest.raises(BinanceAPIException) as caught:
        call()
    return caught.value


def limit_buy(client: Client, price: Decimal, client_id: str, qty: str = "0.002") -> dict:
    """A resting LIMIT BUY at ``price`` (below the market)."""
    return client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=qty,
        price=f"{price:.2f}", newClientOrderId=client_id,
    )  # fmt: skip


def market_fill(price: Decimal, side: str) -> Decimal:
    """Where a MARKET order fills at ``price``: moved against the taker by the slippage and
    rounded to BTCUSDT's tick away from the taker."""
    if side == "BUY":
        return to_tick(price * (1 + SLIPPAGE), up=True)
    return to_tick(price * (1 - SLIPPAGE))


def receive(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=5))


def open_user_stream(emu: Harness, spec: AccountSpec, listen_key: str) -> ClientConnection:
    """Connect to the user data stream and wait until the emulator has registered it."""
    ws = connect(f"{emu.ws_url}/private/ws?listenKey={listen_key}", open_timeout=5)
    account = emu.account_id(spec)
    wait_until(lambda: emu.call(lambda: len(emu.emulator.streams[account])))
    return ws


# --- signatures and API keys ----------------------------------------------------------------------


def test_signed_get_with_hmac_over_the_raw_query_string_is_accepted(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    # Deliberately unsorted: the HMAC covers the bytes as sent, not a canonical form.
    query = signed_payload(emu_account.api_secret, f"timestamp={now_ms()}&recvWindow=5000")

    response = emu_clean.raw("GET", "/fapi/v3/balance", query=query, api_key=emu_account.api_key)

    assert response.status_code == 200
    [row] = response.json()
    assert (row["asset"], row["balance"], row["availableBalance"]) == ("USDT", "10000", "10000")


def test_signed_post_with_hmac_over_the_raw_form_body_is_accepted(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    body = signed_payload(
        emu_account.api_secret, f"symbol=BTCUSDT&leverage=7&recvWindow=5000&timestamp={now_ms()}"
    )

    response = emu_clean.raw("POST", "/fapi/v1/leverage", body=body, api_key=emu_account.api_key)

    assert response.status_code == 200
    assert response.json() == {"leverage": 7, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}


def test_signature_over_query_and_body_is_their_plain_concatenation(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    query = "symbol=BTCUSDT"
    body = f"leverage=9&timestamp={now_ms()}"
    good = sign(emu_account.api_secret, query + body)  # Binance's totalParams: no '&' between
    joined = sign(emu_account.api_secret, f"{query}&{body}")

    accepted = emu_clean.raw(
        "POST", "/fapi/v1/leverage", query=query, body=f"{body}&signature={good}",
        api_key=emu_account.api_key,
    )  # fmt: skip
    rejected = emu_clean.raw(
        "POST", "/fapi/v1/leverage", query=query, body=f"{body}&signature={joined}",
        api_key=emu_account.api_key,
    )  # fmt: skip

    assert accepted.status_code == 200
    assert accepted.json() == {"leverage": 9, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
    assert rejected.status_code == 400
    assert rejected.json() == BAD_SIGNATURE


@pytest.mark.parametrize(("method", "in_body"), [("GET", False), ("POST", True)])
@pytest.mark.parametrize("index", [0, 63])
def test_signature_with_one_flipped_character_is_rejected_with_1022(
    emu_clean: Harness, emu_account: AccountSpec, method: str, in_body: bool, index: int
) -> None:
    params = f"symbol=BTCUSDT&timestamp={now_ms()}"
    if method == "POST":
        params = f"symbol=BTCUSDT&leverage=3&timestamp={now_ms()}"
    payload = f"{params}&signature={flip_char(sign(emu_account.api_secret, params), index)}"
    path = "/fapi/v1/openOrders" if method == "GET" else "/fapi/v1/leverage"

    response = emu_clean.raw(
        method, path, query="" if in_body else payload, body=payload if in_body else "",
        api_key=emu_account.api_key,
    )  # fmt: skip

    assert response.status_code == 400
    assert response.json() == BAD_SIGNATURE


def test_batch_orders_from_python_binance_are_verified_over_the_plus_encoded_body(
    emu_clean: Harness, emu_client: Client
) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))

    results = emu_client.futures_place_batch_order(
        batchOrders=[
            {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                "quantity": "0.002", "price": f"{below:.2f}", "newClientOrderId": "batch-limit-1",
            },
            {
                "symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "quantity": "0.002",
                "stopPrice": f"{below:.2f}", "newClientOrderId": "batch-stop-1",
            },
        ]
    )  # fmt: skip

    sent = emu_client.response.request.body
    assert isinstance(sent, str)
    assert "%22%3A+%22" in sent  # '": "' with the space as '+', and that is what was signed
    assert emu_client.response.status_code == 200
    limit, stop = results
    assert (limit["clientOrderId"], limit["status"], limit["price"]) == (
        "batch-limit-1", "NEW", f"{below:.2f}",
    )  # fmt: skip
    assert stop == SWITCH_ALGO
    open_ids = [o["clientOrderId"] for o in emu_client.futures_get_open_orders(symbol="BTCUSDT")]
    assert open_ids == ["batch-limit-1"]
    assert emu_client.futures_get_open_orders(conditional=True) == []


def test_batch_orders_signature_covers_the_raw_bytes_with_plus_and_percent_2b(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))
    item = {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": "0.002", "price": f"{below:.2f}",
    }  # fmt: skip
    batch = [{**item, "newClientOrderId": "raw-batch-1"}, {**item, "newClientOrderId": "raw+2"}]
    params = urlencode({"batchOrders": json.dumps(batch)}) + f"&timestamp={now_ms()}"
    assert "+" in params
    assert "%2B" in params  # the '+' inside "raw+2"
    secret, key = emu_account.api_secret, emu_account.api_key

    def post(signature: str) -> requests.Response:
        body = f"{params}&signature={signature}"
        return emu_clean.raw("POST", "/fapi/v1/batchOrders", body=body, api_key=key)

    # Signatures over anything but the bytes sent fail: the decoded form, '%20' for spaces.
    assert post(sign(secret, unquote_plus(params))).json() == BAD_SIGNATURE
    assert post(sign(secret, params.replace("+", "%20"))).json() == BAD_SIGNATURE
    response = post(sign(secret, params))

    assert response.status_code == 200
    first, second = response.json()
    assert (first["clientOrderId"], first["status"]) == ("raw-batch-1", "NEW")
    assert second == {"code": -4015, "msg": "Client order id is not valid."}


def test_missing_api_key_is_rejected_with_401_and_2015(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    query = signed_payload(emu_account.api_secret, f"timestamp={now_ms()}")

    response = emu_clean.raw("GET", "/fapi/v3/balance", query=query)

    assert response.status_code == 401
    assert response.json() == BAD_KEY


def test_malformed_api_key_is_rejected_with_2014(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    query = signed_payload(emu_account.api_secret, f"timestamp={now_ms()}")

    response = emu_clean.raw("GET", "/fapi/v3/balance", query=query, api_key="bad key!")

    assert response.status_code == 401
    assert response.json() == {"code": -2014, "msg": "API-key format invalid."}


def test_unknown_api_key_is_rejected_with_2015(emu_clean: Harness) -> None:
    client = Client("UnknownKey0000000000AbCdEfGh", "whatever", ping=False)
    client.FUTURES_URL = emu_clean.base_url + "/fapi"

    error = api_error(client.futures_account_balance)

    assert (error.status_code, error.code, error.message) == (401, BAD_KEY["code"], BAD_KEY["msg"])


# --- timing -------------------------------------------------------------------------------------


def balance_at(emu: Harness, spec: AccountSpec, params: str) -> requests.Response:
    query = signed_payload(spec.api_secret, params)
    return emu.raw("GET", "/fapi/v3/balance", query=query, api_key=spec.api_key)


def test_timestamp_older_than_the_recv_window_is_rejected_with_1021(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    default_window = balance_at(emu_clean, emu_account, f"timestamp={now_ms() - 6000}")
    small_window = balance_at(
        emu_clean, emu_account, f"recvWindow=2000&timestamp={now_ms() - 3000}"
    )
    inside = balance_at(emu_clean, emu_account, f"recvWindow=5000&timestamp={now_ms() - 1000}")

    assert (default_window.status_code, default_window.json()) == (400, TOO_OLD)
    assert (small_window.status_code, small_window.json()) == (400, TOO_OLD)
    assert inside.status_code == 200


def test_timestamp_1000ms_or_more_ahead_of_the_server_is_rejected_with_1021(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    ahead = balance_at(emu_clean, emu_account, f"timestamp={now_ms() + 2000}")
    slightly_ahead = balance_at(emu_clean, emu_account, f"timestamp={now_ms() + 500}")

    assert (ahead.status_code, ahead.json()) == (400, TOO_NEW)
    assert slightly_ahead.status_code == 200


def test_recv_window_above_60000_is_rejected_and_60000_is_accepted(
    emu_clean: Harness, emu_account: AccountSpec
) -> None:
    too_big = balance_at(emu_clean, emu_account, f"recvWindow=60001&timestamp={now_ms()}")
    zero = balance_at(emu_clean, emu_account, f"recvWindow=0&timestamp={now_ms()}")
    largest = balance_at(emu_clean, emu_account, f"recvWindow=60000&timestamp={now_ms() - 30000}")

    assert (too_big.status_code, too_big.json()) == (400, BAD_RECV_WINDOW)
    assert (zero.status_code, zero.json()) == (400, BAD_RECV_WINDOW)
    assert largest.status_code == 200


# --- headers ------------------------------------------------------------------------------------


def test_used_weight_header_grows_by_each_endpoints_weight(
    emu_clean: Harness, emu_client: Client
) -> None:
    wait_for_window(60_000, 3_000)
    below = to_tick(emu_clean.price() * D("0.98"))
    steps: list[tuple[Callable[[], Any], int]] = [
        (emu_client.futures_ping, 1),
        (lambda: emu_client.futures_klines(symbol="BTCUSDT", interval="1m", limit=500), 5),
        (emu_client.futures_get_position_mode, 30),
        (emu_client.futures_exchange_info, 1),
        (emu_client.futures_account_balance, 5),
        (emu_client.futures_account, 5),
        (lambda: emu_client.futures_position_information(symbol="BTCUSDT"), 5),
        (lambda: limit_buy(emu_client, below, "weight-1"), 0),  # orders cost no IP weight
        (lambda: emu_client.futures_get_open_orders(symbol="BTCUSDT"), 1),
        (emu_client.futures_get_open_orders, 40),  # all symbols
        (lambda: emu_client.futures_get_all_orders(symbol="BTCUSDT"), 5),
        (lambda: emu_client.futures_account_trades(symbol="BTCUSDT"), 5),
    ]
    total = 0

    for call, weight in steps:
        call()
        total += weight
        assert client_weight(emu_client) == total


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_klines_weight_follows_the_limit(
    emu_clean: Harness, emu_client: Client, limit: int, weight: int
) -> None:
    wait_for_window(60_000, 2_000)

    emu_client.futures_klines(symbol="BTCUSDT", interval="1m", limit=limit)

    assert client_weight(emu_client) == weight


def test_order_responses_carry_order_count_headers_and_other_responses_do_not(
    emu_clean: Harness, emu_client: Client
) -> None:
    wait_for_window(10_000, 2_000)
    below = to_tick(emu_clean.price() * D("0.98"))

    limit_buy(emu_client, below, "count-1")
    first = dict(emu_client.response.headers)
    emu_client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    second = dict(emu_client.response.headers)
    emu_client.futures_get_order(symbol="BTCUSDT", origClientOrderId="count-1")
    query = dict(emu_client.response.headers)

    assert (first["X-MBX-ORDER-COUNT-10S"], first["X-MBX-ORDER-COUNT-1M"]) == ("1", "1")
    assert (second["X-MBX-ORDER-COUNT-10S"], second["X-MBX-ORDER-COUNT-1M"]) == ("2", "2")
    assert "X-MBX-ORDER-COUNT-10S" not in query
    assert "X-MBX-ORDER-COUNT-1M" not in query
    assert query["X-MBX-USED-WEIGHT-1M"] == "1"


# --- rate limits (an emulator with 20 weight / minute, 3 orders / 10 s, 1 s bans) --------------

TOO_MANY_REQUESTS = {
    "code": -1003,
    "msg": "Too many requests; current limit is 20 requests per minute. "
    "Please use the websocket for live updates to avoid polling the API.",
}
BANNED = re.compile(
    r"Way too many requests; IP\(127\.0\.0\.1\) banned until (\d+)\. "
    r"Please use the websocket for live updates to avoid bans\."
)


def ping(emu: Harness) -> requests.Response:
    return emu.raw("GET", "/fapi/v1/ping")


def test_exceeding_the_request_weight_returns_429_with_1003_and_retry_after(
    emu_small: Harness,
) -> None:
    wait_for_window(60_000, 3_000)
    for used in range(1, 21):
        response = ping(emu_small)
        assert (response.status_code, used_weight(response)) == (200, used)

    refused = ping(emu_small)

    assert refused.status_code == 429
    assert refused.json() == TOO_MANY_REQUESTS
    assert refused.headers["Retry-After"] == "1"
    assert used_weight(refused) == 20  # a refused request costs nothing


def test_hammering_after_429_bans_the_ip_with_418_until_the_ban_passes(
    emu_small: Harness,
) -> None:
    wait_for_window(60_000, 5_000)
    spec = emu_small.fresh_account()
    for _ in range(20):
        assert ping(emu_small).status_code == 200
    for _ in range(4):  # the fourth 429 in a minute earns the ban
        before_ban = now_ms()
        refused = ping(emu_small)
        assert (refused.status_code, refused.json()) == (429, TOO_MANY_REQUESTS)

    banned = ping(emu_small)
    signed_while_banned = balance_at(emu_small, spec, f"timestamp={now_ms()}")

    assert banned.status_code == 418
    assert banned.json()["code"] == -1003
    match = BANNED.fullmatch(banned.json()["msg"])
    assert match is not None, banned.json()
    until = int(match[1])
    assert before_ban <= until - 1000 <= now_ms()  # banned for ban_seconds from the 4th 429
    assert banned.headers["Retry-After"] == "1"
    assert signed_while_banned.status_code == 418
    assert signed_while_banned.json() == banned.json()

    time.sleep(max(0, until - now_ms()) / 1000 + 0.05)
    after_ban = ping(emu_small)
    assert (after_ban.status_code, after_ban.json()) == (429, TOO_MANY_REQUESTS)  # minute spent
    emu_small.control("reset_limits")
    assert ping(emu_small).status_code == 200


def test_exceeding_orders_per_10s_returns_429_with_1015(emu_small: Harness) -> None:
    wait_for_window(10_000, 2_000)
    spec = emu_small.fresh_account()
    client = emu_small.client(spec)
    below = to_tick(emu_small.price() * D("0.98"))
    for count in range(1, 4):
        limit_buy(client, below, f"ten-s-{count}")
        assert client.response.headers["X-MBX-ORDER-COUNT-10S"] == str(count)

    error = api_error(lambda: limit_buy(client, below, "ten-s-4"))

    assert (error.status_code, error.code) == (429, -1015)
    assert error.message == "Too many new orders; current limit is 3 orders per 10 SECOND."
    assert error.response.headers["Retry-After"] == "1"
    emu_small.control("reset_limits")
    open_ids = sorted(o["clientOrderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT"))
    assert open_ids == ["ten-s-1", "ten-s-2", "ten-s-3"]


# --- orders -------------------------------------------------------------------------------------


def test_stop_market_on_the_order_endpoint_is_rejected_with_4120(
    emu_clean: Harness, emu_account: AccountSpec, emu_client: Client
) -> None:
    trigger = to_tick(emu_clean.price() * D("0.95"))

    response = emu_clean.signed(
        "POST", "/fapi/v1/order", emu_account,
        f"symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.002&stopPrice={trigger:.2f}",
        in_body=True,
    )  # fmt: skip

    assert (response.status_code, response.json()) == (400, SWITCH_ALGO)
    assert emu_client.futures_get_open_orders(conditional=True) == []


def test_algo_order_is_placed_queried_and_cancelled_by_client_algo_id(
    emu_clean: Harness, emu_client: Client
) -> None:
    trigger = to_tick(emu_clean.price() * D("0.97"))

    placed = emu_client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity="0.002",
        stopPrice=f"{trigger:.2f}", clientAlgoId="algo-life-1",
    )  # fmt: skip
    assert emu_client.response.request.path_url == "/fapi/v1/algoOrder"
    queried = emu_client.futures_get_order(symbol="BTCUSDT", clientAlgoId="algo-life-1")
    assert "symbol=BTCUSDT" in emu_client.response.request.path_url  # python-binance's extra
    cancelled = emu_client.futures_cancel_order(symbol="BTCUSDT", clientAlgoId="algo-life-1")
    assert "symbol=BTCUSDT" in emu_client.response.request.body
    after = emu_client.futures_get_order(symbol="BTCUSDT", clientAlgoId="algo-life-1")

    assert isinstance(placed["algoId"], int)
    assert {k: placed[k] for k in ("clientAlgoId", "algoType", "orderType", "algoStatus")} == {
        "clientAlgoId": "algo-life-1", "algoType": "CONDITIONAL", "orderType": "STOP_MARKET",
        "algoStatus": "NEW",
    }  # fmt: skip
    assert (placed["side"], placed["quantity"], placed["triggerPrice"]) == (
        "SELL", "0.002", f"{trigger:.2f}",
    )  # fmt: skip
    assert "orderId" not in placed
    assert (queried["algoId"], queried["algoStatus"], queried["actualOrderId"]) == (
        placed["algoId"], "NEW", "",
    )  # fmt: skip
    assert cancelled == {
        "algoId": placed["algoId"], "clientAlgoId": "algo-life-1", "code": "200", "msg": "success",
    }  # fmt: skip
    assert after["algoStatus"] == "CANCELED"
    again = api_error(
        lambda: emu_client.futures_cancel_order(symbol="BTCUSDT", clientAlgoId="algo-life-1")
    )
    assert (again.status_code, again.code, again.message) == (400, -2011, "Unknown order sent.")
    # An algo order is not a regular order.
    missing = api_error(
        lambda: emu_client.futures_get_order(symbol="BTCUSDT", orderId=placed["algoId"])
    )
    assert (missing.code, missing.message) == (NO_SUCH_ORDER["code"], NO_SUCH_ORDER["msg"])


def test_duplicate_client_order_id_of_an_open_order_is_rejected_with_4116(
    emu_clean: Harness, emu_client: Client
) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))
    limit_buy(emu_client, below, "dup-1")

    error = api_error(lambda: limit_buy(emu_client, below - 10, "dup-1"))

    assert (error.status_code, error.code, error.message) == (
        400, -4116, "ClientOrderId is duplicated.",
    )  # fmt: skip
    assert len(emu_client.futures_get_open_orders(symbol="BTCUSDT")) == 1


def _limit(side: str, qty: str, price: str) -> dict[str, str]:
    return {"side": side, "type": "LIMIT", "timeInForce": "GTC", "quantity": qty, "price": price}


# (order params given the current price p, expected code, expected message)
REJECTIONS: dict[str, tuple[Callable[[Decimal], dict[str, str]], int, str]] = {
    "quantity-precision": (
        lambda p: _limit("BUY", "0.0015", f"{to_tick(p * D('0.98')):.2f}"),
        -1111, "Precision is over the maximum defined for this asset.",
    ),
    "price-precision": (
        lambda p: _limit("BUY", "0.002", f"{to_tick(p * D('0.98')):.2f}1"),
        -1111, "Precision is over the maximum defined for this asset.",
    ),
    "price-off-tick": (
        lambda p: _limit("BUY", "0.002", f"{to_tick(p * D('0.98')) + D('0.05'):.2f}"),
        -4014, "Price not increased by tick size.",
    ),
    "min-notional": (
        lambda p: _limit("BUY", "0.001", f"{to_tick(p * D('0.98')):.2f}"),
        -4164, "Order's notional must be no smaller than 50 (unless you choose reduce only).",
    ),
    "percent-price-up": (
        lambda p: _limit("BUY", "0.002", f"{to_tick(p * D('1.05'), up=True) + D('0.1'):.2f}"),
        -4016, "Price is higher than mark price multiplier cap.",
    ),
    "percent-price-down": (
        lambda p: _limit("SELL", "0.002", f"{to_tick(p * D('0.95')) - D('0.1'):.2f}"),
        -4024, "Price is lower than mark price multiplier floor.",
    ),
    "would-trigger": (
        lambda p: {
            "side": "SELL", "type": "STOP_MARKET", "quantity": "0.002",
            "stopPrice": f"{to_tick(p) + 10:.2f}",
        },
        -2021, "Order would immediately trigger.",
    ),
    "margin": (
        lambda p: _limit("BUY", "10", f"{to_tick(p * D('0.99')):.2f}"),
        -2019, "Margin is insufficient.",
    ),
    "reduce-only-without-position": (
        lambda p: {"side": "SELL", "type": "MARKET", "quantity": "0.002", "reduceOnly": "true"},
        -2022, "ReduceOnly Order is rejected.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_order_breaking_a_rule_is_rejected_with_binances_code_and_nothing_is_placed(
    emu_clean: Harness, emu_client: Client, case: str
) -> None:
    params, code, message = REJECTIONS[case]

    error = api_error(
        lambda: emu_client.futures_create_order(symbol="BTCUSDT", **params(emu_clean.price()))
    )

    assert (error.status_code, error.code, error.message) == (400, code, message)
    assert emu_client.futures_get_all_orders(symbol="BTCUSDT") == []
    assert emu_client.futures_get_all_orders(symbol="BTCUSDT", conditional=True) == []


@pytest.mark.parametrize(
    ("change", "qty", "code", "message"),
    [
        ({"minQty": "0.010"}, "0.005", -4004, "Quantity less than min quantity."),
        ({"stepSize": "0.005"}, "0.012", -4023, "Qty not increased by step size."),
    ],
)
def test_quantity_below_min_or_off_step_is_rejected(
    emu_clean: Harness,
    emu_client: Client,
    change: dict[str, str],
    qty: str,
    code: int,
    message: str,
) -> None:
    # The bundled rows have minQty == stepSize == 10^-quantityPrecision, so any quantity that
    # passes the precision check also passes LOT_SIZE; a coarser lot makes the rule reachable.
    price = to_tick(emu_clean.price() * D("0.98"))
    with emu_clean.filter_changed("BTCUSDT", "LOT_SIZE", **change):
        lot = next(
            f
            for f in emu_client.futures_exchange_info()["symbols"][0]["filters"]
            if f["filterType"] == "LOT_SIZE"
        )
        error = api_error(lambda: limit_buy(emu_client, price, "lot-1", qty=qty))

    assert {k: lot[k] for k in change} == change
    assert (error.status_code, error.code, error.message) == (400, code, message)
    assert emu_client.futures_get_all_orders(symbol="BTCUSDT") == []


def test_market_order_ack_says_new_but_a_query_right_after_says_filled(
    emu_clean: Harness, emu_client: Client
) -> None:
    fill = market_fill(emu_clean.price(), "BUY")

    ack = emu_client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newClientOrderId="ack-1"
    )
    queried = emu_client.futures_get_order(symbol="BTCUSDT", origClientOrderId="ack-1")

    assert {k: ack[k] for k in ("status", "executedQty", "cumQuote", "avgPrice", "origQty")} == {
        "status": "NEW", "executedQty": "0.000", "cumQuote": "0.00000", "avgPrice": "0.00000",
        "origQty": "0.002",
    }  # fmt: skip
    assert {k: queried[k] for k in ("orderId", "status", "executedQty", "avgPrice")} == {
        "orderId": ack["orderId"], "status": "FILLED", "executedQty": "0.002",
        "avgPrice": f"{fill:.5f}",
    }  # fmt: skip
    assert queried["cumQuote"] == f"{fill * D('0.002'):.5f}"


def test_market_order_with_result_response_type_returns_filled(
    emu_clean: Harness, emu_client: Client
) -> None:
    fill = market_fill(emu_clean.price(), "SELL")

    result = emu_client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", newOrderRespType="RESULT"
    )

    assert {k: result[k] for k in ("status", "executedQty", "avgPrice", "side", "type")} == {
        "status": "FILLED", "executedQty": "0.002", "avgPrice": f"{fill:.5f}", "side": "SELL",
        "type": "MARKET",
    }  # fmt: skip
    [position] = emu_client.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "-0.002"


def test_test_order_validates_without_placing_anything(
    emu_clean: Harness, emu_client: Client
) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))

    market = emu_client.futures_create_test_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002"
    )
    limit = emu_client.futures_create_test_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002",
        price=f"{below:.2f}",
    )  # fmt: skip
    invalid = api_error(
        lambda: emu_client.futures_create_test_order(
            symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001",
            price=f"{below:.2f}",
        )
    )  # fmt: skip

    assert emu_client.response.request.path_url == "/fapi/v1/order/test"
    assert (market["orderId"], market["status"], limit["orderId"]) == (0, "", 0)
    assert (invalid.status_code, invalid.code) == (400, -4164)
    assert emu_client.futures_get_all_orders(symbol="BTCUSDT") == []
    assert emu_client.futures_get_open_orders() == []
    assert emu_client.futures_position_information() == []
    assert emu_client.futures_account_trades(symbol="BTCUSDT") == []


# --- market -------------------------------------------------------------------------------------


def test_klines_are_aligned_never_from_the_future_and_end_with_the_open_candle(
    emu_clean: Harness, emu_client: Client
) -> None:
    state = emu_clean.state()
    market = state["market_time_ms"]

    rows = emu_client.futures_klines(symbol="BTCUSDT", interval="1m", limit=10)
    ranged = emu_client.futures_klines(
        symbol="BTCUSDT", interval="1m", startTime=rows[-4][0], endTime=market + 3_600_000,
        limit=1500,
    )  # fmt: skip
    xrp = emu_client.futures_klines(symbol="XRPUSDT", interval="5m", limit=3)

    opens = [row[0] for row in rows]
    current_open = market - market % 60_000
    assert opens == list(range(current_open - 9 * 60_000, current_open + 1, 60_000))
    assert [row[6] for row in rows] == [t + 59_999 for t in opens]
    assert rows[-1][0] <= market <= rows[-1][6]  # the last one is still open
    assert D(rows[-1][4]) == D(state["prices"]["BTCUSDT"])  # and closes at the current price
    assert [row[0] for row in ranged] == opens[-4:]  # nothing after now, whatever endTime says
    assert all(row[0] % 300_000 == 0 for row in xrp)
    assert xrp[-1][0] <= market <= xrp[-1][6]
    assert len(rows[0]) == 12


def test_advance_moves_market_time_and_the_price_along_the_replay(
    emu_fresh: Callable[..., Harness],
) -> None:
    emu = emu_fresh()
    client = emu.client(emu.fresh_account())
    start = emu.state()["market_time_ms"]
    time.sleep(0.05)
    assert emu.state()["market_time_ms"] == start  # frozen: wall time does not move it
    seen = set()

    for step in range(1, 6):
        state = emu.control("advance", seconds=120)
        market = start + step * 120_000
        assert state["market_time_ms"] == market
        for symbol in ("BTCUSDT", "ETHUSDT", "XRPUSDT"):
            replayed = emu.call(emu.emulator.replay.price, symbol, market)
            tick = emu.emulator.engine.tick_sizes[symbol]
            assert D(state["prices"][symbol]) == replayed.quantize(tick)  # prices print on tick
        seen.add(state["prices"]["BTCUSDT"])
        last = client.futures_klines(symbol="BTCUSDT", interval="1m", limit=1)[-1]
        assert last[0] == market - market % 60_000
        ticker = client.futures_symbol_ticker(symbol="BTCUSDT")
        assert D(ticker["price"]) == D(state["prices"]["BTCUSDT"])

    assert len(seen) > 1


BTC_FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
    {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
    {"filterType": "MIN_NOTIONAL", "notional": "50"},
    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
     "multiplierDecimal": "4"},
    {"filterType": "POSITION_RISK_CONTROL", "positionControlSide": "NONE"},
]  # fmt: skip


def test_exchange_info_lists_btc_eth_xrp_with_the_reference_filters(
    emu_clean: Harness, emu_client: Client
) -> None:
    info = emu_client.futures_exchange_info()

    rows = {row["symbol"]: row for row in info["symbols"]}
    assert sorted(rows) == ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]
    assert rows["BTCUSDT"]["filters"] == BTC_FILTERS
    assert (rows["BTCUSDT"]["pricePrecision"], rows["BTCUSDT"]["quantityPrecision"]) == (2, 3)
    eth = {f["filterType"]: f for f in rows["ETHUSDT"]["filters"]}
    assert eth["PRICE_FILTER"]["tickSize"] == "0.01"
    assert eth["LOT_SIZE"] == {
        "filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "10000", "stepSize": "0.001",
    }  # fmt: skip
    assert eth["MIN_NOTIONAL"]["notional"] == "20"
    xrp = {f["filterType"]: f for f in rows["XRPUSDT"]["filters"]}
    assert (xrp["PRICE_FILTER"]["tickSize"], xrp["LOT_SIZE"]["stepSize"]) == ("0.0001", "0.1")
    assert all(row["status"] == "TRADING" for row in rows.values())
    assert "MAX_NUM_ALGO_ORDERS" not in {f["filterType"] for f in rows["BTCUSDT"]["filters"]}


def test_symbol_in_break_rejects_new_exposure_with_4400_but_takes_reduce_only(
    emu_clean: Harness, emu_client: Client
) -> None:
    emu_client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.004")
    emu_clean.control("symbol_status", symbol="BTCUSDT", status="BREAK")
    try:
        status = {r["symbol"]: r["status"] for r in emu_client.futures_exchange_info()["symbols"]}
        opening = api_error(
            lambda: emu_client.futures_create_order(
                symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002"
            )
        )
        closing = emu_client.futures_create_order(
            symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", reduceOnly="true",
            newOrderRespType="RESULT",
        )  # fmt: skip
    finally:
        emu_clean.control("symbol_status", symbol="BTCUSDT", status="TRADING")

    assert status == {"BTCUSDT": "BREAK", "ETHUSDT": "TRADING", "XRPUSDT": "TRADING"}
    assert (opening.status_code, opening.code, opening.message) == (
        400, -4400,
        "Futures Trading Quantitative Rules violated, only reduceOnly order is allowed, "
        "please try again later.",
    )  # fmt: skip
    assert (closing["status"], closing["reduceOnly"]) == ("FILLED", True)
    [position] = emu_client.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "0.002"


# --- faults -------------------------------------------------------------------------------------


def test_5xx_fault_answers_503_and_no_order_exists(emu_clean: Harness, emu_client: Client) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))
    emu_clean.control("faults", next=["5xx"])

    error = api_error(lambda: limit_buy(emu_client, below, "fault-5xx"))

    assert (error.status_code, error.code) == (503, -1001)
    assert error.message == "Internal error; unable to process your request. Please try again."
    missing = api_error(
        lambda: emu_client.futures_get_order(symbol="BTCUSDT", origClientOrderId="fault-5xx")
    )
    assert (missing.status_code, missing.code, missing.message) == (
        400, NO_SUCH_ORDER["code"], NO_SUCH_ORDER["msg"],
    )  # fmt: skip
    assert emu_client.futures_get_all_orders(symbol="BTCUSDT") == []
    assert emu_clean.state()["faults"]["next"] == []  # used up


def test_timeout_fault_answers_408_with_1007_but_the_order_exists(
    emu_clean: Harness, emu_client: Client
) -> None:
    below = to_tick(emu_clean.price() * D("0.98"))
    emu_clean.control("faults", next=["timeout"])

    error = api_error(lambda: limit_buy(emu_client, below, "fault-timeout"))

    assert (error.status_code, error.code) == (408, -1007)
    assert error.message == (
        "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown."
    )
    order = emu_client.futures_get_order(symbol="BTCUSDT", origClientOrderId="fault-timeout")
    assert (order["status"], order["price"], order["origQty"]) == ("NEW", f"{below:.2f}", "0.002")


def test_drop_fault_resets_the_connection_but_the_order_exists(
    emu_clean: Harness, emu_client: Client
) -> None:
    emu_clean.control("faults", next=["drop"])

    with pytest.raises(requests.exceptions.ConnectionError):
        emu_client.futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
            newClientOrderId="fault-drop",
        )  # fmt: skip

    orders = emu_client.futures_get_all_orders(symbol="BTCUSDT")
    assert [(o["clientOrderId"], o["status"]) for o in orders] == [("fault-drop", "FILLED")]
    [position] = emu_client.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "0.002"


# --- a stop triggered by the market -------------------------------------------------------------


def test_reduce_only_stop_market_triggered_by_advance_closes_the_position(
    emu_fresh: Callable[..., Harness],
) -> None:
    emu = emu_fresh()
    client = emu.client(emu.fresh_account())
    state = emu.state()
    now, price = state["market_time_ms"], D(state["prices"]["BTCUSDT"])
    # Read the replay's price path for the next hour and put the stop halfway down to its low.
    path = emu.call(emu.emulator.replay.path_between, "BTCUSDT", now, now + 3_600_000)
    low = min(p for _, p in path)
    assert low < price - 20, "the replayed hour must fall far enough for this test"
    trigger = to_tick((price + low) / 2, up=True)
    crossed_at = next(t for t, p in path if p <= trigger)
    entry = market_fill(price, "BUY")
    exit_price = market_fill(trigger, "SELL")

    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    placed = client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity="0.002",
        stopPrice=f"{trigger:.2f}", reduceOnly="true", clientAlgoId="stop-1",
    )  # fmt: skip
    steps = 0
    while client.futures_get_order(symbol="BTCUSDT", algoId=placed["algoId"])["algoStatus"] == (
        "NEW"
    ):
        assert steps <= (crossed_at - now) // 60_000 + 1, "the stop never triggered"
        emu.control("advance", seconds=60)
        steps += 1

    algo = client.futures_get_order(symbol="BTCUSDT", clientAlgoId="stop-1")
    assert (algo["algoStatus"], algo["triggerPrice"]) == ("FINISHED", f"{trigger:.2f}")
    assert algo["actualOrderId"] != ""
    assert D(algo["actualPrice"]) == exit_price
    child = client.futures_get_order(symbol="BTCUSDT", orderId=int(algo["actualOrderId"]))
    assert {k: child[k] for k in ("status", "type", "origType", "side", "reduceOnly")} == {
        "status": "FILLED", "type": "MARKET", "origType": "STOP_MARKET", "side": "SELL",
        "reduceOnly": True,
    }  # fmt: skip
    assert (child["executedQty"], child["stopPrice"]) == ("0.002", f"{trigger:.2f}")
    assert client.futures_position_information(symbol="BTCUSDT") == []  # flat again
    opening, closing = client.futures_account_trades(symbol="BTCUSDT")
    assert (D(opening["price"]), D(opening["realizedPnl"])) == (entry, 0)
    assert closing["orderId"] == child["orderId"]
    assert D(closing["price"]) == exit_price
    assert D(closing["realizedPnl"]) == D("0.002") * (exit_price - entry)
    assert client.futures_get_open_orders(conditional=True) == []


# --- user data stream ---------------------------------------------------------------------------


def test_user_stream_pushes_order_account_and_algo_updates(
    emu_clean: Harness, emu_account: AccountSpec, emu_client: Client
) -> None:
    created = emu_clean.raw("POST", "/fapi/v1/listenKey", api_key=emu_account.api_key)
    again = emu_clean.raw("POST", "/fapi/v1/listenKey", api_key=emu_account.api_key)
    assert created.status_code == 200
    listen_key = created.json()["listenKey"]
    assert len(listen_key) == 64
    assert again.json() == {"listenKey": listen_key}  # the active key, extended
    price = emu_clean.price()
    fill = market_fill(price, "BUY")
    trigger = to_tick(price * D("0.97"))

    with open_user_stream(emu_clean, emu_account, listen_key) as ws:
        ack = emu_client.futures_create_order(
            symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newClientOrderId="ws-1"
        )
        new, trade, account = receive(ws), receive(ws), receive(ws)
        placed = emu_client.futures_create_order(
            symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity="0.002",
            stopPrice=f"{trigger:.2f}", reduceOnly="true", clientAlgoId="ws-algo-1",
        )  # fmt: skip
        algo_new = receive(ws)
        emu_client.futures_cancel_order(symbol="BTCUSDT", algoId=placed["algoId"])
        algo_cancelled = receive(ws)

    assert new["e"] == trade["e"] == "ORDER_TRADE_UPDATE"
    assert set(new["o"]) >= ORDER_TRADE_UPDATE_KEYS
    assert {k: new["o"][k] for k in ("s", "c", "S", "o", "x", "X", "i", "q", "z")} == {
        "s": "BTCUSDT", "c": "ws-1", "S": "BUY", "o": "MARKET", "x": "NEW", "X": "NEW",
        "i": ack["orderId"], "q": "0.002", "z": "0.000",
    }  # fmt: skip
    assert {k: trade["o"][k] for k in ("x", "X", "i", "l", "z", "L", "ap", "N", "m")} == {
        "x": "TRADE", "X": "FILLED", "i": ack["orderId"], "l": "0.002", "z": "0.002",
        "L": f"{fill:.2f}", "ap": f"{fill:.5f}", "N": "USDT", "m": False,
    }  # fmt: skip
    commission = (fill * D("0.002") * TAKER_FEE).quantize(D("0.00000001"))
    assert D(trade["o"]["n"]) == commission
    [fill_row] = emu_client.futures_account_trades(symbol="BTCUSDT")
    assert trade["o"]["t"] == fill_row["id"]
    assert account["e"] == "ACCOUNT_UPDATE"
    assert account["a"]["m"] == "ORDER"
    assert account["a"]["B"] == [
        {"a": "USDT", "wb": f"{10000 - commission:f}", "cw": f"{10000 - commission:f}", "bc": "0"}
    ]
    [position] = account["a"]["P"]
    assert set(position) == {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"}
    assert (position["s"], position["pa"], position["ps"]) == ("BTCUSDT", "0.002", "BOTH")
    assert D(position["ep"]) == fill
    assert algo_new["e"] == "ALGO_UPDATE"
    assert set(algo_new["o"]) >= ALGO_UPDATE_KEYS
    assert {k: algo_new["o"][k] for k in ("caid", "aid", "at", "o", "S", "X", "tp", "R")} == {
        "caid": "ws-algo-1", "aid": placed["algoId"], "at": "CONDITIONAL", "o": "STOP_MARKET",
        "S": "SELL", "X": "NEW", "tp": f"{trigger:.2f}", "R": True,
    }  # fmt: skip
    assert (algo_cancelled["e"], algo_cancelled["o"]["X"]) == ("ALGO_UPDATE", "CANCELED")


def test_expired_listen_key_sends_listen_key_expired_and_closes_the_stream(
    emu_clean: Harness, emu_account: AccountSpec, emu_client: Client
) -> None:
    listen_key = emu_client.futures_stream_get_listen_key()

    with open_user_stream(emu_clean, emu_account, listen_key) as ws:
        emu_clean.control("expire_listen_key", listen_key=listen_key)
        expired = receive(ws)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)

    assert set(expired) == {"e", "E", "listenKey"}
    assert (expired["e"], expired["listenKey"]) == ("listenKeyExpired", listen_key)
    assert expired["E"].isdigit()
    gone = api_error(lambda: emu_client.futures_stream_keepalive(listen_key))
    assert (gone.code, gone.message) == (-1125, "This listenKey does not exist.")
    with pytest.raises(InvalidStatus):
        connect(f"{emu_clean.ws_url}/private/ws?listenKey={listen_key}", open_timeout=5)


def test_keepalive_of_an_unknown_listen_key_is_rejected_with_1125(
    emu_clean: Harness, emu_client: Client
) -> None:
    listen_key = emu_client.futures_stream_get_listen_key()

    kept = emu_client.futures_stream_keepalive(listen_key)
    error = api_error(lambda: emu_client.futures_stream_keepalive("NoSuchListenKey0123456789"))

    assert kept == {"listenKey": listen_key}
    assert (error.status_code, error.code, error.message) == (
        400, -1125, "This listenKey does not exist.",
    )  # fmt: skip


def test_listen_key_needs_an_api_key(emu_clean: Harness) -> None:
    response = emu_clean.raw("POST", "/fapi/v1/listenKey")

    assert (response.status_code, response.json()) == (401, BAD_KEY)


# --- misc ---------------------------------------------------------------------------------------


def test_spot_ping_and_time_answer(emu_clean: Harness) -> None:
    before = now_ms()
    ping_response = emu_clean.raw("GET", "/api/v3/ping")
    time_response = emu_clean.raw("GET", "/api/v3/time")
    after = now_ms()
    client = Client("", "", ping=False)
    client.API_URL = emu_clean.base_url + "/api"

    assert (ping_response.status_code, ping_response.json()) == (200, {})
    assert time_response.status_code == 200
    assert before <= time_response.json()["serverTime"] <= after
    assert client.ping() == {}
    assert set(client.get_server_time()) == {"serverTime"}


def test_unknown_path_answers_404_with_5000(emu_clean: Harness) -> None:
    unknown = emu_clean.raw("GET", "/fapi/v1/noSuchThing")
    wrong_method = emu_clean.raw("PATCH", "/fapi/v1/order")

    assert (unknown.status_code, unknown.json()) == (
        404, {"code": -5000, "msg": "Path /fapi/v1/noSuchThing, Method GET is invalid"},
    )  # fmt: skip
    assert (wrong_method.status_code, wrong_method.json()) == (
        404, {"code": -5000, "msg": "Path /fapi/v1/order, Method PATCH is invalid"},
    )  # fmt: skip
