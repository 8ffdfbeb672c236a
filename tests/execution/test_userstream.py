"""The user data stream against the emulator (real HTTP and WebSocket on 127.0.0.1, TESTNET
mode): order updates reach the database through the stream alone, listen keys are kept alive,
re-created after an expiry or a -1125, and closed on shutdown; bad frames and orders that are
not ours leave the stream running; accounts come and go with their bots.

The stream runs in a thread of its own (its own event loop) and applies events from its own
threads, hence ``transaction=True``: the rows the tests create must be committed to be seen.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from prometheus_client import REGISTRY

from execution.emulator.server import AccountSpec
from execution.models import Fill, Order, OrderLeg, SignalDelivery
from execution.services import delivery_execute
from execution.states import OrderState
from execution.userstream import (
    UserStream,
    backoff_delay,
    stream_targets,
    stream_url,
    ws_root_for,
)
from tests.execution import placement_fixtures as pf
from tests.execution.emulator_fixtures import Harness, Running, wait_until
from tests.factories import BotFactory, make_credential
from trader.models import Bot, BotStatus, Environment

#: The stream applies events from threads of its own: the tests' rows must be committed.
transactional = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
#: Short timings so that every scenario finishes in a second or two.
FAST: dict[str, Any] = {
    "keepalive_s": 30.0,
    "refresh_s": 0.2,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.5,
    "stable_s": 5.0,
    "close_timeout_s": 5.0,
}
STEP = Decimal("0.001")  # BTCUSDT's stepSize


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def env(emu: Harness, settings: Any, tmp_path: Any) -> Harness:
    """The module's emulator, limits and faults reset; TESTNET mode against it, no Redis."""
    emu.reset()
    pf.use_emulator(emu, settings, tmp_path)
    return emu


@pytest.fixture
def spec(env: Harness) -> AccountSpec:
    return env.fresh_account()


@pytest.fixture
def bot(spec: AccountSpec) -> Bot:
    return pf.emulator_bot(spec)


@pytest.fixture
def run_stream() -> Iterator[Callable[..., UserStream]]:
    """Start streams (FAST timings, overridable); every one is stopped at the end."""
    started: list[Running] = []

    def start(**overrides: Any) -> UserStream:
        running = Running(UserStream(**{**FAST, **overrides}))
        started.append(running)
        return running.stream

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def emulator_has_key(emu: Harness, key: str) -> bool:
    return emu.call(lambda: key in emu.emulator.listen_keys)


def emulator_key_of(emu: Harness, spec: AccountSpec) -> str | None:
    """The account's live listen key at the emulator, if any."""
    account = pf.account_of(emu, spec)
    return emu.call(
        lambda: next((k for k, (o, _) in emu.emulator.listen_keys.items() if o == account), None)
    )


def emulator_streams_key(emu: Harness, key: str) -> bool:
    """The emulator has an open user-data socket for ``key`` (registered server-side)."""
    return emu.call(lambda: key in emu.emulator._stream_keys.values())


def connected_key(
    emu: Harness, stream: UserStream, bot: Bot, *, other_than: str = "", timeout: float = 10
) -> str:
    """Wait until the stream holds a listen key for the bot's account (other than
    ``other_than``) and the emulator has its socket open; return the key."""
    credential_id = bot.credential_id or 0

    def ready() -> str:
        key = stream.listen_key(credential_id) or ""
        connected = key != other_than and stream.is_connected(credential_id)
        return key if connected and emulator_streams_key(emu, key) else ""

    return wait_until(ready, timeout=timeout)


def push_frame(emu: Harness, spec: AccountSpec, payload: str | None) -> None:
    """Send ``payload`` as a text frame on every open user-data socket of the account (None:
    the emulator closes them)."""
    account = pf.account_of(emu, spec)

    def send() -> None:
        for q in emu.emulator.streams[account]:
            q.put_nowait(payload)

    emu.call(send)


def fill(emu: Harness, spec: AccountSpec, client_id: str, qty: Decimal) -> None:
    emu.control("fill", api_key=spec.api_key, symbol=pf.SYMBOL, client_id=client_id, qty=str(qty))


