"""``PersistentPaperVenue``: the dry-run venue of one bot, shared by every worker process.

Each call that changes something (placing, cancelling, feeding prices, leverage, position mode)
locks the bot's ``PaperAccount`` row, restores the matching engine from it, runs the
``PaperVenue`` method, and saves the engine back, all in one short transaction. The paper
exchange's state is the database row, so this transaction *is* the exchange; callers still call
the venue outside their own transactions, as with a real one. Queries (orders, trades,
balances, positions) read the last committed state, without the lock and without writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction

from execution.emulator.exchange_info import KNOWN_SYMBOLS, exchange_info
from execution.engine import FeeSchedule, MatchingEngine
from execution.models import PaperAccount
from execution.rules import SymbolRules, parse_exchange_info
from execution.venues.base import (
    Balance,
    Kline,
    OrderRequest,
    Position,
    UserTrade,
    VenueOrder,
)
from execution.venues.paper import PaperVenue

T = TypeVar("T")
ACCOUNT = "paper"
#: In the account row's state: the open time of the last candle fed, per symbol.
FED_KEY = "fed_open_ms"


@cache
def paper_rules() -> dict[str, SymbolRules]:
    """The emulator's realistic exchangeInfo rows (BTCUSDT, ETHUSDT, XRPUSDT)."""
    payload = exchange_info({s: Decimal(1) for s in KNOWN_SYMBOLS}, server_time=0)
    return parse_exchange_info(payload)


def _wall_ms() -> int:
    # The market clock (trader.clock): the wall clock, or the emulator's faster replay clock.
    from trader.clock import market_now_ms

    return market_now_ms()


class PersistentPaperVenue:
    """The venue port over one bot's paper account. See the module docstring."""

    name = "paper"

    def __init__(self, *, bot_id: int, clock: Callable[[], int] = _wall_ms) -> None:
        self.bot_id = bot_id
        self.clock = clock
        self.account_key = f"paper-bot-{bot_id}"

    def _new_engine(self) -> MatchingEngine:
        rules = paper_rules()
        fees = FeeSchedule(
            maker=Decimal(str(settings.PAPER_MAKER_FEE)),
            taker=Decimal(str(settings.PAPER_TAKER_FEE)),
        )
        engine = MatchingEngine(
            clock=self.clock, tick_sizes={s: r.tick_size for s, r in rules.items()}, fees=fees
        )
        engine.add_account(ACCOUNT, {"USDT": Decimal(str(settings.PAPER_BALANCE_USDT))})
        return engine

    @contextmanager
    def _session(self) -> Iterator[PaperVenue]:
        with transaction.atomic():
            row, _ = PaperAccount.objects.select_for_update().get_or_create(
                bot_id=self.bot_id, defaults={"state": {}}
            )
            engine = self._new_engine()
            if row.state:
                engine.load_state(row.state)
            yield PaperVenue(
                engine=engine, account_id=ACCOUNT, rules=paper_rules(), clock=self.clock
            )
            fed = (row.state or {}).get(FED_KEY)
            engine.forget_history(ACCOUNT, keep=settings.PAPER_HISTORY_KEEP)
            row.state = engine.dump_state()
            if fed:
                row.state[FED_KEY] = fed
            row.save(update_fields=["state", "updated_at"])

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._session() as venue:
            return getattr(venue, method)(*args, **kwargs)

    def _peek(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A query: the account's last committed state, read without locking or saving it (as
        a query to an exchange sees it between two writes). Most calls are queries: the
        order monitor and the paper sync ask after every open order."""
        state = PaperAccount.objects.filter(bot_id=self.bot_id).values_list("state", flat=True)
        engine = self._new_engine()
        stored = state.first()
        if stored:
            engine.load_state(stored)
        venue = PaperVenue(engine=engine, account_id=ACCOUNT, rules=paper_rules(), clock=self.clock)
        return getattr(venue, method)(*args, **kwargs)

    # --- market ---------------------------------------------------------------------------------

    def feed_price(self, symbol: str, price: Decimal, time_ms: int | None = None) -> None:
        """Move the paper market of this account to ``price`` (matching on the way)."""
        self._call("feed_price", symbol, price, self.clock() if time_ms is None else time_ms)

    def feed(self, symbol: str, candle: Kline) -> None:
        self._call("feed", symbol, candle)

    def feed_closed(self, symbol: str, candle: Kline) -> bool:
        """Walk a closed candle once: a candle at or before the last one fed to this account
        for ``symbol`` is skipped (a redelivered task must not walk the same stretch twice,
        which could fill an order placed since at a price already left behind)."""
        with transaction.atomic():
            row, _ = PaperAccount.objects.select_for_update().get_or_create(
                bot_id=self.bot_id, defaults={"state": {}}
            )
            fed = dict((row.state or {}).get(FED_KEY) or {})
            if int(fed.get(symbol, -1)) >= candle.open_time_ms:
                return False
            with self._session() as venue:
                venue.feed(symbol, candle)
            row.refresh_from_db(fields=["state"])
            fed[symbol] = candle.open_time_ms
            row.state[FED_KEY] = fed
            row.save(update_fields=["state", "updated_at"])
        return True

    # --- the port -------------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        return self.clock()

    def symbol_rules(self) -> dict[str, SymbolRules]:
        return paper_rules()

    def rules_for(self, symbol: str) -> SymbolRules:
        return self._peek("rules_for", symbol)

    def mark_price(self, symbol: str) -> Decimal | None:
        return self._peek("mark_price", symbol)

    def klines(self, **kwargs: Any) -> list[Kline]:
        return self._peek("klines", **kwargs)

    def place_order(self, request: OrderRequest) -> VenueOrder:
        return self._call("place_order", request)

    def place_algo_order(self, request: OrderRequest) -> VenueOrder:
        return self._call("place_algo_order", request)

    def cancel_order(self, **kwargs: Any) -> VenueOrder:
        return self._call("cancel_order", **kwargs)

    def cancel_algo_order(self, **kwargs: Any) -> VenueOrder:
        return self._call("cancel_algo_order", **kwargs)

    def get_order(self, **kwargs: Any) -> VenueOrder:
        return self._peek("get_order", **kwargs)

    def get_algo_order(self, **kwargs: Any) -> VenueOrder:
        return self._peek("get_algo_order", **kwargs)

    def open_orders(self, **kwargs: Any) -> list[VenueOrder]:
        return self._peek("open_orders", **kwargs)

    def cancel_all(self, *, symbol: str) -> None:
        self._call("cancel_all", symbol=symbol)

    def balances(self) -> list[Balance]:
        return self._peek("balances")

    def positions(self, **kwargs: Any) -> list[Position]:
        return self._peek("positions", **kwargs)

    def user_trades(self, **kwargs: Any) -> list[UserTrade]:
        return self._peek("user_trades", **kwargs)

    def set_leverage(self, *, symbol: str, leverage: int) -> int:
        return self._call("set_leverage", symbol=symbol, leverage=leverage)

    def position_mode_dual(self) -> bool:
        return self._peek("position_mode_dual")

    def set_position_mode(self, *, dual: bool) -> None:
        self._call("set_position_mode", dual=dual)

    def create_listen_key(self) -> str:
        return self._peek("create_listen_key")

    def keepalive_listen_key(self, listen_key: str) -> None:
        self._peek("keepalive_listen_key", listen_key)

    def close_listen_key(self, listen_key: str) -> None:
        self._peek("close_listen_key", listen_key)
