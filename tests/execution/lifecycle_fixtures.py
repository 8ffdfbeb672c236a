"""Helpers for the lifecycle, reconciliation and crash-drill tests: the emulator's user data
stream captured as it comes, exit levels chosen from the replayed market's future path, the
records of a trade as plain comparable data, and the drill's audit of the exchange against the
database.

Plain functions and small classes (no fixtures), like ``placement_fixtures``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import requests
from binance.client import Client
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from execution.emulator.market import INTERVAL_MS, MarketReplay, load_candles
from execution.emulator.server import DEFAULT_DATA, AccountSpec
from execution.lifecycle import event_apply
from execution.models import (
    Cooldown,
    DeliveryStatus,
    Fill,
    Order,
    OrderEvent,
    Position,
    PositionStatus,
    SignalDelivery,
)
from execution.states import OPEN
from signals.models import Signal
from signals.services import signal_create, signal_fan_out
from tests.execution.emulator_fixtures import Harness, wait_until
from tests.execution.placement_fixtures import SYMBOL, TICK, on_tick
from tests.factories import make_credential
from trader.models import Bot, Environment

ZERO = Decimal(0)


# --- the user data stream, captured ---------------------------------------------------------


class StreamTap:
    """The user data stream of one emulator account, as our stream process would receive it:
    a listen key from ``POST /fapi/v1/listenKey``, a websocket on ``/private/ws``, every
    message kept in order. Events are also counted at the source (an engine listener), so
    :meth:`take` knows when everything the emulator emitted so far has arrived."""

    def __init__(self, emu: Harness, spec: AccountSpec) -> None:
        self.emu = emu
        self.account_id = emu.account_id(spec)
        reply = emu.http.post(
            f"{emu.base_url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": spec.api_key}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        key = reply.json()["listenKey"]
        self.received: list[dict[str, Any]] = []
        self._taken = 0
        self._emitted = [0]
        self._socket: ClientConnection | None = None
        self._opened = threading.Event()
        url = f"{emu.ws_url}/private/ws?listenKey={key}"
        self._reader = threading.Thread(target=self._read, args=(url,), name="tap", daemon=True)
        self._reader.start()
        assert self._opened.wait(10), "the user data stream did not open"
        # Count from the moment the emulator streams to our socket (it registers the socket
        # just after the handshake, on its own loop).
        streams = emu.emulator.streams
        wait_until(lambda: emu.call(lambda: bool(streams.get(self.account_id))))

        def count(event: Any) -> None:
            if event.account == self.account_id:
                self._emitted[0] += 1

        self._listener = count
        emu.call(emu.emulator.engine.listeners.append, count)

    def _read(self, url: str) -> None:
        with connect(url, open_timeout=10) as socket:
            self._socket = socket
            self._opened.set()
            try:
                for message in socket:
                    self.received.append(json.loads(message))
            except ConnectionClosed:
                return

    def take(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every event emitted since the last call, once all of them have arrived."""
        wait_until(lambda: len(self.received) >= self._emitted[0], timeout=timeout)
        fresh = self.received[self._taken :]
        self._taken += len(fresh)
        return fresh

    def close(self) -> None:
        self.emu.call(self.emu.emulator.engine.listeners.remove, self._listener)
        if self._socket is not None:
            self._socket.close()
        self._reader.join(timeout=5)


def apply_stream(tap: StreamTap, *, account: str, rounds: int = 5) -> int:
    """Apply the stream's events to the database until it is quiet (applying may place or
    cancel orders, which emit more events). Returns how many events were applied."""
    applied = 0
    for _ in range(rounds):
        events = tap.take()
        if not events:
            return applied
        for event in events:
            event_apply(account=account, event=event)
        applied += len(events)
    raise AssertionError(f"the stream did not settle within {rounds} rounds")


def account_key(bot: Bot) -> str:
    """The account name the platform uses for ``bot``'s exchange account."""
    return f"credential-{bot.credential_id}"


# --- exits from the replayed market ---------------------------------------------------------


