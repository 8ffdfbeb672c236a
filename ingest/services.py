"""Storing candles: file imports (COPY into a staging table, then one upsert) and small batches.

On Postgres a file import streams its good rows through ``COPY`` into a temporary staging table
and moves them into ``ingest_kline`` with one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, all
in one transaction: a later import of the same candle (a correction) wins, an unchanged candle
is left alone (so a re-import counts nothing as stored or updated). Other databases (the SQLite
file of ``make run``) take the ``bulk_create(update_conflicts=True)`` path instead.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction

from ingest.models import Kline
from ingest.normalize import (
    INTERVAL_MS,
    BadRow,
    close_time_ms_for,
    parse_rows,
    rows_validate,
    symbol_interval_from_name,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Rows per ``bulk_create`` statement on the fallback path.
_BATCH = 2000
#: Rows per chunk written to COPY.
_COPY_CHUNK = 20_000
_VALUE_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)


class Bar(Protocol):
    """What a candle must offer to be stored (``KlineRow`` and the venue ``Kline`` both do)."""

    @property
    def open_time_ms(self) -> int: ...
    @property
    def open(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal: ...
    @property
    def close_time_ms(self) -> int | None: ...
    @property
    def quote_volume(self) -> Decimal: ...
    @property
    def trades(self) -> int: ...
    @property
    def taker_buy_base(self) -> Decimal: ...
    @property
    def taker_buy_quote(self) -> Decimal: ...


class KlineImportError(ValueError):
    """A file that cannot be imported at all (no symbol or interval, unreadable archive)."""


@dataclass(frozen=True)
class ImportResult:
    """``stored``: new candles; ``updated``: existing candles whose values changed;
    ``bad``: rows left out, by line."""

    symbol: str
    interval: str
    stored: int
    updated: int
    bad: list[BadRow] = field(default_factory=list)


def klines_import_file(
    *,
    path: Path | str,
    symbol: str | None = None,
    interval: str | None = None,
    max_move_pct: Decimal | None = None,
) -> ImportResult:
    """Import one candle file (``.csv``, or a ``.zip`` holding one ``.csv``).

    ``symbol`` and ``interval`` default to what the file name says
    (``BTCUSDT-1m-2024-01.csv``); ``KlineImportError`` if neither gives them. Every row is checked
    (``ingest.normalize``); the good ones are stored in one transaction, the bad ones returned
    with their line. ``max_move_pct`` defaults to ``settings.INGEST_MAX_MOVE_PCT`` or 10."""
    path = Path(path)
    text, source, names = _read_file(path)
    for name in names:
        named_symbol, named_interval = symbol_interval_from_name(name)
        symbol = symbol or named_symbol
        interval = interval or named_interval
    if not symbol or not interval:
        raise KlineImportError(
            f"{path}: the file name does not say its symbol and interval "
            "(expected e.g. BTCUSDT-1m-2024-01.csv); pass them explicitly"
        )
    if interval not in INTERVAL_MS:
        raise KlineImportError(
            f"unknown interval {interval!r}; expected one of {list(INTERVAL_MS)}"
        )
    if max_move_pct is None:
        max_move_pct = Decimal(str(getattr(settings, "INGEST_MAX_MOVE_PCT", 10)))
    rows, unreadable = parse_rows(text, source=source, interval=interval)
    good, bad_ticks = rows_validate(rows, source=source, max_move_pct=max_move_pct)
    bad = sorted(unreadable + bad_ticks, key=lambda b: b.line)
    stored, updated = klines_store(symbol=symbol, interval=interval, rows=good)
    return ImportResult(symbol=symbol, interval=interval, stored=stored, updated=updated, bad=bad)


def klines_store(*, symbol: str, interval: str, rows: Sequence[Bar]) -> tuple[int, int]:
    """Upsert validated rows of distinct open times; ``(stored, updated)``.

    Postgres: COPY into a staging table and one upsert. Elsewhere: ``kline_upsert_batch``, where
    ``updated`` counts every candle that existed before, changed or not."""
    if not rows:
        return 0, 0
    if connection.vendor == "postgresql":
        return _copy_upsert(symbol=symbol, interval=interval, rows=rows)
    with transaction.atomic():
        existing = Kline.objects.filter(
            symbol=symbol,
            interval=interval,
            open_time__in=[_dt(r.open_time_ms) for r in rows],
        ).count()
        total = kline_upsert_batch(symbol=symbol, interval=interval, bars=rows)
    return total - existing, existing


def kline_upsert_batch(*, symbol: str, interval: str, bars: Sequence[Bar]) -> int:
    """Insert or update a small batch of closed candles (``bulk_create(update_conflicts=True)``).

    Returns how many candles were written. Works on every database Django supports."""
    objs = [
        Kline(
            symbol=symbol,
            interval=interval,
            open_time=_dt(bar.open_time_ms),
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            close_time=_dt(_close_ms(bar, interval)),
            quote_volume=bar.quote_volume,
            trades=bar.trades,
            taker_buy_base=bar.taker_buy_base,
            taker_buy_quote=bar.taker_buy_quote,
        )
        for bar in bars
    ]
    Kline.objects.bulk_create(
        objs,
        batch_size=_BATCH,
        update_conflicts=True,
        unique_fields=["symbol", "interval", "open_time"],
        update_fields=list(_VALUE_FIELDS),
    )
    return len(objs)


# --- internals ------------------------------------------------------------------------------

_STAGE_COLUMNS = (
    "open_time_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time_ms",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)
_STAGE_DDL = """
CREATE TEMP TABLE ingest_kline_stage (
    open_time_ms bigint NOT NULL, open numeric NOT NULL, high numeric NOT NULL,
    low numeric NOT NULL, close numeric NOT NULL, volume numeric NOT NULL,
    close_time_ms bigint NOT NULL, quote_volume numeric NOT NULL, trades bigint NOT NULL,
    taker_buy_base numeric NOT NULL, taker_buy_quote numeric NOT NULL
) ON COMMIT DROP
"""
# xmax = 0 on the returned row means it was inserted, not updated (a Postgres idiom). The WHERE
# of DO UPDATE leaves unchanged candles untouched, so a re-import neither rewrites nor counts them.
_UPSERT = """
WITH upserted AS (
    INSERT INTO ingest_kline AS k (
        symbol, interval, open_time, open, high, low, close, volume, close_time,
        quote_volume, trades, taker_buy_base, taker_buy_quote
    )
    SELECT %s, %s,
        'epoch'::timestamptz + open_time_ms * interval '1 millisecond',
        open, high, low, close, volume,
        'epoch'::timestamptz + close_time_ms * interval '1 millisecond',
        quote_volume, trades, taker_buy_base, taker_buy_quote
    FROM ingest_kline_stage
    ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
        close = EXCLUDED.close, volume = EXCLUDED.volume, close_time = EXCLUDED.close_time,
        quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
        taker_buy_base = EXCLUDED.taker_buy_base, taker_buy_quote = EXCLUDED.taker_buy_quote
    WHERE (k.open, k.high, k.low, k.close, k.volume, k.close_time, k.quote_volume, k.trades,
           k.taker_buy_base, k.taker_buy_quote)
        IS DISTINCT FROM
          (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
           EXCLUDED.close_time, EXCLUDED.quote_volume, EXCLUDED.trades,
           EXCLUDED.taker_buy_base, EXCLUDED.taker_buy_quote)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
"""


def _copy_upsert(*, symbol: str, interval: str, rows: Sequence[Bar]) -> tuple[int, int]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        # Django's cursor wraps psycopg 3's; COPY is only on the latter.
        raw = cursor.cursor
        with raw.copy(f"COPY ingest_kline_stage ({', '.join(_STAGE_COLUMNS)}) FROM STDIN") as copy:
            for chunk in _copy_text(rows, interval):
                copy.write(chunk)
        cursor.execute(_UPSERT, [symbol, interval])
        stored, updated = cursor.fetchone()
    return int(stored), int(updated)


def _copy_text(rows: Sequence[Bar], interval: str) -> Iterator[str]:
    """COPY text format, a chunk at a time. Decimals print exactly (``str``); validated rows
    hold no NaN, tab or newline."""
    for start in range(0, len(rows), _COPY_CHUNK):
        yield "".join(
            f"{r.open_time_ms}\t{r.open}\t{r.high}\t{r.low}\t{r.close}\t{r.volume}\t"
            f"{_close_ms(r, interval)}\t{r.quote_volume}\t{r.trades}\t{r.taker_buy_base}\t"
            f"{r.taker_buy_quote}\n"
            for r in rows[start : start + _COPY_CHUNK]
        )


def _close_ms(bar: Bar, interval: str) -> int:
    return (
        bar.close_time_ms
        if bar.close_time_ms is not None
        else close_time_ms_for(bar.open_time_ms, interval)
    )


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _read_file(path: Path) -> tuple[str, str, list[str]]:
    """``(text, source, names)``: the CSV text, how to name it in messages, and the file names
    that may carry symbol and interval (most specific first)."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [
                    m
                    for m in archive.namelist()
                    if m.lower().endswith(".csv") and not m.startswith("__MACOSX/")
                ]
                if len(members) != 1:
                    raise KlineImportError(f"{path}: expected one .csv inside, found {members}")
                data = archive.read(members[0])
        except zipfile.BadZipFile as exc:
            raise KlineImportError(f"{path}: not a zip archive ({exc})") from exc
        source = f"{path}:{members[0]}"
        names = [Path(members[0]).name, path.name]
    else:
        data = path.read_bytes()
        source = str(path)
        names = [path.name]
    try:
        return data.decode("utf-8-sig"), source, names
    except UnicodeDecodeError as exc:
        raise KlineImportError(f"{source}: not UTF-8 text ({exc})") from exc
