"""Shared by the conformance cases and the venue tests: an emulator with a known account on
127.0.0.1, ``BinanceFuturesVenue`` instances pointed at it, and order sizing from a symbol's
live rules (so the same sizes are valid on the emulator and on the Binance testnet).

No mocks: the emulator is a real HTTP server; every call goes through python-binance.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

from execution.emulator.runner import EmulatorThread
from execution.emulator.server import DEFAULT_DATA, AccountSpec, Emulator, EmulatorConfig
from execution.governor import RateGovernor
from execution.rules import SymbolRules, round_to_step
from execution.venues.base import Side
from execution.venues.binance import BinanceFuturesVenue, VenueSettings

EMU_KEY = "ConformanceKey0001AbCdEfGh"
EMU_SECRET = "conformance-secret-0001-0123456789abcdef"
#: speed 0: market time stands still, so prices (and what would trigger) do not move.
FROZEN = Decimal(0)
HTTP_TIMEOUT_S = 10
#: The symbol the conformance cases trade (listed on the emulator and on the testnet).
SYMBOL = "BTCUSDT"


def data_for(*symbols: str) -> tuple[tuple[str, Any, Decimal], ...]:
    """The bundled candle files for ``symbols`` only (fewer files: a faster start)."""
    return tuple(row for row in DEFAULT_DATA if row[0] in symbols)


@contextmanager
def running_emulator(
    *, balances: dict[str, Decimal] | None = None, **overrides: Any
) -> Iterator[EmulatorThread]:
    """A frozen-market emulator with the control API and one account (``EMU_KEY``)."""
    account = AccountSpec(
        api_key=EMU_KEY,
        api_secret=EMU_SECRET,
        balances=balances or {"USDT": Decimal(100_000)},
    )
    config = EmulatorConfig(
        **{"accounts": (account,), "speed": FROZEN, "control": True, **overrides}
    )
    with EmulatorThread(config) as thread:
        yield thread


def emulator_of(thread: EmulatorThread) -> Emulator:
    assert thread.emulator is not None
    return thread.emulator


def control(thread: EmulatorThread, action: str, **body: Any) -> dict[str, Any]:
    """POST to the emulator's control API (``/_emulator/<action>``)."""
    response = requests.post(
        f"{thread.base_url}/_emulator/{action}", json=body, timeout=HTTP_TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def weight_charged(thread: EmulatorThread) -> int:
    """All request weight the emulator has charged so far, over every IP and minute: it grows
    with every request the emulator serves (and never for one refused by an IP ban)."""
    emulator = emulator_of(thread)
    return int(thread.call(lambda: sum(emulator.weight_used.values())))


def emulator_venue(
    thread: EmulatorThread,
    *,
    api_key: str = EMU_KEY,
    api_secret: str = EMU_SECRET,
    governor: RateGovernor | None = None,
    wall_ms: Callable[[], int] | None = None,
    **settings: Any,
) -> BinanceFuturesVenue:
    """A venue for the emulator's account; ``settings`` override ``VenueSettings`` fields."""
    extra: dict[str, Any] = {} if wall_ms is None else {"wall_ms": wall_ms}
    return BinanceFuturesVenue(
        api_key=api_key,
        api_secret=api_secret,
        settings=VenueSettings(base_url=f"{thread.base_url}/fapi", **settings),
        governor=governor,
        **extra,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_for_window(period_ms: int, need_ms: int) -> None:
    """Sleep into the next wall-clock bucket of ``period_ms`` if fewer than ``need_ms`` remain:
    Binance (and the emulator, and the governor) count in buckets ``now // period``."""
    left = period_ms - now_ms() % period_ms
    if left < need_ms:
        time.sleep(left / 1000 + 0.05)


def client_id(tag: str) -> str:
    """A fresh client order id (valid for Binance: at most 36 of ``[.A-Za-z0-9:/_-]``)."""
    return f"cf-{uuid.uuid4().hex[:16]}-{tag}"[:36]


@dataclass(frozen=True)
class Book:
    """One symbol's rules and mark price on a venue, and order sizes valid against them."""

    symbol: str
    rules: SymbolRules
    mark: Decimal

    def on_tick(self, value: Decimal, *, up: bool = False) -> Decimal:
        """``value`` on the symbol's price grid (down unless ``up``)."""
        return round_to_step(value, self.rules.tick_size, up=up, origin=self.rules.min_price)

    def price_at(self, factor: str, *, up: bool = False) -> Decimal:
        """``mark * factor`` on the symbol's price grid (down unless ``up``)."""
        return self.on_tick(self.mark * Decimal(factor), up=up)

    def qty_for(self, price: Decimal, *, notional_factor: str = "1.5") -> Decimal:
        """The smallest quantity on the step whose notional at ``price`` is at least
        ``notional_factor`` times MIN_NOTIONAL (and never below minQty)."""
        wanted = self.rules.min_notional * Decimal(notional_factor) / price
        qty = round_to_step(wanted, self.rules.step_size, up=True, origin=self.rules.min_qty)
        return max(qty, self.rules.min_qty)


def book(venue: BinanceFuturesVenue, symbol: str) -> Book:
    return Book(symbol=symbol, rules=venue.rules_for(symbol), mark=venue.mark_price(symbol))


@dataclass
class Target:
    """A venue to check the cases against (see ``tests/conformance/conftest.py``)."""

    name: str
    base_url: str
    api_key: str
    api_secret: str
    venue: BinanceFuturesVenue
    #: What the emulator's account was seeded with; None on the testnet (unknown history).
    seeded_trades: list[tuple[Side, Decimal]] | None = None
    seeded_position: Decimal | None = None
    trade_symbol: str = SYMBOL

    def venue_with(self, *, api_secret: str) -> BinanceFuturesVenue:
        """Another venue for the same account and URL, signing with ``api_secret``."""
        return BinanceFuturesVenue(
            api_key=self.api_key,
            api_secret=api_secret,
            settings=VenueSettings(base_url=self.base_url),
        )
