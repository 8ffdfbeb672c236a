"""``manage.py import_klines PATH... [--symbol S --interval I]``: store candle files.

Prints one line per file (stored / updated / bad) and each bad row as ``file:line: reason``;
a progress bar over the files' bytes (with the rate and an ETA) goes to stderr unless
``--quiet``. Good rows are stored even when a file has bad ones; the command then exits
non-zero."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.normalize import INTERVAL_MS, symbol_interval_from_name
from ingest.services import KlineImportError, klines_import_file
from trader.progress import ProgressBar


class Command(BaseCommand):
    help = "Import Binance kline CSV/ZIP files (bad rows are reported by line and skipped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument("--symbol", help="symbol, if the file names do not say it")
        parser.add_argument(
            "--interval", choices=list(INTERVAL_MS), help="interval, if the file names do not"
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        symbol: str | None = options["symbol"]
        interval: str | None = options["interval"]
        # Refuse before importing anything: a half-done batch of files is harder to reason about.
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
            named_symbol, named_interval = symbol_interval_from_name(path)
            if not (symbol or named_symbol) or not (interval or named_interval):
                raise CommandError(
                    f"{path}: the file name does not say its symbol and interval "
                    "(expected e.g. BTCUSDT-1m-2024-01.csv); pass --symbol and --interval"
                )
        bad_total = 0
        total_kb = sum(max(1, path.stat().st_size // 1024) for path in paths)
        done_kb = 0
        bar = (
            None
            if options["quiet"]
            else ProgressBar(getattr(self.stderr, "_out", sys.stderr), unit="KiB")
        )
        for index, path in enumerate(paths, start=1):
            label = f"file {index}/{len(paths)}"
            if bar is not None:
                bar.update(label, done_kb, total_kb)
            started = time.monotonic()
            try:
                result = klines_import_file(path=path, symbol=symbol, interval=interval)
            except KlineImportError as exc:
                if bar is not None:
                    bar.close()
                raise CommandError(str(exc)) from exc
            done_kb += max(1, path.stat().st_size // 1024)
            if bar is not None:
                bar.update(label, done_kb, total_kb)
                bar.close()  # the file's result line follows on its own line
            rows = result.stored + result.updated + len(result.bad)
            seconds = max(time.monotonic() - started, 1e-6)
            self.stdout.write(
                f"{path}: {result.symbol} {result.interval}: stored {result.stored}, "
                f"updated {result.updated}, bad {len(result.bad)} "
                f"({seconds:.2f} s, {rows / seconds:,.0f} rows/s, {result.method} path)"
            )
            for bad in result.bad:
                self.stderr.write(f"{bad.source or path}:{bad.line}: {bad.reason}")
            bad_total += len(result.bad)
        if bad_total:
            raise CommandError(f"{bad_total} bad row(s) left out; the good rows were stored")