def entry_of(delivery: SignalDelivery) -> Order:
    return Order.objects.get(delivery=delivery, leg=OrderLeg.ENTRY)


def state_changes(order: Order) -> list[tuple[str, str, str]]:
    return [
        (e.from_state, e.to_state, e.cause)
        for e in order.events.order_by("id")
        if e.from_state != e.to_state
    ]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def placed_limit_trio(emu: Harness, bot: Bot) -> Order:
    """A LIMIT trio placed at the emulator (resting entry, both protective orders)."""
    delivery = delivery_execute(delivery_id=pf.arm_trio(emu, bot, entry_type="LIMIT").pk)
    entry = entry_of(delivery)
    assert entry.state == OrderState.NEW
    return entry


# --- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "environment", "root"),
    [
        ("http://127.0.0.1:8123/fapi", "TESTNET", "ws://127.0.0.1:8123"),
        ("https://emulator.example:8443/fapi", "LIVE", "wss://emulator.example:8443"),
        ("", "TESTNET", "wss://fstream.binancefuture.com"),
        ("", "LIVE", "wss://fstream.binance.com"),
    ],
)
def test_websocket_root_follows_the_configured_rest_root_or_the_environment(
    base_url, environment, root
):
    assert ws_root_for(environment, base_url=base_url) == root
    assert stream_url(root=root, listen_key="abc") == f"{root}/private/ws?listenKey=abc"


def test_backoff_doubles_per_failure_is_capped_and_jittered_into_the_upper_half():
    low = [backoff_delay(n, base_s=1, cap_s=10, rng=lambda: 0.0) for n in range(1, 7)]
    high = [backoff_delay(n, base_s=1, cap_s=10, rng=lambda: 1.0) for n in range(1, 7)]
    assert high == [1, 2, 4, 8, 10, 10]
    assert low == [0.5, 1, 2, 4, 5, 5]


# --- which accounts are streamed ---------------------------------------------------------------


@pytest.mark.django_db
def test_streamed_accounts_are_active_credentials_of_active_bots_or_with_open_orders(settings):
    settings.TRADING_MODE = "TESTNET"
    active = BotFactory.create(credential=make_credential(api_key="KeyActive000001"))
    paused = BotFactory.create(
        credential=make_credential(api_key="KeyPaused000002"), status=BotStatus.PAUSED
    )
    paused_open = BotFactory.create(
        credential=make_credential(api_key="KeyOpenOrd00003"), status=BotStatus.PAUSED
    )
    Order.objects.create(
        bot=paused_open, credential=paused_open.credential, leg=OrderLeg.STOP_LOSS,
        client_order_id="tr-open-SL", venue="binance", symbol="BTCUSDT", side="SELL",
        type="STOP_MARKET", is_algo=True, quantity=Decimal("0.01"), state=OrderState.NEW,
    )  # fmt: skip
    inactive = make_credential(api_key="KeyInactive0004")
    inactive.is_active = False
    inactive.save()
    BotFactory.create(credential=inactive)
    live = BotFactory.create(
        credential=make_credential(api_key="KeyLive00000005", environment=Environment.LIVE),
        environment=Environment.LIVE,
    )

    ids = [t.credential_id for t in stream_targets()]
    assert ids == [active.credential_id, paused_open.credential_id]
    assert paused.credential_id not in ids

    settings.TRADING_MODE, settings.LIVE_TRADING_CONFIRM = "LIVE", True
    assert [t.credential_id for t in stream_targets()] == [
        active.credential_id,
        paused_open.credential_id,
        live.credential_id,
    ]
    labels = " ".join(t.label for t in stream_targets())
    assert "****0001" in labels
    assert "KeyActive000001" not in labels


# --- order updates through the stream ----------------------------------------------------------


