"""The kline stream against the emulator (real WebSocket on 127.0.0.1, real Postgres, Celery
publishing to Redis under a key prefix of each test's own): closed candles are stored and start
their chain once, open candles are never stored, the stream comes back after a cut, follows
the feeds as they change, and races beat's fetch without a candle starting two chains.

The emulator replays at 60x (a 1m candle closes every second of wall time). The stream runs in a
thread of its own and writes from its own threads, hence ``transaction=True``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from execution.venues.base import Kline as Bar
from ingest.feeds import Feed
from ingest.models import Kline
from ingest.services import IngestOutcome, klines_ingest
from ingest.stream import (
    KlineStream,
    StreamConnected,
    combined_stream_url,
    parse_kline_event,
    stream_environment,
    stream_name,
)
from tests.execution.emulator_fixtures import Harness, Running, running_emulator
from tests.execution.emulator_fixtures import wait_until as _wait_until
from tests.execution.worker_fixtures import celery_publishing_to
from tests.factories import BotFactory
from trader import clock
from trader.models import BotStatus

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = "redis://127.0.0.1:6379/6"
MINUTE = 60_000
BTC_1M = Feed("BTCUSDT", "1m")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Short timings so that every scenario finishes in a few seconds.
FAST: dict[str, Any] = {
    "resubscribe_s": 0.2,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.5,
    "stable_s": 5.0,
    "close_timeout_s": 5.0,
}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    return _wait_until(predicate, timeout=timeout, step=0.05)


def utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def ms_of(moment: datetime) -> int:
    return int((moment - _EPOCH) / timedelta(milliseconds=1))


def stored(symbol: str = "BTCUSDT", interval: str = "1m") -> list[Kline]:
    return list(Kline.objects.filter(symbol=symbol, interval=interval).order_by("open_time"))


def rest_rows(emu: Harness, symbol: str, interval: str, **params: Any) -> list[list[Any]]:
    response = emu.http.get(
        f"{emu.base_url}/fapi/v1/klines",
        params={"symbol": symbol, "interval": interval, **params},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return list(response.json())


def as_bar(row: list[Any]) -> Bar:
    return Bar(
        open_time_ms=row[0], open=D(row[1]), high=D(row[2]), low=D(row[3]), close=D(row[4]),
        volume=D(row[5]), close_time_ms=row[6], quote_volume=D(row[7]), trades=row[8],
        taker_buy_base=D(row[9]), taker_buy_quote=D(row[10]),
    )  # fmt: skip


def as_row(k: Kline) -> Bar:
    return Bar(
        open_time_ms=ms_of(k.open_time), open=k.open, high=k.high, low=k.low, close=k.close,
        volume=k.volume, close_time_ms=ms_of(k.close_time), quote_volume=k.quote_volume,
        trades=k.trades, taker_buy_base=k.taker_buy_base, taker_buy_quote=k.taker_buy_quote,
    )  # fmt: skip


def subscriptions(emu: Harness) -> list[list[str]]:
    """What the emulator's market sockets carry, per socket."""
    return emu.call(lambda: sorted(sorted(s.streams) for s in emu.emulator.market_sockets))


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_emu() -> Iterator[Harness]:
    """One emulator per module replaying at 60x."""
    with running_emulator("kst", speed=D(60)) as harness:
        yield harness


@pytest.fixture
def emu(fast_emu: Harness, settings: Any) -> Iterator[Harness]:
    """The fast emulator, faults cleared; the market clock is its clock."""
    fast_emu.reset()
    settings.BINANCE_BASE_URL = fast_emu.base_url + "/fapi"
    settings.MARKET_CLOCK = "emulator"
    settings.INGEST_DERIVED_INTERVALS = ("2m",)
    clock.reset()
    yield fast_emu
    clock.reset()


