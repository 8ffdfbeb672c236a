"""The user data stream: the fast path for order updates (the order monitor polls what it misses).

One listen key and one websocket per exchange account we trade on: every active credential of
an ACTIVE bot, plus any credential that still has open orders (a paused bot's stop-loss must
still be followed). Every event is handed to ``execution.lifecycle.event_apply``, the one
idempotent place where ORDER_TRADE_UPDATE / ALGO_UPDATE change orders; the stream itself
decides nothing about orders.

Binance's rules (reference §7.5): ``POST /fapi/v1/listenKey`` creates a key valid for 60 minutes
(or returns the account's active key, extended), ``PUT`` extends it (-1125 once it is gone),
``DELETE`` closes it; the socket is ``<ws root>/private/ws?listenKey=KEY`` and lives at most
24 hours; ``{"e": "listenKeyExpired"}`` announces the end of a key. After an expiry, a -1125 on
keepalive or any disconnect the key is re-created and the socket reopened, with a capped,
jittered exponential backoff over consecutive failures. Events sent while disconnected are not
replayed by Binance: the order monitor's polling covers that gap.

Threads: the asyncio loop only does I/O. Django ORM work (building a venue from a credential,
applying events) runs on one worker thread per account, fed from a queue: each account's events
are applied in arrival order, the socket keeps being read while a reaction is slow
(``event_apply`` may place or cancel orders), and one account's slowness leaves the others
alone. Blocking venue calls (listen key requests) go to the default executor.

Run one stream process per deployment (``manage.py stream_user_data``): Binance hands the same
listen key to every client of an account, so a second process closing its key on shutdown
would end the first one's stream too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.db.models import Q
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from execution.lifecycle import event_apply
from execution.models import Order
from execution.services import venue_for_credential
from execution.states import OPEN, IllegalTransition
from execution.venues import errors
from execution.venues.binance import BinanceFuturesVenue
from trader.dbthreads import orm_call
from trader.models import ApiCredential, BotStatus, Environment

log = logging.getLogger(__name__)
# websockets logs the request line (which carries the listen key) at DEBUG: keep that logger at
# INFO whatever LOG_LEVEL says, so a debug run cannot write keys to the log.
_WS_LOG = logging.getLogger(f"{__name__}.websocket")
_WS_LOG.setLevel(logging.INFO)

T = TypeVar("T")

EVENTS = Counter(
    "trader_userstream_events_total", "User data stream events received, by event type.", ["type"]
)
EVENT_FAILURES = Counter(
    "trader_userstream_event_failures_total",
    "User data stream events that could not be parsed or applied, by event type.",
    ["type"],
)
RECONNECTS = Counter(
    "trader_userstream_reconnects_total",
    "User data stream sessions ended and reopened, by reason.",
    ["reason"],
)

LIVE_WS_ROOT = "wss://fstream.binance.com"
TESTNET_WS_ROOT = "wss://fstream.binancefuture.com"
STREAMING_MODES = ("TESTNET", "LIVE")
INVALID_LISTEN_KEY = -1125
#: The monitor-facing beacon of a connected account expires this long after its last refresh.
BEACON_TTL_S = 90
_EVENT_TYPE = re.compile(r"^[A-Za-z_]{1,40}$")  # a label value; anything else is "other"


# --- pure helpers ------------------------------------------------------------------------------


def ws_root_for(environment: str, *, base_url: str = "") -> str:
    """The websocket root for ``environment``: derived from ``base_url`` when one is configured
    (the emulator: ``http://127.0.0.1:PORT/fapi`` -> ``ws://127.0.0.1:PORT``), else Binance's
    own (python-binance 1.0.36's ``FSTREAM_URL`` / ``FSTREAM_TESTNET_URL``)."""
    if base_url:
        parts = urlsplit(base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}"
    return LIVE_WS_ROOT if environment == Environment.LIVE else TESTNET_WS_ROOT


def stream_url(*, root: str, listen_key: str) -> str:
    """The user data stream URL (the category path Binance uses since 2026-04-23)."""
    return f"{root.rstrip('/')}/private/ws?listenKey={quote(listen_key, safe='')}"


def backoff_delay(
    failures: int, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after ``failures`` consecutive failed sessions (1 for the first): doubling
    from ``base_s``, capped at ``cap_s``, jittered into [50 %, 100 %] so that many accounts
    cut off together do not all come back in the same instant."""
    ceiling = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + 0.5 * rng())


def event_type_label(event: Any) -> str:
    """The event's ``e`` as a metric label (bounded: odd values become "other")."""
    kind = event.get("e") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) and _EVENT_TYPE.match(kind) else "other"


# --- what to stream ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTarget:
    """One account to stream. ``version`` changes when its keys are replaced (restart)."""

    credential_id: int
    label: str  # str(credential): label, environment, masked key; never the key itself
    environment: str
    version: datetime


def streamable_environments() -> list[str]:
    """The environments the safety ladder lets us reach now (as ``ensure_environment_allowed``):
    TESTNET in TESTNET and LIVE modes, LIVE only with TRADING_MODE=LIVE and the confirmation."""
    if settings.TRADING_MODE not in STREAMING_MODES:
        return []
    if settings.TRADING_MODE == "LIVE" and settings.LIVE_TRADING_CONFIRM:
        return [Environment.TESTNET, Environment.LIVE]
    return [Environment.TESTNET]


def stream_targets() -> list[StreamTarget]:
    """Active credentials of ACTIVE bots, and active credentials with orders still open."""
    with_open_orders = Order.objects.filter(state__in=OPEN, credential__isnull=False).values(
        "credential_id"
    )
    credentials = (
        ApiCredential.objects.filter(is_active=True, environment__in=streamable_environments())
        .filter(Q(bots__status=BotStatus.ACTIVE) | Q(pk__in=with_open_orders))
        .distinct()
        .order_by("pk")
    )
    return [
        StreamTarget(
            credential_id=c.pk, label=str(c), environment=c.environment, version=c.rotated_at
        )
        for c in credentials
    ]


def _venue_for_credential_id(credential_id: int) -> BinanceFuturesVenue:
    return venue_for_credential(credential=ApiCredential.objects.get(pk=credential_id))


def _event_apply(*, account: str, event: dict[str, Any]) -> Order | None:
    """``event_apply``, once more when a concurrent writer (the placement answering from its REST
    response, the monitor) moved the order between event_apply's read and its row lock: that
    surfaces as ``IllegalTransition`` (e.g. the stream's NEW arriving after placement recorded
    FILLED). The second run reads the new state and records the report as stale, as the
    lifecycle intends; it is safe because event_apply is idempotent."""
    try:
        return event_apply(account=account, event=event)
    except IllegalTransition as exc:
        log.info("userstream %s: %s raced a concurrent update (%s); applying again",
                 account, event.get("e"), exc)  # fmt: skip
        return event_apply(account=account, event=event)


# --- the stream --------------------------------------------------------------------------------


@dataclass
class StreamStats:
    """Counts for this process (Prometheus has the same, labelled); read them from any thread."""

    connects: int = 0
    reconnects: int = 0
    events: int = 0
    applied: int = 0
    failed: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Connected:
    """Passed to ``on_connect``: which account's socket opened (the label is masked)."""

    credential_id: int
    label: str
    connection: int  # 1 for the first connection of this account, then 2, 3, ... on reconnects


class _AccountStream:
    """One account: its listen key, its socket, its keepalive, and the queue of events waiting
    for its ORM worker thread.

    Reading and applying are decoupled: the socket is always read (so pings are answered and
    Binance never sees a slow consumer) while ``event_apply`` works through the queue in arrival
    order, even across a reconnect, at whatever pace its reactions (placing or cancelling
    orders) allow.
    """

    def __init__(self, owner: UserStream, target: StreamTarget) -> None:
        self.owner = owner
        self.target = target
        self.account = f"credential-{target.credential_id}"
        self.listen_key: str | None = None
        self.connected = False
        self.connections = 0
        self._venue: BinanceFuturesVenue | None = None
        self._ws: ClientConnection | None = None
        self._end_reason: str | None = None
        self._pending: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._orm = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"userstream-{target.credential_id}"
        )

    def __str__(self) -> str:
        return f"credential {self.target.credential_id}"

    async def _db(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._orm, functools.partial(orm_call, fn, *args, **kwargs)
        )

    async def run(self) -> None:
        """Sessions until cancelled; then close the socket, apply what was received, DELETE the
        key and release the thread."""
        applier = asyncio.create_task(self._apply_pending(), name=f"{self.account}-apply")
        failures = 0
        try:
            while True:
                try:
                    reason, healthy = await self._session()
                except Exception:  # a bug must cost one session, not the account's stream
                    log.exception("userstream %s: session failed", self)
                    reason, healthy = "error", False
                failures = 1 if healthy else failures + 1
                self.owner.stats.reconnects += 1
                RECONNECTS.labels(reason).inc()
                delay = backoff_delay(
                    failures, base_s=self.owner.backoff_base_s, cap_s=self.owner.backoff_cap_s
                )
                log.info("userstream %s: session ended (%s); reconnecting in %.2f s",
                         self, reason, delay)  # fmt: skip
                await asyncio.sleep(delay)
        finally:
            await self._shutdown(applier)

    async def _session(self) -> tuple[str, bool]:
        """One listen key and one socket, until it ends. Returns (reason, healthy): healthy when
        the session ended in the normal course of things (key expiry) or had run for a while,
        which resets the backoff."""
        self._end_reason = None
        try:
            venue = self._venue
            if venue is None:
                venue = await self._db(_venue_for_credential_id, self.target.credential_id)
                self._venue = venue
            key = self.listen_key = await asyncio.to_thread(venue.create_listen_key)
        except Exception as exc:  # venue errors, an undecryptable credential, the DB: retry later
            log.warning("userstream %s: no listen key: %s %s", self, type(exc).__name__,
                        getattr(exc, "code", ""))  # fmt: skip
            return "listen_key_failed", False
        root = ws_root_for(self.target.environment, base_url=str(settings.BINANCE_BASE_URL or ""))
        started = time.monotonic()
        try:
            async with connect(
                stream_url(root=root, listen_key=key),
                open_timeout=self.owner.open_timeout_s,
                logger=_WS_LOG,
            ) as ws:
                self._ws = ws
                self.connected = True
                self.connections += 1
                self.owner._on_connected(self)
                keepalive = asyncio.create_task(self._keepalive(ws, venue, key))
                beacon = asyncio.create_task(self._beacon())
                try:
                    async for frame in ws:
                        if await self._handle(frame) == "expired":
                            self._end_reason = "listen_key_expired"
                            break
                finally:
                    keepalive.cancel()
                    beacon.cancel()
                    # wait() neither raises the task's CancelledError nor hides our own.
                    await asyncio.wait([keepalive, beacon])
                    await asyncio.to_thread(cache.delete, self._beacon_key)
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("userstream %s: socket failed: %s", self, type(exc).__name__)
            if self._end_reason is None:
                self._end_reason = "disconnected" if self.connected else "connect_failed"
        finally:
            self._ws = None
            self.connected = False
        reason = self._end_reason or "disconnected"
        lasted = time.monotonic() - started
        normal_end = reason in ("listen_key_expired", "keepalive_invalid_key")
        return reason, normal_end or lasted >= self.owner.stable_s

    async def _handle(self, frame: str | bytes) -> str | None:
        """One frame: parsed, counted, queued for applying; "expired" when it ends our key."""
        stats = self.owner.stats
        stats.events += 1
        try:
            event = json.loads(frame)
        except (ValueError, UnicodeDecodeError):
            event = None
        if not isinstance(event, dict):
            stats.failed += 1
            EVENTS.labels("unparseable").inc()
            EVENT_FAILURES.labels("unparseable").inc()
            log.warning("userstream %s: unparseable frame of %d bytes ignored", self, len(frame))
            return None
        kind = event_type_label(event)
        stats.by_type[kind] = stats.by_type.get(kind, 0) + 1
        EVENTS.labels(kind).inc()
        if kind == "listenKeyExpired":
            # Only our current key's notice ends the session (a late one for an old key does not).
            return "expired" if event.get("listenKey") in (None, self.listen_key) else None
        self._pending.put_nowait((kind, event))
        return None

    async def _apply_pending(self) -> None:
        while True:
            kind, event = await self._pending.get()
            try:
                await self._apply(kind, event)
            finally:
                self._pending.task_done()

    async def _apply(self, kind: str, event: dict[str, Any]) -> None:
        """Hand one event to the lifecycle; a failure is logged and counted, never raised."""
        stats = self.owner.stats
        try:
            await self._db(_event_apply, account=self.account, event=event)
        except Exception as exc:
            stats.failed += 1
            EVENT_FAILURES.labels(kind).inc()
            raw = event.get("o")
            order = raw if isinstance(raw, dict) else {}
            log.error(
                "userstream %s: %s event not applied (symbol %s, client id %s): %s: %s",
                self, kind, order.get("s"), order.get("c") or order.get("caid"),
                type(exc).__name__, str(exc)[:300], exc_info=True,
            )  # fmt: skip
            return
        stats.applied += 1

    @property
    def _beacon_key(self) -> str:
        from execution.monitor import STREAM_BEACON

        return f"{STREAM_BEACON}:credential-{self.target.credential_id}"

    async def _beacon(self) -> None:
        """While connected, tell the order monitor (through the shared cache) that this
        account's orders are streamed, so that it polls little."""
        while True:
            await asyncio.to_thread(cache.set, self._beacon_key, 1, BEACON_TTL_S)
            await asyncio.sleep(BEACON_TTL_S / 3)

    async def _keepalive(
        self, ws: ClientConnection, venue: BinanceFuturesVenue, listen_key: str
    ) -> None:
        """PUT the key every ``keepalive_s``; a -1125 (the key is gone) ends the session so that
        a new key is made; other failures are retried sooner (the key lives 60 minutes)."""
        delay = self.owner.keepalive_s
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(venue.keepalive_listen_key, listen_key)
                delay = self.owner.keepalive_s
            except errors.VenueError as exc:
                if exc.code == INVALID_LISTEN_KEY:
                    log.warning("userstream %s: keepalive says the listen key is gone", self)
                    self._end_reason = "keepalive_invalid_key"
                    await ws.close()
                    return
                log.warning("userstream %s: keepalive failed: %s %s",
                            self, type(exc).__name__, exc.code)  # fmt: skip
                delay = min(self.owner.keepalive_s, 60.0)

    async def _shutdown(self, applier: asyncio.Task[None]) -> None:
        if self._ws is not None:
            with suppress(Exception):
                await self._ws.close()
        # What was received is applied before we go (bounded: the monitor covers the rest).
        try:
            await asyncio.wait_for(self._pending.join(), timeout=self.owner.close_timeout_s)
        except TimeoutError:
            log.warning("userstream %s: %d received events left unapplied at shutdown",
                        self, self._pending.qsize())  # fmt: skip
        applier.cancel()
        await asyncio.wait([applier])
        key, self.listen_key = self.listen_key, None
        if key and self._venue is not None:
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self._venue.close_listen_key, key),
                    timeout=self.owner.close_timeout_s,
                )
            except Exception as exc:  # it expires by itself within 60 minutes anyway
                log.warning("userstream %s: closing the listen key failed: %s",
                            self, type(exc).__name__)  # fmt: skip
        # The worker thread's DB connection must not outlive the stream (and hold the database).
        with suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._orm, connections.close_all)
        self._orm.shutdown(wait=False)