@transactional
def test_limit_entry_fills_reach_the_database_through_the_stream_alone(env, spec, bot, run_stream):
    stream = run_stream()
    connected_key(env, stream, bot)
    entry = placed_limit_trio(env, bot)
    half = (entry.quantity / 2).quantize(STEP, rounding=ROUND_DOWN)

    fill(env, spec, entry.client_order_id, half)
    wait_until(
        lambda: Order.objects.get(pk=entry.pk).state == OrderState.PARTIALLY_FILLED, timeout=10
    )
    fill(env, spec, entry.client_order_id, entry.quantity - half)
    wait_until(lambda: Order.objects.get(pk=entry.pk).state == OrderState.FILLED, timeout=10)

    entry.refresh_from_db()
    assert (entry.filled_qty, entry.avg_price) == (entry.quantity, entry.price)
    assert state_changes(entry) == [
        ("PENDING", "NEW", "placed"),
        ("NEW", "PARTIALLY_FILLED", "stream ORDER_TRADE_UPDATE"),
        ("PARTIALLY_FILLED", "FILLED", "stream ORDER_TRADE_UPDATE"),
    ]
    fills = list(Fill.objects.filter(order=entry).order_by("venue_trade_id"))
    assert [(f.qty, f.price, f.account) for f in fills] == [
        (half, entry.price, f"credential-{bot.credential_id}"),
        (entry.quantity - half, entry.price, f"credential-{bot.credential_id}"),
    ]
    # The lifecycle's reaction ran from the stream too: the stop-loss now covers the fill.
    stop_loss = wait_until(
        lambda: Order.objects.filter(
            delivery_id=entry.delivery_id, leg=OrderLeg.STOP_LOSS, state=OrderState.NEW,
            quantity=entry.quantity,
        ).first(),
        timeout=10,
    )  # fmt: skip
    assert stop_loss is not None
    assert stop_loss.client_order_id in {a.client_algo_id for a in pf.open_algos(env, spec)}
    assert stream.stats.failed == 0
    assert stream.stats.connects == 1


@transactional
def test_expired_listen_key_is_recreated_and_later_events_are_applied(env, spec, bot, run_stream):
    stream = run_stream()
    first_key = connected_key(env, stream, bot)
    entry = placed_limit_trio(env, bot)
    expired_before = sample("trader_userstream_reconnects_total", reason="listen_key_expired")

    env.control("expire_listen_key", listen_key=first_key)

    second_key = connected_key(env, stream, bot, other_than=first_key)
    assert not emulator_has_key(env, first_key)
    fill(env, spec, entry.client_order_id, entry.quantity)
    wait_until(lambda: Order.objects.get(pk=entry.pk).state == OrderState.FILLED, timeout=10)
    assert state_changes(Order.objects.get(pk=entry.pk))[-1] == (
        "NEW",
        "FILLED",
        "stream ORDER_TRADE_UPDATE",
    )
    assert Fill.objects.filter(order=entry).count() == 1
    assert stream.listen_key(bot.credential_id) == second_key
    assert (stream.stats.connects, stream.stats.by_type["listenKeyExpired"]) == (2, 1)
    assert sample("trader_userstream_reconnects_total", reason="listen_key_expired") == (
        expired_before + 1
    )


@transactional
def test_bad_frames_and_foreign_orders_are_counted_and_the_stream_keeps_going(
    env, spec, bot, run_stream
):
    stream = run_stream()
    connected_key(env, stream, bot)
    unparseable_before = sample("trader_userstream_event_failures_total", type="unparseable")
    broken_before = sample("trader_userstream_event_failures_total", type="ORDER_TRADE_UPDATE")

    push_frame(env, spec, "{not json")
    push_frame(env, spec, json.dumps({"e": "ORDER_TRADE_UPDATE", "E": 1, "o": {"s": "BTCUSDT"}}))
    # An order placed by hand at the venue, with a client id that is not ours, then filled.
    price = pf.prices(env, entry_type="LIMIT")["entry"]
    qty = (Decimal(100) / price).quantize(STEP, rounding=ROUND_UP)
    env.client(spec).futures_create_order(
        symbol=pf.SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC", quantity=str(qty),
        price=str(price), newClientOrderId="by-hand-0001",
    )  # fmt: skip
    fill(env, spec, "by-hand-0001", qty)
    entry = placed_limit_trio(env, bot)
    fill(env, spec, entry.client_order_id, entry.quantity)

    wait_until(lambda: Order.objects.get(pk=entry.pk).state == OrderState.FILLED, timeout=10)
    assert stream.stats.failed == 2
    assert stream.stats.connects == 1  # no reconnect: the socket stayed up throughout
    assert not Order.objects.filter(client_order_id="by-hand-0001").exists()
    assert sample("trader_userstream_event_failures_total", type="unparseable") == (
        unparseable_before + 1
    )
    assert sample("trader_userstream_event_failures_total", type="ORDER_TRADE_UPDATE") == (
        broken_before + 1
    )


