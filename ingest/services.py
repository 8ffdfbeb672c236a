"""Storing candles: file imports (COPY into a staging table, then one upsert) and small batches.

On Postgres a file import hands the file's text to ``ingest.bulk``: COPY straight into a
staging table, Postgres parses and checks every row (the rules of ``ingest.normalize``, with the
same result), and one statement stores the good rows, all in one transaction: a later import of
the same candle (a correction) wins, an unchanged candle is left alone (so a re-import counts
nothing as stored or updated). A file ``ingest.bulk`` cannot read exactly like the reference
falls back to parsing in Python and ``klines_store`` (``COPY`` of the parsed rows, one upsert);
other databases (the SQLite file of ``make run``) take that path with
``bulk_create(update_conflicts=True)``.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction

from ingest.bulk import klines_import_text
from ingest.models import Kline
from ingest.normalize import (
    INTERVAL_MS,
    STORED_COLUMNS,
    BadRow,
    KlineRow,
    close_time_ms_for,
    parse_rows,
    rows_validate,
    symbol_interval_from_name,
)
from trader.domain import interval_problem, to_dt, to_ms

#: Rows per ``bulk_create`` statement on the fallback path.
_BATCH = 2000
#: Rows per chunk written to COPY.
_COPY_CHUNK = 20_000
_VALUE_FIELDS = STORED_COLUMNS


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
    ``bad``: rows left out, by line; ``method``: ``"postgres"`` (``ingest.bulk``: Postgres
    parsed and checked the file) or ``"python"`` (``ingest.normalize``, the reference)."""

    symbol: str
    interval: str
    stored: int
    updated: int
    bad: list[BadRow] = field(default_factory=list)
    method: str = "python"


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
    (``ingest.normalize``'s rules); the good ones are stored in one transaction, the bad ones
    returned with their line. ``max_move_pct`` defaults to ``settings.INGEST_MAX_MOVE_PCT`` or 10.

    On Postgres, Postgres itself parses and checks the file (``ingest.bulk``, same result, several
    times faster); a file it cannot read exactly like the reference, and every other database,
    go through ``ingest.normalize`` in Python and ``klines_store``."""
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
    if problem := interval_problem(interval):
        raise KlineImportError(problem)
    if max_move_pct is None:
        max_move_pct = Decimal(str(getattr(settings, "INGEST_MAX_MOVE_PCT", 10)))
    if connection.vendor == "postgresql":
        outcome = klines_import_text(
            text=text, source=source, symbol=symbol, interval=interval, max_move_pct=max_move_pct
        )
        if outcome is not None:
            return ImportResult(
                symbol=symbol,
                interval=interval,
                stored=outcome.stored,
                updated=outcome.updated,
                bad=outcome.bad,
                method="postgres",
            )
    try:
        rows, unreadable = parse_rows(text, source=source, interval=interval)
    except csv.Error as exc:  # a NUL, a carriage return inside a line
        raise KlineImportError(f"{source}: not a CSV file the importer can read ({exc})") from exc
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
            open_time__in=[to_dt(r.open_time_ms) for r in rows],
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
            open_time=to_dt(bar.open_time_ms),
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            close_time=to_dt(_close_ms(bar, interval)),
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


# --- live paths (beat fetch, websocket stream) ------------------------------------------------

#: Most missing candles one live ingestion re-fetches in-line; an older or longer hole is left
#: to ``manage.py kline_gaps --repair`` (or ``backfill_klines``), and logged.
REPAIR_MAX_CANDLES = 10 * 1500
#: How long the price cache key outlives its candle, in intervals (at least a minute).
_PRICE_TTL_INTERVALS = 3
_live_log = logging.getLogger("ingest.live")


@dataclass(frozen=True)
class IngestOutcome:
    """What one live ingestion call did. ``newest_open_ms``: the newest closed candle stored
    (None if none); ``handed_off``: whether this call started the chain for it. ``repaired``:
    missing candles the in-line gap repair stored; ``derived``: derived interval -> candles
    built; ``derived_handed_off``: the derived intervals whose newest candle this call handed
    off."""

    symbol: str
    interval: str
    stored: int
    updated: int
    bad: list[BadRow] = field(default_factory=list)
    newest_open_ms: int | None = None
    handed_off: bool = False
    repaired: int = 0
    derived: dict[str, int] = field(default_factory=dict)
    derived_handed_off: tuple[str, ...] = ()


def klines_ingest(
    *,
    symbol: str,
    interval: str,
    bars: Sequence[Bar],
    path: str,
    now_ms: int | None = None,
    hand_off: bool = True,
    repair: bool = True,
    venue: Any = None,
) -> IngestOutcome:
    """The live paths' one way in. ``path`` names the caller (``beat``, ``stream``,
    ``repair``, ``backfill``) for logs and metrics.

    1. Keeps only candles closed at ``now_ms`` (market time, default
       ``trader.clock.market_now_ms()``); a repeated open time keeps its last bar.
    2. Rejects bad ticks (``ingest.normalize.bad_tick``), judged against the stored candles
       before them (previous close, trailing volumes); each is logged with its rule and values
       and counted by rule.
    3. Upserts the rest (``klines_store_live``: a changed candle wins, the same one twice is one
       row).
    4. With ``repair``: re-fetches, once, the candles missing between the stored candle before
       the batch and the batch's newest (up to ``REPAIR_MAX_CANDLES``), from ``venue`` (an
       ``ingest.fetch.KlineSource``, default ``market_data_venue()``), as path ``repair``.
    5. For a 1m batch, builds the derived intervals active feeds of ``symbol`` need
       (``ingest.derive``).
    6. With ``hand_off``: hands the newest stored candle to the chain
       (``ingest.handoff.candle_closed``), and each derived interval's newest candle built here
       (path ``derived``), provided it is the newest stored of its interval; sets the price
       cache key ``market:price:{symbol}``; sets the lag gauge."""
    from ingest import metrics
    from ingest.feeds import BASE_INTERVAL, derived_of, needed_feeds
    from ingest.handoff import candle_closed
    from trader.clock import market_now_ms

    now_ms = market_now_ms() if now_ms is None else now_ms
    by_open = {b.open_time_ms: b for b in bars if _close_ms(b, interval) < now_ms}
    if not by_open:
        return IngestOutcome(symbol=symbol, interval=interval, stored=0, updated=0)
    rows = [
        _as_row(by_open[open_ms], interval, line)
        for line, open_ms in enumerate(sorted(by_open), start=1)
    ]
    good, bad = _validate_after(
        rows, symbol=symbol, interval=interval, source=f"{path} {symbol} {interval}", path=path
    )
    stored, updated = klines_store_live(symbol=symbol, interval=interval, bars=good)
    if stored:
        metrics.CANDLES_STORED.labels(path, interval).inc(stored)
    if updated:
        metrics.CANDLES_UPDATED.labels(path, interval).inc(updated)
    if not good:
        return IngestOutcome(symbol=symbol, interval=interval, stored=0, updated=0, bad=bad)

    repaired = 0
    if repair:
        repaired = _repair_around(
            symbol=symbol, interval=interval, good=good, now_ms=now_ms, venue=venue
        )

    derived: dict[str, int] = {}
    derived_handed: list[str] = []
    if interval == BASE_INTERVAL:
        from ingest.derive import derive_store

        for target in derived_of(needed_feeds(), symbol):
            built = derive_store(
                symbol=symbol,
                interval=target,
                start_ms=good[0].open_time_ms,
                end_ms=good[-1].open_time_ms,
            )
            derived[target] = len(built)
            if (
                hand_off
                and built
                and _is_newest(symbol, target, built[-1].open_time_ms)
                and candle_closed(
                    symbol=symbol,
                    interval=target,
                    open_time=to_dt(built[-1].open_time_ms),
                    path="derived",
                )
            ):
                derived_handed.append(target)

    newest = good[-1]
    handed = False
    if _is_newest(symbol, interval, newest.open_time_ms):
        if hand_off:
            handed = candle_closed(
                symbol=symbol, interval=interval, open_time=to_dt(newest.open_time_ms), path=path
            )
        _price_update(
            symbol=symbol,
            interval=interval,
            close=newest.close,
            close_ms=_close_ms(newest, interval),
        )
        metrics.INGEST_LAG.labels(symbol, interval).set(
            max(0, now_ms - _close_ms(newest, interval)) / 1000
        )
    return IngestOutcome(
        symbol=symbol,
        interval=interval,
        stored=stored,
        updated=updated,
        bad=bad,
        newest_open_ms=newest.open_time_ms,
        handed_off=handed,
        repaired=repaired,
        derived=derived,
        derived_handed_off=tuple(derived_handed),
    )


def klines_store_live(*, symbol: str, interval: str, bars: Sequence[Bar]) -> tuple[int, int]:
    """Upsert a batch of validated closed candles of distinct open times; ``(stored, updated)``
    exactly, on every database: new candles, and existing ones whose values changed (unchanged
    ones are not rewritten). One read and one ``bulk_create(update_conflicts=True)``, in one
    transaction; safe inside a caller's transaction, any number of times (no temporary table),
    which is why the live paths use it rather than ``klines_store``'s COPY."""
    if not bars:
        return 0, 0
    with transaction.atomic():
        existing = {
            row[0]: row[1:]
            for row in Kline.objects.filter(
                symbol=symbol,
                interval=interval,
                open_time__in=[to_dt(b.open_time_ms) for b in bars],
            ).values_list("open_time", *_VALUE_FIELDS)
        }
        changed = [
            b for b in bars if existing.get(to_dt(b.open_time_ms)) != _live_values(b, interval)
        ]
        if changed:
            kline_upsert_batch(symbol=symbol, interval=interval, bars=changed)
    new = sum(1 for b in changed if to_dt(b.open_time_ms) not in existing)
    return new, len(changed) - new


