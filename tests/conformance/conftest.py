"""Targets for the conformance cases: the emulator always, the Binance testnet (demo-fapi) when
``BINANCE_TESTNET_API`` and ``BINANCE_TESTNET_SECRET`` are set.

Every case runs unchanged against each target. Cases are safe on a real account: test orders
(``/order/test``), BUY limits resting below the market, conditional BUYs whose triggers are far
away, all cancelled by a finalizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal

import pytest

from execution.emulator.runner import EmulatorThread
from execution.venues.base import OrderRequest, OrderType, Side
from execution.venues.binance import TESTNET_URL, BinanceFuturesVenue, VenueSettings
from tests.conformance.support import (
    EMU_KEY,
    EMU_SECRET,
    SYMBOL,
    Book,
    Target,
    book,
    data_for,
    running_emulator,
)

TESTNET_SKIP = "BINANCE_TESTNET_API/SECRET not set: testnet conformance skipped"


def _seed_emulator_account(venue: BinanceFuturesVenue) -> None:
    """Two fills and an open long on XRPUSDT, so trades and positions have rows to parse."""
    for side, qty in ((Side.BUY, Decimal(20)), (Side.SELL, Decimal(10))):
        venue.place_order(
            OrderRequest(symbol="XRPUSDT", side=side, type=OrderType.MARKET, quantity=qty)
        )


@pytest.fixture(scope="module", params=["emulator", "testnet"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "testnet":
        api_key = os.environ.get("BINANCE_TESTNET_API", "")
        api_secret = os.environ.get("BINANCE_TESTNET_SECRET", "")
        if not api_key or not api_secret:
            pytest.skip(TESTNET_SKIP)
        venue = BinanceFuturesVenue(
            api_key=api_key, api_secret=api_secret, settings=VenueSettings(base_url=TESTNET_URL)
        )
        venue.cancel_all(symbol=SYMBOL)  # start from a clean book, as the emulator does
        yield Target("testnet", TESTNET_URL, api_key, api_secret, venue)
        return
    with running_emulator(data=data_for("BTCUSDT", "XRPUSDT")) as thread:
        yield _emulator_target(thread)


def _emulator_target(thread: EmulatorThread) -> Target:
    base_url = f"{thread.base_url}/fapi"
    venue = BinanceFuturesVenue(
        api_key=EMU_KEY, api_secret=EMU_SECRET, settings=VenueSettings(base_url=base_url)
    )
    _seed_emulator_account(venue)
    return Target(
        "emulator",
        base_url,
        EMU_KEY,
        EMU_SECRET,
        venue,
        seeded_trades=[(Side.BUY, Decimal(20)), (Side.SELL, Decimal(10))],
        seeded_position=Decimal(10),
        trade_symbol="XRPUSDT",
    )


@pytest.fixture
def btc(target: Target) -> Iterator[Book]:
    """BTCUSDT's rules and mark on the target. The teardown (a finalizer: it runs after a
    failed case too) cancels every open order there, regular and algo."""
    yield book(target.venue, SYMBOL)
    target.venue.cancel_all(symbol=SYMBOL)