@transactional
def test_market_trio_placed_while_streaming_leaves_no_event_unapplied(env, spec, bot, run_stream):
    # The placement records the entry FILLED from its REST answer while the stream delivers
    # the same order's NEW and TRADE: whichever comes first, nothing fails and nothing doubles.
    stream = run_stream()
    connected_key(env, stream, bot)

    delivery = delivery_execute(delivery_id=pf.arm_trio(env, bot, entry_type="MARKET").pk)

    # entry NEW + TRADE, ACCOUNT_UPDATE, stop-loss and take-profit NEW
    wait_until(lambda: stream.stats.applied + stream.stats.failed >= 5, timeout=10)
    entry = entry_of(delivery)
    assert (delivery.status, entry.state, entry.filled_qty) == (
        "EXECUTED",
        OrderState.FILLED,
        entry.quantity,
    )
    assert stream.stats.failed == 0
    assert Fill.objects.filter(order=entry).count() == 1
    assert [to for _, to, _ in state_changes(entry)].count(OrderState.FILLED) == 1


@transactional
def test_dropped_socket_is_reopened_and_later_events_are_applied(env, spec, bot, run_stream):
    stream = run_stream()
    key = connected_key(env, stream, bot)
    entry = placed_limit_trio(env, bot)
    before = sample("trader_userstream_reconnects_total", reason="disconnected")

    push_frame(env, spec, None)  # the emulator closes the socket; the key stays valid

    wait_until(lambda: stream.stats.connects == 2 and connected_key(env, stream, bot))
    assert stream.listen_key(bot.credential_id) == key  # Binance hands out the active key again
    fill(env, spec, entry.client_order_id, entry.quantity)
    wait_until(lambda: Order.objects.get(pk=entry.pk).state == OrderState.FILLED, timeout=10)
    assert sample("trader_userstream_reconnects_total", reason="disconnected") == before + 1


@transactional
def test_unreachable_venue_is_retried_with_backoff_and_shutdown_stays_prompt(
    env, spec, bot, settings
):
    settings.BINANCE_BASE_URL = "http://127.0.0.1:9/fapi"  # nothing listens on the discard port
    running = Running(UserStream(**FAST))

    wait_until(lambda: running.stream.stats.reconnects >= 3, timeout=10)
    running.stop()

    assert running.stream.stats.connects == 0
    assert emulator_key_of(env, spec) is None


@transactional
def test_slow_applying_neither_stalls_reading_nor_reorders_and_shutdown_drains(
    env, spec, bot, monkeypatch
):
    applied: list[int] = []
    release = threading.Event()

    def slow_event_apply(*, account: str, event: dict[str, Any]) -> None:
        release.wait(10)
        applied.append(event["n"])

    monkeypatch.setattr("execution.userstream.event_apply", slow_event_apply)
    running = Running(UserStream(**FAST))
    key = connected_key(env, running.stream, bot)

    for n in range(40):  # beyond the websocket library's own 16-frame buffer
        push_frame(env, spec, json.dumps({"e": "TEST_EVENT", "n": n}))
    wait_until(lambda: running.stream.stats.by_type.get("TEST_EVENT") == 40)
    assert applied == []  # all read while the first one is still being applied
    running.stream.request_stop()
    release.set()
    running.stop()

    assert applied == list(range(40))
    assert not emulator_has_key(env, key)


