"""The kline stream: closed candles as Binance pushes them (the fast path; beat fills the gaps).

One combined websocket (``<ws root>/market/stream?streams=a/b``) carries the
``<symbol>@kline_<interval>`` streams of the fetched feeds of ACTIVE bots
(``ingest.feeds.fetched_feeds(needed_feeds())``: derived intervals are streamed as 1m), or of the
feeds given. Binance pushes the open candle every 250 ms (``x`` false: never stored) and each
candle once more as it closes (``x`` true): that one goes through
``ingest.services.klines_ingest(path="stream")``, which stores it and hands it to the chain
(``ingest.handoff.candle_closed``: whichever of the stream and beat stores a candle first starts
its chain, the other is a no-op).

Binance's rules (reference section 8): stream names are lowercase, at most 1024 streams per
connection (more are spread over several connections), the server pings and the client pongs
(``websockets`` does), a connection lives at most 24 hours. A disconnect is followed by a
reconnect with a capped, jittered exponential backoff over consecutive failures; what closed
while disconnected is not replayed (beat's fetch fills the gap). Every ``resubscribe_s`` the
wanted feeds are read again, and SUBSCRIBE / UNSUBSCRIBE messages bring the open connections up
to date (a new connection when they are full, none left empty).

Closedness: the exchange's ``x`` true says the candle has closed, so ``klines_ingest`` is told it
is at least its close time + 1 ms (a local clock a little behind the exchange's, or the emulator's
clock extrapolated from its last reading, must not drop it); the market clock
(``trader.clock.market_now_ms``) is used when it is ahead.

Threads: the asyncio loop only does I/O. ``klines_ingest`` is blocking ORM work: it runs on
worker threads (``workers``, each a single thread fed from a queue), every feed always on the
same one, so that one feed's candles are written in arrival order while the socket keeps being
read.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connections
from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus, WebSocketException

from execution.userstream import backoff_delay, ws_root_for
from execution.venues.base import Kline
from ingest.feeds import Feed, fetched_feeds, needed_feeds
from ingest.fetch import market_data_environment
from ingest.services import IngestOutcome, klines_ingest
from trader.clock import MarketClockError, market_now_ms
from trader.dbthreads import orm_call
from trader.domain import INTERVAL_MS

log = logging.getLogger(__name__)
_WS_LOG = logging.getLogger(f"{__name__}.websocket")
_WS_LOG.setLevel(logging.INFO)  # websockets' DEBUG logs every frame


EVENTS = Counter(
    "trader_kline_stream_events_total",
    "Kline stream messages received, by kind (open, closed, response, error, other, bad).",
    ["kind"],
)
CANDLES = Counter(
    "trader_kline_stream_candles_total",
    "Closed candles from the kline stream given to klines_ingest, by result (stored, updated, "
    "unchanged, rejected, duplicate, failed).",
    ["result"],
)
HANDOFFS = Counter(
    "trader_kline_stream_handoffs_total",
    "Closed candles whose chain the kline stream started (the first to store them).",
)
RECONNECTS = Counter(
    "trader_kline_stream_reconnects_total",
    "Kline stream connections ended and reopened, by reason.",
    ["reason"],
)
CONNECTED = Gauge(
    "trader_kline_stream_connections",
    "Kline stream connections open now.",
    multiprocess_mode="livesum",
)

#: Binance's cap on the streams of one connection.
MAX_STREAMS_PER_CONNECTION = 1024
#: Streams named in a connection's URL; the rest are SUBSCRIBEd (URLs stay a few KB long).
URL_STREAMS = 200
#: Streams per SUBSCRIBE / UNSUBSCRIBE message, and the pause after each (Binance accepts at
#: most 10 incoming messages a second per connection, pongs included).
BATCH_STREAMS = 200
BATCH_PAUSE_S = 0.25


# --- pure helpers ------------------------------------------------------------------------------


def stream_name(feed: Feed) -> str:
    """Binance's stream name for a feed: ``btcusdt@kline_1m`` (the symbol in lowercase, the
    interval as Binance spells it, ``1M`` a month)."""
    return f"{feed.symbol.lower()}@kline_{feed.interval}"


def combined_stream_url(*, root: str, streams: Sequence[str]) -> str:
    """The combined-stream URL (the category path Binance uses since 2026-04-23)."""
    return f"{root.rstrip('/')}/market/stream?streams={'/'.join(streams)}"


def stream_environment() -> str:
    """Where market data is streamed from: the environment beat fetches from
    (``ingest.fetch.market_data_environment``: ``INGEST_ENVIRONMENT``, else LIVE when trading
    LIVE and TESTNET otherwise), so that both paths store the same market's candles.
    ``BINANCE_BASE_URL`` (the emulator) wins over both in ``ws_root_for``."""
    return market_data_environment()


def _decimal(raw: Any, name: str) -> Decimal:
    if not isinstance(raw, str):
        raise ValueError(f"{name} {raw!r} is not a string")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{name} {raw!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{name} {raw!r} is not finite")
    return value


def _integer(raw: Any, name: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"{name} {raw!r} is not an integer")
    return raw


def parse_kline_event(data: Mapping[str, Any]) -> tuple[Feed, Kline, bool]:
    """``(feed, candle, closed)`` from a kline event's payload (``{"e": "kline", "k": ...}``),
    prices and volumes as ``Decimal``; ``ValueError`` naming the field when it is malformed."""
    k = data.get("k")
    if data.get("e") != "kline" or not isinstance(k, Mapping):
        raise ValueError("not a kline event")
    symbol, interval, closed = k.get("s") or data.get("s"), k.get("i"), k.get("x")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol {symbol!r} is missing")
    if interval not in INTERVAL_MS:
        raise ValueError(f"interval {interval!r} is unknown")
    if not isinstance(closed, bool):
        raise ValueError(f"x {closed!r} is not a boolean")
    candle = Kline(
        open_time_ms=_integer(k.get("t"), "t"),
        open=_decimal(k.get("o"), "o"),
        high=_decimal(k.get("h"), "h"),
        low=_decimal(k.get("l"), "l"),
        close=_decimal(k.get("c"), "c"),
        volume=_decimal(k.get("v"), "v"),
        close_time_ms=_integer(k.get("T"), "T"),
        quote_volume=_decimal(k.get("q"), "q"),
        trades=_integer(k.get("n"), "n"),
        taker_buy_base=_decimal(k.get("V"), "V"),
        taker_buy_quote=_decimal(k.get("Q"), "Q"),
    )
    if candle.close_time_ms < candle.open_time_ms:
        raise ValueError(f"T {candle.close_time_ms} is before t {candle.open_time_ms}")
    return Feed(symbol.upper(), str(interval)), candle, closed


def _active_feeds() -> list[Feed]:
    """What to stream by default: the fetched feeds of ACTIVE bots."""
    return fetched_feeds(needed_feeds())


def _ingest_closed(feed: Feed, candle: Kline) -> IngestOutcome:
    """Store one candle the exchange says has closed, and hand it off (see the module doc)."""
    try:
        now_ms = max(market_now_ms(), candle.close_time_ms + 1)
    except MarketClockError as exc:
        log.warning("kline stream: market clock unreadable (%s); trusting x=true", exc)
        now_ms = candle.close_time_ms + 1
    return klines_ingest(
        symbol=feed.symbol, interval=feed.interval, bars=[candle], path="stream", now_ms=now_ms
    )


# --- the stream --------------------------------------------------------------------------------


@dataclass
class KlineStreamStats:
    """Counts for this process (Prometheus has the same); read them from any thread."""

    connects: int = 0
    reconnects: int = 0
    events: int = 0
    closed_events: int = 0
    written: int = 0
    handed_off: int = 0
    duplicates: int = 0
    failed: int = 0


@dataclass(frozen=True)
class StreamConnected:
    """Passed to ``on_connect``: which connection opened and with how many streams."""

    connection: int  # 1, 2, ... (one per 1024 streams)
    streams: int
    session: int  # 1 for its first session, then 2, 3, ... on reconnects


class _Shard:
    """One ORM worker thread and the queue of candles waiting for it."""

    def __init__(self, number: int) -> None:
        self.queue: asyncio.Queue[tuple[Feed, Kline]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"klinestream-{number}"
        )
        self.task: asyncio.Task[None] | None = None


class _Connection:
    """One websocket and the streams it should carry; reconnects until cancelled."""

    def __init__(self, owner: KlineStream, number: int) -> None:
        self.owner = owner
        self.number = number
        self.streams: set[str] = set()  # what it should carry
        self.live: set[str] = set()  # what the open socket carries (URL + sent requests)
        self.connected = False
        self.sessions = 0
        self._changed = asyncio.Event()
        self._next_id = 0
        self._requests: dict[int, tuple[str, list[str]]] = {}
        self.task: asyncio.Task[None] | None = None

    def __str__(self) -> str:
        return f"connection {self.number}"

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                reason, healthy = await self._session()
            except Exception:  # a bug must cost one session, not the stream
                log.exception("kline stream %s: session failed", self)
                reason, healthy = "error", False
            failures = 1 if healthy else failures + 1
            self.owner.stats.reconnects += 1
            RECONNECTS.labels(reason).inc()
            delay = backoff_delay(
                failures, base_s=self.owner.backoff_base_s, cap_s=self.owner.backoff_cap_s
            )
            log.info("kline stream %s: session ended (%s); reconnecting in %.2f s",
                     self, reason, delay)  # fmt: skip
            await asyncio.sleep(delay)

    async def _session(self) -> tuple[str, bool]:
        """One socket, until it ends: (reason, healthy); healthy when it had run for a while,
        which resets the backoff."""
        while not self.streams:  # nothing to carry (yet): no socket
            self._changed.clear()
            await self._changed.wait()
        names = sorted(self.streams)
        url = combined_stream_url(root=self.owner.root, streams=names[:URL_STREAMS])
        started = time.monotonic()
        reason = "disconnected"
        try:
            async with connect(
                url,
                open_timeout=self.owner.open_timeout_s,
                close_timeout=self.owner.close_timeout_s,
                logger=_WS_LOG,
            ) as ws:
                self.live = set(names[:URL_STREAMS])
                self._requests.clear()
                self.connected = True
                self.sessions += 1
                CONNECTED.inc()
                self.owner._on_connected(self)
                self._changed.set()  # SUBSCRIBE what the URL left out
                sync = asyncio.create_task(self._sync(ws), name=f"klinestream-{self.number}-sync")
                try:
                    async for frame in ws:
                        self._handle(frame)
                    reason = "closed_by_server"
                finally:
                    sync.cancel()
                    await asyncio.wait([sync])
        except InvalidStatus as exc:  # the handshake was refused (an unknown stream, ...)
            body = exc.response.body.decode(errors="replace")[:200] if exc.response.body else ""
            log.error("kline stream %s: the server refused the streams: HTTP %s %s",
                      self, exc.response.status_code, body)  # fmt: skip
            reason = "refused"
        except ConnectionClosedOK:
            reason = "closed_by_server"
        except asyncio.CancelledError:  # stopping, or no streams left for this connection
            reason = "stopped"
            raise
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("kline stream %s: socket failed: %s", self, type(exc).__name__)
            reason = "disconnected" if self.connected else "connect_failed"
        finally:
            if self.connected:
                CONNECTED.dec()
                log.info("kline stream %s: disconnected (%s)", self, reason)
            self.connected = False
            self.live = set()
        return reason, time.monotonic() - started >= self.owner.stable_s

    async def _sync(self, ws: ClientConnection) -> None:
        """Bring the open socket's subscriptions to ``streams`` whenever they change."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            drop = sorted(self.live - self.streams)
            add = sorted(self.streams - self.live)
            for method, names in (("UNSUBSCRIBE", drop), ("SUBSCRIBE", add)):
                for start in range(0, len(names), BATCH_STREAMS):
                    batch = names[start : start + BATCH_STREAMS]
                    self._next_id += 1
                    self._requests[self._next_id] = (method, batch)
                    await ws.send(
                        json.dumps({"method": method, "params": batch, "id": self._next_id})
                    )
                    if method == "SUBSCRIBE":
                        self.live.update(batch)
                    else:
                        self.live.difference_update(batch)
                    log.info("kline stream %s: %s %d stream(s)", self, method.lower(), len(batch))
                    await asyncio.sleep(BATCH_PAUSE_S)

    def _handle(self, frame: str | bytes) -> None:
        stats = self.owner.stats
        stats.events += 1
        try:
            message = json.loads(frame)
        except (ValueError, UnicodeDecodeError):
            message = None
        if not isinstance(message, dict):
            EVENTS.labels("bad").inc()
            log.warning("kline stream %s: unparseable frame of %d bytes ignored", self, len(frame))
            return
        if "stream" in message and isinstance(message.get("data"), dict):
            message = message["data"]
        if message.get("e") == "kline":
            self.owner._on_kline(self, message)
        elif "error" in message:
            EVENTS.labels("error").inc()
            method, names = self._requests.pop(message.get("id"), ("?", []))
            log.error("kline stream %s: %s of %s refused: %s",
                      self, method, ", ".join(names[:5]), message["error"])  # fmt: skip
            if method == "SUBSCRIBE":
                self.live.difference_update(names)  # not carried; retried on the next session
        elif "result" in message and "id" in message:
            EVENTS.labels("response").inc()
            self._requests.pop(message["id"], None)
        else:
            EVENTS.labels("other").inc()


