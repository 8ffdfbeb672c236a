"""The matching engine shared by ``PaperVenue`` and the Binance emulator: one piece of code
computes every fill.

Pure: Decimal in and out, time from an injected clock, no Django, no network, no threads (the
caller serialises access). It keeps accounts (balances, leverage, position mode), regular and
algo orders, positions (one-way and hedge), fills with maker/taker fees and realized PnL, and
emits Binance-shaped events for the user data stream through listeners.

Market model (documented, deterministic):

- The market is a price per symbol that moves along a path of points (``advance``). Between two
  points the price moves linearly, so a level is crossed iff it lies between them. The emulator
  and backtests feed the intrabar path of each candle (``execution.emulator.market``):
  open -> low -> high -> close for a bullish candle, open -> high -> low -> close otherwise.
- MARKET orders fill at once at the current price moved against the taker by ``slippage``,
  rounded to the tick away from the taker's favour. Liquidity is unlimited unless a test asks
  for a partial fill (``fill_partially``).
- A resting LIMIT fills at its limit price (maker) when the price trades *through* it
  (strictly beyond). A marketable LIMIT fills at once at the current price (taker); GTX that
  would take is rejected (-5022), FOK that cannot fill is rejected (-5021), IOC expires the rest.
- Conditional (algo) orders trigger on the price reaching the trigger: STOP/STOP_MARKET BUY at
  price >= trigger, SELL at <=; TAKE_PROFIT* BUY at <=, SELL at >=. The path is continuous, so
  a triggered *_MARKET order fills at its trigger price moved by slippage; STOP/TAKE_PROFIT
  place their LIMIT. Status: NEW -> TRIGGERED -> FINISHED; a
  reduce-only or closePosition order with nothing to reduce ends EXPIRED ("Reduce Only reject");
  a margin failure at trigger ends REJECTED. Binance does not link a stop and a take-profit:
  when one closes the position, the other stays NEW (the platform must cancel it).
- Margin: initial margin = notional / leverage. An order that opens or increases exposure needs
  available balance (wallet + unrealized PnL - position margin - open-order margin) for the
  increasing part (-2019). Conditional orders are not margin-checked until they trigger.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

ZERO = Decimal(0)
ONE = Decimal(1)

CONDITIONAL = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
ALGO_OPEN_STATUSES = frozenset({"NEW", "TRIGGERING"})
MAX_OPEN_ALGO_ORDERS = 200  # across all symbols, since 2025-12-29


class EngineReject(Exception):
    """A Binance-coded refusal (``code`` and ``msg`` exactly as Binance words them)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class FeeSchedule:
    maker: Decimal = Decimal("0.0002")
    taker: Decimal = Decimal("0.0005")


@dataclass
class Order:
    """A regular order (LIMIT or MARKET), possibly the child of a triggered algo order."""

    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    reduce_only: bool
    close_position: bool
    position_side: str
    status: str
    time_ms: int
    update_time_ms: int
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    orig_type: str = ""
    stop_price: Decimal = ZERO
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty


@dataclass
class AlgoOrder:
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    trigger_price: Decimal
    reduce_only: bool
    close_position: bool
    position_side: str
    working_type: str
    price_protect: bool
    status: str
    create_time_ms: int
    update_time_ms: int
    trigger_time_ms: int = 0
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    actual_order_id: int | None = None
    fail_reason: str = ""
    trail_extreme: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.status in ALGO_OPEN_STATUSES


@dataclass
class PositionState:
    symbol: str
    position_side: str
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry_price: Decimal = ZERO
    update_time_ms: int = 0


@dataclass(frozen=True)
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    position_side: str
    time_ms: int


@dataclass(frozen=True)
class OrderEvent:
    """ORDER_TRADE_UPDATE: ``exec_type`` NEW, TRADE, CANCELED, EXPIRED."""

    account: str
    order: Order
    exec_type: str
    time_ms: int
    trade: Trade | None = None


@dataclass(frozen=True)
class AlgoEvent:
    """ALGO_UPDATE."""

    account: str
    algo: AlgoOrder
    time_ms: int


@dataclass(frozen=True)
class AccountEvent:
    """ACCOUNT_UPDATE: wallet balances and the positions that changed."""

    account: str
    reason: str
    balances: Mapping[str, Decimal]
    positions: tuple[PositionState, ...]
    time_ms: int


Event = OrderEvent | AlgoEvent | AccountEvent


