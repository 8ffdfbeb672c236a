"""Stream klines over Binance's websocket and store every candle as it closes (the fast path;
beat's fetch fills whatever the stream misses). Runs until SIGTERM or SIGINT.

    python manage.py stream_klines [--symbol BTCUSDT ...] [--interval 1m ...]
                                   [--resubscribe-s 30] [--workers 2]

Without ``--symbol`` it streams the feeds of ACTIVE bots (derived intervals such as 2m as their
symbol's 1m) and re-reads them every ``STREAM_RESUBSCRIBE_S`` seconds; with ``--symbol`` (and
``--interval``, default 1m) exactly those. Runs in every TRADING_MODE: market data is public.
Against the emulator, set ``BINANCE_BASE_URL`` to its ``.../fapi`` root. Prints one line per
connection.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.feeds import Feed, fetched_feeds
from ingest.stream import KlineStream, StreamConnected
from trader.domain import interval_problem, symbol_problem


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


def _names(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated options, flattened."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--symbol", action="append", dest="symbols",
            help="stream this symbol (repeat or comma-separate); default: ACTIVE bots' feeds",
        )  # fmt: skip
        parser.add_argument(
            "--interval", action="append", dest="intervals",
            help="with --symbol: these intervals (repeat or comma-separate; default 1m)",
        )  # fmt: skip
        parser.add_argument(
            "--resubscribe-s", dest="resubscribe_s", type=_positive, default=None,
            help="seconds between re-reads of the wanted feeds (default STREAM_RESUBSCRIBE_S)",
        )  # fmt: skip
        parser.add_argument(
            "--workers", type=int, default=2,
            help="threads writing candles (each feed always on the same one; default 2)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        symbols = [s.upper() for s in _names(options["symbols"])]
        intervals = _names(options["intervals"])
        if intervals and not symbols:
            raise CommandError("--interval needs --symbol")
        for symbol in symbols:
            if problem := symbol_problem(symbol):
                raise CommandError(problem)
        for interval in intervals:
            if problem := interval_problem(interval):
                raise CommandError(problem)
        fixed = fetched_feeds(Feed(s, i) for s in symbols for i in intervals or ["1m"])
        feeds = (lambda: fixed) if symbols else None
        try:
            stream = KlineStream(
                feeds=feeds,
                resubscribe_s=options["resubscribe_s"],
                workers=options["workers"],
                on_connect=self._connected,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        what = ", ".join(str(f) for f in fixed) if symbols else "the feeds of ACTIVE bots"
        self.stdout.write(
            f"stream_klines: {what} from {stream.root} ({settings.TRADING_MODE}); feeds re-read "
            f"every {stream.resubscribe_s:g} s"
        )
        asyncio.run(self._run(stream))
        stats = stream.stats
        self.stdout.write(
            f"stream_klines: stopped after {stats.events} messages, {stats.written} candles "
            f"written ({stats.handed_off} chains started, {stats.failed} failed), "
            f"{stats.reconnects} reconnects"
        )

    async def _run(self, stream: KlineStream) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stream.run(stop)

    def _connected(self, info: StreamConnected) -> None:
        again = f" (reconnect {info.session - 1})" if info.session > 1 else ""
        self.stdout.write(f"connected connection {info.connection}: {info.streams} streams{again}")