class Published:
    """The messages Celery published in this test, by queue (keys under a prefix of its own,
    so that test runs sharing the Redis database do not see each other's)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def llen(self, queue_name: str) -> int:
        return int(self.client.llen(self.prefix + queue_name))


@pytest.fixture
def broker() -> Iterator[Published]:
    """Chain starts are published to Redis (and counted there)."""
    client = redis.Redis.from_url(BROKER_URL)
    prefix = f"test-klinestream-{uuid.uuid4().hex[:12]}:"
    try:
        with celery_publishing_to(BROKER_URL, global_keyprefix=prefix):
            yield Published(client, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def run_stream(emu: Harness, broker: Published) -> Iterator[Callable[..., Running]]:
    """Start streams against the emulator (FAST timings, overridable); all stopped at the end."""
    started: list[Running] = []

    def start(**overrides: Any) -> Running:
        running = Running(KlineStream(**{**FAST, "root": emu.ws_url, **overrides}))
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


# --- the stream against the emulator -----------------------------------------------------------


def test_stream_stores_each_closed_candle_exactly_and_starts_its_chain(emu, broker, run_stream):
    outcomes: list[tuple[Feed, IngestOutcome]] = []
    running = run_stream(feeds=lambda: [BTC_1M], on_candle=lambda f, o: outcomes.append((f, o)))

    wait_until(lambda: len(stored()) >= 3)
    running.stop()

    candles = stored()
    rows = rest_rows(emu, "BTCUSDT", "1m", startTime=ms_of(candles[0].open_time), limit=1500)
    assert [as_row(k) for k in candles] == [as_bar(r) for r in rows[: len(candles)]]
    assert all(k.chain_started_at is not None for k in candles)
    opens = [ms_of(k.open_time) for k in candles]
    assert opens == list(range(opens[0], opens[-1] + 1, MINUTE))  # none missed
    assert [(f, o.newest_open_ms, o.stored, o.updated, o.handed_off) for f, o in outcomes] == [
        (BTC_1M, t, 1, 0, True) for t in opens
    ]
    assert broker.llen("signals") == len(candles)  # one evaluate_candle per candle
    assert running.stream.stats.handed_off == len(candles)


def test_stream_never_stores_the_open_candle(emu, broker, run_stream):
    outcomes: list[IngestOutcome] = []
    running = run_stream(feeds=lambda: [BTC_1M], on_candle=lambda f, o: outcomes.append(o))

    stats = running.stream.stats
    # Several x=false updates and at least one close (about 2.5 s; more on a loaded machine).
    wait_until(lambda: stats.closed_events >= 1 and stats.events - stats.closed_events >= 5)
    running.stop()

    assert stats.events - stats.closed_events >= 5  # x=false updates arrived, several a candle
    assert stats.closed_events >= 1
    # Only the x=true candles were written, each once and fresh: had an open candle been stored
    # before, its close would have been an update, and the open one at the end would be here.
    assert [o.stored for o in outcomes] == [1] * stats.closed_events
    assert [o.updated for o in outcomes] == [0] * stats.closed_events
    assert [ms_of(k.open_time) for k in stored()] == [o.newest_open_ms for o in outcomes]


def test_stream_reconnects_after_a_cut_and_keeps_storing(emu, broker, run_stream):
    connects: list[StreamConnected] = []
    running = run_stream(feeds=lambda: [BTC_1M], on_connect=connects.append)
    wait_until(lambda: stored())

    for mode in ("close", "abort"):
        sessions = len(connects)
        emu.control("drop_market_streams", mode=mode)
        wait_until(lambda: len(connects) > sessions)  # noqa: B023 - called before it changes
        since = utc(emu.state()["market_time_ms"])
        wait_until(lambda: Kline.objects.filter(open_time__gte=since).exists())  # noqa: B023
    running.stop()

    assert [c.session for c in connects] == [1, 2, 3]
    assert {(c.connection, c.streams) for c in connects} == {(1, 1)}
    assert running.stream.stats.reconnects >= 2
    assert all(k.chain_started_at is not None for k in stored())


def test_with_beat_running_too_each_closed_candle_starts_the_chain_once(emu, broker, run_stream):
    """The stream and a beat-style fetch race on every candle for a few seconds."""
    starts: Counter[int] = Counter()
    lock = threading.Lock()

    def count(outcome: IngestOutcome) -> None:
        if outcome.newest_open_ms is not None:
            with lock:
                starts[outcome.newest_open_ms] += outcome.handed_off

    running = run_stream(feeds=lambda: [BTC_1M], on_candle=lambda f, o: count(o))
    beat_calls = 0
    deadline, cap = time.monotonic() + 4, time.monotonic() + 60
    # For 4 s, and at least 21 fetches however slow each is on a loaded machine.
    while (time.monotonic() < deadline or beat_calls <= 20) and time.monotonic() < cap:
        market = emu.state()["market_time_ms"]
        closed = [r for r in rest_rows(emu, "BTCUSDT", "1m", limit=3) if r[6] < market]
        count(
            klines_ingest(
                symbol="BTCUSDT", interval="1m", bars=[as_bar(closed[-1])], path="beat",
                now_ms=market,
            )
        )  # fmt: skip
        beat_calls += 1
        time.sleep(0.03)
    running.stop()

    candles = stored()
    assert beat_calls > 20
    assert len(candles) >= 3
    assert dict(starts) == {ms_of(k.open_time): 1 for k in candles}  # exactly one start each
    assert all(k.chain_started_at is not None for k in candles)
    assert broker.llen("signals") == len(candles)


def test_stream_spreads_streams_over_connections_and_follows_the_feeds(emu, broker, run_stream):
    wanted = [Feed("BTCUSDT", "1m"), Feed("ETHUSDT", "5m"), Feed("XRPUSDT", "5m")]
    connects: list[StreamConnected] = []
    running = run_stream(feeds=lambda: list(wanted), max_streams=2, on_connect=connects.append)

    wait_until(lambda: running.stream.connected() == 2)
    first = (running.stream.connections(), subscriptions(emu))
    wanted[:] = [Feed("BTCUSDT", "1m"), Feed("XRPUSDT", "5m"), Feed("XRPUSDT", "15m"),
                 Feed("ETHUSDT", "1h")]  # fmt: skip
    changed = [["btcusdt@kline_1m", "ethusdt@kline_1h"], ["xrpusdt@kline_15m", "xrpusdt@kline_5m"]]
    wait_until(lambda: subscriptions(emu) == changed)
    wanted[:] = [Feed("BTCUSDT", "1m")]
    wait_until(lambda: subscriptions(emu) == [["btcusdt@kline_1m"]])
    running.stop()

    split = [["btcusdt@kline_1m", "ethusdt@kline_5m"], ["xrpusdt@kline_5m"]]
    assert first == (split, split)
    assert len(connects) == 2  # changed by SUBSCRIBE / UNSUBSCRIBE, never by reconnecting
    assert running.stream.stats.reconnects == 0  # the emptied connection was just closed


def test_stream_follows_the_active_bots_by_default(emu, broker, run_stream):
    BotFactory.create(status=BotStatus.ACTIVE, symbol="BTCUSDT", interval="2m")  # derived: 1m
    BotFactory.create(status=BotStatus.ACTIVE, symbol="BTCUSDT", interval="1m")
    BotFactory.create(status=BotStatus.ACTIVE, symbol="ETHUSDT", interval="15m")
    paused = BotFactory.create(status=BotStatus.PAUSED, symbol="XRPUSDT", interval="5m")
    running = run_stream()

    wait_until(lambda: subscriptions(emu) == [["btcusdt@kline_1m", "ethusdt@kline_15m"]])
    paused.status = BotStatus.ACTIVE
    paused.save(update_fields=["status"])
    three = [BTC_1M, Feed("ETHUSDT", "15m"), Feed("XRPUSDT", "5m")]
    wait_until(lambda: running.stream.feeds() == three)
    wait_until(lambda: stored())
    running.stop()

    assert subscriptions(emu) == []
    assert stored("BTCUSDT", "2m") == []  # the stream stores what it streams: 1m


def test_a_refused_stream_is_retried_until_the_feeds_are_fixed(emu, broker, run_stream):
    wanted = [Feed("BTCUSDT", "1m"), Feed("ETHUSDT", "1m")]  # ETH is replayed from 5m candles
    running = run_stream(feeds=lambda: list(wanted))

    wait_until(lambda: running.stream.stats.reconnects >= 2)
    assert running.stream.connected() == 0
    wanted[:] = [BTC_1M]
    wait_until(lambda: stored())
    running.stop()

    assert running.stream.stats.connects >= 1


# --- pure helpers ------------------------------------------------------------------------------


def test_stream_names_and_the_combined_url_follow_binance():
    assert stream_name(Feed("BTCUSDT", "1m")) == "btcusdt@kline_1m"
    assert stream_name(Feed("1000PEPEUSDT", "1M")) == "1000pepeusdt@kline_1M"  # M: a month
    url = combined_stream_url(
        root="wss://fstream.binance.com/", streams=["a@kline_1m", "b@kline_5m"]
    )
    assert url == "wss://fstream.binance.com/market/stream?streams=a@kline_1m/b@kline_5m"


def test_parse_kline_event_reads_decimals_and_refuses_malformed_events():
    event: dict[str, Any] = {
        "e": "kline", "E": 1, "s": "BTCUSDT",
        "k": {"t": 60_000, "T": 119_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
              "o": "100.10", "c": "100.20", "h": "100.30", "l": "100.00", "v": "1.5", "n": 2,
              "x": True, "q": "150.3", "V": "0.5", "Q": "50.1", "B": "0"},
    }  # fmt: skip

    feed, bar, closed = parse_kline_event(event)

    assert (feed, closed) == (BTC_1M, True)
    assert bar == Bar(60_000, D("100.10"), D("100.30"), D("100.00"), D("100.20"), D("1.5"),
                      119_999, D("150.3"), 2, D("0.5"), D("50.1"))  # fmt: skip
    for field, bad in (("o", 100.1), ("c", "NaN"), ("x", "true"), ("t", "60000"), ("i", "7m")):
        broken = {**event, "k": {**event["k"], field: bad}}
        with pytest.raises(ValueError, match=field):
            parse_kline_event(broken)


def test_stream_environment_is_beats_trading_mode_unless_set(settings):
    settings.INGEST_ENVIRONMENT = ""
    settings.TRADING_MODE = "DRY_RUN"
    assert stream_environment() == "TESTNET"
    settings.TRADING_MODE = "LIVE"
    assert stream_environment() == "LIVE"
    settings.INGEST_ENVIRONMENT = "testnet"
    assert stream_environment() == "TESTNET"


# --- the management command --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "5m"], "--interval needs --symbol"),
        (["--symbol", "DOGE"], "is not a Binance USD-M futures symbol"),
        (["--symbol", "BTCUSDT", "--interval", "7m"], "unknown interval"),
    ],
)
def test_command_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("stream_klines", *args)


def test_command_streams_the_given_symbol_and_stops_cleanly_on_sigterm(emu, tmp_path):
    s = connection.settings_dict
    child_env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DJANGO_DOTENV_FILE": "",
        "TEST_DATABASE_URL": f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "BINANCE_BASE_URL": emu.base_url + "/fapi",
        "MARKET_CLOCK": "emulator",
        # The embedded broker, in a folder of this test's own: its messages are counted there.
        "VAR_DIR": str(tmp_path / "var"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "stream_klines", "--symbol", "btcusdt", "--interval", "2m"],
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
        while not any(line.startswith("connected connection 1") for line in seen):
            seen.append(lines.get(timeout=30))
        wait_until(lambda: len(stored()) >= 2, timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    reader.join(5)
    seen.extend(lines.queue)
    output = "".join(seen)

    assert proc.returncode == 0, output
    assert "stream_klines: BTCUSDT 1m from ws://127.0.0.1:" in output  # 2m is streamed as 1m
    assert "connected connection 1: 1 streams" in output
    assert "stream_klines: stopped after" in output
    assert all(k.chain_started_at is not None for k in stored())
    published = list((tmp_path / "var" / "broker" / "queue").glob("*.signals.msg"))
    assert len(published) == len(stored()), output  # one evaluate_candle per candle
