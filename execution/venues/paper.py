"""``PaperVenue``: the venue port in-process, over one account of the ``MatchingEngine``.

For dry-run and backtests. The Binance emulator computes its fills with the same engine
(``execution.engine``, whose module docstring describes the market model), so a strategy sees the
same fills here, against the emulator, and (as far as the model goes) on the exchange.

From the caller's side it behaves like ``BinanceFuturesVenue``:

- the same port-level refusals before anything else (``ALGO_ONLY``, ``REGULAR_ONLY``,
  ``CLIENT_ID``), then ``execution.rules.preflight`` with the engine's current price as the mark
  and the account's position mode, so a bad order is refused with the same ``PreflightError``;
- engine refusals become ``errors.OrderRejected`` (``errors.NotFound`` for -2011 / -2013) with
  Binance's code and message;
- the same ``VenueOrder`` shapes: ``is_algo``, the venue's own statuses, the client id
  (``clientAlgoId`` for algo orders and for the regular order an algo order becomes when it
  triggers), ``type`` the original type, ``actual_order_id`` on a triggered algo order.
  ``raw`` holds the engine object's fields (``dataclasses.asdict``), not Binance's JSON.

The market moves only when the caller feeds it: ``feed`` walks a candle's intrabar path
(``execution.emulator.market.intrabar_path``), ``feed_price`` moves to one price. With a
``MarketClock`` (what ``standalone`` builds unless given a clock) the data drives time: each path
point sets the clock, so fills are stamped with the time of the point that ended the segment
they happened on. With any other clock (wall time in dry-run) fills are stamped by that clock.

Not modelled, by design: a separate mark price (``workingType`` is accepted, triggers use the
one engine price), funding, liquidation, a user-data stream. The listen-key methods hand out and
accept one fixed fake key so code that opens a stream does not fail; a caller that wants the
events subscribes to ``engine.listeners`` (OrderEvent, AlgoEvent, AccountEvent, in order).

State lives in this process only: nothing is persisted, and two processes have two markets.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

from execution.emulator.exchange_info import KNOWN_SYMBOLS, exchange_info
from execution.emulator.market import INTERVAL_MS, MAX_KLINES_LIMIT, intrabar_path
from execution.engine import (
    AlgoOrder,
    EngineReject,
    FeeSchedule,
    MatchingEngine,
    NewAlgoOrder,
    NewOrder,
    Order,
)
from execution.rules import SymbolRules, parse_exchange_info, preflight
from execution.venues import errors
from execution.venues.base import (
    Balance,
    Kline,
    OrderRequest,
    OrderType,
    Position,
    PositionSide,
    Side,
    TimeInForce,
    UserTrade,
    VenueOrder,
    WorkingType,
)

if TYPE_CHECKING:
    from execution.venues.base import Venue

ZERO = Decimal(0)

#: The one listen key paper mode hands out (there is no stream behind it).
PAPER_LISTEN_KEY = "paper-listen-key"

#: The engine's default fees (Binance's base tier: maker 0.02 %, taker 0.05 %).
DEFAULT_FEES = FeeSchedule()

#: Binance's cap on ``GET /fapi/v1/userTrades``'s ``limit``.
MAX_USER_TRADES = 1000

# The codes BinanceFuturesVenue turns into NotFound; every other engine refusal is a rejection.
_NOT_FOUND_CODES = frozenset({-2011, -2013})
# Binance answers an unknown or rejected request with HTTP 400; keep that on the exception so a
# caller that looks at it sees what it would see from BinanceFuturesVenue.
_HTTP_BAD_REQUEST = 400


class MarketClock:
    """A clock moved by market data rather than by the wall: ``PaperVenue.feed`` sets it to each
    path point's time. It never goes back, so feeding several symbols keeps time monotonic (feed
    them candle by candle in time order for exact time stamps)."""

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance_to(self, time_ms: int) -> None:
        """Move to ``time_ms`` unless the clock is already past it."""
        self.now_ms = max(self.now_ms, time_ms)


class PaperVenue:
    """The venue port over one ``MatchingEngine`` account. See the module docstring."""

    name = "paper"

    def __init__(
        self,
        *,
        engine: MatchingEngine,
        account_id: str,
        rules: Mapping[str, SymbolRules],
        clock: Callable[[], int],
    ) -> None:
        if account_id not in engine.accounts:
            raise ValueError(f"account {account_id!r} does not exist in the engine")
        self.engine = engine
        self.account_id = account_id
        self.rules = dict(rules)
        self.clock = clock
        self._candles: dict[str, deque[Kline]] = {}
        # The engine is not thread-safe (its docstring leaves serialising to the caller); a
        # dry-run venue may be shared by threads, so every engine access goes through this.
        self._lock = threading.RLock()

    @classmethod
    def standalone(
        cls,
        *,
        balances: Mapping[str, Decimal] | None = None,
        symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT", "XRPUSDT"),
        clock: Callable[[], int] | None = None,
        fees: FeeSchedule = DEFAULT_FEES,
        slippage: Decimal = Decimal("0.0002"),
        account_id: str = "paper",
    ) -> PaperVenue:
        """A venue with its own engine and one account (``balances``, default 10000 USDT), and
        the emulator's exchangeInfo rows (``KNOWN_SYMBOLS``) as rules. Without ``clock`` a
        ``MarketClock`` starting at 0 is used, so time is whatever the fed data says."""
        wanted = tuple(symbols)
        unknown = sorted(set(wanted) - set(KNOWN_SYMBOLS))
        if unknown:
            raise ValueError(
                f"no exchangeInfo row for {unknown}; known: {sorted(KNOWN_SYMBOLS)} "
                "(build rules with execution.emulator.exchange_info and use PaperVenue(...))"
            )
        venue_clock: Callable[[], int] = clock if clock is not None else MarketClock()
        # The sample price only shapes generic rows; every symbol here has a real row.
        payload = exchange_info({s: Decimal(1) for s in wanted}, server_time=venue_clock())
        rules = parse_exchange_info(payload)
        engine = MatchingEngine(
            clock=venue_clock,
            tick_sizes={s: r.tick_size for s, r in rules.items()},
            fees=fees,
            slippage=slippage,
        )
        engine.add_account(account_id, {"USDT": Decimal(10000)} if balances is None else balances)
        return cls(engine=engine, account_id=account_id, rules=rules, clock=venue_clock)

    # --- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _engine_call(self) -> Iterator[None]:
        """Serialise engine access and translate its refusals as BinanceFuturesVenue would."""
        with self._lock:
            try:
                yield
            except EngineReject as exc:
                error = errors.NotFound if exc.code in _NOT_FOUND_CODES else errors.OrderRejected
                raise error(exc.msg, code=exc.code, http_status=_HTTP_BAD_REQUEST) from None

    def _check_symbol(self, symbol: str) -> None:
        # What the exchange answers to a symbol it does not list (BinanceFuturesVenue raises
        # the translated error, an OrderRejected).
        if symbol not in self.rules:
            raise errors.OrderRejected("Invalid symbol.", code=-1121, http_status=_HTTP_BAD_REQUEST)

    def _order(self, order: Order) -> VenueOrder:
        return VenueOrder(
            symbol=order.symbol,
            client_id=order.client_id,
            venue_id=order.order_id,
            is_algo=False,
            status=order.status,
            side=Side(order.side),
            type=OrderType(order.orig_type or order.type),
            quantity=order.quantity,
            price=order.price,
            trigger_price=order.stop_price or None,
            executed_qty=order.executed_qty,
            avg_price=order.avg_price,
            reduce_only=order.reduce_only,
            close_position=order.close_position,
            position_side=PositionSide(order.position_side),
            update_time_ms=order.update_time_ms,
            raw=dataclasses.asdict(order),
        )

    def _algo(self, algo: AlgoOrder) -> VenueOrder:
        avg_price = ZERO
        if algo.actual_order_id is not None:
            child = self.engine.get_order(
                self.account_id, algo.symbol, order_id=algo.actual_order_id
            )
            avg_price = child.avg_price
        return VenueOrder(
            symbol=algo.symbol,
            client_id=algo.client_algo_id,
            venue_id=algo.algo_id,
            is_algo=True,
            status=algo.status,
            side=Side(algo.side),
            type=OrderType(algo.order_type),
            quantity=algo.quantity,
            price=algo.price,
            trigger_price=algo.trigger_price or None,
            # The Algo Order API reports no executed quantity (BinanceFuturesVenue says 0 too);
            # what was filled is on the regular order ``actual_order_id``.
            executed_qty=ZERO,
            avg_price=avg_price,
            reduce_only=algo.reduce_only,
            close_position=algo.close_position,
            position_side=PositionSide(algo.position_side),
            update_time_ms=algo.update_time_ms,
            actual_order_id=algo.actual_order_id,
            raw=dataclasses.asdict(algo),
        )

    # --- market data ---------------------------------------------------------------------------

    def feed(self, symbol: str, candle: Kline) -> None:
        """Walk ``candle``'s intrabar path (open -> low -> high -> close when bullish or flat,
        open -> high -> low -> close otherwise) through the engine, matching on the way.

        Point times are the candle's open time plus the vertex's fraction of its duration (the
        close vertex is the next candle's open time). Candles of one symbol must come in time
        order without overlap: walking the same stretch twice would fill orders twice.
        """
        self._check_fed_symbol(symbol)
        candles = self._candles.setdefault(symbol, deque(maxlen=MAX_KLINES_LIMIT))
        if candles and candle.open_time_ms <= candles[-1].close_time_ms:
            raise ValueError(
                f"{symbol}: candle opening at {candle.open_time_ms} does not follow the last "
                f"one fed (closing at {candles[-1].close_time_ms})"
            )
        duration = candle.close_time_ms + 1 - candle.open_time_ms
        points = [
            # Round, not floor: 1/3 of 60000 as a Decimal is 19999.999..., meant as 20000.
            (candle.open_time_ms + int((fraction * duration).to_integral_value()), price)
            for fraction, price in intrabar_path(candle)
        ]
        with self._engine_call():
            for time_ms, price in points:
                self._advance(symbol, price, time_ms)
            candles.append(candle)

    def feed_price(self, symbol: str, price: Decimal, time_ms: int) -> None:
        """Move ``symbol``'s price to ``price`` at ``time_ms``, matching on the way (the first
        price ever fed only sets it)."""
        self._check_fed_symbol(symbol)
        with self._engine_call():
            self._advance(symbol, price, time_ms)

    def _check_fed_symbol(self, symbol: str) -> None:
        # A price without rules could never be traded: most likely a typo in a backtest.
        if symbol not in self.rules:
            raise ValueError(f"{symbol}: the venue has no rules for it; cannot feed its market")

    def _advance(self, symbol: str, price: Decimal, time_ms: int) -> None:
        # One point at a time so the clock reads this point's time while its segment matches.
        if isinstance(self.clock, MarketClock):
            self.clock.advance_to(time_ms)
        self.engine.advance(symbol, [(time_ms, price)])

    def server_time_ms(self) -> int:
        """The venue's clock (market time when it is a ``MarketClock``)."""
        return self.clock()

    def symbol_rules(self, *, refresh: bool = False) -> dict[str, SymbolRules]:
        """The rules the venue was built with (``refresh`` exists for BinanceFuturesVenue
        compatibility: paper rules never change)."""
        return dict(self.rules)

    def rules_for(self, symbol: str) -> SymbolRules:
        """One symbol's rules, or ``PreflightError("SYMBOL")`` as BinanceFuturesVenue raises."""
        if symbol not in self.rules:
            raise errors.PreflightError("SYMBOL", f"{symbol} is not listed by the venue")
        return self.rules[symbol]

    def mark_price(self, symbol: str) -> Decimal | None:
        """The engine's current price for ``symbol`` (paper mode has one price: last = mark),
        None before anything was fed."""
        with self._lock:
            return self.engine.price(symbol)

    def klines(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Kline]:
        """The candles fed so far (the last 1500 per symbol) of ``interval``'s length, with
        Binance's selection: open time within [start_ms, end_ms]; the first ``limit`` from
        ``start_ms`` when given, else the latest ``limit``. Only closed candles exist here."""
        self._check_symbol(symbol)
        if interval not in INTERVAL_MS:
            raise errors.OrderRejected(
                "Invalid interval.", code=-1120, http_status=_HTTP_BAD_REQUEST
            )
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        limit = min(limit, MAX_KLINES_LIMIT)
        width = INTERVAL_MS[interval]
        with self._lock:
            rows = [
                k
                for k in self._candles.get(symbol, ())
                if k.close_time_ms + 1 - k.open_time_ms == width
                and (start_ms is None or k.open_time_ms >= start_ms)
                and (end_ms is None or k.open_time_ms <= end_ms)
            ]
        return rows[:limit] if start_ms is not None else rows[-limit:]

    # --- orders --------------------------------------------------------------------------------

    def prepare(self, request: OrderRequest) -> OrderRequest:
        """Pre-flight: the request as it will reach the engine (rounded), or PreflightError."""
        rules = self.rules_for(request.symbol)
        with self._lock:
            mark = self.engine.price(request.symbol)
            dual = self.engine.account(self.account_id).dual_side
        return preflight(request, rules, mark_price=mark, dual_side=dual)

    def place_order(self, request: OrderRequest) -> VenueOrder:
        """LIMIT or MARKET; the reply is the order's state after matching (a MARKET order comes
        back FILLED, like BinanceFuturesVenue's ``newOrderRespType=RESULT``)."""
        if request.is_conditional:
            raise errors.PreflightError(
                "ALGO_ONLY", f"{request.type} goes to the Algo Order API: use place_algo_order"
            )
        ready = self.prepare(request)
        if ready.quantity is None:  # preflight allows no quantity only with closePosition
            raise errors.PreflightError("MANDATORY_PARAM", f"{ready.type} needs a quantity")
        new = NewOrder(
            symbol=ready.symbol,
            side=Side(ready.side).value,
            type=OrderType(ready.type).value,
            quantity=ready.quantity,
            price=ready.price or ZERO,
            time_in_force=TimeInForce(ready.time_in_force or TimeInForce.GTC).value,
            reduce_only=ready.reduce_only,
            position_side=PositionSide(ready.position_side).value,
            client_id=ready.client_id or "",
        )
        with self._engine_call():
            return self._order(self.engine.place_order(self.account_id, new))

    def place_algo_order(self, request: OrderRequest) -> VenueOrder:
        """A conditional order, with ``client_id`` as its clientAlgoId (required)."""
        if not request.is_conditional:
            raise errors.PreflightError(
                "REGULAR_ONLY", f"{request.type} is not conditional: use place_order"
            )
        if not request.client_id:
            raise errors.PreflightError(
                "CLIENT_ID", "conditional orders need our own clientAlgoId (idempotency key)"
            )
        ready = self.prepare(request)
        new = NewAlgoOrder(
            symbol=ready.symbol,
            side=Side(ready.side).value,
            type=OrderType(ready.type).value,
            trigger_price=ready.trigger_price or ZERO,
            quantity=ready.quantity or ZERO,
            price=ready.price or ZERO,
            time_in_force=TimeInForce(ready.time_in_force or TimeInForce.GTC).value,
            reduce_only=ready.reduce_only,
            close_position=ready.close_position,
            position_side=PositionSide(ready.position_side).value,
            working_type=WorkingType(ready.working_type or WorkingType.CONTRACT_PRICE).value,
            price_protect=ready.price_protect,
            activate_price=ready.activate_price,
            callback_rate=ready.callback_rate,
            client_id=ready.client_id or "",
        )
        with self._engine_call():
            return self._algo(self.engine.place_algo(self.account_id, new))

    @staticmethod
    def _check_ref(client_id: str | None, venue_id: int | None) -> None:
        if client_id is None and venue_id is None:
            raise ValueError("give client_id or venue_id")

    def cancel_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        """Cancel an open regular order; NotFound (-2011) if none matches."""
        self._check_ref(client_id, venue_id)
        self._check_symbol(symbol)
        with self._engine_call():
            order = self.engine.cancel_order(
                self.account_id, symbol, order_id=venue_id, client_id=client_id
            )
            return self._order(order)

    def cancel_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        """Cancel an open algo order; NotFound (-2011) if none matches. As on the Algo Order
        API, the algo order is found by its id alone."""
        self._check_ref(client_id, venue_id)
        with self._engine_call():
            algo = self.engine.cancel_algo(self.account_id, algo_id=venue_id, client_id=client_id)
            return self._algo(algo)

    def get_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        """A regular order in any state (the latest one with a reused client id); NotFound
        (-2013) if none matches."""
        self._check_ref(client_id, venue_id)
        self._check_symbol(symbol)
        with self._engine_call():
            order = self.engine.get_order(
                self.account_id, symbol, order_id=venue_id, client_id=client_id
            )
            return self._order(order)

    def get_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder:
        """An algo order in any state; NotFound (-2013) if none matches."""
        self._check_ref(client_id, venue_id)
        with self._engine_call():
            algo = self.engine.get_algo(self.account_id, algo_id=venue_id, client_id=client_id)
            return self._algo(algo)

    def open_orders(self, *, symbol: str | None = None) -> list[VenueOrder]:
        """Open orders of both kinds: regular first, then algo (as BinanceFuturesVenue)."""
        if symbol is not None:
            self._check_symbol(symbol)
        with self._engine_call():
            regular = self.engine.open_orders(self.account_id, symbol)
            algos = self.engine.open_algos(self.account_id, symbol)
            return [self._order(o) for o in regular] + [self._algo(a) for a in algos]

    def cancel_all(self, *, symbol: str) -> None:
        """Cancel every open order of both kinds on ``symbol``."""
        self._check_symbol(symbol)
        with self._engine_call():
            self.engine.cancel_all_orders(self.account_id, symbol)
            self.engine.cancel_all_algos(self.account_id, symbol)

    # --- account -------------------------------------------------------------------------------

    def balances(self) -> list[Balance]:
        """One row per wallet asset, with the engine's available balance and unrealized PnL."""
        with self._lock:
            wallet = self.engine.account(self.account_id).balances
            return [
                Balance(
                    asset=asset,
                    wallet_balance=amount,
                    available_balance=self.engine.available_balance(self.account_id, asset),
                    unrealized_pnl=self.engine.unrealized_pnl(self.account_id, asset),
                )
                for asset, amount in sorted(wallet.items())
            ]

    def positions(self, *, symbol: str | None = None) -> list[Position]:
        """Open positions (non-zero amount), sorted by symbol and side; the mark is the engine's
        current price."""
        if symbol is not None:
            self._check_symbol(symbol)
        with self._lock:
            rows = []
            for state in self.engine.positions(self.account_id):
                if not state.amount or (symbol is not None and state.symbol != symbol):
                    continue
                mark = self.engine.price(state.symbol) or ZERO
                rows.append(
                    Position(
                        symbol=state.symbol,
                        position_side=PositionSide(state.position_side),
                        amount=state.amount,
                        entry_price=state.entry_price,
                        mark_price=mark,
                        unrealized_pnl=state.amount * (mark - state.entry_price) if mark else ZERO,
                        update_time_ms=state.update_time_ms,
                    )
                )
        return sorted(rows, key=lambda p: (p.symbol, p.position_side))

    def user_trades(
        self, *, symbol: str, start_ms: int | None = None, from_id: int | None = None
    ) -> list[UserTrade]:
        """Fills on ``symbol``, oldest first: from trade id ``from_id`` (which wins, as in
        BinanceFuturesVenue) or from ``start_ms``, at most 1000; with neither, the latest 1000."""
        self._check_symbol(symbol)
        with self._lock:
            trades = self.engine.trades(self.account_id, symbol)
        if from_id is not None:
            trades = [t for t in trades if t.trade_id >= from_id][:MAX_USER_TRADES]
        elif start_ms is not None:
            trades = [t for t in trades if t.time_ms >= start_ms][:MAX_USER_TRADES]
        else:
            trades = trades[-MAX_USER_TRADES:]
        return [
            UserTrade(
                symbol=t.symbol,
                trade_id=t.trade_id,
                order_id=t.order_id,
                side=Side(t.side),
                price=t.price,
                qty=t.qty,
                quote_qty=t.quote_qty,
                commission=t.commission,
                commission_asset=t.commission_asset,
                realized_pnl=t.realized_pnl,
                maker=t.maker,
                position_side=PositionSide(t.position_side),
                time_ms=t.time_ms,
            )
            for t in trades
        ]

    def set_leverage(self, *, symbol: str, leverage: int) -> int:
        """Set ``symbol``'s leverage (1..125, else OrderRejected -4028); returns it."""
        self._check_symbol(symbol)
        with self._engine_call():
            return self.engine.set_leverage(self.account_id, symbol, leverage)

    def position_mode_dual(self) -> bool:
        """True in hedge mode."""
        with self._lock:
            return self.engine.account(self.account_id).dual_side

    def set_position_mode(self, *, dual: bool) -> None:
        """Switch hedge mode on or off; already being in that mode is success (-4059 is
        swallowed, as BinanceFuturesVenue does); open orders (-4067) or a position (-4068)
        refuse the change."""
        try:
            with self._engine_call():
                self.engine.set_position_mode(self.account_id, dual=dual)
        except errors.OrderRejected as exc:
            if exc.code != -4059:
                raise

    def create_listen_key(self) -> str:
        """The fixed fake key: paper mode has no user-data stream (see the module docstring)."""
        return PAPER_LISTEN_KEY

    def keepalive_listen_key(self, listen_key: str) -> None:
        """Accept the fixed key; any other is refused as Binance refuses an unknown one."""
        self._check_listen_key(listen_key)

    def close_listen_key(self, listen_key: str) -> None:
        """Accept the fixed key; any other is refused as Binance refuses an unknown one."""
        self._check_listen_key(listen_key)

    @staticmethod
    def _check_listen_key(listen_key: str) -> None:
        if listen_key != PAPER_LISTEN_KEY:
            raise errors.OrderRejected(
                "This listenKey does not exist.", code=-1125, http_status=_HTTP_BAD_REQUEST
            )


if TYPE_CHECKING:
    # mypy checks here that PaperVenue satisfies the port.
    def _conforms(venue: PaperVenue) -> Venue:
        return venue
