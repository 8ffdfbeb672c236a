"""The venue port: one narrow interface for every exchange adapter, Decimal in and out.

Implementations: ``BinanceFuturesVenue`` (python-binance; the emulator is reached through it),
``PaperVenue`` (in-process, for dry-run and backtests). Pure data here: no Django, no network.

Regular orders (LIMIT, MARKET) and conditional ones (STOP*, TAKE_PROFIT*, TRAILING_STOP_MARKET)
live on different Binance endpoints since 2025-12-09 (the Algo Order API); a ``VenueOrder`` says
which with ``is_algo``, and listing or cancelling "all" covers both kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from execution.rules import SymbolRules


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class PositionSide(StrEnum):
    BOTH = "BOTH"
    LONG = "LONG"
    SHORT = "SHORT"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP = "STOP"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"


#: Types that Binance accepts only on the Algo Order API (``/fapi/v1/algoOrder``).
CONDITIONAL_TYPES = frozenset(
    {
        OrderType.STOP,
        OrderType.STOP_MARKET,
        OrderType.TAKE_PROFIT,
        OrderType.TAKE_PROFIT_MARKET,
        OrderType.TRAILING_STOP_MARKET,
    }
)


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"
    GTD = "GTD"


class WorkingType(StrEnum):
    MARK_PRICE = "MARK_PRICE"
    CONTRACT_PRICE = "CONTRACT_PRICE"


@dataclass(frozen=True)
class OrderRequest:
    """What we ask the venue for. ``client_id`` is our idempotency key (newClientOrderId or
    clientAlgoId): derive it deterministically and persist it before sending."""

    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    position_side: PositionSide = PositionSide.BOTH
    reduce_only: bool = False
    close_position: bool = False
    working_type: WorkingType | None = None
    price_protect: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    client_id: str | None = None

    @property
    def is_conditional(self) -> bool:
        return self.type in CONDITIONAL_TYPES


@dataclass(frozen=True)
class VenueOrder:
    """An order as the venue reports it (regular or algo).

    ``status`` is the venue's own word: for regular orders NEW, PARTIALLY_FILLED, FILLED,
    CANCELED, EXPIRED, EXPIRED_IN_MATCH, REJECTED; for algo orders NEW, TRIGGERING, TRIGGERED,
    FINISHED, CANCELED, EXPIRED, REJECTED. ``actual_order_id`` is the regular order an algo order
    became when it triggered.
    """

    symbol: str
    client_id: str
    venue_id: int
    is_algo: bool
    status: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal
    trigger_price: Decimal | None
    executed_qty: Decimal
    avg_price: Decimal
    reduce_only: bool
    close_position: bool
    position_side: PositionSide
    update_time_ms: int
    actual_order_id: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Balance:
    asset: str
    wallet_balance: Decimal
    available_balance: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True)
class Position:
    """``amount`` is signed: positive long, negative short (one-way mode: side BOTH)."""

    symbol: str
    position_side: PositionSide
    amount: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    update_time_ms: int


@dataclass(frozen=True)
class UserTrade:
    symbol: str
    trade_id: int
    order_id: int
    side: Side
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    position_side: PositionSide
    time_ms: int


@dataclass(frozen=True)
class Kline:
    """One candle; ``close_time_ms`` is open time + interval - 1 (Binance's convention)."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time_ms: int
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    taker_buy_base: Decimal = Decimal(0)
    taker_buy_quote: Decimal = Decimal(0)


class Venue(Protocol):
    """The port. Every method may raise the classes of ``execution.venues.errors``."""

    name: str

    def server_time_ms(self) -> int: ...

    def symbol_rules(self) -> dict[str, SymbolRules]: ...

    def klines(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Kline]: ...

    def place_order(self, request: OrderRequest) -> VenueOrder:
        """LIMIT or MARKET on the regular endpoint."""
        ...

    def place_algo_order(self, request: OrderRequest) -> VenueOrder:
        """A conditional type on the Algo Order API, with ``client_id`` as clientAlgoId."""
        ...

    def cancel_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder: ...

    def cancel_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder: ...

    def get_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder: ...

    def get_algo_order(
        self, *, symbol: str, client_id: str | None = None, venue_id: int | None = None
    ) -> VenueOrder: ...

    def open_orders(self, *, symbol: str | None = None) -> list[VenueOrder]:
        """Open orders of both kinds (regular and algo)."""
        ...

    def cancel_all(self, *, symbol: str) -> None:
        """Cancel every open order of both kinds on ``symbol``."""
        ...

    def balances(self) -> list[Balance]: ...

    def positions(self, *, symbol: str | None = None) -> list[Position]: ...

    def user_trades(
        self, *, symbol: str, start_ms: int | None = None, from_id: int | None = None
    ) -> list[UserTrade]: ...

    def set_leverage(self, *, symbol: str, leverage: int) -> int: ...

    def position_mode_dual(self) -> bool: ...

    def set_position_mode(self, *, dual: bool) -> None: ...

    def create_listen_key(self) -> str: ...

    def keepalive_listen_key(self, listen_key: str) -> None: ...

    def close_listen_key(self, listen_key: str) -> None: ...