class UserStream:
    """Keeps one user data stream per account we trade on (see the module docstring).

    ``await stream.run(stop)`` runs until ``stop`` is set (or :meth:`request_stop` is called
    from any thread), then closes every socket and DELETEs every listen key. In DRY_RUN there
    is nothing to stream: it logs that and returns at once.
    """

    def __init__(
        self,
        *,
        keepalive_s: float = 30 * 60,
        refresh_s: float = 60.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        stable_s: float = 60.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        on_connect: Callable[[Connected], None] | None = None,
    ) -> None:
        if keepalive_s <= 0 or refresh_s <= 0 or backoff_base_s <= 0 or backoff_cap_s <= 0:
            raise ValueError("keepalive_s, refresh_s and the backoff times must be positive")
        if keepalive_s >= 60 * 60:
            raise ValueError("keepalive_s must be below 3600: a listen key lives 60 minutes")
        self.keepalive_s = keepalive_s
        self.refresh_s = refresh_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_s = stable_s
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.on_connect = on_connect
        self.stats = StreamStats()
        self._streams: dict[int, tuple[_AccountStream, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._orm = ThreadPoolExecutor(max_workers=1, thread_name_prefix="userstream-refresh")

    # --- read from any thread -----------------------------------------------------------------

    def credential_ids(self) -> list[int]:
        """The accounts being streamed now."""
        return sorted(self._streams)

    def listen_key(self, credential_id: int) -> str | None:
        """The key the stream currently holds for ``credential_id`` (None if none)."""
        entry = self._streams.get(credential_id)
        return entry[0].listen_key if entry else None

    def is_connected(self, credential_id: int) -> bool:
        entry = self._streams.get(credential_id)
        return bool(entry and entry[0].connected)

    def request_stop(self) -> None:
        """Ask a running stream to shut down (safe from any thread, e.g. a signal handler)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stream until ``stop`` is set, picking up and dropping accounts every ``refresh_s``."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop = stop or asyncio.Event()
        if settings.TRADING_MODE not in STREAMING_MODES:
            log.info("userstream: TRADING_MODE=%s: paper trading has no user data stream",
                     settings.TRADING_MODE)  # fmt: skip
            self._orm.shutdown(wait=False)
            return
        try:
            while not stop.is_set():
                await self._refresh()
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.refresh_s)
        finally:
            await asyncio.gather(
                *(self._drop(cid) for cid in list(self._streams)), return_exceptions=True
            )
            with suppress(Exception):
                await self._loop.run_in_executor(self._orm, connections.close_all)
            self._orm.shutdown(wait=False)
            log.info("userstream: stopped")

    async def _refresh(self) -> None:
        try:
            targets = await asyncio.get_running_loop().run_in_executor(
                self._orm, functools.partial(orm_call, stream_targets)
            )
        except Exception as exc:  # the database is away: keep streaming what we have
            log.warning("userstream: cannot list accounts: %s", type(exc).__name__)
            return
        wanted = {t.credential_id: t for t in targets}
        for cid, (stream, task) in list(self._streams.items()):
            target = wanted.get(cid)
            if target is None or target.version != stream.target.version or task.done():
                log.info("userstream: dropping %s (%s)", stream, "restart" if target else "gone")
                await self._drop(cid)
        for cid, target in wanted.items():
            if cid not in self._streams:
                stream = _AccountStream(self, target)
                task = asyncio.create_task(stream.run(), name=f"userstream-{cid}")
                self._streams[cid] = (stream, task)
                log.info("userstream: streaming %s %s", stream, target.label)

    async def _drop(self, credential_id: int) -> None:
        stream, task = self._streams[credential_id]
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("userstream: %s ended with an error", stream)
        self._streams.pop(credential_id, None)

    def _on_connected(self, stream: _AccountStream) -> None:
        self.stats.connects += 1
        info = Connected(stream.target.credential_id, stream.target.label, stream.connections)
        log.info("userstream: %s %s connected (connection %d)",
                 stream, info.label, info.connection)  # fmt: skip
        if self.on_connect is not None:
            try:
                self.on_connect(info)
            except Exception:  # a reporting hook must not take the stream down
                log.exception("userstream: on_connect hook failed")
