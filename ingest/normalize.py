"""Candle files to validated rows: pure Python and ``Decimal`` (no Django, no I/O, no clock).

Formats (one parser for all, told apart by the first non-empty line):

* Binance's public kline dumps, 12 columns without a header: ``open_time, open, high, low,
  close, volume, close_time, quote_volume, trades, taker_buy_base_volume,
  taker_buy_quote_volume, ignore``;
* the same with a header line (newer futures dumps), under Binance's column names;
* the project's shared data, header ``open_time,open,high,low,close,volume``.

Unlike ``execution.emulator.market.load_candles`` (which raises on the first bad row, since a
replay must not run on bad data), an import keeps going: every row that cannot be read or fails a
sanity rule becomes a ``BadRow(line, reason)`` and the others are kept.

Bad-tick rules (``bad_tick_reason``; ``bad_tick`` also names the rule, see ``BAD_TICK_RULES``):
high below low; open or close outside ``[low, high]``;
a price that is not positive; a volume that is NaN or negative; and a spike, i.e. a close that
moved more than ``max_move_pct`` percent from the previous good close *without volume
confirmation*. Volume confirms a move when it is at least ``min_volume_fraction`` of the median
volume of the trailing good candles (the last ``VOLUME_WINDOW`` of them); with no trailing
candles only a zero volume fails to confirm. Real markets do jump; a jump that traded next to
nothing is far more likely a bad print.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import PurePath

from trader.domain import INTERVAL_MS, interval_problem

#: Defaults of the spike rule (see the module docstring).
MAX_MOVE_PCT = Decimal(10)
MIN_VOLUME_FRACTION = Decimal("0.1")
VOLUME_WINDOW = 30

#: Kline CSV columns in Binance's dump order (canonical names).
KLINE_COLUMNS = (
    "open_time",
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
    "ignore",
)
#: The values stored per candle besides its symbol, interval and open time, in dump order.
STORED_COLUMNS = KLINE_COLUMNS[1:-1]
REQUIRED_COLUMNS = frozenset(KLINE_COLUMNS[:6])
_DECIMAL_COLUMNS = ("quote_volume", "taker_buy_base", "taker_buy_quote")
#: Header names as Binance (and the project's CSVs) spell them -> canonical name.
HEADER_ALIASES = {
    **{name: name for name in KLINE_COLUMNS},
    "quote_asset_volume": "quote_volume",
    "count": "trades",
    "number_of_trades": "trades",
    "taker_buy_volume": "taker_buy_base",
    "taker_buy_base_volume": "taker_buy_base",
    "taker_buy_base_asset_volume": "taker_buy_base",
    "taker_buy_quote_volume": "taker_buy_quote",
    "taker_buy_quote_asset_volume": "taker_buy_quote",
}
# Binance's spot dumps from 2025 on stamp times in microseconds; anything this large is one.
_MICROSECONDS_FROM = 10**15
# The database columns are numeric(28, 10): 18 digits before the point, 10 after.
_MAX_ABS = Decimal(10) ** 18
_MIN_EXPONENT = -10


@dataclass(frozen=True, slots=True)
class KlineRow:
    """One parsed candle and the line it came from. ``close_time_ms`` is ``None`` only when the
    file lacks it and the interval was not given."""

    line: int
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time_ms: int | None
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    taker_buy_base: Decimal = Decimal(0)
    taker_buy_quote: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row left out of an import: its 1-based line in ``source`` and why."""

    line: int
    reason: str
    source: str = ""
    #: The bad-tick rule that rejected it (``BAD_TICK_RULES``); empty for an unreadable row.
    rule: str = ""


#: Stable short names of the bad-tick rules (log fields and metric labels), in checking order.
BAD_TICK_RULES = (
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "volume_nan",
    "volume_negative",
    "other_volume_invalid",
    "close_before_open",
    "move_unconfirmed",
)


class _RowError(ValueError):
    pass


def symbol_interval_from_name(path: str | PurePath) -> tuple[str | None, str | None]:
    """``BTCUSDT-1m-2024-01.csv`` -> ``("BTCUSDT", "1m")``; ``None`` for what the name lacks.

    The symbol is the name up to its first dash (if it is upper-case letters and digits); the
    interval is the first dash-separated token that is a Binance interval."""
    stem = PurePath(path).name.split(".", 1)[0]
    tokens = stem.split("-")
    head = tokens[0]
    symbol = head if len(tokens) > 1 and head.isalnum() and head.upper() == head else None
    interval = next((t for t in tokens[1:] if t in INTERVAL_MS), None)
    return symbol, interval