def replica_path(base_url: str, seconds: int) -> tuple[int, list[tuple[int, Decimal]]]:
    """``path_ahead`` for an emulator in its own process that runs the bundled candles, frozen
    and never advanced: its replay is rebuilt here from the same candles and its start (a
    frozen, unmoved market's time is the start), and checked against the price it serves."""
    state = requests.get(f"{base_url}/_emulator/state", timeout=10).json()
    start = int(state["market_time_ms"])
    (path_file, scale) = next((p, s) for sym, p, s in DEFAULT_DATA if sym == SYMBOL)
    interval, candles = load_candles(path_file)
    replay = MarketReplay(
        {SYMBOL: candles},
        interval_ms={SYMBOL: INTERVAL_MS[interval or "1m"]},
        start_wall_ms=start,
        price_scale={SYMBOL: scale},
    )
    path = [
        (t, p.quantize(TICK)) for t, p in replay.path_between(SYMBOL, start, start + seconds * 1000)
    ]
    served = Decimal(state["prices"][SYMBOL])
    assert replay.price(SYMBOL, start).quantize(TICK) == served, "not the emulator's replay"
    return start, path


def path_ahead(emu: Harness, seconds: int) -> tuple[int, list[tuple[int, Decimal]]]:
    """(market now, the price path the emulator will walk in the next ``seconds``), as the
    matching engine sees it (every vertex, on the tick)."""

    def read() -> tuple[int, list[tuple[int, Decimal]]]:
        now = emu.emulator.market_ms()
        path = emu.emulator.replay.path_between(SYMBOL, now, now + seconds * 1000)
        return now, [(t, p.quantize(TICK)) for t, p in path]

    return emu.call(read)


def up_tick(value: Decimal) -> Decimal:
    return (value / TICK).to_integral_value(rounding=ROUND_CEILING) * TICK


@dataclass(frozen=True)
class Exit:
    """Levels of a long trade whose ``leg`` fills once the market has moved ``advance_s``
    seconds on; the other level is beyond everything the market does until then."""

    leg: str
    stop: Decimal
    take_profit: Decimal


def plan_exits(
    emu: Harness,
    *,
    entry: Decimal,
    legs: Sequence[str],
    move: Decimal = Decimal("0.003"),
    horizon_s: int = 3 * 86400,
) -> tuple[list[Exit], Decimal]:
    """Long trades entered near ``entry``, one per item of ``legs`` ("STOP_LOSS" or
    "TAKE_PROFIT"): the level of that leg ``move`` away from ``entry``, and the market time
    (seconds to advance) by which every one of them has been crossed. The sibling levels lie
    beyond the path's extremes up to then (plus a margin), so they are never reached."""
    now, path = path_ahead(emu, horizon_s)
    stop_level = on_tick(entry * (1 - move))
    take_level = up_tick(entry * (1 + move))
    hits = {}
    for leg, reached in (
        ("STOP_LOSS", lambda p: p <= stop_level),
        ("TAKE_PROFIT", lambda p: p >= take_level),
    ):
        if leg in legs:
            hit = next((t for t, p in path if reached(p)), None)
            assert hit is not None, f"the market never reaches the {leg} level within horizon"
            hits[leg] = hit
    end = max(hits.values()) + 1000  # a second past the last crossing
    seen = [p for t, p in path if t <= end]
    low, high = min(seen), max(seen)
    exits = [
        Exit(
            leg=leg,
            stop=stop_level if leg == "STOP_LOSS" else on_tick(min(low, entry) * Decimal("0.995")),
            take_profit=take_level
            if leg == "TAKE_PROFIT"
            else up_tick(max(high, entry) * Decimal("1.005")),
        )
        for leg in legs
    ]
    return exits, Decimal(end - now) / 1000


def advance(emu: Any, seconds: Decimal) -> None:
    """Move the market clock of an emulator (a ``Harness`` or an ``EmulatorProcess``) on: its
    engine walks the path and matches on the way."""
    emu.control("advance", seconds=str(seconds))


def fill(emu: Harness, spec: AccountSpec, client_id: str, qty: Decimal) -> None:
    """Fill ``qty`` of a resting LIMIT at the emulator (as a counterparty would)."""
    emu.control("fill", api_key=spec.api_key, symbol=SYMBOL, client_id=client_id, qty=str(qty))


# --- records of a trade, comparable across runs ---------------------------------------------


