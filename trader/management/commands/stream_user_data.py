"""Follow every traded account's Binance user data stream and apply its order updates (the fast
path; the order monitor polls what it misses). Runs until SIGTERM or SIGINT, then closes the
sockets and the listen keys.

    python manage.py stream_user_data [--keepalive-s 1800] [--refresh-s 60]

Streams the active credentials of ACTIVE bots (and credentials with orders still open) that the
safety ladder allows (TESTNET; LIVE with TRADING_MODE=LIVE and LIVE_TRADING_CONFIRM=yes). In
DRY_RUN there is nothing to stream and it exits at once. Run one per deployment: Binance gives
every client of an account the same listen key. Prints one line per connection, with the
masked key only.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.userstream import STREAMING_MODES, Connected, UserStream


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keepalive-s", dest="keepalive_s", type=_positive, default=30 * 60,
            help="seconds between listen key keepalives (below 3600; default 1800)",
        )  # fmt: skip
        parser.add_argument(
            "--refresh-s", dest="refresh_s", type=_positive, default=60.0,
            help="seconds between checks for added or removed accounts (default 60)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.TRADING_MODE not in STREAMING_MODES:
            self.stdout.write(
                f"stream_user_data: TRADING_MODE={settings.TRADING_MODE}: paper trading has no "
                "user data stream; nothing to do"
            )
            return
        try:
            stream = UserStream(
                keepalive_s=options["keepalive_s"],
                refresh_s=options["refresh_s"],
                on_connect=self._connected,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"stream_user_data: {settings.TRADING_MODE}, keepalive every "
            f"{stream.keepalive_s:g} s, accounts checked every {stream.refresh_s:g} s"
        )
        asyncio.run(self._run(stream))
        self.stdout.write(
            f"stream_user_data: stopped after {stream.stats.events} events "
            f"({stream.stats.failed} not applied), {stream.stats.reconnects} reconnects"
        )

    async def _run(self, stream: UserStream) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stream.run(stop)

    def _connected(self, info: Connected) -> None:
        again = f" (reconnect {info.connection - 1})" if info.connection > 1 else ""
        self.stdout.write(f"connected credential {info.credential_id} {info.label}{again}")