def close_time_ms_for(open_time_ms: int, interval: str) -> int:
    """Binance's close time: the next candle's open time minus 1 ms (calendar month for 1M)."""
    if interval == "1M":
        opened = datetime.fromtimestamp(open_time_ms / 1000, tz=UTC)
        year, month = (
            (opened.year + 1, 1) if opened.month == 12 else (opened.year, opened.month + 1)
        )
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000) - 1
    return open_time_ms + INTERVAL_MS[interval] - 1


def parse_rows(
    text: str, *, source: str, interval: str | None = None
) -> tuple[list[KlineRow], list[BadRow]]:
    """Parse a candle CSV into rows and the lines that could not be read.

    Reading checks only the form (field count, whole-number times, finite numbers that fit
    ``numeric(28, 10)``); ``bad_tick_reason`` judges the values. With ``interval`` a missing
    close time is filled in. An unreadable header makes the whole file one bad row."""
    if interval is not None and (problem := interval_problem(interval)):
        raise ValueError(problem)
    reader = csv.reader(io.StringIO(text))
    columns: tuple[str, ...] | None = None
    rows: list[KlineRow] = []
    bad: list[BadRow] = []
    for raw in reader:
        line = reader.line_num
        fields = [f.strip() for f in raw]
        if not any(fields):
            continue
        if columns is None:
            try:
                if fields[0].isdigit():
                    columns = _headerless_columns(fields)
                else:
                    columns = _header_columns(fields)
                    continue
            except _RowError as exc:
                return [], [BadRow(line, str(exc), source)]
        if len(fields) != len(columns):
            bad.append(BadRow(line, f"expected {len(columns)} fields, got {len(fields)}", source))
            continue
        try:
            rows.append(_parse_row(dict(zip(columns, fields, strict=True)), line, interval))
        except _RowError as exc:
            bad.append(BadRow(line, str(exc), source))
    return rows, bad


def bad_tick_reason(
    row: KlineRow,
    previous_close: Decimal | None,
    *,
    max_move_pct: Decimal = MAX_MOVE_PCT,
    trailing_volumes: Sequence[Decimal] = (),
    min_volume_fraction: Decimal = MIN_VOLUME_FRACTION,
) -> str | None:
    """Why ``row`` is a bad tick, or ``None`` if it passes every rule (see the module doc).

    ``previous_close`` is the close of the last good candle before it (``None`` for the first);
    ``trailing_volumes`` the volumes of the good candles before it that confirm a move."""
    found = bad_tick(
        row,
        previous_close,
        max_move_pct=max_move_pct,
        trailing_volumes=trailing_volumes,
        min_volume_fraction=min_volume_fraction,
    )
    return None if found is None else found[1]


def bad_tick(
    row: KlineRow,
    previous_close: Decimal | None,
    *,
    max_move_pct: Decimal = MAX_MOVE_PCT,
    trailing_volumes: Sequence[Decimal] = (),
    min_volume_fraction: Decimal = MIN_VOLUME_FRACTION,
) -> tuple[str, str] | None:
    """``bad_tick_reason`` with the rule's short name: ``(rule, message)`` or ``None``."""
    for name in ("open", "high", "low", "close"):
        price: Decimal = getattr(row, name)
        if price.is_nan() or price <= 0:
            return "non_positive_price", f"{name} {price} is not positive"
    if row.high < row.low:
        return "high_below_low", f"high {row.high} is below low {row.low}"
    for name in ("open", "close"):
        price = getattr(row, name)
        if not row.low <= price <= row.high:
            return (
                f"{name}_outside_range",
                f"{name} {price} is outside [low {row.low}, high {row.high}]",
            )
    if row.volume.is_nan():
        return "volume_nan", "volume is NaN"
    if row.volume < 0:
        return "volume_negative", f"volume {row.volume} is negative"
    for name in _DECIMAL_COLUMNS:
        value: Decimal = getattr(row, name)
        if value.is_nan() or value < 0:
            return "other_volume_invalid", f"{name} {value} is negative or NaN"
    if row.close_time_ms is not None and row.close_time_ms < row.open_time_ms:
        return (
            "close_before_open",
            f"close_time {row.close_time_ms} is before open_time {row.open_time_ms}",
        )
    if previous_close is not None and previous_close > 0:
        move_pct = abs(row.close - previous_close) * 100 / previous_close
        if move_pct > max_move_pct:
            if trailing_volumes:
                needed = statistics.median(trailing_volumes) * min_volume_fraction
                confirmed = row.volume >= needed and row.volume > 0
            else:
                confirmed = row.volume > 0
            if not confirmed:
                return "move_unconfirmed", (
                    f"close {row.close} moved {move_pct:.2f}% from the previous close "
                    f"{previous_close} (limit {max_move_pct}%) without volume confirmation "
                    f"(volume {row.volume})"
                )
    return None


