"""List (and optionally re-fetch) the candles missing from the database.

    python manage.py kline_gaps --symbol BTCUSDT --interval 1m [--start 2024-01-01] [--end ...] \
        [--repair]

Prints one line per gap (first and last missing open time, UTC, and how many). Without
``--start``/``--end`` the stored series' own ends bound the search; with them, candles missing
at the range's edges count too. ``--repair`` re-fetches the gaps from the venue (a derived
interval: its 1m candles, then rebuilds it) and prints what is left. Exits 1 while gaps remain
(some never fill: the exchange's own history has holes).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.venues.errors import VenueError
from ingest.fetch import parse_utc
from ingest.gaps import Gap, gaps_repair, kline_gaps
from trader.domain import interval_problem


class Command(BaseCommand):
    help = "List missing candles; --repair re-fetches them. Exits 1 while gaps remain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--interval", required=True)
        parser.add_argument("--start", help="2024-01-01 or an ISO datetime (UTC)")
        parser.add_argument("--end", help="inclusive: the last open time looked at")
        parser.add_argument("--repair", action="store_true", help="re-fetch the missing candles")

    def handle(self, *args: Any, **options: Any) -> None:
        symbol = str(options["symbol"]).upper()
        interval = str(options["interval"])
        if problem := interval_problem(interval):
            raise CommandError(problem)
        try:
            start = parse_utc(options["start"]) if options["start"] else None
            end = parse_utc(options["end"]) if options["end"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if start is not None and end is not None and end < start:
            raise CommandError(f"--end {end.isoformat()} is before --start {start.isoformat()}")
        if not options["repair"]:
            remaining = kline_gaps(symbol=symbol, interval=interval, start=start, end=end)
            self._print(symbol, interval, remaining)
        else:
            try:
                result = gaps_repair(symbol=symbol, interval=interval, start=start, end=end)
            except VenueError as exc:
                raise CommandError(f"the venue refused: {exc}") from exc
            self._print(symbol, interval, result.found)
            self.stdout.write(
                f"repaired: stored {result.repaired} candle(s); "
                f"{len(result.remaining)} gap(s) remain"
            )
            for gap in result.remaining:
                self.stdout.write(f"  still missing: {gap}")
            remaining = result.remaining
        if remaining:
            missing = sum(g.count for g in remaining)
            raise CommandError(f"{len(remaining)} gap(s), {missing} candle(s) missing")

    def _print(self, symbol: str, interval: str, gaps: list[Gap]) -> None:
        if not gaps:
            self.stdout.write(f"{symbol} {interval}: no gaps")
            return
        total = sum(g.count for g in gaps)
        self.stdout.write(f"{symbol} {interval}: {len(gaps)} gap(s), {total} candle(s) missing")
        for gap in gaps:
            self.stdout.write(f"  gap {gap}")
