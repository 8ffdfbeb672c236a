"""Real candles for the Binance USD-M futures emulator: loading them and replaying them on a clock.

Pure Python and ``Decimal`` throughout (prices and volumes are never floats); no Django.

Loading
    ``load_candles`` reads the project's OHLCV CSV (header ``open_time,open,high,low,close,volume``)
    or Binance's public kline dumps (12 columns, with or without a header line), a ``.zip`` holding
    one such CSV, or a folder of them. ``close_time`` is ``open_time + interval - 1`` when the file
    lacks it (calendar month end for ``1M``).

The intrabar path (used by matching everywhere)
    A candle only says where the price opened, closed and how far it went. The emulator assumes
    one fixed path through it, and every stop, take-profit and limit order triggers or fills along
    this path and nowhere else:

    * bullish or flat candle (``close >= open``): open -> low -> high -> close;
    * bearish candle (``close < open``): open -> high -> low -> close;

    the four vertices sit at fractions 0, 1/3, 2/3 and 1 of the candle's duration, and the price
    moves linearly between them. The close vertex and the next candle's open vertex share one
    instant (the next open time), so a gap between close and next open is crossed at once. During
    a hole in the data (no candle open) the price stays at the last close.

Replay
    ``MarketReplay`` serves one or more symbols' candles shifted in time so that a chosen candle
    (the "present", after ``history`` candles of past) opens at the replay's start, and market
    time runs ``speed`` times as fast as wall time. When a symbol's data runs out the replay loops
    back to its first candle: time stays monotonic (each lap is shifted by the data's span plus
    one interval, so the first candle of the next lap opens when the last one closes) and prices
    continue from the first candle's, i.e. they jump from the last close to the first open once
    per lap.

Aggregation
    A symbol's candles can also be served at any Binance interval that is a whole multiple of the
    file's own (5m, 15m, 1h, ... from 1m data; 15m from 5m data): ``aggregate_klines`` groups
    them into buckets whose open times are aligned as Binance's are (on the epoch; weeks on
    Mondays, months on the calendar), first open, highest high, lowest low, last close, volumes
    and trade counts summed. The still-open bucket is built from what has printed so far, its
    open candle partial, so it is partial itself. ``can_aggregate`` says which intervals a
    file's interval can serve ("2m" is not a Binance interval: never).
"""

from __future__ import annotations

import csv
import io
import statistics
import zipfile
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from execution.venues.base import Kline
from ingest.normalize import HEADER_ALIASES, KLINE_COLUMNS, REQUIRED_COLUMNS
from trader.domain import DERIVED_ONLY_INTERVALS
from trader.domain import INTERVAL_MS as _PLATFORM_INTERVAL_MS

#: The files the emulator replays by default (see ``data/README.md``).
DATA_DIR = Path(__file__).resolve().parent / "data"


#: Binance's kline intervals in ms (the platform's less those it only ever derives, like "2m":
#: the emulator serves and loads Binance's data only).
INTERVAL_MS: dict[str, int] = {
    name: ms for name, ms in _PLATFORM_INTERVAL_MS.items() if name not in DERIVED_ONLY_INTERVALS
}
BINANCE_INTERVALS: tuple[str, ...] = tuple(INTERVAL_MS)

_DAY = INTERVAL_MS["1d"]
_WEEK = INTERVAL_MS["1w"]
#: Binance's weekly candles open on Mondays; the first Monday after the epoch is 4 days in.
_WEEK_OFFSET = 4 * _DAY

#: Binance's ``limit`` cap on ``GET /fapi/v1/klines``.
MAX_KLINES_LIMIT = 1500

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

# Binance's spot dumps from 2025 on stamp times in microseconds; anything this large is one.
_MICROSECONDS_FROM = 10**15


@dataclass(frozen=True)
class _Row:
    source: str
    line: int
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time: int | None
    quote_volume: Decimal
    trades: int
    taker_buy_base: Decimal
    taker_buy_quote: Decimal


@dataclass(frozen=True)
class _Table:
    names: tuple[str, ...]  # file names that may carry the interval, most specific first
    rows: list[_Row]


def symbol_from_path(path: Path | str) -> str:
    """The file name up to its first dash: ``BTCPERP-1m-2022-01.csv`` -> ``BTCPERP``.

    For a folder, the one symbol its data files share (``ValueError`` if they name several)."""
    path = Path(path)
    if path.is_dir():
        symbols = {symbol_from_path(f.name) for f in _data_files(path)}
        if len(symbols) != 1:
            raise ValueError(f"{path}: expected files of one symbol, found {sorted(symbols)}")
        return symbols.pop()
    return path.name.split("-", 1)[0].split(".", 1)[0]


