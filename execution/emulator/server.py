"""A Binance USD-M futures emulator: Binance's own paths, rules, codes and headers, served over
HTTP (aiohttp) so that an unmodified python-binance client trades against it offline.

- Auth and timing: API keys from the accounts file; HMAC-SHA256 over the raw query string
  followed by the raw body (Binance's "totalParams"), minus the ``signature`` parameter;
  ``timestamp`` must satisfy ``ts < server + 1000 and server - ts <= recvWindow``.
- Validation as Binance does it (see ``_validate_regular`` / ``_validate_algo``), then the shared
  matching engine (``execution.engine``) for state-dependent rules and fills.
- Market: candles replayed by ``execution.emulator.market.MarketReplay``; server time is wall
  time (so signed requests from an unmodified client pass), market time may run faster
  (``speed``) and is reported at ``GET /_emulator/state``.
- Limits: request weight per IP per minute and order counts per account (10 s and 1 min), with
  Binance's headers; 429 (-1003 / -1015) when exceeded, then a 418 ban for repeat offenders.
- Faults and control (only with ``control=True``): ``/_emulator/...`` advances the market clock,
  injects latency, 5xx, -1007 timeouts where the order was nevertheless placed, and dropped
  responses, forces partial fills, changes a symbol's status, expires listen keys.
- User data stream: ``/private/ws?listenKey=...`` (and legacy ``/ws/<listenKey>``) push
  ORDER_TRADE_UPDATE, ALGO_UPDATE and ACCOUNT_UPDATE from the engine's events.
- Klines at any Binance interval that is a whole multiple of a symbol's file interval (5m, 1h
  from 1m data), aggregated by ``market.aggregate_klines``; others are -1120.
- Kline market streams ``<symbol>@kline_<interval>`` (any interval ``/fapi/v1/klines`` serves):
  combined ``/market/stream?streams=a/b`` (``{"stream", "data"}``) and raw ``/market/ws/<a>``
  (and the legacy ``/stream``, ``/ws/<a>``), the SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
  SET_PROPERTY / GET_PROPERTY methods, at most 1024 streams a connection. The open candle is
  pushed (``x`` false) every ``kline_update_ms`` of wall time, and every candle once more with
  ``x`` true when it closes on the market clock (at ``speed`` > 1 several per wall second).
  An unknown stream or more than 1024 in the URL refuse the handshake (HTTP 400); in a
  SUBSCRIBE they get an error answer. ``/_emulator/drop_market_streams`` cuts them all.

Not emulated: order modification (PUT /fapi/v1/order), GTD expiry, price match, self-trade
prevention, isolated margin maths (marginType is recorded only), liquidation, funding; market
streams other than klines, their 24-hour lifetime and their 10 messages/s inbound limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web

from execution.emulator import exchange_info as info
from execution.emulator.market import (
    INTERVAL_MS,
    MarketReplay,
    bucket_open_ms,
    load_candles,
    symbol_from_path,
)
from execution.engine import (
    AlgoEvent,
    AlgoOrder,
    EngineReject,
    Event,
    FeeSchedule,
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    Order,
    OrderEvent,
)
from execution.venues.base import Kline

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
#: What the emulator replays when given no --data: real candles bundled with the project.
DEFAULT_DATA: tuple[tuple[str, Path, Decimal], ...] = (
    ("BTCUSDT", DATA_DIR / "BTCUSDT-1m-2022-01.csv", Decimal(1)),
    ("XRPUSDT", DATA_DIR / "XRPUSDT-5m-2021-11.csv", Decimal(1)),
    # ETH/BTC spot prints of 2018, scaled to a USDT price of the right order (about 3,000).
    ("ETHUSDT", DATA_DIR / "ETHBTC-5m-2018-01.csv", Decimal(30000)),
)
CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
API_KEY_RE = re.compile(r"^[A-Za-z0-9]{8,128}$")
REGULAR_TYPES = frozenset({"LIMIT", "MARKET"})
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
ALL_TYPES = REGULAR_TYPES | CONDITIONAL_TYPES
LISTEN_KEY_TTL_MS = 60 * 60 * 1000
TICKER = web.AppKey("ticker", asyncio.Task[None])
#: Binance's cap on the streams of one market-stream connection.
MAX_STREAMS_PER_CONNECTION = 1024
KLINE_STREAM_RE = re.compile(r"^([a-z0-9_]{1,40})@kline_([0-9]{1,2}[mhdwM])$")
MARKET_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def _missing(name: str) -> ApiError:
    return ApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


class ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


@dataclass(frozen=True)
class AccountSpec:
    api_key: str
    api_secret: str = field(repr=False)
    balances: Mapping[str, Decimal]


@dataclass(frozen=True)
class EmulatorConfig:
    data: tuple[tuple[str, Path, Decimal], ...] = DEFAULT_DATA
    accounts: tuple[AccountSpec, ...] = ()
    speed: Decimal = Decimal(1)
    history: int = 500
    control: bool = False
    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    ban_seconds: int = 120
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    slippage: Decimal = Decimal("0.0002")
    seed: int = 0
    #: Wall ms between pushes of the open candle (``x`` false) on kline streams; 0: only closes.
    kline_update_ms: int = 250


@dataclass
class Route:
    handler: Callable[[Request], Awaitable[Any]]
    weight: int | Callable[[dict[str, str]], int] = 1
    security: str = "NONE"  # NONE, USER_STREAM (API key), SIGNED
    orders: int = 0  # counted against the account's order limits
    places: bool = False  # faults may hit it "after execution"


@dataclass
class Request:
    """What a handler sees: merged params (query wins) and the authenticated account."""

    params: dict[str, str]
    account: str | None
    web: web.Request


@dataclass
class Faults:
    """Injected faults. ``next_faults`` apply, in order, to the next order placements."""

    latency_ms: int = 0
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    rate_drop: float = 0.0
    next_faults: list[str] = field(default_factory=list)


@dataclass(eq=False)
class MarketSocket:
    """One market-stream connection: what it is subscribed to and the queue its writer sends.

    ``streams`` maps each stream name to the open time of the first candle not yet reported
    closed on it (in subscription order, which is what LIST_SUBSCRIPTIONS answers)."""

    queue: asyncio.Queue[str | None]
    combined: bool
    transport: asyncio.Transport | None
    streams: dict[str, int] = field(default_factory=dict)
    last_update_wall_ms: int = 0


def _fmt(value: Decimal | None, places: int) -> str:
    if value is None:
        return ""
    return f"{Decimal(value).quantize(Decimal(1).scaleb(-places)):f}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


class Emulator:
    """One emulated exchange: market replay, matching engine, accounts, limits and faults."""

    def __init__(self, config: EmulatorConfig, *, wall_ms: Callable[[], int] | None = None) -> None:
        self.config = config
        self.wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self.random = random.Random(config.seed)  # noqa: S311 - fault injection, not crypto
        series = {}
        intervals = {}
        self.interval_names: dict[str, str] = {}
        scales = {}
        for symbol, path, scale in config.data:
            interval, candles = load_candles(path)
            if not candles:
                raise ValueError(f"{path}: no candles")
            symbol = symbol or symbol_from_path(path)
            series[symbol] = candles
            intervals[symbol] = INTERVAL_MS[interval or "1m"]
            self.interval_names[symbol] = interval or "1m"
            scales[symbol] = scale
        self.replay = MarketReplay(
            series,
            interval_ms=intervals,
            start_wall_ms=self.wall_ms(),
            speed=config.speed or Decimal(1),  # 0 = frozen: see market_ms
            history=config.history,
            price_scale=scales,
        )
        self.clock_offset_ms = 0
        self.statuses: dict[str, str] = {}
        samples = {s: self.replay.price(s, self.market_ms()) for s in series}
        self.info = info.exchange_info(samples, server_time=self.wall_ms())
        self.rules = {row["symbol"]: row for row in self.info["symbols"]}
        ticks = {s: Decimal(self._filter(s, "PRICE_FILTER")["tickSize"]) for s in self.rules}
        self.engine = MatchingEngine(
            clock=self.market_ms, tick_sizes=ticks, fees=config.fees, slippage=config.slippage
        )
        self.engine.listeners.append(self._on_event)
        self.keys: dict[str, tuple[str, str]] = {}  # api_key -> (secret, account id)
        accounts = config.accounts or (
            AccountSpec(
                api_key=secrets.token_hex(32),
                api_secret=secrets.token_hex(32),
                balances={"USDT": Decimal(10000)},
            ),
        )
        for number, spec in enumerate(accounts, start=1):
            account_id = str(number)
            self.keys[spec.api_key] = (spec.api_secret, account_id)
            self.engine.add_account(account_id, spec.balances)
        self.accounts = accounts
        self.margin_types: dict[tuple[str, str], str] = {}
        self.synced_to: dict[str, int] = {}
        self.sync_market()
        self.faults = Faults()
        self.weight_used: dict[tuple[str, int], int] = defaultdict(int)
        self.orders_used: dict[tuple[str, str, int], int] = defaultdict(int)
        self.violations: dict[tuple[str, int], int] = defaultdict(int)
        self.banned_until: dict[str, int] = {}
        self.listen_keys: dict[str, tuple[str, int]] = {}  # key -> (account, expiry wall ms)
        self.streams: dict[str, set[asyncio.Queue[str | None]]] = defaultdict(set)
        self._stream_keys: dict[int, str] = {}  # id(queue) -> the listen key it was opened with
        self.market_sockets: set[MarketSocket] = set()
        self.routes = self._routes()

    # --- market --------------------------------------------------------------------------------

    def market_ms(self) -> int:
        # speed 0 freezes market time at the start; only advance() moves it.
        wall = self.wall_ms() if self.config.speed else self.replay.start_wall_ms
        return self.replay.market_ms(wall) + self.clock_offset_ms

    def sync_market(self) -> None:
        """Walk every symbol's price path up to the current market time, matching on the way."""
        now = self.market_ms()
        for symbol in self.replay.symbols():
            since = self.synced_to.get(symbol)
            if since is None:
                points = [(now, self.replay.price(symbol, now))]
            elif now > since:
                points = self.replay.path_between(symbol, since, now)
            else:
                continue
            # Trades print on the tick: a scaled series (ETHUSDT from ETH/BTC) would not.
            tick = self.engine.tick_sizes[symbol]
            self.engine.advance(symbol, [(t, p.quantize(tick)) for t, p in points])
            self.synced_to[symbol] = now

    def advance(self, seconds: Decimal) -> None:
        self.clock_offset_ms += int(seconds * 1000)
        self.sync_market()

    # --- helpers -------------------------------------------------------------------------------

    def _filter(self, symbol: str, name: str) -> dict[str, Any]:
        return next(f for f in self.rules[symbol]["filters"] if f["filterType"] == name)

    def _precision(self, symbol: str) -> tuple[int, int]:
        row = self.rules[symbol]
        return int(row["pricePrecision"]), int(row["quantityPrecision"])

    def _symbol_opt(self, params: Mapping[str, str]) -> str | None:
        symbol = params.get("symbol")
        if not symbol:
            return None
        symbol = symbol.upper()
        if symbol not in self.rules:
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    def _symbol(self, params: Mapping[str, str]) -> str:
        symbol = self._symbol_opt(params)
        if symbol is None:
            raise _missing("symbol")
        return symbol

    # --- JSON shapes ---------------------------------------------------------------------------

    def order_json(
        self, order: Order, *, with_time: bool = True, ack: bool = False
    ) -> dict[str, Any]:
        pp, qp = self._precision(order.symbol)
        executed = Decimal(0) if ack else order.executed_qty
        quote = Decimal(0) if ack else order.cum_quote
        body: dict[str, Any] = {
            "orderId": order.order_id,
            "symbol": order.symbol,
            "status": "NEW" if ack else order.status,
            "clientOrderId": order.client_id,
            "price": _fmt(order.price, pp),
            "avgPrice": _fmt(Decimal(0) if ack else order.avg_price, max(pp, 5)),
            "origQty": _fmt(order.quantity, qp),
            "executedQty": _fmt(executed, qp),
            "cumQty": _fmt(executed, qp),
            "cumQuote": _fmt(quote, max(pp, 5)),
            "timeInForce": order.time_in_force,
            "type": order.type,
            "reduceOnly": order.reduce_only,
            "closePosition": order.close_position,
            "side": order.side,
            "positionSide": order.position_side,
            "stopPrice": _fmt(order.stop_price, pp),
            "workingType": order.working_type,
            "priceProtect": order.price_protect,
            "origType": order.orig_type or order.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "updateTime": order.time_ms if ack else order.update_time_ms,
        }
        if with_time:
            body["time"] = order.time_ms
        return body

    def algo_json(self, algo: AlgoOrder, *, detail: bool = True) -> dict[str, Any]:
        pp, qp = self._precision(algo.symbol)
        body: dict[str, Any] = {
            "algoId": algo.algo_id,
            "clientAlgoId": algo.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": algo.order_type,
            "symbol": algo.symbol,
            "side": algo.side,
            "positionSide": algo.position_side,
            "timeInForce": algo.time_in_force,
            "quantity": _fmt(algo.quantity, qp),
            "algoStatus": algo.status,
            "triggerPrice": _fmt(algo.trigger_price, pp),
            "price": _fmt(algo.price, pp),
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": algo.working_type,
            "priceMatch": "NONE",
            "closePosition": algo.close_position,
            "priceProtect": algo.price_protect,
            "reduceOnly": algo.reduce_only,
            "activatePrice": _fmt(algo.activate_price, pp),
            "callbackRate": "" if algo.callback_rate is None else f"{algo.callback_rate:f}",
            "createTime": algo.create_time_ms,
            "updateTime": algo.update_time_ms,
            "triggerTime": algo.trigger_time_ms,
            "goodTillDate": 0,
        }
        if detail:
            actual_price = Decimal(0)
            if algo.actual_order_id is not None:
                child = self._child_order(algo)
                actual_price = child.avg_price if child else Decimal(0)
            body.update(
                {
                    "actualOrderId": ""
                    if algo.actual_order_id is None
                    else str(algo.actual_order_id),
                    "actualPrice": _fmt(actual_price, 5),
                    "tpTriggerPrice": "0.000",
                    "tpPrice": "0.000",
                    "slTriggerPrice": "0.000",
                    "slPrice": "0.000",
                    "tpOrderType": "",
                }
            )
        return body

    def _child_order(self, algo: AlgoOrder) -> Order | None:
        for account in self.engine.accounts.values():
            order = account.orders.get(algo.actual_order_id or -1)
            if order is not None:
                return order
        return None

    # --- user data stream ----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        queues = self.streams.get(event.account)
        if not queues:
            return
        payload = json.dumps(self.event_json(event))
        for queue in list(queues):
            queue.put_nowait(payload)

    def event_json(self, event: Event) -> dict[str, Any]:
        now = self.market_ms()
        if isinstance(event, OrderEvent):
            order, trade = event.order, event.trade
            pp, qp = self._precision(order.symbol)
            return {
                "e": "ORDER_TRADE_UPDATE",
                "E": now,
                "T": event.time_ms,
                "o": {
                    "s": order.symbol,
                    "c": order.client_id,
                    "S": order.side,
                    "o": order.type,
                    "f": order.time_in_force,
                    "q": _fmt(order.quantity, qp),
                    "p": _fmt(order.price, pp),
                    "ap": _fmt(order.avg_price, max(pp, 5)),
                    "sp": _fmt(order.stop_price, pp),
                    "x": event.exec_type,
                    "X": order.status,
                    "i": order.order_id,
                    "l": _fmt(trade.qty if trade else Decimal(0), qp),
                    "z": _fmt(order.executed_qty, qp),
                    "L": _fmt(trade.price if trade else Decimal(0), pp),
                    "N": trade.commission_asset if trade else "USDT",
                    "n": f"{trade.commission:f}" if trade else "0",
                    "T": event.time_ms,
                    "t": trade.trade_id if trade else 0,
                    "b": "0",
                    "a": "0",
                    "m": trade.maker if trade else False,
                    "R": order.reduce_only,
                    "wt": order.working_type,
                    "ot": order.orig_type or order.type,
                    "ps": order.position_side,
                    "cp": order.close_position,
                    "rp": f"{trade.realized_pnl:f}" if trade else "0",
                    "pP": order.price_protect,
                    "si": 0,
                    "ss": 0,
                    "V": "EXPIRE_MAKER",
                    "pm": "NONE",
                    "gtd": 0,
                    "er": "0",
                },
            }
        if isinstance(event, AlgoEvent):
            algo = event.algo
            pp, qp = self._precision(algo.symbol)
            child = self._child_order(algo) if algo.actual_order_id else None
            return {
                "e": "ALGO_UPDATE",
                "T": event.time_ms,
                "E": now,
                "o": {
                    "caid": algo.client_algo_id,
                    "aid": algo.algo_id,
                    "at": "CONDITIONAL",
                    "o": algo.order_type,
                    "s": algo.symbol,
                    "S": algo.side,
                    "ps": algo.position_side,
                    "f": algo.time_in_force,
                    "q": _fmt(algo.quantity, qp),
                    "X": algo.status,
                    "ai": "" if algo.actual_order_id is None else str(algo.actual_order_id),
                    "ap": _fmt(child.avg_price if child else Decimal(0), 5),
                    "aq": _fmt(child.executed_qty if child else Decimal(0), 5),
                    "act": child.type if child else "0",
                    "tp": _fmt(algo.trigger_price, pp),
                    "p": _fmt(algo.price, pp),
                    "V": "EXPIRE_MAKER",
                    "wt": algo.working_type,
                    "pm": "NONE",
                    "cp": algo.close_position,
                    "pP": algo.price_protect,
                    "R": algo.reduce_only,
                    "tt": algo.trigger_time_ms,
                    "gtd": 0,
                    "rm": algo.fail_reason,
                },
            }
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": event.time_ms,
            "a": {
                "m": event.reason,
                "B": [
                    {"a": asset, "wb": f"{wallet:f}", "cw": f"{wallet:f}", "bc": "0"}
                    for asset, wallet in event.balances.items()
                ],
                "P": [
                    {
                        "s": p.symbol,
                        "pa": f"{p.amount:f}",
                        "ep": _fmt(p.entry_price, 5),
                        "bep": _fmt(p.entry_price, 5),
                        "cr": "0",
                        "up": f"{self._upnl(p.symbol, p.amount, p.entry_price):f}",
                        "mt": "cross",
                        "iw": "0",
                        "ps": p.position_side,
                    }
                    for p in event.positions
                ],
            },
        }

    def _upnl(self, symbol: str, amount: Decimal, entry: Decimal) -> Decimal:
        price = self.engine.price(symbol) or entry
        return (amount * (price - entry)).quantize(Decimal("0.00000001"))

    # --- request plumbing ----------------------------------------------------------------------

    def _authenticate(self, request: web.Request, route: Route, raw_query: str, body: str) -> str:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not api_key:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if not API_KEY_RE.match(api_key):
            raise ApiError(-2014, "API-key format invalid.", 401)
        if api_key not in self.keys:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        secret, account = self.keys[api_key]
        if route.security != "SIGNED":
            return account
        signature = ""
        parts = []
        for chunk, keep in ((raw_query, True), (body, True)):
            kept = []
            for piece in chunk.split("&") if chunk else []:
                if piece.startswith("signature="):
                    signature = piece[len("signature=") :]
                elif keep:
                    kept.append(piece)
            parts.append("&".join(kept))
        # Binance: totalParams is the query string concatenated with the body.
        payload = parts[0] + parts[1]
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        return account

    def _check_timestamp(self, params: Mapping[str, str]) -> None:
        try:
            timestamp = int(params["timestamp"])
        except (KeyError, ValueError):
            raise _missing("timestamp") from None
        try:
            recv_window = int(params.get("recvWindow", "5000"))
        except ValueError:
            raise ApiError(-1130, "Data sent for parameter 'recvWindow' is not valid.") from None
        if recv_window > 60000 or recv_window <= 0:
            raise ApiError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
        server = self.wall_ms()
        if timestamp >= server + 1000:
            raise ApiError(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if server - timestamp > recv_window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _limit_headers(self, ip: str, account: str | None, route: Route) -> dict[str, str]:
        now = self.wall_ms()
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.weight_used[(ip, now // 60000)])}
        if route.orders and account is not None:
            headers["X-MBX-ORDER-COUNT-10S"] = str(self.orders_used[(account, "10s", now // 10000)])
            headers["X-MBX-ORDER-COUNT-1M"] = str(self.orders_used[(account, "1m", now // 60000)])
        return headers

    def _charge_weight(self, ip: str, weight: int) -> None:
        now = self.wall_ms()
        banned = self.banned_until.get(ip, 0)
        if banned > now:
            raise ApiError(
                -1003,
                f"Way too many requests; IP({ip}) banned until {banned}. Please use the websocket "
                "for live updates to avoid bans.",
                418,
            )
        minute = now // 60000
        if self.weight_used[(ip, minute)] + weight > self.config.weight_per_minute:
            self.violations[(ip, minute)] += 1
            if self.violations[(ip, minute)] > 3:  # kept hammering after 429s: ban
                self.banned_until[ip] = now + self.config.ban_seconds * 1000
            raise ApiError(
                -1003,
                f"Too many requests; current limit is {self.config.weight_per_minute} requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
                429,
            )
        self.weight_used[(ip, minute)] += weight

    def _charge_orders(self, account: str, count: int) -> None:
        now = self.wall_ms()
        windows = (
            ("10s", now // 10000, self.config.orders_per_10s, "10 SECOND"),
            ("1m", now // 60000, self.config.orders_per_minute, "1 MINUTE"),
        )
        for name, bucket, limit, words in windows:
            if self.orders_used[(account, name, bucket)] + count > limit:
                raise ApiError(
                    -1015, f"Too many new orders; current limit is {limit} orders per {words}.", 429
                )
        for name, bucket, _, _ in windows:
            self.orders_used[(account, name, bucket)] += count

    def _next_fault(self) -> str | None:
        if self.faults.next_faults:
            queued = self.faults.next_faults.pop(0)
            return None if queued == "ok" else queued  # "ok": let this placement through
        roll = self.random.random()
        for name, rate in (
            ("5xx", self.faults.rate_5xx),
            ("timeout", self.faults.rate_timeout),
            ("drop", self.faults.rate_drop),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.get((request.method, request.path))
        if route is None:
            return web.json_response(
                {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"},
                status=404,
            )
        ip = request.remote or "unknown"
        account: str | None = None
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        try:
            raw_query = request.rel_url.raw_query_string
            body = (await request.read()).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            params.update(parse_qsl(raw_query, keep_blank_values=True))  # query wins
            weight = route.weight(params) if callable(route.weight) else route.weight
            self._charge_weight(ip, weight)
            if route.security != "NONE":
                account = self._authenticate(request, route, raw_query, body)
            if route.security == "SIGNED":
                self._check_timestamp(params)
            if route.orders and account is not None:
                self._charge_orders(account, route.orders)
            fault = self._next_fault() if route.places else None
            if fault == "5xx":  # refused before execution: nothing happened
                return web.json_response(
                    {
                        "code": -1001,
                        "msg": "Internal error; unable to process your request. Please try again.",
                    },
                    status=503,
                    headers=self._limit_headers(ip, account, route),
                )
            self.sync_market()
            result = await route.handler(Request(params, account, request))
            if fault == "timeout":  # executed, but the caller is told the outcome is unknown
                return web.json_response(
                    {
                        "code": -1007,
                        "msg": "Timeout waiting for response from backend server. "
                        "Send status unknown; execution status unknown.",
                    },
                    status=408,
                    headers=self._limit_headers(ip, account, route),
                )
            if fault == "drop" and request.transport is not None:  # executed, no answer at all
                request.transport.abort()  # the client sees the connection reset
                return web.Response(status=503)  # never delivered
        except ApiError as exc:
            return web.json_response(
                {"code": exc.code, "msg": exc.msg},
                status=exc.status,
                headers={
                    **self._limit_headers(ip, account, route),
                    **(
                        {"Retry-After": str(self.config.ban_seconds)}
                        if exc.status in (418, 429)
                        else {}
                    ),
                },
            )
        except EngineReject as exc:
            return web.json_response(
                {"code": exc.code, "msg": exc.msg},
                status=400,
                headers=self._limit_headers(ip, account, route),
            )
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, headers=self._limit_headers(ip, account, route))

    # --- routes --------------------------------------------------------------------------------

    def _routes(self) -> dict[tuple[str, str], Route]:
        def klines_weight(p: dict[str, str]) -> int:
            limit = int(p.get("limit", "500") or 500)
            return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10

        def all_symbols_40(p: dict[str, str]) -> int:
            return 1 if p.get("symbol") else 40

        r = Route
        return {
            ("GET", "/fapi/v1/ping"): r(self.h_ping),
            ("GET", "/api/v3/ping"): r(self.h_ping),
            ("GET", "/fapi/v1/time"): r(self.h_time),
            ("GET", "/api/v3/time"): r(self.h_time),
            ("GET", "/fapi/v1/exchangeInfo"): r(self.h_exchange_info),
            ("GET", "/fapi/v1/klines"): r(self.h_klines, weight=klines_weight),
            ("GET", "/fapi/v1/premiumIndex"): r(self.h_premium_index),
            ("GET", "/fapi/v1/ticker/price"): r(self.h_ticker_price),
            ("GET", "/fapi/v2/ticker/price"): r(self.h_ticker_price),  # python-binance's
            ("POST", "/fapi/v1/order"): r(self.h_new_order, 0, "SIGNED", orders=1, places=True),
            ("POST", "/fapi/v1/order/test"): r(self.h_test_order, 0, "SIGNED"),
            ("POST", "/fapi/v1/batchOrders"): r(
                self.h_batch_orders, 5, "SIGNED", orders=5, places=True
            ),
            ("GET", "/fapi/v1/order"): r(self.h_get_order, 1, "SIGNED"),
            ("DELETE", "/fapi/v1/order"): r(self.h_cancel_order, 1, "SIGNED"),
            ("GET", "/fapi/v1/openOrder"): r(self.h_open_order, 1, "SIGNED"),
            ("GET", "/fapi/v1/openOrders"): r(self.h_open_orders, all_symbols_40, "SIGNED"),
            ("GET", "/fapi/v1/allOrders"): r(self.h_all_orders, 5, "SIGNED"),
            ("DELETE", "/fapi/v1/allOpenOrders"): r(self.h_cancel_all, 1, "SIGNED"),
            ("POST", "/fapi/v1/algoOrder"): r(self.h_new_algo, 0, "SIGNED", orders=1, places=True),
            ("GET", "/fapi/v1/algoOrder"): r(self.h_get_algo, 1, "SIGNED"),
            ("DELETE", "/fapi/v1/algoOrder"): r(self.h_cancel_algo, 1, "SIGNED"),
            ("GET", "/fapi/v1/openAlgoOrders"): r(self.h_open_algos, all_symbols_40, "SIGNED"),
            ("GET", "/fapi/v1/allAlgoOrders"): r(self.h_all_algos, 5, "SIGNED"),
            ("DELETE", "/fapi/v1/algoOpenOrders"): r(self.h_cancel_all_algos, 1, "SIGNED"),
            ("GET", "/fapi/v1/userTrades"): r(self.h_user_trades, 5, "SIGNED"),
            ("POST", "/fapi/v1/leverage"): r(self.h_leverage, 1, "SIGNED"),
            ("POST", "/fapi/v1/marginType"): r(self.h_margin_type, 1, "SIGNED"),
            ("GET", "/fapi/v1/positionSide/dual"): r(self.h_get_dual, 30, "SIGNED"),
            ("POST", "/fapi/v1/positionSide/dual"): r(self.h_set_dual, 1, "SIGNED"),
            ("GET", "/fapi/v2/account"): r(self.h_account_v2, 5, "SIGNED"),
            ("GET", "/fapi/v3/account"): r(self.h_account_v3, 5, "SIGNED"),
            ("GET", "/fapi/v2/balance"): r(self.h_balance, 5, "SIGNED"),
            ("GET", "/fapi/v3/balance"): r(self.h_balance, 5, "SIGNED"),
            ("GET", "/fapi/v2/positionRisk"): r(self.h_position_risk_v2, 5, "SIGNED"),
            ("GET", "/fapi/v3/positionRisk"): r(self.h_position_risk_v3, 5, "SIGNED"),
            ("GET", "/fapi/v1/accountConfig"): r(self.h_account_config, 5, "SIGNED"),
            ("GET", "/fapi/v1/symbolConfig"): r(self.h_symbol_config, 5, "SIGNED"),
            ("POST", "/fapi/v1/listenKey"): r(self.h_listen_key_new, 1, "USER_STREAM"),
            ("PUT", "/fapi/v1/listenKey"): r(self.h_listen_key_keepalive, 1, "USER_STREAM"),
            ("DELETE", "/fapi/v1/listenKey"): r(self.h_listen_key_close, 1, "USER_STREAM"),
        }

    # --- public handlers -----------------------------------------------------------------------

    async def h_ping(self, req: Request) -> dict[str, Any]:
        return {}

    async def h_time(self, req: Request) -> dict[str, Any]:
        return {"serverTime": self.wall_ms()}

    async def h_exchange_info(self, req: Request) -> dict[str, Any]:
        self.info["serverTime"] = self.wall_ms()
        for row in self.info["symbols"]:
            row["status"] = self.statuses.get(row["symbol"], "TRADING")
        return self.info

    async def h_klines(self, req: Request) -> list[list[Any]]:
        symbol = self._symbol(req.params)
        interval = req.params.get("interval", "")
        if not interval:
            raise _missing("interval")
        if not self.replay.serves(symbol, interval):
            raise ApiError(-1120, "Invalid interval.")
        limit = int(req.params.get("limit", "500") or 500)
        if not 1 <= limit <= 1500:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        start = int(req.params["startTime"]) if req.params.get("startTime") else None
        end = int(req.params["endTime"]) if req.params.get("endTime") else None
        if start is not None and end is not None and start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        pp, _ = self._precision(symbol)
        return [
            [
                k.open_time_ms,
                _fmt(k.open, pp),
                _fmt(k.high, pp),
                _fmt(k.low, pp),
                _fmt(k.close, pp),
                f"{k.volume:f}",
                k.close_time_ms,
                f"{k.quote_volume:f}",
                k.trades,
                f"{k.taker_buy_base:f}",
                f"{k.taker_buy_quote:f}",
                "0",
            ]
            for k in self.replay.klines(
                symbol, self.market_ms(), start_ms=start, end_ms=end, limit=limit, interval=interval
            )
        ]

    async def h_premium_index(self, req: Request) -> Any:
        symbol = self._symbol_opt(req.params)
        rows = [
            {
                "symbol": s,
                "markPrice": _fmt(self.engine.price(s), self._precision(s)[0] + 2),
                "indexPrice": _fmt(self.engine.price(s), self._precision(s)[0] + 2),
                "lastFundingRate": "0.00010000",
                "nextFundingTime": (self.market_ms() // 28_800_000 + 1) * 28_800_000,
                "interestRate": "0.00010000",
                "time": self.market_ms(),
            }
            for s in ([symbol] if symbol else sorted(self.rules))
        ]
        return rows[0] if symbol else rows

    async def h_ticker_price(self, req: Request) -> Any:
        symbol = self._symbol_opt(req.params)
        rows = [
            {
                "symbol": s,
                "price": _fmt(self.engine.price(s), self._precision(s)[0]),
                "time": self.market_ms(),
            }
            for s in ([symbol] if symbol else sorted(self.rules))
        ]
        return rows[0] if symbol else rows

    # --- validation ----------------------------------------------------------------------------

    def _decimal(self, params: Mapping[str, str], name: str, *, required: bool) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            if required:
                raise ApiError(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise _missing(name) from None
        if not value.is_finite():
            raise _missing(name)
        return value

    @staticmethod
    def _flag(params: Mapping[str, str], name: str) -> bool:
        raw = params.get(name)
        if raw is None or raw == "":
            return False
        if raw.lower() not in ("true", "false"):
            raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return raw.lower() == "true"

    def _check_price(self, symbol: str, value: Decimal, *, stop: bool = False) -> None:
        pp, _ = self._precision(symbol)
        f = self._filter(symbol, "PRICE_FILTER")
        if value <= 0:
            raise (
                ApiError(-4006, "Stop price less than zero.")
                if stop
                else ApiError(-4001, "Price less than 0.")
            )
        if -value.normalize().as_tuple().exponent > pp:  # type: ignore[operator]
            raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
        low, high, tick = Decimal(f["minPrice"]), Decimal(f["maxPrice"]), Decimal(f["tickSize"])
        if low and value < low:
            raise ApiError(-4013, "Price less than min price.")
        if high and value > high:
            raise (
                ApiError(-4007, "Stop price greater than max price.")
                if stop
                else ApiError(-4002, "Price greater than max price.")
            )
        if tick and (value - low) % tick != 0:
            raise ApiError(-4014, "Price not increased by tick size.")

    def _check_qty(self, symbol: str, value: Decimal, *, market: bool) -> None:
        _, qp = self._precision(symbol)
        f = self._filter(symbol, "MARKET_LOT_SIZE" if market else "LOT_SIZE")
        if value <= 0:
            raise ApiError(-4003, "Quantity less than zero.")
        if -value.normalize().as_tuple().exponent > qp:  # type: ignore[operator]
            raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
        low, high, step = Decimal(f["minQty"]), Decimal(f["maxQty"]), Decimal(f["stepSize"])
        if low and value < low:
            raise ApiError(-4004, "Quantity less than min quantity.")
        if high and value > high:
            raise ApiError(-4005, "Quantity greater than max quantity.")
        if step and (value - low) % step != 0:
            raise ApiError(-4023, "Qty not increased by step size.")

    def _check_percent_price(self, symbol: str, side: str, price: Decimal) -> None:
        f = self._filter(symbol, "PERCENT_PRICE")
        mark = self.engine.price(symbol)
        if mark is None:
            return
        if side == "BUY" and price > mark * Decimal(f["multiplierUp"]):
            raise ApiError(-4016, "Price is higher than mark price multiplier cap.")
        if side == "SELL" and price < mark * Decimal(f["multiplierDown"]):
            raise ApiError(-4024, "Price is lower than mark price multiplier floor.")

    def _check_notional(self, symbol: str, price: Decimal, qty: Decimal) -> None:
        notional = Decimal(self._filter(symbol, "MIN_NOTIONAL")["notional"])
        if price * qty < notional:
            raise ApiError(
                -4164,
                f"Order's notional must be no smaller than {notional} "
                "(unless you choose reduce only).",
            )

    def _common(self, params: Mapping[str, str], account: str) -> tuple[str, str, str, str]:
        symbol = self._symbol(params)
        for name in ("side", "type"):
            if not params.get(name):
                raise ApiError(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        side, order_type = params["side"].upper(), params["type"].upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        if order_type not in ALL_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        position_side = params.get("positionSide", "BOTH").upper() or "BOTH"
        if position_side not in ("BOTH", "LONG", "SHORT"):
            raise ApiError(-4060, "Invalid position side.")
        dual = self.engine.account(account).dual_side
        if dual and "reduceOnly" in params:
            raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        if params.get("workingType") and params["workingType"].upper() not in (
            "MARK_PRICE",
            "CONTRACT_PRICE",
        ):
            raise ApiError(-1130, "Data sent for parameter 'workingType' is not valid.")
        if self.statuses.get(symbol, "TRADING") != "TRADING" and not self._flag(
            params, "reduceOnly"
        ):
            # A symbol that is not TRADING takes reduce-only orders only (closing is allowed).
            raise ApiError(
                -4400,
                "Futures Trading Quantitative Rules violated, only reduceOnly order is allowed, "
                "please try again later.",
            )
        return symbol, side, order_type, position_side

    def _validate_regular(self, params: Mapping[str, str], account: str) -> NewOrder:
        symbol, side, order_type, position_side = self._common(params, account)
        if order_type in CONDITIONAL_TYPES:
            raise ApiError(
                -4120,
                "Order type not supported for this endpoint. "
                "Please use the Algo Order API endpoints instead.",
            )
        tif = params.get("timeInForce", "").upper()
        if order_type == "LIMIT" and not tif:
            raise _missing("timeInForce")
        if tif and tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
            raise ApiError(-1115, "Invalid timeInForce.")
        quantity = self._decimal(params, "quantity", required=True) or Decimal(0)
        price = self._decimal(params, "price", required=order_type == "LIMIT")
        reduce_only = self._flag(params, "reduceOnly")
        if price is not None and order_type == "LIMIT":
            self._check_price(symbol, price)
        self._check_qty(symbol, quantity, market=order_type == "MARKET")
        if price is not None and order_type == "LIMIT":
            self._check_percent_price(symbol, side, price)
        if not reduce_only:
            reference = price if order_type == "LIMIT" else self.engine.price(symbol)
            self._check_notional(symbol, reference or Decimal(0), quantity)
        client_id = params.get("newClientOrderId", "")
        if client_id and not CLIENT_ID_RE.match(client_id):
            raise ApiError(-4015, "Client order id is not valid.")
        resp_type = params.get("newOrderRespType", "ACK").upper()
        if resp_type not in ("ACK", "RESULT"):
            raise ApiError(-1136, "Invalid newOrderRespType.")
        return NewOrder(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=quantity,
            price=price or Decimal(0),
            time_in_force=tif or "GTC",
            reduce_only=reduce_only,
            position_side=position_side,
            client_id=client_id,
        )

    def _validate_algo(self, params: Mapping[str, str], account: str) -> NewAlgoOrder:
        if params.get("algoType", "").upper() != "CONDITIONAL":
            if not params.get("algoType"):
                raise _missing("algoType")
            raise ApiError(-1130, "Data sent for parameter 'algoType' is not valid.")
        symbol, side, order_type, position_side = self._common(params, account)
        if order_type not in CONDITIONAL_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        close_position = self._flag(params, "closePosition")
        reduce_only = self._flag(params, "reduceOnly")
        quantity = self._decimal(params, "quantity", required=False)
        price = self._decimal(params, "price", required=order_type in ("STOP", "TAKE_PROFIT"))
        trailing = order_type == "TRAILING_STOP_MARKET"
        trigger = self._decimal(params, "triggerPrice", required=not trailing)
        if close_position:
            if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise ApiError(-1106, "Parameter 'closePosition' sent when not required.")
            if quantity is not None:
                raise ApiError(-4137, "Quantity must be zero with closePosition equals true")
            if "reduceOnly" in params:
                raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        elif quantity is None:
            raise _missing("quantity")
        callback = self._decimal(params, "callbackRate", required=trailing)
        if callback is not None and not Decimal("0.1") <= callback <= Decimal(10):
            raise ApiError(-1130, "Data sent for parameter 'callbackRate' is not valid.")
        activate = self._decimal(params, "activatePrice", required=False)
        if trigger is not None:
            self._check_price(symbol, trigger, stop=True)
        if price is not None:
            self._check_price(symbol, price)
        if activate is not None:
            self._check_price(symbol, activate, stop=True)
        market = order_type.endswith("_MARKET")
        if quantity is not None:
            self._check_qty(symbol, quantity, market=market)
        if price is not None:
            self._check_percent_price(symbol, side, price)
        if quantity is not None and not reduce_only and not close_position:
            # The price the order would trade at: its limit, else its trigger, else (trailing)
            # its activation price, else the market.
            reference = price or trigger or activate or self.engine.price(symbol)
            self._check_notional(symbol, reference or Decimal(0), quantity)
        tif = params.get("timeInForce", "GTC").upper() or "GTC"
        if tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise ApiError(-1115, "Invalid timeInForce.")
        client_id = params.get("clientAlgoId", "")
        if client_id and not CLIENT_ID_RE.match(client_id):
            raise ApiError(-4015, "Client order id is not valid.")
        return NewAlgoOrder(
            symbol=symbol,
            side=side,
            type=order_type,
            trigger_price=trigger or Decimal(0),
            quantity=quantity or Decimal(0),
            price=price or Decimal(0),
            time_in_force=tif,
            reduce_only=reduce_only,
            close_position=close_position,
            position_side=position_side,
            working_type=(params.get("workingType") or "CONTRACT_PRICE").upper(),
            price_protect=params.get("priceProtect", "").upper() == "TRUE",
            activate_price=activate,
            callback_rate=callback,
            client_id=client_id,
        )

    # --- order handlers ------------------------------------------------------------------------

    @staticmethod
    def _acct(req: Request) -> str:
        if req.account is None:  # routes that call this are SIGNED or USER_STREAM
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return req.account

    async def h_new_order(self, req: Request) -> dict[str, Any]:
        order = self.engine.place_order(
            self._acct(req), self._validate_regular(req.params, self._acct(req))
        )
        ack = req.params.get("newOrderRespType", "ACK").upper() == "ACK"
        return self.order_json(order, with_time=False, ack=ack)

    async def h_test_order(self, req: Request) -> dict[str, Any]:
        self._validate_regular(req.params, self._acct(req))
        return {
            "orderId": 0,
            "symbol": "",
            "status": "",
            "clientOrderId": "",
            "price": "0",
            "avgPrice": "0",
            "origQty": "0",
            "executedQty": "0",
            "cumQty": "0",
            "cumQuote": "0",
            "timeInForce": "",
            "type": "",
            "reduceOnly": False,
            "closePosition": False,
            "side": "",
            "positionSide": "",
            "stopPrice": "0",
            "workingType": "",
            "priceProtect": False,
            "origType": "",
            "priceMatch": "",
            "selfTradePreventionMode": "",
            "goodTillDate": 0,
            "updateTime": 0,
        }

    async def h_batch_orders(self, req: Request) -> list[dict[str, Any]]:
        try:
            batch = json.loads(req.params.get("batchOrders", ""))
        except json.JSONDecodeError:
            raise ApiError(-1130, "Data sent for parameter 'batchOrders' is not valid.") from None
        count = len(batch) if isinstance(batch, list) else 0
        if not isinstance(batch, list) or not 1 <= count <= 5:
            raise ApiError(
                -4082,
                f"Invalid number of batch place orders: {count}",
            )
        results: list[dict[str, Any]] = []
        for item in batch:
            try:
                params = {
                    k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in item.items()
                }
                order = self.engine.place_order(
                    self._acct(req), self._validate_regular(params, self._acct(req))
                )
                results.append(self.order_json(order, with_time=False, ack=True))
            except (ApiError, EngineReject) as exc:
                results.append({"code": exc.code, "msg": exc.msg})
        return results

    def _order_ref(self, params: Mapping[str, str]) -> tuple[int | None, str | None]:
        order_id = params.get("orderId")
        client_id = params.get("origClientOrderId")
        if not order_id and not client_id:
            raise ApiError(
                -1102,
                "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!",
            )
        return (int(order_id) if order_id else None), client_id or None

    async def h_get_order(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        order_id, client_id = self._order_ref(req.params)
        return self.order_json(
            self.engine.get_order(self._acct(req), symbol, order_id=order_id, client_id=client_id)
        )

    async def h_open_order(self, req: Request) -> dict[str, Any]:
        order = await self.h_get_order(req)
        if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(-2013, "Order does not exist.")
        return order

    async def h_cancel_order(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        order_id, client_id = self._order_ref(req.params)
        order = self.engine.cancel_order(
            self._acct(req), symbol, order_id=order_id, client_id=client_id
        )
        return self.order_json(order, with_time=False)

    async def h_open_orders(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._symbol_opt(req.params)
        return [self.order_json(o) for o in self.engine.open_orders(self._acct(req), symbol)]

    async def h_all_orders(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._symbol(req.params)
        limit = min(int(req.params.get("limit", "500") or 500), 1000)
        return [self.order_json(o) for o in self.engine.all_orders(self._acct(req), symbol)][
            -limit:
        ]

    async def h_cancel_all(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        self.engine.cancel_all_orders(self._acct(req), symbol)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def h_new_algo(self, req: Request) -> dict[str, Any]:
        algo = self.engine.place_algo(
            self._acct(req), self._validate_algo(req.params, self._acct(req))
        )
        return self.algo_json(algo, detail=False)

    def _algo_ref(self, params: Mapping[str, str]) -> tuple[int | None, str | None]:
        algo_id = params.get("algoId")
        client_id = params.get("clientAlgoId")
        if not algo_id and not client_id:
            raise ApiError(
                -1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!"
            )
        return (int(algo_id) if algo_id else None), client_id or None

    async def h_get_algo(self, req: Request) -> dict[str, Any]:
        algo_id, client_id = self._algo_ref(req.params)
        return self.algo_json(
            self.engine.get_algo(self._acct(req), algo_id=algo_id, client_id=client_id)
        )

    async def h_cancel_algo(self, req: Request) -> dict[str, Any]:
        algo_id, client_id = self._algo_ref(req.params)
        algo = self.engine.cancel_algo(self._acct(req), algo_id=algo_id, client_id=client_id)
        return {
            "algoId": algo.algo_id,
            "clientAlgoId": algo.client_algo_id,
            "code": "200",
            "msg": "success",
        }

    async def h_open_algos(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._symbol_opt(req.params)
        return [self.algo_json(a) for a in self.engine.open_algos(self._acct(req), symbol)]

    async def h_all_algos(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._symbol(req.params)
        limit = min(int(req.params.get("limit", "500") or 500), 1000)
        return [self.algo_json(a) for a in self.engine.all_algos(self._acct(req), symbol)][-limit:]

    async def h_cancel_all_algos(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        self.engine.cancel_all_algos(self._acct(req), symbol)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # --- account handlers ----------------------------------------------------------------------

    async def h_user_trades(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._symbol(req.params)
        pp, qp = self._precision(symbol)
        trades = self.engine.trades(self._acct(req), symbol)
        if req.params.get("orderId"):
            trades = [t for t in trades if t.order_id == int(req.params["orderId"])]
        if req.params.get("fromId"):
            trades = [t for t in trades if t.trade_id >= int(req.params["fromId"])]
        if req.params.get("startTime"):
            trades = [t for t in trades if t.time_ms >= int(req.params["startTime"])]
        if req.params.get("endTime"):
            trades = [t for t in trades if t.time_ms <= int(req.params["endTime"])]
        limit = min(int(req.params.get("limit", "500") or 500), 1000)
        return [
            {
                "buyer": t.side == "BUY",
                "commission": f"{t.commission:f}",
                "commissionAsset": t.commission_asset,
                "id": t.trade_id,
                "maker": t.maker,
                "orderId": t.order_id,
                "price": _fmt(t.price, pp),
                "qty": _fmt(t.qty, qp),
                "quoteQty": f"{t.quote_qty:f}",
                "realizedPnl": f"{t.realized_pnl:f}",
                "side": t.side,
                "positionSide": t.position_side,
                "symbol": t.symbol,
                "time": t.time_ms,
                "marginAsset": t.commission_asset,
            }
            for t in trades[:limit]
        ]

    async def h_leverage(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        try:
            leverage = int(req.params.get("leverage", ""))
        except ValueError:
            raise _missing("leverage") from None
        self.engine.set_leverage(self._acct(req), symbol, leverage)
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": symbol}

    async def h_margin_type(self, req: Request) -> dict[str, Any]:
        symbol = self._symbol(req.params)
        margin = req.params.get("marginType", "").upper()
        if margin not in ("ISOLATED", "CROSSED"):
            raise ApiError(-1130, "Data sent for parameter 'marginType' is not valid.")
        key = (self._acct(req), symbol)
        if self.margin_types.get(key, "CROSSED") == margin:
            raise ApiError(-4046, "No need to change margin type.")
        self.margin_types[key] = margin
        return {"code": 200, "msg": "success"}

    async def h_get_dual(self, req: Request) -> dict[str, Any]:
        return {"dualSidePosition": self.engine.account(self._acct(req)).dual_side}

    async def h_set_dual(self, req: Request) -> dict[str, Any]:
        self.engine.set_position_mode(
            self._acct(req), dual=self._flag(req.params, "dualSidePosition")
        )
        return {"code": 200, "msg": "success"}

    def _balance_rows(self, account: str) -> list[dict[str, Any]]:
        wallet = self.engine.account(account).balances
        return [
            {
                "accountAlias": "SgsR",
                "asset": asset,
                "balance": f"{amount:f}",
                "crossWalletBalance": f"{amount:f}",
                "crossUnPnl": f"{self.engine.unrealized_pnl(account, asset):f}",
                "availableBalance": f"{self.engine.available_balance(account, asset):f}",
                "maxWithdrawAmount": f"{self.engine.available_balance(account, asset):f}",
                "marginAvailable": True,
                "updateTime": self.market_ms(),
            }
            for asset, amount in sorted(wallet.items())
        ]

    async def h_balance(self, req: Request) -> list[dict[str, Any]]:
        return self._balance_rows(self._acct(req))

    def _position_rows(
        self, account: str, symbol: str | None, *, all_symbols: bool
    ) -> list[dict[str, Any]]:
        acct = self.engine.account(account)
        keys = set(acct.positions)
        if all_symbols:
            sides = ("LONG", "SHORT") if acct.dual_side else ("BOTH",)
            keys |= {(s, side) for s in self.rules for side in sides}
        else:
            open_symbols = {o.symbol for o in acct.orders.values() if o.is_open}
            open_symbols |= {a.symbol for a in acct.algos.values() if a.is_open}
            keys = {k for k in keys if acct.positions[k].amount} | {
                (s, "BOTH" if not acct.dual_side else "LONG") for s in open_symbols
            }
        rows = []
        for sym, side in sorted(keys):
            if symbol and sym != symbol:
                continue
            position = acct.positions.get((sym, side))
            amount = position.amount if position else Decimal(0)
            entry = position.entry_price if position else Decimal(0)
            mark = self.engine.price(sym) or Decimal(0)
            leverage = self.engine.leverage(account, sym)
            rows.append(
                {
                    "symbol": sym,
                    "positionSide": side,
                    "positionAmt": f"{amount:f}",
                    "entryPrice": _fmt(entry, 8),
                    "breakEvenPrice": _fmt(entry, 8),
                    "markPrice": _fmt(mark, 8),
                    "unRealizedProfit": f"{self._upnl(sym, amount, entry):f}",
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": f"{(amount * mark):f}",
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": f"{(abs(amount) * mark / leverage):f}",
                    "maintMargin": "0",
                    "positionInitialMargin": f"{(abs(amount) * mark / leverage):f}",
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "leverage": str(leverage),
                    "marginType": self.margin_types.get((account, sym), "CROSSED").lower(),
                    "updateTime": position.update_time_ms if position else 0,
                }
            )
        return rows

    async def h_position_risk_v2(self, req: Request) -> list[dict[str, Any]]:
        return self._position_rows(self._acct(req), self._symbol_opt(req.params), all_symbols=True)

    async def h_position_risk_v3(self, req: Request) -> list[dict[str, Any]]:
        return self._position_rows(self._acct(req), self._symbol_opt(req.params), all_symbols=False)

    def _account_body(self, account: str, *, all_symbols: bool) -> dict[str, Any]:
        balances = self._balance_rows(account)
        wallet = sum((Decimal(b["balance"]) for b in balances), Decimal(0))
        upnl = sum((Decimal(b["crossUnPnl"]) for b in balances), Decimal(0))
        available = sum((Decimal(b["availableBalance"]) for b in balances), Decimal(0))
        return {
            "feeTier": 0,
            "feeBurn": False,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
            "totalInitialMargin": "0",
            "totalMaintMargin": "0",
            "totalWalletBalance": f"{wallet:f}",
            "totalUnrealizedProfit": f"{upnl:f}",
            "totalMarginBalance": f"{wallet + upnl:f}",
            "totalPositionInitialMargin": "0",
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": f"{wallet:f}",
            "totalCrossUnPnl": f"{upnl:f}",
            "availableBalance": f"{available:f}",
            "maxWithdrawAmount": f"{available:f}",
            "assets": [
                {
                    "asset": b["asset"],
                    "walletBalance": b["balance"],
                    "unrealizedProfit": b["crossUnPnl"],
                    "marginBalance": b["balance"],
                    "availableBalance": b["availableBalance"],
                    "crossWalletBalance": b["crossWalletBalance"],
                    "maxWithdrawAmount": b["maxWithdrawAmount"],
                    "marginAvailable": True,
                    "updateTime": b["updateTime"],
                }
                for b in balances
            ],
            "positions": self._position_rows(account, None, all_symbols=all_symbols),
        }

    async def h_account_v2(self, req: Request) -> dict[str, Any]:
        return self._account_body(self._acct(req), all_symbols=True)

    async def h_account_v3(self, req: Request) -> dict[str, Any]:
        return self._account_body(self._acct(req), all_symbols=False)

    async def h_account_config(self, req: Request) -> dict[str, Any]:
        acct = self.engine.account(self._acct(req))
        return {
            "feeTier": 0,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "dualSidePosition": acct.dual_side,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
        }

    async def h_symbol_config(self, req: Request) -> list[dict[str, Any]]:
        account = self._acct(req)
        symbol = self._symbol_opt(req.params)
        return [
            {
                "symbol": s,
                "marginType": self.margin_types.get((account, s), "CROSSED"),
                "isAutoAddMargin": "false",
                "leverage": self.engine.leverage(account, s),
                "maxNotionalValue": "1000000",
            }
            for s in ([symbol] if symbol else sorted(self.rules))
        ]

    # --- listen keys and the user data stream --------------------------------------------------

    async def h_listen_key_new(self, req: Request) -> dict[str, Any]:
        account = self._acct(req)
        now = self.wall_ms()
        for key, (owner, expiry) in self.listen_keys.items():
            if owner == account and expiry > now:  # Binance returns the active key, extended
                self.listen_keys[key] = (owner, now + LISTEN_KEY_TTL_MS)
                return {"listenKey": key}
        key = secrets.token_urlsafe(48)[:64]
        self.listen_keys[key] = (account, now + LISTEN_KEY_TTL_MS)
        return {"listenKey": key}

    def _own_key(self, req: Request) -> str:
        key = req.params.get("listenKey", "")
        owner = self.listen_keys.get(key)
        if owner is None or owner[0] != req.account or owner[1] <= self.wall_ms():
            raise ApiError(-1125, "This listenKey does not exist.")
        return key

    async def h_listen_key_keepalive(self, req: Request) -> dict[str, Any]:
        key = self._own_key(req) if req.params.get("listenKey") else self._active_key(req)
        self.listen_keys[key] = (self._acct(req), self.wall_ms() + LISTEN_KEY_TTL_MS)
        return {"listenKey": key}

    def _active_key(self, req: Request) -> str:
        for key, (owner, expiry) in self.listen_keys.items():
            if owner == req.account and expiry > self.wall_ms():
                return key
        raise ApiError(-1125, "This listenKey does not exist.")

    async def h_listen_key_close(self, req: Request) -> dict[str, Any]:
        key = self._own_key(req) if req.params.get("listenKey") else self._active_key(req)
        self.listen_keys.pop(key, None)
        return {}

    async def user_stream(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey") or request.match_info.get("listen_key", "")
        owner = self.listen_keys.get(key)
        if owner is None or owner[1] <= self.wall_ms():
            return web.json_response(
                {"code": -1125, "msg": "This listenKey does not exist."}, status=400
            )
        account = owner[0]
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.streams[account].add(queue)
        self._stream_keys[id(queue)] = key

        async def writer() -> None:
            while True:
                payload = await queue.get()
                if payload is None:
                    await ws.close()
                    return
                await ws.send_str(payload)

        task = asyncio.create_task(writer())
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.streams[account].discard(queue)
            self._stream_keys.pop(id(queue), None)
            task.cancel()
        return ws

    def expire_listen_key(self, key: str) -> None:
        """Expire ``key`` now: its streams get ``listenKeyExpired`` and are closed."""
        owner = self.listen_keys.pop(key, None)
        if owner is None:
            return
        payload = json.dumps({"e": "listenKeyExpired", "E": str(self.wall_ms()), "listenKey": key})
        for queue in list(self.streams.get(owner[0], ())):
            if self._stream_keys.get(id(queue)) == key:
                queue.put_nowait(payload)
                queue.put_nowait(None)

    # --- market streams (klines) ----------------------------------------------------------------

    def parse_stream(self, name: str) -> tuple[str, str] | None:
        """``(SYMBOL, interval)`` of a kline stream this emulator serves (lowercase symbol, an
        interval ``/fapi/v1/klines`` serves for it), else None."""
        match = KLINE_STREAM_RE.match(name)
        if match is None:
            return None
        symbol, interval = match.group(1).upper(), match.group(2)
        if symbol not in self.rules or not self.replay.serves(symbol, interval):
            return None
        return symbol, interval

    def _streams_problem(self, names: list[str], existing: set[str]) -> str | None:
        total = len(existing.union(names))
        if total > MAX_STREAMS_PER_CONNECTION:
            return (
                f"too many streams ({total}; at most {MAX_STREAMS_PER_CONNECTION} per connection)"
            )
        bad = [name for name in names if self.parse_stream(name) is None]
        if bad:
            return f"invalid stream name(s): {', '.join(bad[:5])}"
        return None

    def _subscribe(self, sock: MarketSocket, name: str, market_ms: int) -> None:
        parsed = self.parse_stream(name)
        if parsed is not None and name not in sock.streams:
            # The candle open now is the first one this subscription reports closed.
            sock.streams[name] = bucket_open_ms(market_ms, parsed[1])

    async def market_stream(self, request: web.Request) -> web.StreamResponse:
        """Combined streams: ``/market/stream?streams=a/b`` (legacy ``/stream``)."""
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._market_socket(request, names, combined=True)

    async def market_raw(self, request: web.Request) -> web.StreamResponse:
        """Raw streams: ``/market/ws/<a>`` (or ``/market/ws`` and SUBSCRIBE; legacy ``/ws``)."""
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
        return await self._market_socket(request, names, combined=False)

    async def legacy_ws(self, request: web.Request) -> web.StreamResponse:
        """``/ws/<name>``: a market stream when the name has an ``@``, else a listen key."""
        name = request.match_info["listen_key"]
        if "@" in name:
            names = [n for n in name.split("/") if n]
            return await self._market_socket(request, names, combined=False)
        return await self.user_stream(request)

    async def _market_socket(
        self, request: web.Request, names: list[str], *, combined: bool
    ) -> web.StreamResponse:
        problem = self._streams_problem(names, set())
        if problem is not None:
            return web.json_response({"code": 2, "msg": f"Invalid request: {problem}"}, status=400)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        sock = MarketSocket(queue=asyncio.Queue(), combined=combined, transport=request.transport)
        now = self.market_ms()
        for name in names:
            self._subscribe(sock, name, now)
        self.market_sockets.add(sock)

        async def writer() -> None:
            try:
                while True:
                    payload = await sock.queue.get()
                    if payload is None:
                        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped")
                        return
                    await ws.send_str(payload)
            except (ConnectionError, RuntimeError):  # the peer went away under us
                return

        task = asyncio.create_task(writer())
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    sock.queue.put_nowait(json.dumps(self.market_request(sock, message.data)))
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.market_sockets.discard(sock)
            task.cancel()
        return ws

    def market_request(self, sock: MarketSocket, text: str) -> dict[str, Any]:
        """The answer to one JSON request sent on a market stream (Binance's methods)."""

        def error(code: int, msg: str, request_id: Any = None) -> dict[str, Any]:
            return {"error": {"code": code, "msg": msg}, "id": request_id}

        try:
            message = json.loads(text)
        except ValueError as exc:
            return error(3, f"Invalid JSON: {exc}")
        if not isinstance(message, dict):
            return error(2, "Invalid request: expected a JSON object")
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
            return error(2, "Invalid request: request ID must be an unsigned integer")
        method = message.get("method")
        params = message.get("params", [])
        if method not in MARKET_METHODS:
            return error(
                2,
                f"Invalid request: unknown variant {method}, expected one of "
                f"{', '.join(MARKET_METHODS)}",
                request_id,
            )
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(n, str) for n in params):
                return error(
                    2, "Invalid request: params must be a list of stream names", request_id
                )
            if method == "SUBSCRIBE":
                problem = self._streams_problem(params, set(sock.streams))
                if problem is not None:
                    return error(2, f"Invalid request: {problem}", request_id)
                now = self.market_ms()
                for name in params:
                    self._subscribe(sock, name, now)
            else:
                for name in params:
                    sock.streams.pop(name, None)
            return {"result": None, "id": request_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(sock.streams), "id": request_id}
        if not isinstance(params, list) or not params or params[0] != "combined":
            return error(0, "Unknown property", request_id)
        if method == "GET_PROPERTY":
            return {"result": sock.combined, "id": request_id}
        if len(params) != 2 or not isinstance(params[1], bool):
            return error(1, "Invalid value type: expected Boolean", request_id)
        sock.combined = params[1]
        return {"result": None, "id": request_id}

    def push_klines(self) -> None:
        """Send every subscribed stream the candles closed since the last push (``x`` true, in
        order; at most 1500 per push) and, every ``kline_update_ms`` of wall time, the open
        candle as it stands (``x`` false)."""
        if not self.market_sockets:
            return
        now, wall = self.market_ms(), self.wall_ms()
        every = self.config.kline_update_ms
        memo: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
        for sock in list(self.market_sockets):
            update = every > 0 and wall - sock.last_update_wall_ms >= every
            if update:
                sock.last_update_wall_ms = wall
            for name, next_open in list(sock.streams.items()):
                parsed = self.parse_stream(name)
                if parsed is None:
                    continue
                symbol, interval = parsed
                top = bucket_open_ms(now, interval)
                if next_open < top:
                    key = (name, next_open, True)
                    if key not in memo:
                        closed = self.replay.klines(
                            symbol, now, start_ms=next_open, end_ms=top - 1, limit=1500,
                            interval=interval,
                        )  # fmt: skip
                        memo[key] = [
                            self.kline_event(symbol, interval, k, now, True) for k in closed
                        ]
                    for event in memo[key]:
                        self._send_market(sock, name, event)
                    sock.streams[name] = top
                if update:
                    key = (name, top, False)
                    if key not in memo:
                        current = self.replay.klines(
                            symbol, now, start_ms=top, limit=1, interval=interval
                        )
                        memo[key] = [
                            self.kline_event(symbol, interval, k, now, False)
                            for k in current
                            if k.open_time_ms == top
                        ]
                    for event in memo[key]:
                        self._send_market(sock, name, event)

    @staticmethod
    def _send_market(sock: MarketSocket, name: str, event: dict[str, Any]) -> None:
        payload = {"stream": name, "data": event} if sock.combined else event
        sock.queue.put_nowait(json.dumps(payload))

    def kline_event(
        self, symbol: str, interval: str, k: Kline, market_ms: int, closed: bool
    ) -> dict[str, Any]:
        """A Binance kline stream event (prices at the symbol's precision, as strings). Trade ids
        are made up: the open time in seconds onwards, -1 for a candle without trades."""
        pp, _ = self._precision(symbol)
        first = k.open_time_ms // 1000 if k.trades else -1
        last = first + k.trades - 1 if k.trades else -1
        return {
            "e": "kline",
            "E": market_ms,
            "s": symbol,
            "k": {
                "t": k.open_time_ms,
                "T": k.close_time_ms,
                "s": symbol,
                "i": interval,
                "f": first,
                "L": last,
                "o": _fmt(k.open, pp),
                "c": _fmt(k.close, pp),
                "h": _fmt(k.high, pp),
                "l": _fmt(k.low, pp),
                "v": f"{k.volume:f}",
                "n": k.trades,
                "x": closed,
                "q": f"{k.quote_volume:f}",
                "V": f"{k.taker_buy_base:f}",
                "Q": f"{k.taker_buy_quote:f}",
                "B": "0",
            },
        }

    def drop_market_streams(self, *, abort: bool = False) -> int:
        """Cut every market-stream connection (a fault for reconnect tests): closed with 1001
        (going away), or with ``abort`` the TCP connection reset without a close frame. Returns
        how many were cut."""
        socks = list(self.market_sockets)
        self.market_sockets.clear()
        for sock in socks:
            if abort and sock.transport is not None:
                sock.transport.abort()
            else:
                sock.queue.put_nowait(None)
        return len(socks)

    # --- control API ---------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return web.json_response({"error": "body must be JSON"}, status=400)
        self.sync_market()
        if action == "state" and request.method == "GET":
            return web.json_response(self.state())
        if request.method != "POST":
            return web.json_response(
                {"error": f"unknown control {request.method} {action}"}, status=404
            )
        try:
            if action == "advance":
                self.advance(Decimal(str(body.get("seconds", 0))))
            elif action == "faults":
                for name in ("latency_ms", "rate_5xx", "rate_timeout", "rate_drop"):
                    if name in body:
                        setattr(self.faults, name, type(getattr(self.faults, name))(body[name]))
                if "next" in body:
                    self.faults.next_faults = [str(f) for f in body["next"]]
                    bad = set(self.faults.next_faults) - {"ok", "5xx", "timeout", "drop"}
                    if bad:
                        raise ValueError(f"unknown fault(s): {sorted(bad)}")
            elif action == "fill":
                account = self.keys[body["api_key"]][1]
                order = self.engine.get_order(
                    account,
                    body["symbol"],
                    client_id=body.get("client_id"),
                    order_id=body.get("order_id"),
                )
                self.engine.fill_partially(account, order.order_id, Decimal(str(body["qty"])))
            elif action == "symbol_status":
                self.statuses[str(body["symbol"])] = str(body["status"])
            elif action == "expire_listen_key":
                self.expire_listen_key(str(body["listen_key"]))
            elif action == "drop_market_streams":
                mode = str(body.get("mode", "close"))
                if mode not in ("close", "abort"):
                    raise ValueError(f"mode must be close or abort, not {mode!r}")
                self.drop_market_streams(abort=mode == "abort")
            elif action == "reset_limits":
                self.weight_used.clear()
                self.orders_used.clear()
                self.violations.clear()
                self.banned_until.clear()
            else:
                return web.json_response({"error": f"unknown control {action}"}, status=404)
        except (KeyError, ValueError, InvalidOperation, EngineReject) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response(self.state())

    def state(self) -> dict[str, Any]:
        return {
            "market_time_ms": self.market_ms(),
            "server_time_ms": self.wall_ms(),
            "speed": str(self.config.speed),
            "prices": {s: f"{p:f}" for s, p in sorted(self.engine.prices.items())},
            "market_streams": {
                "connections": len(self.market_sockets),
                "streams": sum(len(sock.streams) for sock in self.market_sockets),
            },
            "statuses": {s: self.statuses.get(s, "TRADING") for s in sorted(self.rules)},
            "faults": {
                "latency_ms": self.faults.latency_ms,
                "rate_5xx": self.faults.rate_5xx,
                "rate_timeout": self.faults.rate_timeout,
                "rate_drop": self.faults.rate_drop,
                "next": list(self.faults.next_faults),
            },
        }

    # --- application ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        # Long lines: a combined-stream URL may name up to 1024 streams.
        app = web.Application(handler_args={"max_line_size": 65536})
        app.router.add_get("/private/ws", self.user_stream)
        app.router.add_get("/market/stream", self.market_stream)
        app.router.add_get("/stream", self.market_stream)
        app.router.add_get("/market/ws", self.market_raw)
        app.router.add_get("/market/ws/{streams:.+}", self.market_raw)
        app.router.add_get("/ws", self.market_raw)
        app.router.add_get("/ws/{listen_key:.+}", self.legacy_ws)
        if self.config.control:
            app.router.add_route("*", "/_emulator/{action}", self.control)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_startup.append(self._start_ticker)
        app.on_cleanup.append(self._stop_ticker)
        return app

    async def _start_ticker(self, app: web.Application) -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.05)
                try:
                    self.sync_market()
                    self.push_klines()
                    now = self.wall_ms()
                    for key in [k for k, (_, exp) in self.listen_keys.items() if exp <= now]:
                        self.expire_listen_key(key)
                except Exception:  # keep the market moving whatever one tick did
                    log.exception("emulator tick failed")

        app[TICKER] = asyncio.create_task(tick())

    async def _stop_ticker(self, app: web.Application) -> None:
        app[TICKER].cancel()
        for queues in self.streams.values():
            for queue in list(queues):
                queue.put_nowait(None)
        self.drop_market_streams()


def load_accounts(path: Path) -> tuple[AccountSpec, ...]:
    """Accounts from JSON ``[{"api_key", "api_secret", "balances": {"USDT": "10000"}}]``."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read accounts: {exc}") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list of accounts")
    specs = []
    for number, row in enumerate(rows, start=1):
        try:
            key, secret = str(row["api_key"]), str(row["api_secret"])
            balances = {
                str(a): Decimal(str(v)) for a, v in row.get("balances", {"USDT": "10000"}).items()
            }
        except (KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            raise ValueError(
                f"{path}: account #{number} is malformed ({type(exc).__name__}: {exc})"
            ) from None
        if not API_KEY_RE.match(key):
            raise ValueError(f"{path}: account #{number}: api_key must be 8-128 letters or digits")
        specs.append(AccountSpec(api_key=key, api_secret=secret, balances=balances))
    return tuple(specs)
