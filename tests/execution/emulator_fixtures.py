"""Helpers for the exchange-emulator tests (``test_emulator.py``).

A :class:`Harness` wraps a started :class:`EmulatorThread` on 127.0.0.1 with known accounts and
a frozen market (``speed=0``: only ``/_emulator/advance`` moves market time). It hands out a
fresh account per test (each account starts flat with 10000 USDT), builds unmodified
python-binance clients pointed at the emulator, and sends hand-built, hand-signed raw requests
for the wire-level cases. No mocks: everything goes over real HTTP/WebSocket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Generic, Protocol, TypeVar

import requests
from binance.client import Client

from execution.emulator.runner import EmulatorThread
from execution.emulator.server import AccountSpec, Emulator, EmulatorConfig

T = TypeVar("T")

#: Accounts per emulator; each test takes unused ones, so state never leaks between tests.
POOL_SIZE = 64
HTTP_TIMEOUT = 10  # seconds, for every request the tests send
BTC_TICK = Decimal("0.10")


def now_ms() -> int:
    return int(time.time() * 1000)


def make_accounts(prefix: str, count: int = POOL_SIZE) -> tuple[AccountSpec, ...]:
    """``count`` accounts with 10000 USDT; API keys are letters and digits, 20+ characters."""
    return tuple(
        AccountSpec(
            api_key=f"{prefix}Key{number:04d}AbCdEfGhIjKl",
            api_secret=f"{prefix}-secret-{number:04d}-0123456789abcdef",
            balances={"USDT": Decimal(10000)},
        )
        for number in range(count)
    )


def sign(secret: str, payload: str) -> str:
    """Binance HMAC-SHA256 hex signature of ``payload`` (the raw query string and/or body)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def flip_char(signature: str, index: int = 0) -> str:
    """``signature`` with one hex character changed."""
    replacement = "0" if signature[index] != "0" else "1"
    return signature[:index] + replacement + signature[index + 1 :]


def to_tick(value: Decimal, tick: Decimal = BTC_TICK, *, up: bool = False) -> Decimal:
    """``value`` rounded down (or up) to a multiple of ``tick``."""
    rounding = ROUND_CEILING if up else ROUND_FLOOR
    return (value / tick).to_integral_value(rounding=rounding) * tick


def wait_for_window(period_ms: int, need_ms: int) -> None:
    """Make sure at least ``need_ms`` remain in the current wall-clock bucket of ``period_ms``.

    The emulator counts weight and orders in wall-clock buckets (``now // 60000``,
    ``now // 10000``); a test that compares counters must not straddle a bucket boundary.
    Sleeps at most ``need_ms`` (and only when a boundary is that close).
    """
    left = period_ms - now_ms() % period_ms
    if left < need_ms:
        time.sleep(left / 1000 + 0.02)