def load_candles(
    path: Path | str, *, interval: str | None = None
) -> tuple[str | None, list[Kline]]:
    """Read candles from a CSV, a ``.zip`` holding one CSV, or a folder of those.

    Returns ``(interval, candles)``: the interval as given, else read from the file name
    (``BTCPERP-1m-2022-01.csv`` -> ``"1m"``), else from the dump's close times or the median
    spacing of open times (``None`` only if none of those tells); the candles sorted by open time,
    repeated open times (overlapping files of a folder) kept once. Any bad row raises
    ``ValueError`` naming the file, the line and what is wrong.
    """
    path = Path(path)
    if interval is not None and interval not in INTERVAL_MS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {list(INTERVAL_MS)}")
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise ValueError(f"{path}: no .csv or .zip files in the folder")
        tables = [_read_table(f) for f in files]
        fallback_names: tuple[str, ...] = (path.name,)
    else:
        tables = [_read_table(path)]
        fallback_names = ()
    rows = [row for table in tables for row in table.rows]
    if not rows:
        raise ValueError(f"{path}: no candles")

    if interval is None:
        interval = _interval_from_names(tables, fallback_names, path)
    if interval is None:
        interval = _interval_from_rows(rows)
    if interval is None and any(row.close_time is None for row in rows):
        raise ValueError(f"{path}: cannot tell the candle interval; pass interval=")

    by_open: dict[int, tuple[Kline, _Row]] = {}
    for row in rows:
        kline = _kline(row, interval)
        seen = by_open.get(row.open_time)
        if seen is None:
            by_open[row.open_time] = (kline, row)
        elif seen[0] != kline:
            first = seen[1]
            raise ValueError(
                f"{row.source}: line {row.line}: open_time {row.open_time} repeats "
                f"{first.source} line {first.line} with different values"
            )
    ordered = [by_open[t] for t in sorted(by_open)]
    for (before, _), (after, row) in pairwise(ordered):
        if before.close_time_ms >= after.open_time_ms:
            raise ValueError(
                f"{row.source}: line {row.line}: candle opening at {after.open_time_ms} overlaps "
                f"the previous one (closing at {before.close_time_ms}); interval {interval}?"
            )
    return interval, [kline for kline, _ in ordered]


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in (".csv", ".zip")
    )