def _code(client_id: str) -> str:
    """``tr-12-SL2`` -> ``SL2``: what identifies a leg within its delivery."""
    return client_id.rsplit("-", 1)[-1]


def trade_records(delivery: SignalDelivery) -> dict[str, Any]:
    """Everything the platform recorded about one trade, without ids and times: orders (state,
    fills), the position, the fills, the cooldown."""
    orders = Order.objects.filter(delivery=delivery).order_by("leg", "generation")
    position = Position.objects.filter(delivery=delivery).first()
    fills = Fill.objects.filter(order__delivery=delivery).select_related("order")
    return {
        "orders": [
            (
                _code(o.client_order_id),
                o.leg,
                o.generation,
                o.state,
                o.type,
                o.side,
                o.quantity,
                o.price,
                o.trigger_price,
                o.filled_qty,
                o.avg_price,
            )
            for o in orders
        ],
        "position": None
        if position is None
        else (
            position.side,
            position.status,
            position.quantity,
            position.entry_qty,
            position.entry_price,
            position.exit_qty,
            position.exit_price,
            position.realized_pnl,
            position.fees,
            position.closed_at is not None,
        ),
        "fills": sorted(
            (
                _code(f.order.client_order_id) if f.order else "",
                f.side,
                f.price,
                f.qty,
                f.quote_qty,
                f.commission,
                f.commission_asset,
                f.realized_pnl,
                f.maker,
            )
            for f in fills
        ),
        "unattributed_fills": Fill.objects.filter(
            account=f"credential-{delivery.bot.credential_id}", order__isnull=True
        ).count(),
        "cooldown": Cooldown.objects.filter(bot=delivery.bot, symbol=SYMBOL).exists(),
    }


def bot_footprint(bot: Bot) -> tuple[int, int, list[Any]]:
    """(order events, fills, order rows) of ``bot``: to show that something left it alone."""
    return (
        OrderEvent.objects.filter(order__bot=bot).count(),
        Fill.objects.filter(bot=bot).count(),
        list(
            Order.objects.filter(bot=bot)
            .order_by("pk")
            .values_list("client_order_id", "state", "filled_qty", "avg_price", "quantity")
        ),
    )


# --- the emulator, read like an auditor (over the wire, any emulator) ------------------------


def emulator_client(base_url: str, api_key: str, api_secret: str) -> Client:
    client = Client(api_key, api_secret, ping=False)
    client.FUTURES_URL = base_url + "/fapi"
    return client


@dataclass
class ExchangeView:
    """One account's orders, algo orders and position on one symbol, read over the wire."""

    orders: list[dict[str, Any]]
    algos: list[dict[str, Any]]
    open_orders: list[dict[str, Any]]
    open_algos: list[dict[str, Any]]
    amount: Decimal


def exchange_view(client: Client, symbol: str = SYMBOL) -> ExchangeView:
    positions = client.futures_position_information(symbol=symbol)
    return ExchangeView(
        orders=client.futures_get_all_orders(symbol=symbol, limit=1000),
        algos=client.futures_get_all_orders(symbol=symbol, conditional=True, limit=1000),
        open_orders=client.futures_get_open_orders(symbol=symbol),
        open_algos=client.futures_get_open_orders(symbol=symbol, conditional=True),
        amount=sum((Decimal(p["positionAmt"]) for p in positions), ZERO),
    )


