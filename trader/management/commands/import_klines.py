"""``manage.py import_klines PATH... [--symbol S --interval I]``: store candle files.

Prints one line per file (stored / updated / bad) and each bad row as ``file:line: reason``.
Good rows are stored even when a file has bad ones; the command then exits non-zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.normalize import INTERVAL_MS, symbol_interval_from_name
from ingest.services import KlineImportError, klines_import_file


class Command(BaseCommand):
    help = "Import Binance kline CSV/ZIP files (bad rows are reported by line and skipped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument("--symbol", help="symbol, if the file names do not say it")
        parser.add_argument(
            "--interval", choices=list(INTERVAL_MS), help="interval, if the file names do not"
        )

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
        for path in paths:
            try:
                result = klines_import_file(path=path, symbol=symbol, interval=interval)
            except KlineImportError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(
                f"{path}: {result.symbol} {result.interval}: stored {result.stored}, "
                f"updated {result.updated}, bad {len(result.bad)}"
            )
            for bad in result.bad:
                self.stderr.write(f"{bad.source or path}:{bad.line}: {bad.reason}")
            bad_total += len(result.bad)
        if bad_total:
            raise CommandError(f"{bad_total} bad row(s) left out; the good rows were stored")