@dataclass
class Account:
    account_id: str
    balances: dict[str, Decimal]
    dual_side: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    algos: dict[int, AlgoOrder] = field(default_factory=dict)
    positions: dict[tuple[str, str], PositionState] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)


@dataclass(frozen=True)
class NewOrder:
    """A validated regular order request (parameter checks are the caller's: emulator or
    pre-flight). ``quantity`` is None only with closePosition (not allowed for regular types)."""

    symbol: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal = ZERO
    time_in_force: str = "GTC"
    reduce_only: bool = False
    position_side: str = "BOTH"
    client_id: str = ""


@dataclass(frozen=True)
class NewAlgoOrder:
    symbol: str
    side: str
    type: str
    trigger_price: Decimal
    quantity: Decimal = ZERO
    price: Decimal = ZERO
    time_in_force: str = "GTC"
    reduce_only: bool = False
    close_position: bool = False
    position_side: str = "BOTH"
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    client_id: str = ""


def _quote_asset(symbol: str) -> str:
    base = symbol.split("_", 1)[0]
    for quote in ("USDT", "USDC"):
        if base.endswith(quote):
            return quote
    return "USDT"


class MatchingEngine:
    """See the module docstring for the market model."""

    def __init__(
        self,
        *,
        clock: Callable[[], int],
        tick_sizes: Mapping[str, Decimal],
        fees: FeeSchedule = FeeSchedule(),
        slippage: Decimal = Decimal("0.0002"),
        default_leverage: int = 20,
    ) -> None:
        self.clock = clock
        self.tick_sizes = dict(tick_sizes)
        self.fees = fees
        self.slippage = slippage
        self.default_leverage = default_leverage
        self.accounts: dict[str, Account] = {}
        self.prices: dict[str, Decimal] = {}
        self.listeners: list[Callable[[Event], None]] = []
        self._order_ids = itertools.count(1_000_001)
        self._algo_ids = itertools.count(5_000_001)
        self._trade_ids = itertools.count(9_000_001)
        self._client_ids = itertools.count(1)

    # --- persistence ---------------------------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        """Everything but the clock, listeners and configuration, as plain JSON (Decimals as
        strings): what a paper account stores between operations."""

        def plain(obj: Any) -> Any:
            if isinstance(obj, Decimal):
                return str(obj)
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            if isinstance(obj, list | tuple):
                return [plain(v) for v in obj]
            return obj

        ids = {}
        for name in ("_order_ids", "_algo_ids", "_trade_ids", "_client_ids"):
            counter = getattr(self, name)
            ids[name] = next(counter)
            setattr(self, name, itertools.count(ids[name]))  # peeking consumed one: put it back
        return {
            "version": 1,
            "ids": ids,
            "prices": plain(self.prices),
            "accounts": [
                {
                    "account_id": a.account_id,
                    "balances": plain(a.balances),
                    "dual_side": a.dual_side,
                    "leverage": a.leverage,
                    "orders": [plain(asdict(o)) for o in a.orders.values()],
                    "algos": [plain(asdict(x)) for x in a.algos.values()],
                    "positions": [plain(asdict(p)) for p in a.positions.values()],
                    "trades": [plain(asdict(t)) for t in a.trades],
                }
                for a in self.accounts.values()
            ],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``dump_state`` produced (replacing every account and price)."""
        if state.get("version") != 1:
            raise ValueError(f"unknown engine state version {state.get('version')!r}")

        def decimals(cls: type, row: Mapping[str, Any]) -> Any:
            kinds = {f.name: f.type for f in fields(cls)}
            return cls(
                **{
                    k: (Decimal(v) if v is not None and "Decimal" in str(kinds[k]) else v)
                    for k, v in row.items()
                }
            )

        for name, value in state["ids"].items():
            setattr(self, name, itertools.count(int(value)))
        self.prices = {s: Decimal(p) for s, p in state["prices"].items()}
        self.accounts = {}
        for row in state["accounts"]:
            account = Account(
                account_id=row["account_id"],
                balances={k: Decimal(v) for k, v in row["balances"].items()},
                dual_side=row["dual_side"],
                leverage=dict(row["leverage"]),
            )
            for o in row["orders"]:
                order = decimals(Order, o)
                account.orders[order.order_id] = order
            for x in row["algos"]:
                algo = decimals(AlgoOrder, x)
                account.algos[algo.algo_id] = algo
            for p in row["positions"]:
                position = decimals(PositionState, p)
                account.positions[(position.symbol, position.position_side)] = position
            account.trades = [decimals(Trade, t) for t in row["trades"]]
            self.accounts[account.account_id] = account

    def forget_history(self, account_id: str, *, keep: int) -> int:
        """Forget all but the ``keep`` newest closed orders and closed algo orders of an account,
        and the trades of the orders forgotten; open ones are never forgotten, and ids are never
        reused. Binance, too, forgets old orders (cancelled ones after three days); a paper
        account's state is rewritten on every call, so it must not grow with every trade.
        Returns how many orders, algo orders and trades were forgotten."""
        account = self.account(account_id)
        closed = [o.order_id for o in account.orders.values() if not o.is_open]
        closed_algos = [a.algo_id for a in account.algos.values() if not a.is_open]
        drop = set(closed[: max(0, len(closed) - keep)])
        drop_algos = closed_algos[: max(0, len(closed_algos) - keep)]
        for order_id in drop:
            del account.orders[order_id]
        for algo_id in drop_algos:
            del account.algos[algo_id]
        kept_trades = [t for t in account.trades if t.order_id not in drop]
        forgotten = len(drop) + len(drop_algos) + len(account.trades) - len(kept_trades)
        account.trades = kept_trades
        return forgotten

    # --- accounts ------------------------------------------------------------------------------

    def add_account(self, account_id: str, balances: Mapping[str, Decimal]) -> Account:
        account = Account(
            account_id=account_id, balances={k: Decimal(v) for k, v in balances.items()}
        )
        self.accounts[account_id] = account
        return account

    def account(self, account_id: str) -> Account:
        return self.accounts[account_id]

    def leverage(self, account_id: str, symbol: str) -> int:
        return self.account(account_id).leverage.get(symbol, self.default_leverage)

    def set_leverage(self, account_id: str, symbol: str, leverage: int) -> int:
        if not 1 <= leverage <= 125:
            raise EngineReject(-4028, f"Leverage {leverage} is not valid")
        self.account(account_id).leverage[symbol] = leverage
        return leverage

    def set_position_mode(self, account_id: str, *, dual: bool) -> None:
        account = self.account(account_id)
        if account.dual_side == dual:
            raise EngineReject(-4059, "No need to change position side.")
        if any(o.is_open for o in account.orders.values()) or any(
            a.is_open for a in account.algos.values()
        ):
            raise EngineReject(
                -4067, "Position side cannot be changed if there exists open orders."
            )
        if any(p.amount for p in account.positions.values()):
            raise EngineReject(-4068, "Position side cannot be changed if there exists position.")
        account.dual_side = dual

    # --- market --------------------------------------------------------------------------------

    def price(self, symbol: str) -> Decimal | None:
        return self.prices.get(symbol)

    def advance(self, symbol: str, points: Iterable[tuple[int, Decimal]]) -> None:
        """Move ``symbol``'s price through ``points`` (time, price), in order, matching on the way.

        The first ever point only sets the price. Between consecutive points the price moves
        linearly; every order whose level lies on that segment is matched at its level, in the
        order the price reaches them.
        """
        for _, price in points:
            previous = self.prices.get(symbol)
            self.prices[symbol] = price
            if previous is None or previous == price:
                continue
            self._match_segment(symbol, previous, price)

    def _levels_on_segment(
        self, symbol: str, start: Decimal, end: Decimal
    ) -> list[tuple[Decimal, str, Any]]:
        """Orders hit on the segment start -> end, as (level, kind, order), in path order."""
        low, high = min(start, end), max(start, end)
        hits: list[tuple[Decimal, str, Any]] = []
        for account in self.accounts.values():
            for algo in account.algos.values():
                if algo.symbol != symbol or algo.status != "NEW":
                    continue
                level = self._algo_trigger_level(algo, start, end)
                if level is not None:
                    hits.append((level, "algo", (account, algo)))
            for order in account.orders.values():
                if order.symbol != symbol or not order.is_open or order.type != "LIMIT":
                    continue
                # Strictly through: a buy limit fills once the price goes below it.
                if (order.side == "BUY" and low < order.price <= high) or (
                    order.side == "SELL" and low <= order.price < high
                ):
                    through = (order.side == "BUY" and end < start) or (
                        order.side == "SELL" and end > start
                    )
                    if through:
                        hits.append((order.price, "limit", (account, order)))
        rising = end > start
        hits.sort(key=lambda h: h[0], reverse=not rising)
        return hits

    def _algo_trigger_level(self, algo: AlgoOrder, start: Decimal, end: Decimal) -> Decimal | None:
        """The price at which ``algo`` triggers on start -> end, or None."""
        low, high = min(start, end), max(start, end)
        if algo.order_type == "TRAILING_STOP_MARKET":
            return self._trailing_level(algo, start, end)
        trigger = algo.trigger_price
        fires_upward = (algo.order_type in ("STOP", "STOP_MARKET")) == (algo.side == "BUY")
        if fires_upward and end > start and low < trigger <= high:
            return trigger
        if not fires_upward and end < start and low <= trigger < high:
            return trigger
        return None

    def _trailing_level(self, algo: AlgoOrder, start: Decimal, end: Decimal) -> Decimal | None:
        # Track the extreme since activation; fire on a callback of ``callback_rate`` percent.
        rate = (algo.callback_rate or ONE) / 100
        activate = algo.activate_price
        for price in (start, end):
            if algo.side == "SELL":
                if activate is not None and algo.trail_extreme is None and price < activate:
                    continue
                algo.trail_extreme = max(algo.trail_extreme or price, price)
                stop = algo.trail_extreme * (ONE - rate)
                if price <= stop:
                    # The path is continuous: it crossed the callback level on its way down to
                    # ``price`` (the segment's end), so that level is where the order triggers.
                    return max(stop, price)
            else:
                if activate is not None and algo.trail_extreme is None and price > activate:
                    continue
                algo.trail_extreme = min(algo.trail_extreme or price, price)
                stop = algo.trail_extreme * (ONE + rate)
                if price >= stop:
                    return min(stop, price)
        return None

    def _match_segment(self, symbol: str, start: Decimal, end: Decimal) -> None:
        for level, kind, (account, order) in self._levels_on_segment(symbol, start, end):
            if kind == "algo":
                if order.status == "NEW":
                    self._trigger(account, order, level)
            elif order.is_open:
                self._fill(account, order, order.remaining, order.price, maker=True)

    # --- regular orders ------------------------------------------------------------------------

    def place_order(self, account_id: str, request: NewOrder) -> Order:
        account = self.account(account_id)
        now = self.clock()
        price_now = self._require_price(request.symbol)
        self._check_position_side(account, request.position_side)
        client_id = request.client_id or self._auto_client_id()
        self._check_duplicate_client_id(account, client_id, algo=False)
        self._check_max_orders(account, request.symbol)
        if request.reduce_only:
            self._check_reduce_only(account, request.symbol, request.side, request.position_side)
        elif account.dual_side:
            self._check_hedge_close(account, request)
        marketable = request.type == "MARKET" or (
            (request.side == "BUY" and request.price >= price_now)
            or (request.side == "SELL" and request.price <= price_now)
        )
        if request.type == "LIMIT" and marketable and request.time_in_force == "GTX":
            raise EngineReject(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be "
                "rejected. The order will not be recorded in the order history",
            )
        if request.type == "LIMIT" and not marketable and request.time_in_force == "FOK":
            raise EngineReject(
                -5021,
                "Due to the order could not be filled immediately, "
                "the FOK order has been rejected.",
            )
        check_price = price_now if request.type == "MARKET" else request.price
        if not request.reduce_only:
            self._check_margin(account, request.symbol, request.side, request.position_side,
                               request.quantity, check_price)  # fmt: skip
        order = Order(
            order_id=next(self._order_ids),
            client_id=client_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force if request.type == "LIMIT" else "GTC",
            quantity=request.quantity,
            price=request.price if request.type == "LIMIT" else ZERO,
            reduce_only=request.reduce_only,
            close_position=False,
            position_side=request.position_side,
            status="NEW",
            time_ms=now,
            update_time_ms=now,
            orig_type=request.type,
        )
        account.orders[order.order_id] = order
        self._emit(OrderEvent(account_id, self._snapshot(order), "NEW", now))
        if marketable:
            fill_price = (
                self._slipped(request.symbol, request.side, price_now)
                if request.type == "MARKET"
                else price_now
            )
            self._fill(account, order, order.quantity, fill_price, maker=False)
            # IOC/FOK/MARKET leftovers (a reduce-only fill capped at the position) expire.
            leftover_expires = request.type == "MARKET" or request.time_in_force in ("IOC", "FOK")
            if order.is_open and leftover_expires:
                self._close_order(account, order, "EXPIRED")
        elif request.time_in_force == "IOC":
            # An IOC that cannot take anything now must not rest on the book: Binance expires it.
            self._close_order(account, order, "EXPIRED")
        return self._snapshot(order)

    def fill_partially(self, account_id: str, order_id: int, qty: Decimal) -> Order:
        """Fill part of a resting LIMIT at its price (maker). For tests of partial fills."""
        account = self.account(account_id)
        order = account.orders.get(order_id)
        if order is None or not order.is_open:
            raise EngineReject(-2013, "Order does not exist.")
        self._fill(account, order, min(qty, order.remaining), order.price, maker=True)
        return self._snapshot(order)

    def cancel_order(
        self,
        account_id: str,
        symbol: str,
        *,
        order_id: int | None = None,
        client_id: str | None = None,
    ) -> Order:
        account = self.account(account_id)
        order = self._find_order(account, symbol, order_id, client_id, open_only=True)
        if order is None:
            raise EngineReject(-2011, "Unknown order sent.")
        self._close_order(account, order, "CANCELED")
        return self._snapshot(order)

    def get_order(
        self,
        account_id: str,
        symbol: str,
        *,
        order_id: int | None = None,
        client_id: str | None = None,
    ) -> Order:
        order = self._find_order(
            self.account(account_id), symbol, order_id, client_id, open_only=False
        )
        if order is None:
            raise EngineReject(-2013, "Order does not exist.")
        return self._snapshot(order)

    def open_orders(self, account_id: str, symbol: str | None = None) -> list[Order]:
        return [
            self._snapshot(o)
            for o in self.account(account_id).orders.values()
            if o.is_open and (symbol is None or o.symbol == symbol)
        ]

    def all_orders(self, account_id: str, symbol: str) -> list[Order]:
        return [
            self._snapshot(o)
            for o in self.account(account_id).orders.values()
            if o.symbol == symbol
        ]

    def cancel_all_orders(self, account_id: str, symbol: str) -> int:
        account = self.account(account_id)
        targets = [o for o in account.orders.values() if o.symbol == symbol and o.is_open]
        for order in targets:
            self._close_order(account, order, "CANCELED")
        return len(targets)

    # --- algo orders ---------------------------------------------------------------------------

    def place_algo(self, account_id: str, request: NewAlgoOrder) -> AlgoOrder:
        account = self.account(account_id)
        now = self.clock()
        price_now = self._require_price(request.symbol)
        self._check_position_side(account, request.position_side)
        client_id = request.client_id or self._auto_client_id()
        self._check_duplicate_client_id(account, client_id, algo=True)
        self._check_max_orders(account, request.symbol)
        if sum(1 for a in account.algos.values() if a.is_open) >= MAX_OPEN_ALGO_ORDERS:
            raise EngineReject(-4045, "Reach max stop order limit.")
        if self._would_trigger(request, price_now):
            raise EngineReject(-2021, "Order would immediately trigger.")
        algo = AlgoOrder(
            algo_id=next(self._algo_ids),
            client_algo_id=client_id,
            symbol=request.symbol,
            side=request.side,
            order_type=request.type,
            time_in_force=request.time_in_force,
            quantity=request.quantity,
            price=request.price,
            trigger_price=request.trigger_price,
            reduce_only=request.reduce_only,
            close_position=request.close_position,
            position_side=request.position_side,
            working_type=request.working_type,
            price_protect=request.price_protect,
            status="NEW",
            create_time_ms=now,
            update_time_ms=now,
            activate_price=request.activate_price,
            callback_rate=request.callback_rate,
        )
        account.algos[algo.algo_id] = algo
        self._emit(AlgoEvent(account_id, self._snapshot_algo(algo), now))
        return self._snapshot_algo(algo)

    @staticmethod
    def _would_trigger(request: NewAlgoOrder, price_now: Decimal) -> bool:
        if request.type == "TRAILING_STOP_MARKET":
            if request.activate_price is None:
                return False
            return (request.side == "BUY" and request.activate_price >= price_now) or (
                request.side == "SELL" and request.activate_price <= price_now
            )
        fires_upward = (request.type in ("STOP", "STOP_MARKET")) == (request.side == "BUY")
        if fires_upward:
            return price_now >= request.trigger_price
        return price_now <= request.trigger_price

    def cancel_algo(
        self, account_id: str, *, algo_id: int | None = None, client_id: str | None = None
    ) -> AlgoOrder:
        account = self.account(account_id)
        algo = self._find_algo(account, algo_id, client_id, open_only=True)
        if algo is None:
            raise EngineReject(-2011, "Unknown order sent.")
        self._close_algo(account, algo, "CANCELED")
        return self._snapshot_algo(algo)

    def get_algo(
        self, account_id: str, *, algo_id: int | None = None, client_id: str | None = None
    ) -> AlgoOrder:
        algo = self._find_algo(self.account(account_id), algo_id, client_id, open_only=False)
        if algo is None:
            raise EngineReject(-2013, "Order does not exist.")
        return self._snapshot_algo(algo)

    def open_algos(self, account_id: str, symbol: str | None = None) -> list[AlgoOrder]:
        return [
            self._snapshot_algo(a)
            for a in self.account(account_id).algos.values()
            if a.is_open and (symbol is None or a.symbol == symbol)
        ]

    def all_algos(self, account_id: str, symbol: str) -> list[AlgoOrder]:
        return [
            self._snapshot_algo(a)
            for a in self.account(account_id).algos.values()
            if a.symbol == symbol
        ]

    def cancel_all_algos(self, account_id: str, symbol: str) -> int:
        account = self.account(account_id)
        targets = [a for a in account.algos.values() if a.symbol == symbol and a.is_open]
        for algo in targets:
            self._close_algo(account, algo, "CANCELED")
        return len(targets)

    def _trigger(self, account: Account, algo: AlgoOrder, level: Decimal) -> None:
        now = self.clock()
        algo.trigger_time_ms = now
        qty = self._closing_qty(account, algo) if algo.close_position else algo.quantity
        if algo.reduce_only and not algo.close_position:
            qty = min(qty, self._reducible(account, algo.symbol, algo.side, algo.position_side))
        if (algo.close_position or algo.reduce_only) and qty <= 0:
            algo.fail_reason = "Reduce Only reject"
            self._close_algo(account, algo, "EXPIRED")
            return
        is_market = algo.order_type in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
        reducing = algo.reduce_only or algo.close_position
        if not reducing:
            try:
                self._check_margin(account, algo.symbol, algo.side, algo.position_side, qty, level)
            except EngineReject as exc:
                algo.fail_reason = exc.msg
                self._close_algo(account, algo, "REJECTED")
                return
        order = Order(
            order_id=next(self._order_ids),
            client_id=algo.client_algo_id,
            symbol=algo.symbol,
            side=algo.side,
            type="MARKET" if is_market else "LIMIT",
            time_in_force=algo.time_in_force,
            quantity=qty,
            price=ZERO if is_market else algo.price,
            reduce_only=algo.reduce_only,
            close_position=algo.close_position,
            position_side=algo.position_side,
            status="NEW",
            time_ms=now,
            update_time_ms=now,
            orig_type=algo.order_type,
            stop_price=algo.trigger_price,
            working_type=algo.working_type,
            price_protect=algo.price_protect,
        )
        account.orders[order.order_id] = order
        algo.actual_order_id = order.order_id
        algo.status = "TRIGGERED"
        algo.update_time_ms = now
        self._emit(AlgoEvent(account.account_id, self._snapshot_algo(algo), now))
        self._emit(OrderEvent(account.account_id, self._snapshot(order), "NEW", now))
        # The price when the trigger fires is the trigger level, not the end of the segment
        # being walked (``self.prices`` already holds that end).
        current = level
        if is_market:
            self._fill(
                account, order, qty, self._slipped(algo.symbol, algo.side, level), maker=False
            )
        elif (order.side == "BUY" and order.price >= current) or (
            order.side == "SELL" and order.price <= current
        ):
            self._fill(account, order, qty, current, maker=False)
        if not order.is_open:
            self._finish_algo(account, algo)

    def _finish_algo(self, account: Account, algo: AlgoOrder) -> None:
        if algo.status == "TRIGGERED":
            algo.status = "FINISHED"
            algo.update_time_ms = self.clock()
            self._emit(
                AlgoEvent(account.account_id, self._snapshot_algo(algo), algo.update_time_ms)
            )

    # --- fills and positions -------------------------------------------------------------------

    def _fill(
        self, account: Account, order: Order, qty: Decimal, price: Decimal, *, maker: bool
    ) -> None:
        if order.reduce_only or order.close_position:
            qty = min(qty, self._reducible(account, order.symbol, order.side, order.position_side))
        if qty <= 0:
            self._close_order(account, order, "EXPIRED")
            return
        now = self.clock()
        quote = qty * price
        fee_rate = self.fees.maker if maker else self.fees.taker
        asset = _quote_asset(order.symbol)
        commission = (quote * fee_rate).quantize(Decimal("0.00000001"))
        realized = self._apply_position(
            account, order.symbol, order.side, order.position_side, qty, price, now
        )
        account.balances[asset] = account.balances.get(asset, ZERO) + realized - commission
        trade = Trade(
            trade_id=next(self._trade_ids),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote,
            commission=commission,
            commission_asset=asset,
            realized_pnl=realized,
            maker=maker,
            position_side=order.position_side,
            time_ms=now,
        )
        account.trades.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote
        order.status = "FILLED" if order.executed_qty >= order.quantity else "PARTIALLY_FILLED"
        order.update_time_ms = now
        self._emit(OrderEvent(account.account_id, self._snapshot(order), "TRADE", now, trade))
        key = (order.symbol, self._position_key(account, order.position_side))
        self._emit(
            AccountEvent(
                account.account_id,
                "ORDER",
                {asset: account.balances[asset]},
                (replace(account.positions[key]),),
                now,
            )
        )
        if not order.is_open:
            self._after_close(account, order)

    def _apply_position(
        self, account: Account, symbol: str, side: str, position_side: str, qty: Decimal,
        price: Decimal, now: int,
    ) -> Decimal:  # fmt: skip
        """Apply a fill to the position; return the realized PnL."""
        key = (symbol, self._position_key(account, position_side))
        position = account.positions.setdefault(key, PositionState(symbol, key[1]))
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if position.amount == 0 or (position.amount > 0) == (signed > 0):
            total = abs(position.amount) + qty
            position.entry_price = (
                abs(position.amount) * position.entry_price + qty * price
            ) / total
            position.amount += signed
        else:
            closing = min(qty, abs(position.amount))
            direction = ONE if position.amount > 0 else -ONE
            realized = closing * (price - position.entry_price) * direction
            position.amount += signed
            if position.amount == 0:
                position.entry_price = ZERO
            elif (position.amount > 0) != (direction > 0):  # flipped through zero
                position.entry_price = price
        position.update_time_ms = now
        return realized

    @staticmethod
    def _position_key(account: Account, position_side: str) -> str:
        return position_side if account.dual_side else "BOTH"

    def _position(self, account: Account, symbol: str, position_side: str) -> PositionState:
        key = (symbol, self._position_key(account, position_side))
        return account.positions.get(key) or PositionState(symbol, key[1])

    def _reducible(self, account: Account, symbol: str, side: str, position_side: str) -> Decimal:
        """How much an order on ``side`` can reduce without opening the other way."""
        amount = self._position(account, symbol, position_side).amount
        if side == "SELL" and amount > 0:
            return amount
        if side == "BUY" and amount < 0:
            return -amount
        return ZERO

    def _closing_qty(self, account: Account, algo: AlgoOrder) -> Decimal:
        return self._reducible(account, algo.symbol, algo.side, algo.position_side)

    def _after_close(self, account: Account, order: Order) -> None:
        for algo in account.algos.values():
            if algo.actual_order_id == order.order_id:
                self._finish_algo(account, algo)

    def _close_order(self, account: Account, order: Order, status: str) -> None:
        now = self.clock()
        order.status = status
        order.update_time_ms = now
        self._emit(OrderEvent(account.account_id, self._snapshot(order), status, now))
        self._after_close(account, order)

    def _close_algo(self, account: Account, algo: AlgoOrder, status: str) -> None:
        algo.status = status
        algo.update_time_ms = self.clock()
        self._emit(AlgoEvent(account.account_id, self._snapshot_algo(algo), algo.update_time_ms))

    # --- checks --------------------------------------------------------------------------------

    def _require_price(self, symbol: str) -> Decimal:
        price = self.prices.get(symbol)
        if price is None:
            raise EngineReject(-1121, "Invalid symbol.")
        return price

    @staticmethod
    def _check_position_side(account: Account, position_side: str) -> None:
        if account.dual_side != (position_side in ("LONG", "SHORT")):
            raise EngineReject(-4061, "Order's position side does not match user's setting.")

    @staticmethod
    def _check_duplicate_client_id(account: Account, client_id: str, *, algo: bool) -> None:
        live: Iterable[str] = (
            (a.client_algo_id for a in account.algos.values() if a.is_open)
            if algo
            else (o.client_id for o in account.orders.values() if o.is_open)
        )
        if client_id in set(live):
            raise EngineReject(-4116, "ClientOrderId is duplicated.")

    @staticmethod
    def _check_max_orders(account: Account, symbol: str, limit: int = 200) -> None:
        count = sum(1 for o in account.orders.values() if o.symbol == symbol and o.is_open)
        count += sum(1 for a in account.algos.values() if a.symbol == symbol and a.is_open)
        if count >= limit:
            raise EngineReject(-2025, "Reach max open order limit.")

    def _check_reduce_only(
        self, account: Account, symbol: str, side: str, position_side: str
    ) -> None:
        if self._reducible(account, symbol, side, position_side) <= 0:
            raise EngineReject(-2022, "ReduceOnly Order is rejected.")

    def _check_hedge_close(self, account: Account, request: NewOrder) -> None:
        closing = (request.position_side == "LONG" and request.side == "SELL") or (
            request.position_side == "SHORT" and request.side == "BUY"
        )
        if closing and request.quantity > self._reducible(
            account, request.symbol, request.side, request.position_side
        ):
            raise EngineReject(-2022, "ReduceOnly Order is rejected.")

    def _check_margin(
        self,
        account: Account,
        symbol: str,
        side: str,
        position_side: str,
        qty: Decimal,
        price: Decimal,
    ) -> None:
        increasing = qty - min(qty, self._reducible(account, symbol, side, position_side))
        if increasing <= 0:
            return
        needed = increasing * price / self.leverage(account.account_id, symbol)
        if needed > self.available_balance(account.account_id, _quote_asset(symbol)):
            raise EngineReject(-2019, "Margin is insufficient.")

    # --- views ---------------------------------------------------------------------------------

    def unrealized_pnl(self, account_id: str, asset: str = "USDT") -> Decimal:
        total = ZERO
        for position in self.account(account_id).positions.values():
            price = self.prices.get(position.symbol)
            if position.amount and price is not None and _quote_asset(position.symbol) == asset:
                total += position.amount * (price - position.entry_price)
        return total

    def available_balance(self, account_id: str, asset: str = "USDT") -> Decimal:
        account = self.account(account_id)
        used = ZERO
        for position in account.positions.values():
            price = self.prices.get(position.symbol)
            if position.amount and price is not None and _quote_asset(position.symbol) == asset:
                used += abs(position.amount) * price / self.leverage(account_id, position.symbol)
        for order in account.orders.values():
            reserves = order.is_open and order.type == "LIMIT" and not order.reduce_only
            if reserves and _quote_asset(order.symbol) == asset:
                used += order.remaining * order.price / self.leverage(account_id, order.symbol)
        wallet = account.balances.get(asset, ZERO)
        return max(ZERO, wallet + self.unrealized_pnl(account_id, asset) - used)

    def positions(self, account_id: str) -> list[PositionState]:
        return [replace(p) for p in self.account(account_id).positions.values()]

    def trades(self, account_id: str, symbol: str) -> list[Trade]:
        return [t for t in self.account(account_id).trades if t.symbol == symbol]

    # --- helpers -------------------------------------------------------------------------------

    def _slipped(self, symbol: str, side: str, price: Decimal) -> Decimal:
        tick = self.tick_sizes.get(symbol, Decimal("0.00000001"))
        if side == "BUY":
            moved = price * (ONE + self.slippage)
            return (moved / tick).to_integral_value(rounding=ROUND_CEILING) * tick
        moved = price * (ONE - self.slippage)
        return (moved / tick).to_integral_value(rounding=ROUND_FLOOR) * tick

    def _auto_client_id(self) -> str:
        return f"emu{next(self._client_ids):019d}"

    @staticmethod
    def _find_order(
        account: Account,
        symbol: str,
        order_id: int | None,
        client_id: str | None,
        *,
        open_only: bool,
    ) -> Order | None:
        # Latest first: a client id may be reused once its earlier order is closed.
        for order in reversed(account.orders.values()):
            if order.symbol != symbol or (open_only and not order.is_open):
                continue
            if (order_id is not None and order.order_id == order_id) or (
                order_id is None and client_id is not None and order.client_id == client_id
            ):
                return order
        return None

    @staticmethod
    def _find_algo(
        account: Account, algo_id: int | None, client_id: str | None, *, open_only: bool
    ) -> AlgoOrder | None:
        for algo in reversed(account.algos.values()):
            if open_only and not algo.is_open:
                continue
            if (algo_id is not None and algo.algo_id == algo_id) or (
                algo_id is None and client_id is not None and algo.client_algo_id == client_id
            ):
                return algo
        return None

    @staticmethod
    def _snapshot(order: Order) -> Order:
        return replace(order)

    @staticmethod
    def _snapshot_algo(algo: AlgoOrder) -> AlgoOrder:
        return replace(algo)

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)