def wait_until(predicate: Callable[[], T], *, timeout: float = 5.0, step: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


class Harness:
    """A started emulator plus the means to talk to it."""

    def __init__(self, thread: EmulatorThread, accounts: tuple[AccountSpec, ...]) -> None:
        self.thread = thread
        self.base_url = thread.base_url
        self.ws_url = self.base_url.replace("http://", "ws://", 1)
        self.accounts = accounts
        self._unused = iter(accounts)
        self.http = requests.Session()

    @property
    def emulator(self) -> Emulator:
        assert self.thread.emulator is not None
        return self.thread.emulator

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the emulator's event loop (the only safe way to read its state)."""
        return self.thread.call(fn, *args)

    # --- accounts and clients ----------------------------------------------------------------

    def fresh_account(self) -> AccountSpec:
        spec = next(self._unused, None)
        if spec is None:
            raise RuntimeError("account pool exhausted: raise POOL_SIZE")
        return spec

    def account_id(self, spec: AccountSpec) -> str:
        return self.call(lambda: self.emulator.keys[spec.api_key][1])

    def client(self, spec: AccountSpec) -> Client:
        """An unmodified python-binance client talking to this emulator."""
        client = Client(spec.api_key, spec.api_secret, ping=False)
        client.FUTURES_URL = self.base_url + "/fapi"
        return client

    # --- control API -------------------------------------------------------------------------

    def control(self, action: str, **body: Any) -> dict[str, Any]:
        response = self.http.post(
            f"{self.base_url}/_emulator/{action}", json=body, timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        response = self.http.get(f"{self.base_url}/_emulator/state", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def price(self, symbol: str = "BTCUSDT") -> Decimal:
        return Decimal(self.state()["prices"][symbol])

    def reset(self) -> None:
        """Forget rate-limit counters and bans; clear injected faults."""
        self.control("reset_limits")
        self.control("faults", latency_ms=0, rate_5xx=0, rate_timeout=0, rate_drop=0, next=[])

    # --- raw wire ----------------------------------------------------------------------------

    def raw(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: str = "",
        api_key: str | None = None,
    ) -> requests.Response:
        """Send exactly ``query`` and ``body`` (already encoded) to ``path``."""
        headers = {}
        if api_key is not None:
            headers["X-MBX-APIKEY"] = api_key
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = self.base_url + path + (f"?{query}" if query else "")
        return self.http.request(
            method, url, data=body.encode() if body else None, headers=headers,
            timeout=HTTP_TIMEOUT,
        )  # fmt: skip

    def signed(
        self,
        method: str,
        path: str,
        spec: AccountSpec,
        params: str,
        *,
        in_body: bool = False,
    ) -> requests.Response:
        """``params`` (a raw, already encoded parameter string) plus ``timestamp`` and a correct
        ``signature``, in the query (default) or the form body."""
        payload = f"{params}&timestamp={now_ms()}" if params else f"timestamp={now_ms()}"
        payload += f"&signature={sign(spec.api_secret, payload)}"
        if in_body:
            return self.raw(method, path, body=payload, api_key=spec.api_key)
        return self.raw(method, path, query=payload, api_key=spec.api_key)

    # --- symbol rules ------------------------------------------------------------------------

    @contextmanager
    def filter_changed(self, symbol: str, filter_type: str, **values: str) -> Iterator[None]:
        """Temporarily change one of ``symbol``'s exchange filters (as Binance does when it
        re-lists a symbol with other rules); restored on exit."""

        def swap(new: dict[str, str]) -> dict[str, str]:
            rules = self.emulator.rules[symbol]["filters"]
            target = next(f for f in rules if f["filterType"] == filter_type)
            old = {k: target[k] for k in new}
            target.update(new)
            return old

        old = self.call(swap, values)
        try:
            yield
        finally:
            self.call(swap, old)


def emulator_config(accounts: tuple[AccountSpec, ...], **overrides: Any) -> EmulatorConfig:
    """Known accounts, a frozen market and the control API on; ``overrides`` as given."""
    settings: dict[str, Any] = {"accounts": accounts, "speed": Decimal(0), "control": True}
    settings.update(overrides)
    return EmulatorConfig(**settings)


@contextmanager
def running_emulator(prefix: str = "emu", **overrides: Any) -> Iterator[Harness]:
    """Start an emulator (frozen market, ``POOL_SIZE`` accounts) and stop it on exit."""
    accounts = make_accounts(prefix)
    thread = EmulatorThread(emulator_config(accounts, **overrides))
    with thread:
        harness = Harness(thread, accounts)
        try:
            yield harness
        finally:
            harness.http.close()


class Stream(Protocol):
    async def run(self) -> None: ...
    def request_stop(self) -> None: ...


S = TypeVar("S", bound=Stream)


class Running(Generic[S]):
    """A stream (``KlineStream``, ``UserStream``) running in a thread with its own event loop."""

    def __init__(self, stream: S) -> None:
        self.stream = stream
        self.error: BaseException | None = None
        name = f"{type(stream).__name__.lower()}-test"
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self.stream.run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.stream.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the stream did not shut down"
        assert self.error is None, f"the stream crashed: {self.error!r}"
