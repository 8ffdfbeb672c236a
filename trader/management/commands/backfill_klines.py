"""Load historical candles from the venue into the database, resumably.

    python manage.py backfill_klines --symbol BTCUSDT --interval 1m --start 2024-01-01 \
        [--end 2024-02-01]

``--start``/``--end`` are dates (midnight UTC) or ISO datetimes (UTC unless they carry an
offset); candles opening in ``[start, end)`` are loaded, ``--end`` defaulting to now (market
clock). Requests take 1500 candles each (weight 10) and are paced by the shared rate governor.

Resumable: a second run continues after the newest candle already stored in the range, so an
interrupted backfill is simply started again. Holes before that candle are not fetched (their
count is printed): that is gap repair's job, ``manage.py kline_gaps --symbol S --interval I
--start ... --repair``, or ``--repair-gaps`` here to run it over the range afterwards. This
matters when the beat has already stored the newest candles: a first backfill then "resumes"
after them, and the history before them is one hole for gap repair to fill.

Derived intervals (2m, and those in INGEST_DERIVED_INTERVALS) are not fetched: backfill 1m;
the derived candles of active bots' feeds are built as the 1m candles land.
Progress (percent, candles/s, ETA) goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.venues.errors import VenueError
from ingest.derive import to_ms
from ingest.fetch import BackfillError, BackfillProgress, klines_backfill, parse_utc
from ingest.gaps import gaps_repair
from trader.domain import interval_problem
from trader.progress import ProgressBar


def _progress(bar: ProgressBar) -> Callable[[BackfillProgress], None]:
    def draw(p: BackfillProgress) -> None:
        bar.update(f"{p.symbol} {p.interval}", p.done, p.total, rate=p.rate, eta_s=p.eta_s)

    return draw


class Command(BaseCommand):
    help = "Backfill closed candles from the venue (resumable; progress on stderr)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
        parser.add_argument("--interval", required=True, help="a fetched interval, e.g. 1m")
        parser.add_argument("--start", required=True, help="2024-01-01 or 2024-01-01T06:00:00Z")
        parser.add_argument("--end", help="exclusive; default: now")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument(
            "--repair-gaps",
            action="store_true",
            help="afterwards, re-fetch every candle still missing in the range (kline_gaps)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        symbol = str(options["symbol"]).upper()
        interval = str(options["interval"])
        if problem := interval_problem(interval):
            raise CommandError(problem)
        try:
            start = parse_utc(options["start"])
            end = parse_utc(options["end"]) if options["end"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if end is not None and end <= start:
            raise CommandError(f"--end {end.isoformat()} is not after --start {start.isoformat()}")
        bar = (
            None
            if options["quiet"]
            else ProgressBar(
                getattr(self.stderr, "_out", sys.stderr), unit="candles", rate_unit="c/s"
            )
        )
        try:
            result = klines_backfill(
                symbol=symbol,
                interval=interval,
                start_ms=to_ms(start),
                end_ms=None if end is None else to_ms(end),
                progress=None if bar is None else _progress(bar),
            )
        except BackfillError as exc:
            raise CommandError(str(exc)) from exc
        except VenueError as exc:
            raise CommandError(f"the venue refused: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()
        resumed = (
            f", resumed at {_iso(result.resumed_from_ms)}"
            if result.resumed_from_ms is not None
            else ""
        )
        self.stdout.write(
            f"{symbol} {interval}: fetched {result.fetched}, stored {result.stored}, "
            f"updated {result.updated}, bad {result.bad} in {result.requests} request(s)"
            f"{resumed}"
        )
        if options["repair_gaps"]:
            try:
                repair = gaps_repair(
                    symbol=symbol,
                    interval=interval,
                    start=result.start_ms,
                    end=result.end_ms - 1,
                )
            except VenueError as exc:
                raise CommandError(f"the venue refused: {exc}") from exc
            self.stdout.write(
                f"gap repair: {len(repair.found)} gap(s), stored {repair.repaired} candle(s); "
                f"{len(repair.remaining)} gap(s) remain"
            )
        elif result.missing_before:
            self.stdout.write(
                f"note: {result.missing_before} candle(s) are missing before "
                f"{_iso(result.resumed_from_ms or result.start_ms)}; a resumed backfill leaves "
                "them to gap repair: run again with --repair-gaps, or kline_gaps --repair"
            )


def _iso(ms: int) -> str:
    from ingest.derive import to_dt

    return to_dt(ms).isoformat().replace("+00:00", "Z")
