"""Fixtures for the exchange-emulator tests (see ``emulator_fixtures.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from binance.client import Client

from execution.emulator.server import AccountSpec
from tests.execution.emulator_fixtures import Harness, running_emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[Harness]:
    """One emulator per test module: frozen market, default Binance limits."""
    with running_emulator("emu") as harness:
        yield harness


@pytest.fixture
def emu_clean(emu: Harness) -> Harness:
    """The module's emulator with rate-limit counters, bans and faults reset."""
    emu.reset()
    return emu


@pytest.fixture
def emu_account(emu_clean: Harness) -> AccountSpec:
    """An account nobody has used yet: flat, no orders, 10000 USDT."""
    return emu_clean.fresh_account()


@pytest.fixture
def emu_client(emu_clean: Harness, emu_account: AccountSpec) -> Client:
    """An unmodified python-binance client for ``emu_account``."""
    return emu_clean.client(emu_account)


@pytest.fixture(scope="module")
def emu_small_limits() -> Iterator[Harness]:
    """An emulator with tiny limits: 20 weight per minute, 3 orders per 10 s, 1 s bans."""
    with running_emulator(
        "small", weight_per_minute=20, orders_per_10s=3, ban_seconds=1
    ) as harness:
        yield harness


@pytest.fixture
def emu_small(emu_small_limits: Harness) -> Harness:
    """The tiny-limits emulator with counters, bans and faults reset."""
    emu_small_limits.reset()
    return emu_small_limits


@pytest.fixture
def emu_fresh() -> Iterator[Callable[..., Harness]]:
    """A factory of emulators of this test's own (their market may be advanced freely)."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Harness:
            return stack.enter_context(running_emulator("fresh", **overrides))

        yield start