def _live_values(bar: Bar, interval: str) -> tuple[object, ...]:
    """A bar's stored values in ``_VALUE_FIELDS`` order (Decimal compares by value)."""
    return (
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        to_dt(_close_ms(bar, interval)),
        bar.quote_volume,
        bar.trades,
        bar.taker_buy_base,
        bar.taker_buy_quote,
    )


def _as_row(bar: Bar, interval: str, line: int) -> KlineRow:
    return KlineRow(
        line=line,
        open_time_ms=bar.open_time_ms,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        close_time_ms=_close_ms(bar, interval),
        quote_volume=bar.quote_volume,
        trades=bar.trades,
        taker_buy_base=bar.taker_buy_base,
        taker_buy_quote=bar.taker_buy_quote,
    )


def _validate_after(
    rows: list[KlineRow], *, symbol: str, interval: str, source: str, path: str
) -> tuple[list[KlineRow], list[BadRow]]:
    """``rows_validate`` continuing the stored series: the first row is judged against the
    stored candle before it (its close) and the stored candles' trailing volumes."""
    from collections import deque

    from ingest import metrics
    from ingest.normalize import MIN_VOLUME_FRACTION, VOLUME_WINDOW, bad_tick

    max_move = Decimal(str(getattr(settings, "INGEST_MAX_MOVE_PCT", 10)))
    before = list(
        Kline.objects.filter(
            symbol=symbol, interval=interval, open_time__lt=to_dt(rows[0].open_time_ms)
        )
        .order_by("-open_time")
        .values_list("close", "volume")[:VOLUME_WINDOW]
    )
    previous: Decimal | None = before[0][0] if before else None
    volumes: deque[Decimal] = deque((v for _, v in reversed(before)), maxlen=VOLUME_WINDOW)
    good: list[KlineRow] = []
    bad: list[BadRow] = []
    for row in rows:
        found = bad_tick(
            row,
            previous,
            max_move_pct=max_move,
            trailing_volumes=volumes,
            min_volume_fraction=MIN_VOLUME_FRACTION,
        )
        if found is None:
            good.append(row)
            previous = row.close
            volumes.append(row.volume)
            continue
        rule, message = found
        bad.append(BadRow(row.line, message, source, rule))
        metrics.BAD_TICKS.labels(path, rule).inc()
        _live_log.warning(
            "bad tick rejected: %s %s open %s (via %s) rule=%s: %s "
            "[o=%s h=%s l=%s c=%s v=%s previous_close=%s]",
            symbol, interval, to_dt(row.open_time_ms).isoformat(), path, rule, message,
            row.open, row.high, row.low, row.close, row.volume, previous,
        )  # fmt: skip
    return good, bad