def _delivery_of(client_id: str) -> int | None:
    prefix = settings.CLIENT_ID_PREFIX
    if not client_id.startswith(prefix):
        return None
    head = client_id[len(prefix) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def audit(
    bots: Iterable[Bot], client_for: Callable[[Bot], Client], *, symbol: str = SYMBOL
) -> dict[str, Any]:
    """The crash drill's verdict, exchange against database, per account of ``bots``:

    - ``duplicate_entries``: deliveries with more than one entry order (``tr-<d>-E``) in the
      exchange's order history;
    - ``positions_without_one_stop``: trades open at the exchange (entry fills minus exit fills,
      per delivery, from the exchange's own history) without exactly one live stop-loss of
      exactly their open quantity, plus accounts whose position is not the sum of those trades;
    - ``orphan_protective_orders``: live stop-loss / take-profit orders at the exchange for a
      trade with nothing open there;
    - ``deliveries_without_outcome``: deliveries still PENDING;
    - ``open_orders_differ``: client ids open at the exchange but not in the database, or open
      (PENDING, UNKNOWN, NEW, PARTIALLY_FILLED) in the database but not at the exchange;
    - ``positions_differ``: accounts whose position amount differs from the sum of the
      database's open positions.
    """
    found: dict[str, list[str]] = {
        "duplicate_entries": [],
        "positions_without_one_stop": [],
        "orphan_protective_orders": [],
        "deliveries_without_outcome": [],
        "open_orders_differ": [],
        "positions_differ": [],
    }
    bots = list(bots)
    for bot in bots:
        client = client_for(bot)
        try:
            view = exchange_view(client, symbol)
        finally:
            client.close_connection()
        _audit_account(bot, view, found)
    pending = SignalDelivery.objects.filter(bot__in=bots, status=DeliveryStatus.PENDING)
    found["deliveries_without_outcome"] = [
        f"delivery {d}" for d in pending.values_list("pk", flat=True)
    ]
    return {"counts": {k: len(v) for k, v in found.items()}, "details": found}


def _audit_account(bot: Bot, view: ExchangeView, found: dict[str, list[str]]) -> None:
    entries: dict[int, int] = {}
    open_qty: dict[int, Decimal] = {}
    for order in view.orders:
        delivery = _delivery_of(order["clientOrderId"])
        if delivery is None:
            continue
        executed = Decimal(order["executedQty"])
        signed = executed if order["side"] == "BUY" else -executed
        open_qty[delivery] = open_qty.get(delivery, ZERO) + signed
        if _code(order["clientOrderId"]) == "E":
            entries[delivery] = entries.get(delivery, 0) + 1
    found["duplicate_entries"] += [
        f"bot {bot.pk}: tr-{d}-E placed {n} times" for d, n in entries.items() if n > 1
    ]
    resting = {_delivery_of(o["clientOrderId"]) for o in view.open_orders}
    stops: dict[int, list[dict[str, Any]]] = {}
    for algo in view.open_algos:
        delivery = _delivery_of(algo["clientAlgoId"])
        if delivery is None:
            continue
        if not open_qty.get(delivery) and delivery not in resting:
            found["orphan_protective_orders"].append(
                f"bot {bot.pk}: {algo['clientAlgoId']} live, delivery {delivery} has nothing open"
            )
        elif _code(algo["clientAlgoId"]).startswith("SL"):
            stops.setdefault(delivery, []).append(algo)
    for delivery, qty in sorted(open_qty.items()):
        if not qty:
            continue
        covering = stops.get(delivery, [])
        if len(covering) != 1 or Decimal(covering[0]["quantity"]) != abs(qty):
            found["positions_without_one_stop"].append(
                f"bot {bot.pk}: delivery {delivery} open {qty}, live stops "
                f"{[(a['clientAlgoId'], a['quantity']) for a in covering]}"
            )
    if sum(open_qty.values(), ZERO) != view.amount:
        found["positions_without_one_stop"].append(
            f"bot {bot.pk}: position {view.amount} is not the sum of its trades "
            f"{sum(open_qty.values(), ZERO)}"
        )
    venue_open = {o["clientOrderId"] for o in view.open_orders} | {
        a["clientAlgoId"] for a in view.open_algos
    }
    db_open = set(
        Order.objects.filter(bot=bot, state__in=OPEN).values_list("client_order_id", flat=True)
    )
    found["open_orders_differ"] += [
        f"bot {bot.pk}: {c} open at the exchange only" for c in sorted(venue_open - db_open)
    ] + [f"bot {bot.pk}: {c} open in the database only" for c in sorted(db_open - venue_open)]
    ours = sum(
        (
            p.quantity if p.side == "LONG" else -p.quantity
            for p in Position.objects.filter(bot=bot, status=PositionStatus.OPEN, symbol=SYMBOL)
        ),
        ZERO,
    )
    if ours != view.amount:
        found["positions_differ"].append(f"bot {bot.pk}: exchange {view.amount}, database {ours}")


# --- the crash drill ---------------------------------------------------------------------------


DRILL_STRATEGY = "drill"


def drill_terms(
    now: int, path: Sequence[tuple[int, Decimal]]
) -> tuple[dict[str, dict[str, Any]], Decimal]:
    """Signal terms of three kinds on a frozen market at ``path[0]``, and how far to advance it
    afterwards (seconds) so that exactly the "tight" stops fill:

    - ``tight``: a MARKET long whose stop 0.3 % under the market is crossed at the advance;
    - ``wide``: a MARKET long whose stop lies under everything the market does until then;
    - ``resting``: a LIMIT long under everything the market does until then (never fills).

    Every take-profit lies over everything the market does until then, so an exit never fires
    on behalf of another trade of the account (one-way mode nets positions per symbol)."""
    price = path[0][1]
    tight = on_tick(price * Decimal("0.997"))
    hit = next((t for t, p in path if p <= tight), None)
    assert hit is not None, "the market never falls 0.3 % within the horizon"
    end = hit + 1000
    seen = [p for t, p in path if t <= end]
    low, high = min(seen), max(seen)
    take = up_tick(high * Decimal("1.005"))
    wide = on_tick(low * Decimal("0.995"))
    resting = on_tick(low * Decimal("0.99"))
    common = {"side": "BUY", "take_profit_price": take, "reference_price": price}
    terms = {
        "tight": {**common, "entry_type": "MARKET", "stop_price": tight},
        "wide": {**common, "entry_type": "MARKET", "stop_price": wide},
        "resting": {
            **common,
            "entry_type": "LIMIT",
            "entry_price": resting,
            "stop_price": on_tick(resting * Decimal("0.99")),
        },
    }
    return terms, Decimal(end - now) / 1000


DRILL_KINDS = ("tight", "wide", "resting", "tight", "wide")


def drill_kind(n: int) -> str:
    return DRILL_KINDS[n % len(DRILL_KINDS)]


def drill_bot(account: dict[str, Any], name: str) -> Bot:
    """A drill bot on an emulator account (its own credential): longs stack on the account,
    each sized from 0.01 % of the equity, up to 100 open at once."""
    credential = make_credential(api_key=account["api_key"], api_secret=account["api_secret"])
    return Bot.objects.create(
        owner=credential.owner,
        name=name,
        credential=credential,
        environment=Environment.TESTNET,
        symbol=SYMBOL,
        interval="1h",
        strategy=DRILL_STRATEGY,
        risk_per_trade_pct=Decimal("0.01"),
        leverage=5,
        max_position_notional=Decimal("1000000"),
        max_open_positions=100,
    )


def drill_signal(n: int, terms: dict[str, Any]) -> Signal:
    """Signal ``n`` of the drill strategy on the last closed 1h candle."""
    signal, _ = signal_create(
        source="STRATEGY",
        source_key=f"drill-{n}",
        strategy=DRILL_STRATEGY,
        params={},
        symbol=SYMBOL,
        interval="1h",
        candle_time=timezone.now() - timedelta(hours=1),
        kind="ARM",
        **terms,
    )
    return signal


def fan_out_committed(signal: Signal) -> list[int]:
    """Fan out in a transaction of its own: the tasks are published when it commits."""
    with transaction.atomic():
        return signal_fan_out(signal=signal)


def outcomes(bots: Iterable[Bot]) -> dict[str, int]:
    """Deliveries by status and reason code, e.g. ``{"EXECUTED PLACED": 17}``."""
    rows = SignalDelivery.objects.filter(bot__in=list(bots)).values_list("status", "reason_code")
    counted: dict[str, int] = {}
    for status, code in rows:
        counted[f"{status} {code}".strip()] = counted.get(f"{status} {code}".strip(), 0) + 1
    return dict(sorted(counted.items()))


def drill_stats(bots: Iterable[Bot]) -> dict[str, int]:
    """What the faults and the kills did: deliveries run more than once (redelivered after a
    kill), sends with an unknown outcome (5xx, -1007 timeouts, dropped responses: each looked
    up by client id before anything else), orders written."""
    bots = list(bots)
    events = OrderEvent.objects.filter(order__bot__in=bots)
    return {
        "deliveries_run_twice": SignalDelivery.objects.filter(bot__in=bots, attempts__gt=1).count(),
        "unknown_outcomes": events.filter(to_state="UNKNOWN").count(),
        "orders": Order.objects.filter(bot__in=bots).count(),
    }
