"""``BinanceFuturesVenue``: the venue port over python-binance, for the real exchange (testnet or
live) and for the project's emulator alike; the code path is the same, only the base URL differs.

What this adds to python-binance (see the reference's §1.4 and §2):

- base URL from configuration (``BINANCE_BASE_URL``), ``ping=False``, request timeouts, and our
  ``recvWindow`` (python-binance overwrites it with its own 10000 unless told not to);
- a clock offset from ``/fapi/v1/time``, resynced periodically; a skew beyond the threshold is
  re-measured, and if it persists every signed call is refused with ``ClockSkewError``;
- conditional orders on the Algo Order API with our own ``clientAlgoId`` (python-binance drops
  ``newClientOrderId`` for them) and ``triggerPrice``; listing and cancel-all cover both kinds;
- pre-flight (``execution.rules``) before any order request: Decimals rounded to the symbol's
  tick and step in the safe direction, never a float on the wire;
- vendor and transport errors translated into ``execution.venues.errors``, each logged with a
  redacted payload and counted in Prometheus by class and code;
- an optional shared rate-limit governor (Redis) fed by Binance's usage headers.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException
from prometheus_client import Counter

from execution.governor import RateGovernor
from execution.rules import SymbolRules, parse_exchange_info, preflight, to_binance_params
from execution.venues import errors
from execution.venues.base import (
    Balance,
    Kline,
    OrderRequest,
    OrderType,
    Position,
    PositionSide,
    Side,
    UserTrade,
    VenueOrder,
)

log = logging.getLogger(__name__)

VENUE_ERRORS = Counter(
    "trader_venue_errors_total",
    "Venue errors by class and Binance code.",
    ["venue", "error", "code"],
)
VENUE_REQUESTS = Counter(
    "trader_venue_requests_total", "Venue requests by path.", ["venue", "method", "path"]
)

LIVE_URL = "https://fapi.binance.com/fapi"
TESTNET_URL = "https://demo-fapi.binance.com/fapi"

# (method, path) -> (IP weight, order count), from the endpoint pages (reference §6).
WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("post", "order"): (0, 1),
    ("post", "order/test"): (0, 0),
    ("post", "batchOrders"): (5, 1),
    ("post", "algoOrder"): (0, 1),
    ("get", "exchangeInfo"): (1, 0),
    ("get", "time"): (1, 0),
    ("get", "premiumIndex"): (1, 0),
    ("get", "positionSide/dual"): (30, 0),
    ("get", "userTrades"): (5, 0),
    ("get", "allOrders"): (5, 0),
    ("get", "allAlgoOrders"): (5, 0),
    ("get", "account"): (5, 0),
    ("get", "balance"): (5, 0),
    ("get", "positionRisk"): (5, 0),
}
_BANNED_UNTIL = re.compile(r"banned until (\d{10,})")
_UNKNOWN_OUTCOME_CODES = frozenset({-1000, -1001, -1006, -1007})
_NOT_FOUND_CODES = frozenset({-2011, -2013})
_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})
_TIMESTAMP_CODES = frozenset({-1021, -5028})
_SECRET_PARAMS = frozenset({"signature", "apikey", "api_key", "x-mbx-apikey"})
# Binance allows these in client ids, but python-binance signs the raw value while the form body
# of a POST/DELETE carries it percent-encoded: the venue would answer -1022 (bad signature).
_UNSIGNABLE_IN_BODY = re.compile(r"[:/]")


@dataclass(frozen=True)
class VenueSettings:
    """Connection settings; ``base_url`` is the futures root ending in ``/fapi``."""

    base_url: str = TESTNET_URL
    timeout_ms: int = 5000
    recv_window_ms: int = 5000
    clock_resync_s: float = 60.0
    max_clock_skew_ms: int = 1000
    rules_ttl_s: float = 600.0
    mark_price_ttl_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.recv_window_ms <= 60000:
            raise ValueError(f"recv_window_ms must be 1..60000, got {self.recv_window_ms}")
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be positive, got {self.timeout_ms}")


def redact_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A payload fit for a log line: no key, no signature."""
    return {k: "****" if k.lower() in _SECRET_PARAMS else v for k, v in (params or {}).items()}


class _Client(Client):
    """python-binance's client with a hook around every futures request.

    The hook (``around``) paces through the governor, checks the clock before signed calls,
    and translates errors; everything else is python-binance unchanged.
    """

    around: Callable[[str, str, bool, Callable[[], Any], dict[str, Any]], Any]

    def _request_futures_api(
        self, method: str, path: str, signed: bool = False, version: int = 1, **kwargs: Any
    ) -> Any:
        def call() -> Any:
            return super(_Client, self)._request_futures_api(
                method, path, signed, version, **kwargs
            )

        return self.around(method, path, signed, call, kwargs.get("data") or {})