def _read_table(path: Path) -> _Table:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [
                m
                for m in archive.namelist()
                if m.lower().endswith(".csv") and not m.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                raise ValueError(f"{path}: expected one .csv inside, found {members}")
            data = archive.read(members[0])
        source = f"{path}:{members[0]}"
        names: tuple[str, ...] = (Path(members[0]).name, path.name)
    else:
        data = path.read_bytes()
        source = str(path)
        names = (path.name,)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text ({exc})") from exc
    return _Table(names=names, rows=_parse_csv(text, source))


def _parse_csv(text: str, source: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(text))
    columns: tuple[str, ...] | None = None
    rows: list[_Row] = []
    for fields in reader:
        line = reader.line_num
        fields = [f.strip() for f in fields]
        if not any(fields):
            continue
        if columns is None:
            if fields[0].isdigit():
                columns = _headerless_columns(fields, source, line)
            else:
                columns = _header_columns(fields, source, line)
                continue
        if len(fields) != len(columns):
            raise ValueError(
                f"{source}: line {line}: expected {len(columns)} fields, got {len(fields)}"
            )
        rows.append(_parse_row(dict(zip(columns, fields, strict=True)), source, line))
    return rows


def _headerless_columns(fields: list[str], source: str, line: int) -> tuple[str, ...]:
    if len(fields) == 6:
        return KLINE_COLUMNS[:6]
    if len(fields) == 12:
        return KLINE_COLUMNS
    raise ValueError(
        f"{source}: line {line}: expected 6 fields (open_time,open,high,low,close,volume) or "
        f"Binance's 12, got {len(fields)}"
    )


def _header_columns(fields: list[str], source: str, line: int) -> tuple[str, ...]:
    columns = []
    for name in fields:
        canonical = HEADER_ALIASES.get(name.lower().replace(" ", "_"))
        if canonical is None:
            raise ValueError(f"{source}: line {line}: unknown column {name!r}")
        columns.append(canonical)
    missing = REQUIRED_COLUMNS.difference(columns)
    if missing:
        raise ValueError(f"{source}: line {line}: missing columns {sorted(missing)}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"{source}: line {line}: a column appears twice in {fields}")
    return tuple(columns)


def _parse_row(values: dict[str, str], source: str, line: int) -> _Row:
    where = f"{source}: line {line}"

    def integer(name: str) -> int:
        raw = values[name]
        if not raw.isdigit():
            raise ValueError(f"{where}: {name} {raw!r} is not a whole non-negative number")
        return int(raw)

    def number(name: str) -> Decimal:
        raw = values.get(name)
        if raw is None:
            return Decimal(0)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise ValueError(f"{where}: {name} {raw!r} is not a number") from None
        if not value.is_finite():
            raise ValueError(f"{where}: {name} {raw!r} is not a finite number")
        return value

    open_time = integer("open_time")
    close_time = integer("close_time") if "close_time" in values else None
    if open_time >= _MICROSECONDS_FROM:
        open_time //= 1000
        close_time = None if close_time is None else close_time // 1000
    o, h, lo, c = number("open"), number("high"), number("low"), number("close")
    for name, price in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if price <= 0:
            raise ValueError(f"{where}: {name} {price} is not positive")
    if h < lo:
        raise ValueError(f"{where}: high {h} is below low {lo}")
    if h < max(o, c):
        raise ValueError(f"{where}: high {h} is below open {o} or close {c}")
    if lo > min(o, c):
        raise ValueError(f"{where}: low {lo} is above open {o} or close {c}")
    volumes = {}
    for name in ("volume", "quote_volume", "taker_buy_base", "taker_buy_quote"):
        volumes[name] = number(name)
        if volumes[name] < 0:
            raise ValueError(f"{where}: {name} {volumes[name]} is negative")
    if close_time is not None and close_time < open_time:
        raise ValueError(f"{where}: close_time {close_time} is before open_time {open_time}")
    return _Row(
        source=source,
        line=line,
        open_time=open_time,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=volumes["volume"],
        close_time=close_time,
        quote_volume=volumes["quote_volume"],
        trades=integer("trades") if "trades" in values else 0,
        taker_buy_base=volumes["taker_buy_base"],
        taker_buy_quote=volumes["taker_buy_quote"],
    )


def _interval_from_name(name: str) -> str | None:
    stem = name.split(".", 1)[0]
    for token in stem.split("-"):
        if token in INTERVAL_MS:
            return token
    return None


def _interval_from_names(
    tables: list[_Table], fallback_names: tuple[str, ...], path: Path
) -> str | None:
    found: dict[str, str] = {}  # interval -> a file that says so
    for table in tables:
        for name in table.names:
            interval = _interval_from_name(name)
            if interval is not None:
                found.setdefault(interval, name)
                break
    if len(found) > 1:
        raise ValueError(f"{path}: files of different intervals: {found}")
    if found:
        return next(iter(found))
    for name in fallback_names:
        interval = _interval_from_name(name)
        if interval is not None:
            return interval
    return None


def _interval_from_rows(rows: list[_Row]) -> str | None:
    by_length = {ms: name for name, ms in INTERVAL_MS.items()}
    durations = {row.close_time - row.open_time + 1 for row in rows if row.close_time is not None}
    if len(durations) == 1 and (duration := durations.pop()) in by_length:
        return by_length[duration]
    opens = sorted({row.open_time for row in rows})
    gaps = [b - a for a, b in pairwise(opens)]
    if not gaps:
        return None
    spacing = statistics.median(gaps)
    if spacing in by_length:
        return by_length[int(spacing)]
    if 28 * _DAY <= spacing <= 31 * _DAY:
        return "1M"
    return None


def _month_close_ms(open_ms: int) -> int:
    opened = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
    year, month = (opened.year + 1, 1) if opened.month == 12 else (opened.year, opened.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000) - 1


def _kline(row: _Row, interval: str | None) -> Kline:
    close_time = row.close_time
    if close_time is None:
        if interval is None:
            raise ValueError(f"{row.source}: line {row.line}: no close_time and no interval")
        if interval == "1M":
            close_time = _month_close_ms(row.open_time)
        else:
            close_time = row.open_time + INTERVAL_MS[interval] - 1
    return Kline(
        open_time_ms=row.open_time,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        close_time_ms=close_time,
        quote_volume=row.quote_volume,
        trades=row.trades,
        taker_buy_base=row.taker_buy_base,
        taker_buy_quote=row.taker_buy_quote,
    )


# ---------------------------------------------------------------------------------------------
# The intrabar path
# ---------------------------------------------------------------------------------------------

_ONE = Decimal(1)

#: Where the four path vertices sit, as fractions of the candle's duration.
PATH_FRACTIONS: tuple[Decimal, Decimal, Decimal, Decimal] = (
    Decimal(0),
    Decimal(1) / Decimal(3),
    Decimal(2) / Decimal(3),
    Decimal(1),
)


def intrabar_path(candle: Kline) -> list[tuple[Decimal, Decimal]]:
    """``[(fraction, price)]`` for the four vertices: open, low, high, close for a bullish or flat
    candle (``close >= open``), open, high, low, close for a bearish one."""
    first, second = (
        (candle.low, candle.high) if candle.close >= candle.open else (candle.high, candle.low)
    )
    f0, f1, f2, f3 = PATH_FRACTIONS
    return [(f0, candle.open), (f1, first), (f2, second), (f3, candle.close)]


def price_at(candle: Kline, fraction: Decimal) -> Decimal:
    """The price at ``fraction`` (0..1) of the candle's duration, linear along the intrabar path,
    quantized to the candle's own decimal places (the most among open, high, low, close)."""
    return _price_at(candle, _check_fraction(fraction), _ONE)


def partial_candle(candle: Kline, fraction: Decimal) -> Kline:
    """The candle as it stands ``fraction`` of the way through: same open, high and low over the
    path walked so far, close at ``price_at``, volumes and trade count scaled by ``fraction``
    (rounded down to the original's decimal places), close time unchanged."""
    return _partial(candle, _check_fraction(fraction), _ONE)


# The replay knows the elapsed fraction as a ratio of whole milliseconds, ``part / whole``; these
# keep it a ratio so that 20000 ms of 60000 lands exactly on the 1/3 vertex and a price halfway
# between two vertices rounds as a true tie (one division, then the quantize).


def _price_at(candle: Kline, part: Decimal, whole: Decimal) -> Decimal:
    path = intrabar_path(candle)
    thirds = part * 3  # position along the path in thirds of the duration, times ``whole``
    segment = 0
    while segment < 2 and thirds > (segment + 1) * whole:
        segment += 1
    start, end = path[segment][1], path[segment + 1][1]
    done = thirds - segment * whole
    if done == whole:
        price = end
    elif done == 0:
        price = start
    else:
        price = (start * whole + (end - start) * done) / whole
    return price.quantize(_price_quantum(candle), rounding=ROUND_HALF_EVEN)


def _partial(candle: Kline, part: Decimal, whole: Decimal) -> Kline:
    if part == whole:
        return candle
    close = _price_at(candle, part, whole)
    thirds = part * 3
    path = intrabar_path(candle)
    walked = [price for step, (_, price) in enumerate(path) if step * whole <= thirds]
    walked.append(close)
    return replace(
        candle,
        high=max(walked),
        low=min(walked),
        close=close,
        volume=_scale_volume(candle.volume, part, whole),
        quote_volume=_scale_volume(candle.quote_volume, part, whole),
        trades=int(candle.trades * part / whole),
        taker_buy_base=_scale_volume(candle.taker_buy_base, part, whole),
        taker_buy_quote=_scale_volume(candle.taker_buy_quote, part, whole),
    )


def _check_fraction(fraction: Decimal | int) -> Decimal:
    fraction = Decimal(fraction)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction {fraction} is outside 0..1")
    return fraction


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _price_quantum(candle: Kline) -> Decimal:
    places = max(_places(p) for p in (candle.open, candle.high, candle.low, candle.close))
    return Decimal(1).scaleb(-places)


def _scale_volume(volume: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    quantum = Decimal(1).scaleb(-_places(volume))
    return (volume * part / whole).quantize(quantum, rounding=ROUND_DOWN)


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def bucket_open_ms(moment_ms: int, interval: str) -> int:
    """Open time of the ``interval`` candle that ``moment_ms`` falls in, aligned as Binance's:
    on the epoch, weeks on Mondays (00:00 UTC), months on the first of the calendar month."""
    if interval == "1M":
        moment = datetime.fromtimestamp(moment_ms // 1000, tz=UTC)
        return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)
    if interval == "1w":
        return moment_ms - (moment_ms - _WEEK_OFFSET) % _WEEK
    size = INTERVAL_MS[interval]
    return moment_ms - moment_ms % size


def bucket_next_ms(moment_ms: int, interval: str) -> int:
    """Open time of the ``interval`` candle after the one ``moment_ms`` falls in."""
    opened = bucket_open_ms(moment_ms, interval)
    if interval == "1M":
        return _month_close_ms(opened) + 1
    return opened + (_WEEK if interval == "1w" else INTERVAL_MS[interval])


def can_aggregate(native: str, interval: str) -> bool:
    """Whether candles of ``native`` interval build ``interval`` candles the way Binance serves
    them: ``interval`` is a Binance interval (not "2m") and each of its buckets is a whole
    number of ``native`` candles aligned on ``native``'s boundaries. ``native`` itself is
    always servable."""
    if interval not in BINANCE_INTERVALS or native not in INTERVAL_MS:
        return False
    if interval == native:
        return True
    if native == "1M":
        return False
    size = INTERVAL_MS[native]
    if interval == "1M":  # months start at midnight
        return _DAY % size == 0
    goal = INTERVAL_MS[interval]
    if goal <= size or goal % size:
        return False
    return interval != "1w" or _WEEK_OFFSET % size == 0


def aggregate_klines(candles: Iterable[Kline], interval: str) -> list[Kline]:
    """Candles (sorted by open time) merged into ``interval`` candles, one per bucket that holds
    any: open of the first, highest high, lowest low, close of the last; volume, quote volume,
    trades and taker volumes summed; open and close times those of the bucket (``bucket_open_ms``
    .. ``bucket_next_ms`` - 1), whether or not every candle of it is there (the still-open
    bucket)."""
    if interval not in INTERVAL_MS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {list(INTERVAL_MS)}")
    merged: list[Kline] = []
    group: list[Kline] = []
    bucket: int | None = None
    previous: int | None = None
    for candle in candles:
        if previous is not None and candle.open_time_ms <= previous:
            raise ValueError(
                f"candles must be sorted by open time: {candle.open_time_ms} after {previous}"
            )
        previous = candle.open_time_ms
        opened = bucket_open_ms(candle.open_time_ms, interval)
        if bucket is not None and opened != bucket:
            merged.append(_merge(group, bucket, interval))
            group = []
        bucket = opened
        group.append(candle)
    if bucket is not None:
        merged.append(_merge(group, bucket, interval))
    return merged


def _merge(group: list[Kline], bucket: int, interval: str) -> Kline:
    zero = Decimal(0)
    return Kline(
        open_time_ms=bucket,
        open=group[0].open,
        high=max(c.high for c in group),
        low=min(c.low for c in group),
        close=group[-1].close,
        volume=sum((c.volume for c in group), zero),
        close_time_ms=bucket_next_ms(bucket, interval) - 1,
        quote_volume=sum((c.quote_volume for c in group), zero),
        trades=sum(c.trades for c in group),
        taker_buy_base=sum((c.taker_buy_base for c in group), zero),
        taker_buy_quote=sum((c.taker_buy_quote for c in group), zero),
    )


def _combine(head: Kline, tail: Kline) -> Kline:
    """Two parts of one bucket, ``head`` before ``tail``, as one."""
    return replace(
        head,
        high=max(head.high, tail.high),
        low=min(head.low, tail.low),
        close=tail.close,
        volume=head.volume + tail.volume,
        quote_volume=head.quote_volume + tail.quote_volume,
        trades=head.trades + tail.trades,
        taker_buy_base=head.taker_buy_base + tail.taker_buy_base,
        taker_buy_quote=head.taker_buy_quote + tail.taker_buy_quote,
    )


#: Aggregated candles the replay remembers (closed buckets never change); emptied past this.
_AGGREGATE_CACHE_MAX = 200_000


# ---------------------------------------------------------------------------------------------
# The replay
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    candles: tuple[Kline, ...]  # as loaded (price-scaled), unshifted
    opens: tuple[int, ...]  # their open times, for bisect
    interval_ms: int
    present: int  # index of the candle open at the replay's start
    shift: int  # added to the data's times on the first lap
    span: int  # added once more per lap: the data's span plus one interval


class MarketReplay:
    """Replays candles of one or more symbols against a clock; every timestamp it takes or serves
    is market time (epoch ms, see ``market_ms``), every price a ``Decimal``.

    Per symbol, candle ``min(history, len - 1)`` is the one open at ``start_wall_ms``: the data is
    shifted so that it opens then, and the candles before it are the past. Candles are served
    with shifted times; the open one as ``partial_candle`` at the fraction elapsed; none from the
    future. After the last candle the data starts over (see the module docstring).
    ``price_scale`` multiplies a symbol's prices (and its quote-currency volumes) by a constant,
    e.g. to serve ETH/BTC spot data as an ETH/USDT market at a realistic price; base volumes are
    untouched.

    ``klines`` and ``closed_klines`` take an ``interval``: the data's own (the default) or any
    that ``can_aggregate`` from it, served as ``aggregate_klines`` builds them.
    """

    def __init__(
        self,
        series: Mapping[str, list[Kline]],
        *,
        interval_ms: Mapping[str, int],
        start_wall_ms: int,
        speed: Decimal = Decimal(1),
        history: int = 500,
        price_scale: Mapping[str, Decimal] | None = None,
    ) -> None:
        speed = Decimal(speed)
        if not speed.is_finite() or speed <= 0:
            raise ValueError(f"speed {speed} must be positive")
        if history < 0:
            raise ValueError(f"history {history} must not be negative")
        scales = dict(price_scale or {})
        unknown = set(scales).difference(series)
        if unknown:
            raise ValueError(f"price_scale for symbols without candles: {sorted(unknown)}")
        self.start_wall_ms = start_wall_ms
        self.speed = speed
        self.history = history
        self._series: dict[str, _Series] = {}
        # (symbol, interval, bucket open) -> the closed bucket's candle
        self._closed_buckets: dict[tuple[str, str, int], Kline] = {}
        # (symbol, interval, bucket open) -> (last native index merged, the merge so far) of the
        # open bucket: each call merges only the candles closed since the previous one.
        self._open_buckets: dict[tuple[str, str, int], tuple[int, Kline]] = {}
        for symbol, candles in series.items():
            if symbol not in interval_ms or interval_ms[symbol] <= 0:
                raise ValueError(f"{symbol}: no positive interval_ms")
            scale = Decimal(scales.get(symbol, 1))
            if not scale.is_finite() or scale <= 0:
                raise ValueError(f"{symbol}: price_scale {scale} must be positive")
            self._series[symbol] = self._prepare(
                symbol, candles, interval_ms[symbol], scale, start_wall_ms, history
            )

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, Path | str],
        *,
        start_wall_ms: int,
        speed: Decimal = Decimal(1),
        history: int = 500,
        price_scale: Mapping[str, Decimal] | None = None,
    ) -> MarketReplay:
        """A replay of ``{symbol: file or folder}`` (relative paths are under ``DATA_DIR``); the
        symbol served is the key, whatever the file is named."""
        series: dict[str, list[Kline]] = {}
        intervals: dict[str, int] = {}
        for symbol, name in files.items():
            path = DATA_DIR / name
            interval, candles = load_candles(path)
            if interval is None:
                raise ValueError(f"{path}: cannot tell the candle interval")
            series[symbol], intervals[symbol] = candles, INTERVAL_MS[interval]
        return cls(
            series,
            interval_ms=intervals,
            start_wall_ms=start_wall_ms,
            speed=speed,
            history=history,
            price_scale=price_scale,
        )

    @staticmethod
    def _prepare(
        symbol: str,
        candles: list[Kline],
        interval_ms: int,
        scale: Decimal,
        start_wall_ms: int,
        history: int,
    ) -> _Series:
        if not candles:
            raise ValueError(f"{symbol}: no candles")
        if any(c.close_time_ms < c.open_time_ms for c in candles):
            raise ValueError(f"{symbol}: a candle closes before it opens")
        for before, after in pairwise(candles):
            if before.close_time_ms >= after.open_time_ms:
                raise ValueError(
                    f"{symbol}: candles must be sorted and must not overlap "
                    f"(open {before.open_time_ms} closes at {before.close_time_ms}, "
                    f"next opens at {after.open_time_ms})"
                )
        if scale != 1:
            candles = [_scale_prices(c, scale) for c in candles]
        present = min(history, len(candles) - 1)
        return _Series(
            candles=tuple(candles),
            opens=tuple(c.open_time_ms for c in candles),
            interval_ms=interval_ms,
            present=present,
            # Align to the interval, as Binance's open times are (a 1m candle opens on the
            # minute): the present candle opened at the last boundary at or before start.
            shift=start_wall_ms - start_wall_ms % interval_ms - candles[present].open_time_ms,
            span=candles[-1].close_time_ms + 1 - candles[0].open_time_ms,
        )

    # -- clock and helpers -------------------------------------------------------------------

    def market_ms(self, wall_ms: int) -> int:
        """Market time at ``wall_ms``: ``start + (wall - start) * speed``, floored to a ms."""
        elapsed = (Decimal(wall_ms - self.start_wall_ms) * self.speed).to_integral_value(
            rounding=ROUND_FLOOR
        )
        return self.start_wall_ms + int(elapsed)

    def symbols(self) -> list[str]:
        return list(self._series)

    def interval(self, symbol: str) -> int:
        """The symbol's candle interval in ms."""
        return self._get(symbol).interval_ms

    def interval_name(self, symbol: str) -> str | None:
        """The symbol's candle interval by its Binance name ("1m"), None if it has none."""
        size = self._get(symbol).interval_ms
        return next((n for n in BINANCE_INTERVALS if INTERVAL_MS[n] == size), None)

    def serves(self, symbol: str, interval: str) -> bool:
        """Whether ``klines`` serves ``symbol`` at ``interval`` (its own or an aggregate)."""
        native = self.interval_name(symbol)
        return native is not None and can_aggregate(native, interval)

    def span(self, symbol: str) -> int:
        """How far in ms one lap of the symbol's data reaches (first open to last close + 1)."""
        return self._get(symbol).span

    def shift(self, symbol: str) -> int:
        """What is added to the data's own times on the first lap."""
        return self._get(symbol).shift

    def first_open_ms(self, symbol: str) -> int:
        """Market open time of the first candle served (the start of the past)."""
        series = self._get(symbol)
        return series.opens[0] + series.shift

    # -- market data ---------------------------------------------------------------------------

    def klines(
        self,
        symbol: str,
        market_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        *,
        interval: str | None = None,
    ) -> list[Kline]:
        """``GET /fapi/v1/klines`` at ``market_ms``: candles opening in ``[start_ms, end_ms]``
        (the first ``limit`` from ``start_ms``; without ``start_ms`` the last ``limit`` up to
        ``end_ms`` or now), the still-open one last and partial, nothing from the future.
        ``limit`` is capped at 1500. ``interval``: the data's own (default) or one it
        aggregates to (``serves``; ``ValueError`` otherwise)."""
        if interval is None or interval == self.interval_name(symbol):
            return self._klines(symbol, market_ms, start_ms, end_ms, limit, include_open=True)
        return self._aggregated(
            symbol, interval, market_ms, start_ms, end_ms, limit, include_open=True
        )

    def closed_klines(
        self,
        symbol: str,
        market_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        interval: str | None = None,
    ) -> list[Kline]:
        """As ``klines`` without the still-open candle."""
        if interval is None or interval == self.interval_name(symbol):
            return self._klines(symbol, market_ms, start_ms, end_ms, limit, include_open=False)
        return self._aggregated(
            symbol, interval, market_ms, start_ms, end_ms, limit, include_open=False
        )

    def price(self, symbol: str, market_ms: int) -> Decimal:
        """The price along the intrabar path at ``market_ms``; in a hole in the data the last
        close, before the first candle its open."""
        series = self._get(symbol)
        index = self._locate(series, market_ms)
        if index < 0:
            return series.candles[0].open
        candle, offset = self._at(series, index)
        if market_ms > candle.close_time_ms + offset:
            return candle.close
        return _price_at(candle, *self._ratio(candle, offset, market_ms))

    def path_between(self, symbol: str, from_ms: int, to_ms: int) -> list[tuple[int, Decimal]]:
        """``[(market_ms, price)]``: every intrabar path vertex strictly after ``from_ms`` up to
        ``to_ms``, in path order (a candle's close, then the next candle's open at the same
        instant), then the point at ``to_ms`` itself unless the last vertex is exactly it."""
        if to_ms < from_ms:
            raise ValueError(f"to_ms {to_ms} is before from_ms {from_ms}")
        series = self._get(symbol)
        first = max(self._locate(series, from_ms), 0)
        last = self._locate(series, to_ms)
        points: list[tuple[int, Decimal]] = []
        for index in range(first, last + 1):
            candle, offset = self._at(series, index)
            opened = candle.open_time_ms + offset
            duration = candle.close_time_ms - candle.open_time_ms + 1
            for step, (_, price) in enumerate(intrabar_path(candle)):
                at = opened + duration * step // 3
                if from_ms < at <= to_ms:
                    points.append((at, price))
        end = (to_ms, self.price(symbol, to_ms))
        if not points or points[-1] != end:
            points.append(end)
        return points

    # -- internals -----------------------------------------------------------------------------

    def _get(self, symbol: str) -> _Series:
        try:
            return self._series[symbol]
        except KeyError:
            raise KeyError(f"no candles for symbol {symbol!r}") from None

    @staticmethod
    def _locate(series: _Series, market_ms: int) -> int:
        """Index (counting on across laps) of the last candle opening at or before
        ``market_ms``; -1 before the first."""
        elapsed = market_ms - series.shift - series.opens[0]
        if elapsed < 0:
            return -1
        lap = elapsed // series.span
        within = series.opens[0] + elapsed - lap * series.span
        return lap * len(series.opens) + bisect_right(series.opens, within) - 1

    @staticmethod
    def _at(series: _Series, index: int) -> tuple[Kline, int]:
        """The unshifted candle at ``index`` and what to add to its times."""
        lap, position = divmod(index, len(series.candles))
        return series.candles[position], series.shift + lap * series.span

    @staticmethod
    def _ratio(candle: Kline, offset: int, market_ms: int) -> tuple[Decimal, Decimal]:
        """How far ``market_ms`` is through the candle: (elapsed ms, duration ms)."""
        duration = candle.close_time_ms - candle.open_time_ms + 1
        elapsed = market_ms - (candle.open_time_ms + offset)
        return Decimal(min(max(elapsed, 0), duration)), Decimal(duration)

    def _klines(
        self,
        symbol: str,
        market_ms: int,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        *,
        include_open: bool,
    ) -> list[Kline]:
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        limit = min(limit, MAX_KLINES_LIMIT)
        series = self._get(symbol)
        now = self._locate(series, market_ms)
        if now < 0:
            return []
        candle, offset = self._at(series, now)
        now_open = market_ms <= candle.close_time_ms + offset
        high = now - 1 if now_open and not include_open else now
        if end_ms is not None:
            high = min(high, self._locate(series, end_ms))
        if start_ms is not None:
            low = self._locate(series, start_ms - 1) + 1
            high = min(high, low + limit - 1)
        else:
            low = max(0, high - limit + 1)
        served = []
        for index in range(low, high + 1):
            candle, offset = self._at(series, index)
            kline = _shifted(candle, offset)
            if index == now and now_open:
                kline = _partial(kline, *self._ratio(candle, offset, market_ms))
            served.append(kline)
        return served

    def _aggregated(
        self,
        symbol: str,
        interval: str,
        market_ms: int,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        *,
        include_open: bool,
    ) -> list[Kline]:
        """``_klines`` at an interval built from the data's own (same selection rules)."""
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        if not self.serves(symbol, interval):
            raise ValueError(
                f"{symbol}: {interval} candles cannot be built from {self.interval_name(symbol)}"
            )
        limit = min(limit, MAX_KLINES_LIMIT)
        series = self._get(symbol)
        if self._locate(series, market_ms) < 0:
            return []
        first = bucket_open_ms(self.first_open_ms(symbol), interval)
        top = bucket_open_ms(market_ms, interval)
        if not include_open and market_ms < bucket_next_ms(top, interval):
            top = bucket_open_ms(top - 1, interval)
        if end_ms is not None:
            top = min(top, bucket_open_ms(end_ms, interval))
        served: list[Kline] = []
        if start_ms is not None:
            bucket = bucket_open_ms(start_ms, interval)
            if bucket < start_ms:
                bucket = bucket_next_ms(bucket, interval)
            bucket = max(bucket, first)
            while bucket <= top and len(served) < limit:
                candle = self._bucket(symbol, series, interval, bucket, market_ms)
                if candle is not None:
                    served.append(candle)
                bucket = bucket_next_ms(bucket, interval)
            return served
        bucket = top
        while bucket >= first and len(served) < limit:
            candle = self._bucket(symbol, series, interval, bucket, market_ms)
            if candle is not None:
                served.append(candle)
            bucket = bucket_open_ms(bucket - 1, interval)
        served.reverse()
        return served

    def _bucket(
        self, symbol: str, series: _Series, interval: str, bucket: int, market_ms: int
    ) -> Kline | None:
        """The ``interval`` candle opening at ``bucket`` as it stands at ``market_ms`` (None when
        no candle of the data falls in it)."""
        key = (symbol, interval, bucket)
        cached = self._closed_buckets.get(key)
        if cached is not None:
            return cached
        end = bucket_next_ms(bucket, interval)
        now = self._locate(series, market_ms)
        low = max(self._locate(series, bucket - 1) + 1, 0)
        high = min(self._locate(series, end - 1), now)
        if high < low:
            return None
        candle, offset = self._at(series, high)
        open_now = high == now and market_ms <= candle.close_time_ms + offset
        last_closed = high - 1 if open_now else high
        merged: Kline | None = None
        done = low - 1
        partial = self._open_buckets.get(key)
        if partial is not None and partial[0] <= last_closed:
            done, merged = partial
        if done < last_closed:
            fresh = [_shifted(*self._at(series, i)) for i in range(done + 1, last_closed + 1)]
            (more,) = aggregate_klines(fresh, interval)
            merged = more if merged is None else _combine(merged, more)
        if merged is not None and last_closed >= low:
            self._open_buckets[key] = (last_closed, merged)
        if open_now:
            (current,) = aggregate_klines(
                [_partial(_shifted(candle, offset), *self._ratio(candle, offset, market_ms))],
                interval,
            )
            merged = current if merged is None else _combine(merged, current)
        if merged is None:
            return None
        if market_ms >= end:  # closed: it never changes again
            if len(self._closed_buckets) >= _AGGREGATE_CACHE_MAX:
                self._closed_buckets.clear()
            self._closed_buckets[key] = merged
            self._open_buckets.pop(key, None)
        elif len(self._open_buckets) >= _AGGREGATE_CACHE_MAX:
            self._open_buckets.clear()
        return merged


def _shifted(candle: Kline, offset: int) -> Kline:
    if offset == 0:
        return candle
    return replace(
        candle,
        open_time_ms=candle.open_time_ms + offset,
        close_time_ms=candle.close_time_ms + offset,
    )


def _scale_prices(candle: Kline, scale: Decimal) -> Kline:
    return replace(
        candle,
        open=candle.open * scale,
        high=candle.high * scale,
        low=candle.low * scale,
        close=candle.close * scale,
        quote_volume=candle.quote_volume * scale,
        taker_buy_quote=candle.taker_buy_quote * scale,
    )