class KlineStream:
    """Streams the klines of ``feeds()`` and stores each closed candle (see the module doc).

    ``feeds``: a blocking callable returning the feeds to stream (run on a worker thread every
    ``resubscribe_s``; default: the fetched feeds of ACTIVE bots). ``root``: the websocket root
    (default from ``stream_environment()`` and ``BINANCE_BASE_URL``). ``await run(stop)`` streams
    until ``stop`` is set or :meth:`request_stop` is called from any thread, then closes the
    sockets and writes what was received. ``on_connect`` and ``on_candle`` (called with the
    feed and the ``IngestOutcome`` of each candle written, from a worker thread) are for
    reporting and tests.
    """

    def __init__(
        self,
        *,
        feeds: Callable[[], Iterable[Feed]] | None = None,
        root: str | None = None,
        resubscribe_s: float | None = None,
        backoff_base_s: float | None = None,
        backoff_cap_s: float | None = None,
        stable_s: float = 60.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        workers: int = 2,
        on_connect: Callable[[StreamConnected], None] | None = None,
        on_candle: Callable[[Feed, IngestOutcome], None] | None = None,
    ) -> None:
        self.resubscribe_s = float(
            resubscribe_s if resubscribe_s is not None else settings.STREAM_RESUBSCRIBE_S
        )
        self.backoff_base_s = float(
            backoff_base_s if backoff_base_s is not None else settings.STREAM_RECONNECT_BASE_S
        )
        self.backoff_cap_s = float(
            backoff_cap_s if backoff_cap_s is not None else settings.STREAM_RECONNECT_CAP_S
        )
        if min(self.resubscribe_s, self.backoff_base_s, self.backoff_cap_s) <= 0:
            raise ValueError("resubscribe_s and the backoff times must be positive")
        if not 1 <= max_streams <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"max_streams must be 1..{MAX_STREAMS_PER_CONNECTION}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._feeds_fn = feeds or _active_feeds
        self._root = root
        self.stable_s = stable_s
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_streams = max_streams
        self.workers = workers
        self.on_connect = on_connect
        self.on_candle = on_candle
        self.stats = KlineStreamStats()
        self._wanted: dict[str, Feed] = {}
        self._conns: list[_Connection] = []
        self._shards: list[_Shard] = []
        self._queued: dict[Feed, int] = {}  # newest open time queued for writing, per feed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._orm = ThreadPoolExecutor(max_workers=1, thread_name_prefix="klinestream-feeds")

    @property
    def root(self) -> str:
        if self._root is None:
            self._root = ws_root_for(
                stream_environment(), base_url=str(settings.BINANCE_BASE_URL or "")
            )
        return self._root

    # --- read from any thread -----------------------------------------------------------------

    def feeds(self) -> list[Feed]:
        """The feeds being streamed now."""
        return sorted(self._wanted.values())

    def connections(self) -> list[list[str]]:
        """The streams of each connection, in connection order."""
        return [sorted(c.streams) for c in list(self._conns)]

    def connected(self) -> int:
        """How many connections are open now."""
        return sum(1 for c in list(self._conns) if c.connected)

    def request_stop(self) -> None:
        """Ask a running stream to shut down (safe from any thread, e.g. a signal handler)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stream until ``stop`` is set, re-reading the feeds every ``resubscribe_s``."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop = stop or asyncio.Event()
        log.info("kline stream: streaming from %s", self.root)
        self._shards = [_Shard(n) for n in range(1, self.workers + 1)]
        for shard in self._shards:
            shard.task = asyncio.create_task(self._write_loop(shard))
        try:
            while not stop.is_set():
                await self._refresh()
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.resubscribe_s)
        finally:
            await self._shutdown()

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            feeds = await loop.run_in_executor(
                self._orm, functools.partial(orm_call, lambda: list(self._feeds_fn()))
            )
        except Exception as exc:  # the database is away: keep streaming what we have
            log.warning("kline stream: cannot list the feeds: %s", type(exc).__name__)
            return
        wanted = {stream_name(f): f for f in sorted(set(feeds))}
        if wanted.keys() == self._wanted.keys():
            return
        added = sorted(wanted.keys() - self._wanted.keys())
        gone = sorted(self._wanted.keys() - wanted.keys())
        log.info("kline stream: %d stream(s)%s%s", len(wanted),
                 f"; adding {', '.join(added[:10])}" if added else "",
                 f"; dropping {', '.join(gone[:10])}" if gone else "")  # fmt: skip
        self._wanted = wanted
        self._assign(set(wanted))

    def _assign(self, names: set[str]) -> None:
        """Spread ``names`` over the connections, moving as few streams as possible."""
        for conn in self._conns:
            gone = conn.streams - names
            if gone:
                conn.streams -= gone
                conn.changed()
        placed = set().union(*(c.streams for c in self._conns)) if self._conns else set()
        todo = sorted(names - placed)
        for conn in self._conns:
            room = self.max_streams - len(conn.streams)
            if todo and room > 0:
                conn.streams.update(todo[:room])
                todo = todo[room:]
                conn.changed()
        while todo:
            conn = _Connection(self, max((c.number for c in self._conns), default=0) + 1)
            conn.streams.update(todo[: self.max_streams])
            todo = todo[self.max_streams :]
            conn.task = asyncio.create_task(conn.run(), name=f"klinestream-{conn.number}")
            self._conns.append(conn)
        for conn in [c for c in self._conns if not c.streams]:
            log.info("kline stream: closing %s (no streams left)", conn)
            self._conns.remove(conn)
            if conn.task is not None:
                conn.task.cancel()

    def _on_connected(self, conn: _Connection) -> None:
        self.stats.connects += 1
        info = StreamConnected(conn.number, len(conn.streams), conn.sessions)
        log.info("kline stream: %s connected with %d stream(s) (session %d)",
                 conn, info.streams, info.session)  # fmt: skip
        if self.on_connect is not None:
            try:
                self.on_connect(info)
            except Exception:  # a reporting hook must not take the stream down
                log.exception("kline stream: on_connect hook failed")

    def _on_kline(self, conn: _Connection, event: dict[str, Any]) -> None:
        try:
            feed, candle, closed = parse_kline_event(event)
        except ValueError as exc:
            EVENTS.labels("bad").inc()
            self.stats.failed += 1
            log.warning("kline stream %s: bad kline event ignored: %s", conn, exc)
            return
        EVENTS.labels("closed" if closed else "open").inc()
        if not closed:  # the open candle is never stored
            return
        self.stats.closed_events += 1
        if stream_name(feed) not in self._wanted:  # unsubscribed meanwhile
            return
        if candle.open_time_ms <= self._queued.get(feed, -1):  # already on its way
            self.stats.duplicates += 1
            CANDLES.labels("duplicate").inc()
            return
        self._queued[feed] = candle.open_time_ms
        shard = self._shards[zlib.crc32(str(feed).encode()) % len(self._shards)]
        shard.queue.put_nowait((feed, candle))

    async def _write_loop(self, shard: _Shard) -> None:
        loop = asyncio.get_running_loop()
        while True:
            feed, candle = await shard.queue.get()
            try:
                outcome = await loop.run_in_executor(
                    shard.executor, functools.partial(orm_call, _ingest_closed, feed, candle)
                )
            except Exception as exc:
                self.stats.failed += 1
                CANDLES.labels("failed").inc()
                log.error("kline stream: %s candle %d not stored: %s: %s",
                          feed, candle.open_time_ms, type(exc).__name__, str(exc)[:300],
                          exc_info=True)  # fmt: skip
            else:
                self._count(feed, outcome)
            finally:
                shard.queue.task_done()

    def _count(self, feed: Feed, outcome: IngestOutcome) -> None:
        if outcome.stored:
            result = "stored"
        elif outcome.updated:
            result = "updated"
        elif outcome.bad:
            result = "rejected"
            log.warning("kline stream: %s candle rejected: %s", feed, outcome.bad[0].reason)
        else:
            result = "unchanged"
        CANDLES.labels(result).inc()
        self.stats.written += 1
        if outcome.handed_off:
            self.stats.handed_off += 1
            HANDOFFS.inc()
        if self.on_candle is not None:
            try:
                self.on_candle(feed, outcome)
            except Exception:
                log.exception("kline stream: on_candle hook failed")

    async def _shutdown(self) -> None:
        conns, self._conns = self._conns, []
        for conn in conns:
            if conn.task is not None:
                conn.task.cancel()
        await asyncio.gather(*(c.task for c in conns if c.task is not None),
                             return_exceptions=True)  # fmt: skip
        # What was received is written before we go (bounded: beat covers the rest).
        try:
            await asyncio.wait_for(
                asyncio.gather(*(s.queue.join() for s in self._shards)),
                timeout=self.close_timeout_s,
            )
        except TimeoutError:
            left = sum(s.queue.qsize() for s in self._shards)
            log.warning("kline stream: %d received candles left unwritten at shutdown", left)
        loop = asyncio.get_running_loop()
        for shard in self._shards:
            if shard.task is not None:
                shard.task.cancel()
                await asyncio.wait([shard.task])
            # The worker thread's DB connection must not outlive the stream.
            with suppress(Exception):
                await loop.run_in_executor(shard.executor, connections.close_all)
            shard.executor.shutdown(wait=False)
        with suppress(Exception):
            await loop.run_in_executor(self._orm, connections.close_all)
        self._orm.shutdown(wait=False)
        log.info("kline stream: stopped (%d candles written, %d chains started)",
                 self.stats.written, self.stats.handed_off)  # fmt: skip