class BinanceFuturesVenue:
    """The venue port over python-binance. ``account_key`` names the account to the governor
    and in logs (a credential id, never the API key)."""

    name = "binance"

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        settings: VenueSettings = VenueSettings(),
        governor: RateGovernor | None = None,
        account_key: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings
        self.governor = governor
        self.account_key = account_key or hashlib.sha256(api_key.encode()).hexdigest()[:12]
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        client = _Client(
            api_key,
            api_secret,
            ping=False,
            requests_params={"timeout": settings.timeout_ms / 1000},
        )
        client.FUTURES_URL = settings.base_url
        # python-binance sends its own recvWindow (10000) unless this is set: send ours.
        client.REQUEST_RECVWINDOW = settings.recv_window_ms
        client.around = self._around
        self.client = client
        self._lock = threading.Lock()
        self._synced_at: float | None = None
        self._rules: dict[str, SymbolRules] = {}
        self._rules_at = 0.0
        self._dual: bool | None = None
        #: Told the position mode when it is fetched (the factory shares it between venues).
        self.on_position_mode: Callable[[bool], None] | None = None
        self._marks: dict[str, tuple[float, Decimal]] = {}

    # --- plumbing ------------------------------------------------------------------------------

    def _around(
        self, method: str, path: str, signed: bool, call: Callable[[], Any], data: Mapping[str, Any]
    ) -> Any:
        base_path = path.split("?", 1)[0]
        weight, orders = WEIGHTS.get((method, base_path), (1, 0))
        if base_path in ("openOrders", "openAlgoOrders") and not data.get("symbol"):
            weight = 40
        elif base_path == "klines":  # by limit: [1,100) 1, [100,500) 2, [500,1000] 5, more 10
            limit = int(data.get("limit") or 500)
            weight = 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        if signed and base_path != "time":
            self._ensure_clock()
        if self.governor is not None:
            self.governor.acquire(weight=weight, account=self.account_key, orders=orders)
        VENUE_REQUESTS.labels(self.name, method, base_path).inc()
        try:
            result = call()
        except BinanceAPIException as exc:
            self._observe(exc.status_code, exc.code, exc.message)
            raise self._translate(exc, method, base_path, data) from None
        except BinanceRequestException as exc:
            self._observe(getattr(self.client.response, "status_code", 200), None, None)
            raise self._log(
                errors.UnknownOutcome(f"unreadable response from {base_path}: {exc.message[:200]}"),
                method, base_path, data,
            ) from None  # fmt: skip
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise self._log(
                errors.UnknownOutcome(f"{type(exc).__name__} calling {base_path}"),
                method, base_path, data,
            ) from None  # fmt: skip
        self._observe(getattr(self.client.response, "status_code", 200), None, None)
        return result

    def _observe(self, status: int, code: int | None, message: str | None) -> None:
        if self.governor is None or self.client.response is None:
            return
        self.governor.observe(
            headers=dict(self.client.response.headers),
            status=status,
            account=self.account_key,
            body_code=code,
            body_msg=message,
        )

    def _translate(
        self, exc: BinanceAPIException, method: str, path: str, data: Mapping[str, Any]
    ) -> errors.VenueError:
        code, status, message = int(exc.code), int(exc.status_code), str(exc.message)
        translated: errors.VenueError
        if status in (418, 429) or code in (-1003, -1015):
            banned = _BANNED_UNTIL.search(message)
            retry_after = (
                exc.response.headers.get("Retry-After") if exc.response is not None else None
            )  # a requests.Response is falsy for 4xx/5xx
            translated = errors.RateLimited(
                message,
                code=code,
                http_status=status,
                retry_after_s=float(retry_after) if retry_after else None,
                banned_until_ms=int(banned.group(1)) if banned else None,
            )
        elif code in _TIMESTAMP_CODES:
            self._synced_at = None  # resync before the next signed call
            translated = errors.TimestampRejected(message, code=code, http_status=status)
        elif code in _AUTH_CODES or status == 401:
            translated = errors.AuthRejected(message, code=code, http_status=status)
        elif code in _NOT_FOUND_CODES:
            translated = errors.NotFound(message, code=code, http_status=status)
        elif code in _UNKNOWN_OUTCOME_CODES or status >= 500 or status == 408:
            translated = errors.UnknownOutcome(message, code=code, http_status=status)
        else:
            translated = errors.OrderRejected(message, code=code, http_status=status)
        return self._log(translated, method, path, data)

    def _log(
        self, exc: errors.VenueError, method: str, path: str, data: Mapping[str, Any]
    ) -> errors.VenueError:
        VENUE_ERRORS.labels(self.name, type(exc).__name__, str(exc.code)).inc()
        log.warning(
            "venue %s %s %s /%s -> %s %s: %s; payload %s",
            self.name,
            self.account_key,
            method.upper(),
            path,
            type(exc).__name__,
            exc.code,
            exc.message,
            redact_params(data),
        )
        return exc

    def _ensure_clock(self) -> None:
        now = self._monotonic()
        with self._lock:
            stale = self._synced_at is None or now - self._synced_at > self.settings.clock_resync_s
            if stale:
                self.resync_clock()

    def resync_clock(self) -> int:
        """Measure the offset to the venue's clock; raise ClockSkewError if the skew beyond the
        threshold persists across two measurements. Returns the offset in ms."""
        skew = self._measure_skew()
        if abs(skew) > self.settings.max_clock_skew_ms:
            skew = self._measure_skew()  # once more: a slow response can fake a skew
            if abs(skew) > self.settings.max_clock_skew_ms:
                self._synced_at = None
                raise errors.ClockSkewError(skew, self.settings.max_clock_skew_ms)
        # python-binance stamps signed requests with time.time() + timestamp_offset, not with
        # our wall clock: express the offset against its clock.
        self.client.timestamp_offset = skew + self._wall_ms() - int(time.time() * 1000)
        self._synced_at = self._monotonic()
        return skew

    def _measure_skew(self) -> int:
        before = self._wall_ms()
        server = int(self.client.futures_time()["serverTime"])
        after = self._wall_ms()
        return server - (before + after) // 2

    # --- conversions ---------------------------------------------------------------------------

    @staticmethod
    def _order(raw: Mapping[str, Any]) -> VenueOrder:
        return VenueOrder(
            symbol=raw["symbol"],
            client_id=raw["clientOrderId"],
            venue_id=int(raw["orderId"]),
            is_algo=False,
            status=raw["status"],
            side=Side(raw["side"]),
            type=OrderType(raw.get("origType") or raw["type"]),
            quantity=Decimal(raw["origQty"]),
            price=Decimal(raw["price"]),
            trigger_price=Decimal(raw["stopPrice"]) if Decimal(raw.get("stopPrice") or 0) else None,
            executed_qty=Decimal(raw["executedQty"]),
            avg_price=Decimal(raw.get("avgPrice") or 0),
            reduce_only=bool(raw.get("reduceOnly", False)),
            close_position=bool(raw.get("closePosition", False)),
            position_side=PositionSide(raw.get("positionSide") or "BOTH"),
            update_time_ms=int(raw.get("updateTime") or raw.get("time") or 0),
            raw=dict(raw),
        )

    @staticmethod
    def _algo(raw: Mapping[str, Any]) -> VenueOrder:
        actual = raw.get("actualOrderId")
        return VenueOrder(
            symbol=raw["symbol"],
            client_id=raw["clientAlgoId"],
            venue_id=int(raw["algoId"]),
            is_algo=True,
            status=raw["algoStatus"],
            side=Side(raw["side"]),
            type=OrderType(raw["orderType"]),
            quantity=Decimal(raw.get("quantity") or 0),
            price=Decimal(raw.get("price") or 0),
            trigger_price=(
                Decimal(raw["triggerPrice"]) if Decimal(raw.get("triggerPrice") or 0) else None
            ),  # a trailing stop has no trigger: Binance sends "" or "0.00"
            executed_qty=Decimal(0),
            avg_price=Decimal(raw.get("actualPrice") or 0),
            reduce_only=bool(raw.get("reduceOnly", False)),
            close_position=bool(raw.get("closePosition", False)),
            position_side=PositionSide(raw.get("positionSide") or "BOTH"),
            update_time_ms=int(raw.get("updateTime") or 0),
            actual_order_id=int(actual) if actual else None,
            raw=dict(raw),
        )

    # --- market data ---------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        return int(self.client.futures_time()["serverTime"])

    def symbol_rules(self, *, refresh: bool = False) -> dict[str, SymbolRules]:
        """exchangeInfo, parsed; cached for ``rules_ttl_s`` (a beat task refreshes it)."""
        if (
            refresh
            or not self._rules
            or self._monotonic() - self._rules_at > self.settings.rules_ttl_s
        ):
            self._rules = parse_exchange_info(self.client.futures_exchange_info())
            self._rules_at = self._monotonic()
        return self._rules

    def seed_rules(self, payload: Mapping[str, Any]) -> None:
        """Start from an exchangeInfo payload fetched elsewhere (the shared cache)."""
        self._rules = parse_exchange_info(payload)
        self._rules_at = self._monotonic()

    def rules_for(self, symbol: str) -> SymbolRules:
        rules = self.symbol_rules()
        if symbol not in rules:
            raise errors.PreflightError("SYMBOL", f"{symbol} is not listed by the venue")
        return rules[symbol]

    def mark_price(self, symbol: str) -> Decimal:
        """The mark price, reused for ``mark_price_ttl_s``: pre-flight's bounds (PERCENT_PRICE
        +-5%, MIN_NOTIONAL) do not need it fresher, and a placement stays one request."""
        now = self._monotonic()
        cached = self._marks.get(symbol)
        if cached is not None and now - cached[0] <= self.settings.mark_price_ttl_s:
            return cached[1]
        mark = Decimal(self.client.futures_mark_price(symbol=symbol)["markPrice"])
        self._marks[symbol] = (now, mark)
        return mark

    def klines(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Kline]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        return [
            Kline(
                open_time_ms=int(row[0]),
                open=Decimal(row[1]),
                high=Decimal(row[2]),
                low=Decimal(row[3]),
                close=Decimal(row[4]),
                volume=Decimal(row[5]),
                close_time_ms=int(row[6]),
                quote_volume=Decimal(row[7]),
                trades=int(row[8]),
                taker_buy_base=Decimal(row[9]),
                taker_buy_quote=Decimal(row[10]),
            )
            for row in self.client.futures_klines(**params)
        ]

    # --- orders --------------------------------------------------------------------------------

    def prepare(self, request: OrderRequest) -> OrderRequest:
        """Pre-flight: the request as it will be sent (rounded), or PreflightError."""
        if isinstance(request.client_id, str) and _UNSIGNABLE_IN_BODY.search(request.client_id):
            raise errors.PreflightError(
                "CLIENT_ID",
                f"client id {request.client_id!r} contains ':' or '/', which python-binance "
                "cannot sign in a request body",
            )
        rules = self.rules_for(request.symbol)
        # TRAILING_STOP_MARKET: without activatePrice, MIN_NOTIONAL is checked at the mark.
        needs_mark = request.type in (OrderType.MARKET, OrderType.LIMIT, OrderType.STOP,
                                      OrderType.TAKE_PROFIT,
                                      OrderType.TRAILING_STOP_MARKET)  # fmt: skip
        mark = self.mark_price(request.symbol) if needs_mark else None
        return preflight(request, rules, mark_price=mark, dual_side=self.position_mode_dual())

    def place_order(self, request: OrderRequest) -> VenueOrder:
        if request.is_conditional:
            raise errors.PreflightError(
                "ALGO_ONLY", f"{request.type} goes to the Algo Order API: use place_algo_order"
            )
        params = to_binance_params(self.prepare(request))
        params["newOrderRespType"] = "RESULT"  # the final state of a MARKET order, not just NEW
        return self._order(self.client._request_futures_api("post", "order", True, data=params))

    def place_algo_order(self, request: OrderRequest) -> VenueOrder:
        if not request.is_conditional:
            raise errors.PreflightError(
                "REGULAR_ONLY", f"{request.type} is not conditional: use place_order"
            )
        if not request.client_id:
            raise errors.PreflightError(
                "CLIENT_ID", "conditional orders need our own clientAlgoId (idempotency key)"
            )
        params = to_binance_params(self.prepare(request))
        # Straight to /algoOrder: futures_create_order would add its own id if ours were missing.
        return self._algo(self.client._request_futures_api("post", "algoOrder", True, data=params))

    def test_order(self, request: OrderRequest) -> None:
        """Validate a regular order at the venue without placing it (``/order/test``)."""
        params = to_binance_params(self.prepare(request))
        self.client._request_futures_api("post", "order/test", True, data=params)

    @staticmethod
    def _ref(
        symbol: str, client_id: str | None, venue_id: int | None, *, algo: bool
    ) -> dict[str, Any]:
        if client_id is None and venue_id is None:
            raise ValueError("give client_id or venue_id")
        params: dict[str, Any] = {"symbol": symbol}
        if algo:
            params["algoId" if venue_id is not None else "clientAlgoId"] = venue_id or client_id
        else:
            params["orderId" if venue_id is not None else "origClientOrderId"] = (
                venue_id or client_id
            )
        return params

    def cancel_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        params = self._ref(symbol, client_id, venue_id, algo=False)
        return self._order(self.client._request_futures_api("delete", "order", True, data=params))

    def cancel_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        params = self._ref(symbol, client_id, venue_id, algo=True)
        self.client._request_futures_api("delete", "algoOrder", True, data=params)
        # The cancel reply carries only the ids: read the order back for its final state.
        return self.get_algo_order(symbol=symbol, client_id=client_id, venue_id=venue_id)

    def get_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        params = self._ref(symbol, client_id, venue_id, algo=False)
        return self._order(self.client._request_futures_api("get", "order", True, data=params))

    def get_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        params = self._ref(symbol, client_id, venue_id, algo=True)
        return self._algo(self.client._request_futures_api("get", "algoOrder", True, data=params))

    def open_orders(self, *, symbol: str | None = None) -> list[VenueOrder]:
        params = {"symbol": symbol} if symbol else {}
        regular = self.client._request_futures_api("get", "openOrders", True, data=dict(params))
        algos = self.client._request_futures_api("get", "openAlgoOrders", True, data=dict(params))
        return [self._order(o) for o in regular] + [self._algo(a) for a in algos]

    def cancel_all(self, *, symbol: str) -> None:
        self.client._request_futures_api("delete", "allOpenOrders", True, data={"symbol": symbol})
        self.client._request_futures_api("delete", "algoOpenOrders", True, data={"symbol": symbol})

    # --- account -------------------------------------------------------------------------------

    def balances(self) -> list[Balance]:
        return [
            Balance(
                asset=row["asset"],
                wallet_balance=Decimal(row["balance"]),
                available_balance=Decimal(row["availableBalance"]),
                unrealized_pnl=Decimal(row.get("crossUnPnl") or 0),
            )
            for row in self.client.futures_account_balance()
        ]

    def positions(self, *, symbol: str | None = None) -> list[Position]:
        params = {"symbol": symbol} if symbol else {}
        return [
            Position(
                symbol=row["symbol"],
                position_side=PositionSide(row["positionSide"]),
                amount=Decimal(row["positionAmt"]),
                entry_price=Decimal(row["entryPrice"]),
                mark_price=Decimal(row["markPrice"]),
                unrealized_pnl=Decimal(row["unRealizedProfit"]),
                update_time_ms=int(row.get("updateTime") or 0),
            )
            for row in self.client.futures_position_information(**params)
        ]

    def user_trades(
        self, *, symbol: str, start_ms: int | None = None, from_id: int | None = None
    ) -> list[UserTrade]:
        params: dict[str, Any] = {"symbol": symbol, "limit": 1000}
        if from_id is not None:
            params["fromId"] = from_id
        elif start_ms is not None:
            params["startTime"] = start_ms
        return [
            UserTrade(
                symbol=row["symbol"],
                trade_id=int(row["id"]),
                order_id=int(row["orderId"]),
                side=Side(row["side"]),
                price=Decimal(row["price"]),
                qty=Decimal(row["qty"]),
                quote_qty=Decimal(row["quoteQty"]),
                commission=Decimal(row["commission"]),
                commission_asset=row["commissionAsset"],
                realized_pnl=Decimal(row["realizedPnl"]),
                maker=bool(row["maker"]),
                position_side=PositionSide(row.get("positionSide") or "BOTH"),
                time_ms=int(row["time"]),
            )
            for row in self.client.futures_account_trades(**params)
        ]

    def set_leverage(self, *, symbol: str, leverage: int) -> int:
        reply = self.client.futures_change_leverage(symbol=symbol, leverage=leverage)
        return int(reply["leverage"])

    def position_mode_dual(self) -> bool:
        if self._dual is None:
            self._dual = bool(self.client.futures_get_position_mode()["dualSidePosition"])
            if self.on_position_mode is not None:
                self.on_position_mode(self._dual)
        return self._dual

    def seed_position_mode(self, dual: bool) -> None:
        """Start from a position mode known elsewhere (GET positionSide/dual weighs 30)."""
        self._dual = dual

    def set_position_mode(self, *, dual: bool) -> None:
        self._dual = None
        try:
            self.client.futures_change_position_mode(dualSidePosition="true" if dual else "false")
        except errors.OrderRejected as exc:
            if exc.code != -4059:  # "No need to change position side." is success for us
                raise
        self._dual = dual
        if self.on_position_mode is not None:
            self.on_position_mode(dual)

    def create_listen_key(self) -> str:
        return str(self.client.futures_stream_get_listen_key())

    def keepalive_listen_key(self, listen_key: str) -> None:
        self.client.futures_stream_keepalive(listenKey=listen_key)

    def close_listen_key(self, listen_key: str) -> None:
        self.client.futures_stream_close(listenKey=listen_key)