def rows_validate(
    rows: Iterable[KlineRow],
    *,
    source: str = "",
    max_move_pct: Decimal = MAX_MOVE_PCT,
    min_volume_fraction: Decimal = MIN_VOLUME_FRACTION,
    volume_window: int = VOLUME_WINDOW,
) -> tuple[list[KlineRow], list[BadRow]]:
    """Apply ``bad_tick_reason`` in open-time order, each row against the good ones before it.

    A repeated open time keeps its last row (a later line corrects an earlier one)."""
    by_open: dict[int, KlineRow] = {}
    for row in rows:
        by_open[row.open_time_ms] = row
    good: list[KlineRow] = []
    bad: list[BadRow] = []
    volumes: deque[Decimal] = deque(maxlen=volume_window)
    previous: Decimal | None = None
    for open_ms in sorted(by_open):
        row = by_open[open_ms]
        found = bad_tick(
            row,
            previous,
            max_move_pct=max_move_pct,
            trailing_volumes=volumes,
            min_volume_fraction=min_volume_fraction,
        )
        if found is None:
            good.append(row)
            previous = row.close
            volumes.append(row.volume)
        else:
            bad.append(BadRow(row.line, found[1], source, found[0]))
    bad.sort(key=lambda b: b.line)
    return good, bad


def _headerless_columns(fields: list[str]) -> tuple[str, ...]:
    if len(fields) == 6:
        return KLINE_COLUMNS[:6]
    if len(fields) == 12:
        return KLINE_COLUMNS
    raise _RowError(
        "expected 6 fields (open_time,open,high,low,close,volume) or Binance's 12, "
        f"got {len(fields)}; no rows read"
    )


def _header_columns(fields: list[str]) -> tuple[str, ...]:
    columns = []
    for name in fields:
        canonical = HEADER_ALIASES.get(name.lower().replace(" ", "_"))
        if canonical is None:
            raise _RowError(f"unknown column {name!r} in the header; no rows read")
        columns.append(canonical)
    missing = REQUIRED_COLUMNS.difference(columns)
    if missing:
        raise _RowError(f"header lacks columns {sorted(missing)}; no rows read")
    if len(set(columns)) != len(columns):
        raise _RowError(f"a column appears twice in the header {fields}; no rows read")
    return tuple(columns)


def _integer(values: dict[str, str], name: str) -> int:
    raw = values[name]
    if not raw.isdigit():
        raise _RowError(f"{name} {raw!r} is not a whole non-negative number")
    return int(raw)


def _number(values: dict[str, str], name: str) -> Decimal:
    raw = values.get(name)
    if raw is None:
        return Decimal(0)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _RowError(f"{name} {raw!r} is not a number") from None
    if value.is_nan():
        # Kept for bad_tick_reason, which names it; infinities cannot be stored at all.
        return value
    if not value.is_finite() or abs(value) >= _MAX_ABS:
        raise _RowError(f"{name} {raw!r} is out of range")
    exponent = value.as_tuple().exponent
    if (
        isinstance(exponent, int)
        and exponent < _MIN_EXPONENT
        and value != value.quantize(Decimal(1).scaleb(_MIN_EXPONENT))
    ):
        raise _RowError(f"{name} {raw!r} has more than 10 decimal places")
    return value


def _parse_row(values: dict[str, str], line: int, interval: str | None) -> KlineRow:
    open_time = _integer(values, "open_time")
    close_time = _integer(values, "close_time") if "close_time" in values else None
    if open_time >= _MICROSECONDS_FROM:
        open_time //= 1000
        close_time = None if close_time is None else close_time // 1000
    if close_time is None and interval is not None:
        close_time = close_time_ms_for(open_time, interval)
    return KlineRow(
        line=line,
        open_time_ms=open_time,
        open=_number(values, "open"),
        high=_number(values, "high"),
        low=_number(values, "low"),
        close=_number(values, "close"),
        volume=_number(values, "volume"),
        close_time_ms=close_time,
        quote_volume=_number(values, "quote_volume"),
        trades=_integer(values, "trades") if "trades" in values else 0,
        taker_buy_base=_number(values, "taker_buy_base"),
        taker_buy_quote=_number(values, "taker_buy_quote"),
    )