def _repair_around(
    *, symbol: str, interval: str, good: list[KlineRow], now_ms: int, venue: Any
) -> int:
    """Re-fetch (once) what is missing between the stored candle before ``good`` and the newest
    of ``good``; returns how many candles that stored."""
    from ingest import metrics
    from ingest.derive import candles_between, next_open_ms
    from ingest.fetch import klines_fetch
    from ingest.gaps import kline_gaps

    before = (
        Kline.objects.filter(
            symbol=symbol, interval=interval, open_time__lt=to_dt(good[0].open_time_ms)
        )
        .order_by("-open_time")
        .values_list("open_time", flat=True)
        .first()
    )
    start = good[0].open_time_ms if before is None else to_ms(before)
    gaps = kline_gaps(symbol=symbol, interval=interval, start=start, end=good[-1].open_time_ms)
    if not gaps:
        return 0
    metrics.GAPS_FOUND.labels(symbol, interval).inc(len(gaps))
    budget = REPAIR_MAX_CANDLES
    repaired = 0
    for gap in reversed(gaps):  # the newest holes matter most to the chain
        if budget <= 0:
            _live_log.warning(
                "%s %s: %d candle(s) missing from %s left unrepaired (in-line budget spent); "
                "run kline_gaps --repair",
                symbol, interval, gap.count, to_dt(gap.first_open_ms).isoformat(),
            )  # fmt: skip
            continue
        first = gap.first_open_ms
        if gap.count > budget:
            first = max(first, gap.last_open_ms - (budget - 1) * INTERVAL_MS[interval])
        try:
            fetched = klines_fetch(
                symbol=symbol,
                interval=interval,
                start_ms=first,
                end_ms=gap.last_open_ms,
                venue=venue,
                purpose="repair",
                now_ms=now_ms,
            )
        except Exception as exc:  # a failed repair must not undo the ingestion it follows
            _live_log.warning(
                "%s %s: re-fetching %d missing candle(s) from %s failed: %s",
                symbol, interval, gap.count, to_dt(first).isoformat(), exc,
            )  # fmt: skip
            continue
        budget -= candles_between(first, gap.last_open_ms, interval)
        outcome = klines_ingest(
            symbol=symbol,
            interval=interval,
            bars=[b for b in fetched if first <= b.open_time_ms <= gap.last_open_ms],
            path="repair",
            now_ms=now_ms,
            hand_off=False,
            repair=False,
            venue=venue,
        )
        repaired += outcome.stored
        if outcome.stored >= gap.count:
            metrics.GAPS_REPAIRED.labels(symbol, interval).inc()
        _live_log.info(
            "%s %s: gap of %d candle(s) %s..%s: re-fetched %d, stored %d",
            symbol, interval, gap.count, to_dt(gap.first_open_ms).isoformat(),
            to_dt(next_open_ms(gap.last_open_ms, interval) - 1).isoformat(),
            len(fetched), outcome.stored,
        )  # fmt: skip
    if repaired:
        metrics.GAP_CANDLES_REPAIRED.labels(symbol, interval).inc(repaired)
    return repaired


def _is_newest(symbol: str, interval: str, open_ms: int) -> bool:
    """Whether no stored candle of (symbol, interval) opens after ``open_ms``."""
    return not Kline.objects.filter(
        symbol=symbol, interval=interval, open_time__gt=to_dt(open_ms)
    ).exists()


def _price_update(*, symbol: str, interval: str, close: Decimal, close_ms: int) -> None:
    """``market:price:{symbol}`` (read by ``execution.services.market_price``) := the close of
    the newest candle of any interval; an older close (a slower interval) never overwrites a
    newer one."""
    from django.core.cache import cache

    from trader.domain import INTERVAL_SECONDS

    ttl = max(60, int(INTERVAL_SECONDS[interval] * _PRICE_TTL_INTERVALS))
    at_key = f"market:price_at:{symbol}"
    seen = cache.get(at_key)
    if seen is not None and int(seen) > close_ms:
        return
    cache.set_many({f"market:price:{symbol}": str(close), at_key: close_ms}, ttl)