# --- listen key upkeep and shutdown ------------------------------------------------------------


@transactional
def test_keepalive_extends_the_key_and_a_vanished_key_is_replaced(env, spec, bot, run_stream):
    stream = run_stream(keepalive_s=0.2)
    first_key = connected_key(env, stream, bot)
    first_expiry = env.call(lambda: env.emulator.listen_keys[first_key][1])
    wait_until(lambda: env.call(lambda: env.emulator.listen_keys[first_key][1]) > first_expiry)
    before = sample("trader_userstream_reconnects_total", reason="keepalive_invalid_key")

    env.call(env.emulator.listen_keys.pop, first_key)  # gone without a listenKeyExpired: -1125

    connected_key(env, stream, bot, other_than=first_key)
    assert sample("trader_userstream_reconnects_total", reason="keepalive_invalid_key") == (
        before + 1
    )
    assert not emulator_streams_key(env, first_key)  # the old socket was closed by us


@transactional
def test_shutdown_closes_the_socket_and_deletes_the_listen_key(env, spec, bot):
    running = Running(UserStream(**FAST))
    key = connected_key(env, running.stream, bot)

    running.stop()

    assert not emulator_has_key(env, key)
    assert not emulator_streams_key(env, key)


@transactional
def test_accounts_are_picked_up_and_dropped_as_bots_come_and_go(env, spec, run_stream):
    stream = run_stream(refresh_s=0.1)
    bot = pf.emulator_bot(spec)  # created after the stream started
    key = connected_key(env, stream, bot)

    Bot.objects.filter(pk=bot.pk).update(status=BotStatus.PAUSED)

    wait_until(lambda: stream.credential_ids() == [], timeout=10)
    wait_until(lambda: not emulator_has_key(env, key), timeout=10)


@transactional
def test_dry_run_has_nothing_to_stream_and_asks_the_venue_for_nothing(env, spec, bot, settings):
    settings.TRADING_MODE = "DRY_RUN"
    stream = UserStream(**FAST)

    asyncio.run(asyncio.wait_for(stream.run(), timeout=5))

    assert stream.credential_ids() == []
    assert stream.stats.connects == 0
    assert emulator_key_of(env, spec) is None
    out = io.StringIO()
    call_command("stream_user_data", stdout=out)
    assert "TRADING_MODE=DRY_RUN" in out.getvalue()
    assert "nothing to do" in out.getvalue()


# --- the management command --------------------------------------------------------------------


@transactional
def test_command_prints_the_masked_connection_and_closes_the_key_on_sigterm(env, spec, bot):
    test_db = connection.settings_dict["NAME"]
    child_env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DJANGO_DOTENV_FILE": "",
        "TEST_DATABASE_URL": f"postgres://{connection.settings_dict['USER']}@"
        f"{connection.settings_dict['HOST']}:{connection.settings_dict['PORT']}/{test_db}",
        "CREDENTIALS_MASTER_KEY": ",".join(
            k.decode() for k in django_settings.CREDENTIALS_MASTER_KEYS
        ),
        "TRADING_MODE": "TESTNET",
        "BINANCE_BASE_URL": env.base_url + "/fapi",
        "RATE_GOVERNOR_REDIS_URL": "",
        "REDIS_URL": "",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "stream_user_data", "--refresh-s", "0.2",
         "--keepalive-s", "60"],
        cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not any("connected credential" in line for line in seen):
            seen.append(lines.get(timeout=20))
        key = wait_until(lambda: emulator_key_of(env, spec) or "")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    reader.join(5)
    seen.extend(lines.queue)
    output = "".join(seen)
    [connected] = [line for line in seen if line.startswith("connected credential")]

    assert proc.returncode == 0
    assert connected.strip() == f"connected credential {bot.credential_id} {bot.credential}"
    assert f"****{spec.api_key[-4:]}" in connected
    assert spec.api_key not in output
    assert spec.api_secret not in output
    assert key not in output
    assert "stream_user_data: stopped after" in output
    assert not emulator_has_key(env, key)
