"""File imports on Postgres at full speed: Postgres reads, checks and stores; Python decides only
the rare rows that are not plainly good.

``ingest.normalize`` (pure Python) stays the specification and the reference implementation:
this module must end with exactly what ``parse_rows`` + ``rows_validate`` + ``klines_store``
would, for every file it accepts (``tests/ingest/test_bulk.py`` runs both on real, hand-made and
seeded random corrupted files). Every message it reports is made by ``ingest.normalize``
itself, from the file's own line.

How (``klines_import_text``):

1. **Layout** (``_layout``): the first non-empty line gives the columns (Binance's 6 or 12
   without a header, or a header under ``HEADER_ALIASES``). A file this module cannot read
   exactly like Python's ``csv`` + ``Decimal`` returns ``None`` and is imported by the reference
   path: non-ASCII text, quotes, backslashes, NUL, a bare carriage return, a ``+`` anywhere or a
   ``-0`` field (Postgres reads ``+5``/``-0`` as whole numbers, the reference refuses them),
   a header it does not know.
2. **COPY** the text as it is (CSV) into a temporary staging table of typed columns
   (``bigint``, ``numeric`` without typmod, so nothing is rounded), created in the COPY's own
   savepoint so that the COPY can FREEZE its rows. A line Postgres cannot load (not a number,
   a wrong field count, a blank line) fails the COPY, which names the line: that line is
   judged by ``parse_rows`` (a bad row with its message; a blank line, skipped; or, if Python
   reads what Postgres could not, its parsed values written the way Postgres reads them), the
   lines before it are loaded, and loading goes on after it, ``_CHUNK`` lines at a time. The
   staging table is filled in file order, so a row's place (``ctid`` order) gives its line.
   Meanwhile, on the other core, ``_plain_text`` checks the text's shape: only digits, dots,
   commas and line ends (then every value is a finite non-negative number that fits
   ``numeric(28, 10)``, and step 3 skips those checks).
3. **Classify** (``_classify_sql``), one pass and one sort: a cheap predicate marks the rows
   that are plainly readable and plainly pass every per-row rule; only the others meet the
   exact rules (unreadable: a ``parse_rows`` error; bad tick: a ``bad_tick`` per-row rule). A
   window over the readable rows in open-time order finds repeated open times (the later line
   wins; the earlier is dropped silently, as in ``rows_validate``) and flags for a check every
   row whose close moved more than the limit (less a safety margin) from the row before it, or
   whose row before it is not a plain good one.
4. **Move rule** (``_Import._move_rule``), only if something was flagged: the rows that passed
   the per-row rules are walked in open-time order, exactly as ``rows_validate`` does, with
   ``bad_tick`` deciding every flagged row and every row after a rejected one; the others
   cannot be rejected (their previous good close is the row before them and they moved less
   than the limit), so they are only carried along.
5. **Messages**: unreadable and rejected rows get their line (from their place) and their
   message from ``parse_rows``/``bad_tick`` on that line; a line that does not match the staged
   row sends the whole file to the reference path (never a wrong answer).
6. **Store**: if the file's time range holds no candle of the symbol and interval yet, one
   plain ``INSERT ... SELECT`` (a speculative ``ON CONFLICT`` insertion costs a third more); if
   another writer adds one of them meanwhile (a unique violation), that is rolled back to its
   savepoint and redone as below. Otherwise one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``
   whose ``SELECT`` first leaves out, by a join over the file's range, the candles stored
   unchanged: a re-import writes nothing, a correction updates only its candles.

All of it runs in one transaction (a savepoint inside the caller's): nothing is stored unless
everything is. For their duration the import's statements run with ``_SETTINGS`` (more
``work_mem`` so the sort stays in memory, no JIT, no nested loops: on stale statistics the
planner may pick one for the comparison join and it is then quadratic) and, where the session
allows it, more ``temp_buffers``. Durability is untouched (``synchronous_commit`` stays as
configured: the commit is a few milliseconds of a 45,000-row import). ``bench/ingest.py``
measures it.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from django.db import DatabaseError, IntegrityError, connection, transaction

from ingest.normalize import (
    _MAX_ABS,
    _MICROSECONDS_FROM,
    _MIN_EXPONENT,
    HEADER_ALIASES,
    KLINE_COLUMNS,
    MIN_VOLUME_FRACTION,
    REQUIRED_COLUMNS,
    STORED_COLUMNS,
    VOLUME_WINDOW,
    BadRow,
    KlineRow,
    bad_tick,
    parse_rows,
)
from trader.domain import INTERVAL_MS, interval_problem, to_dt

log = logging.getLogger("ingest.bulk")

#: Lines per COPY once a file has shown an unloadable line (before that: the whole file).
_CHUNK = 50_000
#: More unloadable lines than this and the file goes to the reference path (each costs a
#: rolled-back COPY of up to ``_CHUNK`` lines).
_MAX_UNLOADABLE = 500
#: The flagging of step 3 widens the move limit by this fraction, so that a close Python
#: (28-digit ``Decimal`` division) might find above the limit is always checked by Python.
_MARGIN = Decimal("1e-9")
#: For the import's statements only (restored after): the sort of step 3 in memory; no JIT
#: (compiling costs more than it saves here); and no nested loop, which the planner may pick
#: for the comparison join on stale statistics (an estimate of one stored candle where there
#: are a year's) and which is then quadratic.
_SETTINGS = {"work_mem": "256MB", "jit": "off", "enable_nestloop": "off"}
_TEMP_BUFFERS = "256MB"

_INT_COLUMNS = ("open_time", "close_time", "trades")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_AMOUNT_COLUMNS = ("volume", "quote_volume", "taker_buy_base", "taker_buy_quote")
# A whole-number field written "-0": Postgres reads 0, the reference refuses it.
_SIGNED_ZERO = re.compile(r"(?:^|,)[ \t]*-0+[ \t]*(?=,|\r?$)", re.MULTILINE)
_CONTEXT_LINE = re.compile(r"\bline (\d+)")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")

_STAGE = "ingest_import_stage"
_STAGE_DDL = f"""
DROP TABLE IF EXISTS pg_temp.{_STAGE};
CREATE TEMP TABLE {_STAGE} (
    open_time bigint, open numeric, high numeric, low numeric, close numeric, volume numeric,
    close_time bigint, quote_volume numeric, trades bigint, taker_buy_base numeric,
    taker_buy_quote numeric, "ignore" text
) ON COMMIT DROP
"""


@dataclass(frozen=True)
class BulkOutcome:
    """What ``klines_import_text`` stored: new candles, changed candles, rows left out."""

    stored: int
    updated: int
    bad: list[BadRow]


class _Fallback(Exception):
    """This file needs the reference path (the message says why; it is logged)."""


@dataclass(frozen=True)
class _Layout:
    #: Canonical column names, in the file's order.
    columns: tuple[str, ...]
    #: A header line naming ``columns`` (the file's own, or the canonical names).
    header: str
    #: The text from the first data line on, and that line's 1-based number.
    body: str
    first_line: int


def klines_import_text(
    *, text: str, source: str, symbol: str, interval: str, max_move_pct: Decimal
) -> BulkOutcome | None:
    """Check and store one file's candles on Postgres, with the result of
    ``parse_rows`` + ``rows_validate`` + ``klines_store``; ``None`` when the file needs the
    reference path (see the module docstring), having written nothing.

    Runs in one transaction (a savepoint inside the caller's)."""
    if problem := interval_problem(interval):
        raise ValueError(problem)
    layout = _layout(text)
    if layout is None:
        return None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            return _Import(
                cursor,
                layout,
                source=source,
                symbol=symbol,
                interval=interval,
                max_move_pct=max_move_pct,
            ).run()
    except _Fallback as exc:
        log.info("%s: imported by the reference path: %s", source, exc)
        return None


def _layout(text: str) -> _Layout | None:
    """The file's columns and data, or ``None`` if it needs the reference path."""
    if not text.isascii() or any(ch in text for ch in '"\\\x00+'):
        return None
    if "\r" in text and not text.count("\r") == text.count("\r\n") == text.count("\n"):
        return None
    if "-" in text and _SIGNED_ZERO.search(text):
        return None
    pos, line_no = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        fields = [f.strip() for f in text[pos:end].split(",")]
        if any(fields):
            break
        pos, line_no = end + 1, line_no + 1
    else:
        return None
    if fields[0].isdigit():
        if len(fields) not in (6, 12):
            return None
        columns = KLINE_COLUMNS[: len(fields)]
        return _Layout(columns, ",".join(columns), text[pos:], line_no)
    columns = tuple(HEADER_ALIASES.get(f.lower().replace(" ", "_"), "") for f in fields)
    if "" in columns or not set(columns) >= REQUIRED_COLUMNS or len(set(columns)) < len(columns):
        return None
    return _Layout(columns, text[pos:end], text[end + 1 :], line_no + 1)


# --- SQL ------------------------------------------------------------------------------------
# Every name interpolated into SQL below comes from this module's constants or KLINE_COLUMNS (a
# file's header is only ever mapped onto those), never from a file.


def _open_ms() -> str:
    return f"CASE WHEN open_time >= {_MICROSECONDS_FROM} THEN open_time / 1000 ELSE open_time END"


def _close_ms(columns: Sequence[str], interval: str) -> str:
    if "close_time" in columns:
        return (
            f"CASE WHEN open_time >= {_MICROSECONDS_FROM} THEN close_time / 1000 "
            "ELSE close_time END"
        )
    if interval == "1M":  # the next calendar month's start, minus 1 ms (close_time_ms_for)
        return (
            "(extract(epoch FROM date_trunc('month', timestamp 'epoch' + "
            f"({_open_ms()}) * interval '1 millisecond') + interval '1 month') * 1000)::bigint - 1"
        )
    return f"({_open_ms()}) + {INTERVAL_MS[interval] - 1}"


def _status_sql(columns: Sequence[str], *, plain_text: bool) -> str:
    """Each staged row's status: 0 blank, 1 unreadable (``parse_rows`` refuses it), 2 readable
    but a bad tick by a per-row rule (``bad_tick`` without the move rule), 3 good so far.

    A cheap predicate settles the plainly good rows; only the others meet the exact rules. With
    ``plain_text`` (the data is only digits, dots, commas and line ends, no fraction longer than
    the stored scale and no 19-digit run) every value is a finite non-negative number that fits
    ``numeric(28, 10)``, so the predicate checks only prices and times."""
    present = set(columns)
    parsed = [c for c in columns if c != "ignore"]
    amounts = [c for c in _AMOUNT_COLUMNS if c in present]
    max_abs = f"{_MAX_ABS:f}"
    places = -_MIN_EXPONENT
    time_order = ["close_ms >= open_ms"] if "close_time" in present else []
    # NaN is above every number in Postgres, so a NaN price breaks low <= open/close <= high.
    plain = [
        "low > 0",
        "open >= low",
        "open <= high",
        "close >= low",
        "close <= high",
        *time_order,
    ]
    if plain_text:  # an empty field is still plain text: a NULL the comparisons do not see
        plain += [f"{c} IS NOT NULL" for c in parsed if c not in _PRICE_COLUMNS]
    else:
        plain += [
            f"high < {max_abs}",
            *(f"scale({c}) <= {places}" for c in _PRICE_COLUMNS),
            *(f"{c} >= 0 AND {c} < {max_abs} AND scale({c}) <= {places}" for c in amounts),
            *(f"{c} >= 0" for c in _INT_COLUMNS if c in present),
        ]
    readable = [f"{c} IS NOT NULL" for c in parsed] + [
        f"{c} >= 0" if c in _INT_COLUMNS else
        f"({c} = 'NaN' OR (abs({c}) < {max_abs} AND {c} = round({c}, {places})))"
        for c in parsed
    ]  # fmt: skip
    tick_ok = [
        *(f"{c} <> 'NaN' AND {c} > 0" for c in _PRICE_COLUMNS),
        "high >= low",
        "open BETWEEN low AND high",
        "close BETWEEN low AND high",
        *(f"{c} <> 'NaN' AND {c} >= 0" for c in amounts),
        *time_order,
    ]
    blank = " AND ".join(f'"{c}" IS NULL' for c in columns)
    return f"""CASE
        WHEN {" AND ".join(plain)} THEN 3
        WHEN {blank} THEN 0
        WHEN NOT COALESCE({" AND ".join(readable)}, false) THEN 1
        WHEN NOT COALESCE({" AND ".join(tick_ok)}, false) THEN 2
        ELSE 3
    END"""


def _classify_sql(columns: Sequence[str], interval: str, *, plain_text: bool) -> str:
    """One row: the staged row count, the readable open-time range, and the staged rows that
    are not plainly good (tids, kinds, open times). Kinds: ``blank``, ``unreadable``,
    ``superseded`` (a later line has its open time), ``bad_tick``, ``check`` (the move rule
    must look at it)."""
    close_ms = _close_ms(columns, interval) if "close_time" in columns else "NULL::bigint"
    return f"""
SELECT count(*), min(open_ms) FILTER (WHERE status >= 2), max(open_ms) FILTER (WHERE status >= 2),
    array_agg(tid::text) FILTER (WHERE kind IS NOT NULL),
    array_agg(kind) FILTER (WHERE kind IS NOT NULL),
    array_agg(open_ms) FILTER (WHERE kind IS NOT NULL)
FROM (
    SELECT tid, open_ms, status,
        CASE
            WHEN status = 0 THEN 'blank'
            WHEN status = 1 THEN 'unreadable'
            WHEN lead(key) OVER w = key THEN 'superseded'
            WHEN status = 2 THEN 'bad_tick'
            WHEN lag(key) OVER w IS NULL THEN NULL
            WHEN lag(good) OVER w IS NULL OR lag(key) OVER w = key THEN 'check'
            WHEN close >= lag(good) OVER w THEN
                CASE WHEN close > lag(good) OVER w * %(up)s THEN 'check' END
            WHEN close < lag(good) OVER w * %(down)s THEN 'check'
        END AS kind
    FROM (
        SELECT tid, open_ms, close, status, CASE WHEN status >= 2 THEN open_ms END AS key,
            CASE WHEN status = 3 THEN close END AS good
        FROM (
            SELECT tid, open_ms, close, {_status_sql(columns, plain_text=plain_text)} AS status
            FROM (
                SELECT ctid AS tid, *, {_open_ms()} AS open_ms, {close_ms} AS close_ms
                FROM {_STAGE}
                OFFSET 0
            ) staged
            OFFSET 0
        ) checked
    ) keyed
    WINDOW w AS (ORDER BY key, tid)
) classified
"""  # noqa: S608


_VALUES = STORED_COLUMNS
_INSERT_COLUMNS = f"symbol, interval, open_time, {', '.join(_VALUES)}"


def _source_sql(columns: Sequence[str], interval: str) -> str:
    """The staged rows to store (all but ``%(skip)s``), as ``ingest_kline`` values."""
    present = set(columns)
    epoch = "'epoch'::timestamptz + ({}) * interval '1 millisecond'"
    value = {
        "open_time": epoch.format(_open_ms()),
        "close_time": epoch.format(_close_ms(columns, interval)),
        "trades": "trades" if "trades" in present else "0",
        **{c: c if c in present else "0" for c in _AMOUNT_COLUMNS},
        **{c: c for c in _PRICE_COLUMNS},
    }
    return (
        f"SELECT {', '.join(f'{value[c]} AS {c}' for c in ('open_time', *_VALUES))} "  # noqa: S608
        f"FROM {_STAGE} WHERE ctid <> ALL(%(skip)s::tid[])"
    )


def _differs(stored: str, new: str) -> str:
    return (
        f"({', '.join(f'{stored}.{c}' for c in _VALUES)}) IS DISTINCT FROM "
        f"({', '.join(f'{new}.{c}' for c in _VALUES)})"
    )


def _insert_sql(columns: Sequence[str], interval: str) -> str:
    """All the rows, where the file's time range holds no candle yet: a plain ``INSERT``."""
    return (
        f"INSERT INTO ingest_kline ({_INSERT_COLUMNS}) "  # noqa: S608
        f"SELECT %(symbol)s, %(interval)s, s.* FROM ({_source_sql(columns, interval)}) s"
    )


def _upsert_sql(columns: Sequence[str], interval: str) -> str:
    """New and changed rows only (a join leaves the unchanged ones out before any write):
    ``INSERT ... ON CONFLICT DO UPDATE``; ``(stored, updated)``."""
    return f"""
WITH upserted AS (
    INSERT INTO ingest_kline AS e ({_INSERT_COLUMNS})
    SELECT %(symbol)s, %(interval)s, s.open_time, {", ".join(f"s.{c}" for c in _VALUES)}
    FROM ({_source_sql(columns, interval)}) s
    LEFT JOIN ingest_kline x
        ON x.symbol = %(symbol)s AND x.interval = %(interval)s AND x.open_time = s.open_time
        AND x.open_time BETWEEN %(first)s AND %(last)s
    WHERE x.id IS NULL OR {_differs("x", "s")}
    ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUES)}
    WHERE {_differs("e", "EXCLUDED")}
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
"""  # noqa: S608


_ANY_STORED = """
SELECT EXISTS (SELECT 1 FROM ingest_kline WHERE symbol = %(symbol)s AND interval = %(interval)s
    AND open_time BETWEEN %(first)s AND %(last)s)
"""


# --- the import -----------------------------------------------------------------------------


@dataclass
class _Flagged:
    """Step 3's result: the staged rows that are not plainly good, by kind and open time
    (``tid`` as text), the staged row count and the readable open-time range."""

    kinds: dict[str, str]
    open_ms: dict[str, int]
    rows: int
    first_ms: int | None
    last_ms: int | None


class _Import:
    def __init__(
        self,
        cursor: Any,
        layout: _Layout,
        *,
        source: str,
        symbol: str,
        interval: str,
        max_move_pct: Decimal,
    ) -> None:
        self.cursor = cursor
        self.layout = layout
        self.source = source
        self.symbol = symbol
        self.interval = interval
        self.max_move_pct = max_move_pct
        #: Body lines (only split once a line failed to load), and the indexes of those left
        #: out of the staging table (bad or blank), ascending.
        self.lines: list[str] | None = None
        self.unloaded: list[int] = []
        #: Rows left out at loading, by the reference's own message.
        self.bad: list[BadRow] = []
        #: Whether a line was loaded as Python read it rather than as written.
        self.substituted = False

    def run(self) -> BulkOutcome:
        with _settings(self.cursor, _SETTINGS):
            return self._run()

    def _run(self) -> BulkOutcome:
        # Room for the staging table in local buffers. Possible only before the session's
        # first temporary table (or at the size it already has); else the default is fine.
        try:
            with transaction.atomic():
                self.cursor.execute(f"SET LOCAL temp_buffers = '{_TEMP_BUFFERS}'")
        except DatabaseError:
            pass
        steps: dict[str, float] = {}
        clock = time.perf_counter()

        def step(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            steps[name], clock = now - clock, now

        # The shape of the text is checked on the other core while Postgres parses it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            plain = pool.submit(_plain_text, self.layout.body)
            self._load()
            plain_text = plain.result() and not self.substituted
        step("copy")
        flagged = self._classify(plain_text)
        step("classify")
        rejected = self._move_rule(flagged)
        step("move_rule")
        bad = self.bad + self._messages(flagged, rejected)
        step("messages")
        skip = [tid for tid, kind in flagged.kinds.items() if kind != "check"]
        skip += list(rejected)
        stored, updated = self._store(flagged, skip) if flagged.rows > len(skip) else (0, 0)
        step("store")
        log.debug(
            "%s: %d rows, %d stored, %d updated, %d bad; %s",
            self.source,
            flagged.rows,
            stored,
            updated,
            len(bad),
            ", ".join(f"{name} {seconds:.3f}s" for name, seconds in steps.items()),
            extra={"steps": steps},
        )
        return BulkOutcome(stored=stored, updated=updated, bad=sorted(bad, key=lambda b: b.line))

    # -- step 2: COPY -----------------------------------------------------------------------

    def _load(self) -> None:
        # Created in the COPY's own savepoint, the staging table can take COPY ... FREEZE (its
        # rows need no visibility checks later); a failed COPY takes the table with it.
        failed = self._copy_failing_line(self.layout.body, first=True)
        if failed is None:
            return
        self.cursor.execute(_STAGE_DDL)
        lines = self._body_lines()
        count = len(lines) - 1 if self.layout.body.endswith("\n") else len(lines)
        pos = 0
        while True:
            if failed is None:
                if pos >= count:
                    return
                end = min(count, pos + _CHUNK)
                failed = self._copy_failing_line(_joined(lines[pos:end]))
                if failed is None:
                    pos = end
                    continue
            index = pos + failed - 1
            if index > pos and self._copy_failing_line(_joined(lines[pos:index])) is not None:
                raise _Fallback(f"line {self._line(index)}: loading the lines before it failed")
            self._unloadable(index)
            pos, failed = index + 1, None

    def _copy_failing_line(self, data: str, *, first: bool = False) -> int | None:
        """COPY ``data`` in a savepoint (``first``: creating the staging table there, and
        with FREEZE); ``None``, or the failing line (1-based in ``data``)."""
        columns = ", ".join(f'"{c}"' for c in self.layout.columns)
        freeze = ", FREEZE" if first else ""
        try:
            with transaction.atomic():
                if first:
                    self.cursor.execute(_STAGE_DDL)
                # Django's cursor wraps psycopg 3's; COPY is only on the latter.
                statement = f"COPY {_STAGE} ({columns}) FROM STDIN (FORMAT csv{freeze})"
                with self.cursor.cursor.copy(statement) as copy:
                    copy.write(data)
        except psycopg.errors.DataError as exc:
            found = _CONTEXT_LINE.search(exc.diag.context or "")
            if found is None:
                raise _Fallback(f"COPY failed without naming a line: {exc}") from exc
            return int(found.group(1))
        return None

    def _unloadable(self, index: int) -> None:
        """A line Postgres could not load: the reference decides what it is."""
        if len(self.unloaded) >= _MAX_UNLOADABLE:
            raise _Fallback(f"more than {_MAX_UNLOADABLE} lines Postgres cannot read")
        line = self._line(index)
        rows, bad = self._parse(self._body_lines()[index])
        if bad:
            self.bad.append(dataclasses.replace(bad[0], line=line, source=self.source))
        elif rows:
            copyable = _copyable(rows[0], self.layout.columns)
            if copyable is None or self._copy_failing_line(copyable + "\n") is not None:
                raise _Fallback(f"line {line}: Python reads it, Postgres cannot")
            self.substituted = True
            return
        self.unloaded.append(index)

    # -- step 3: classify -------------------------------------------------------------------

    def _classify(self, plain_text: bool) -> _Flagged:
        limit = self.max_move_pct / 100
        self.cursor.execute(
            _classify_sql(self.layout.columns, self.interval, plain_text=plain_text),
            {"up": 1 + limit * (1 - _MARGIN), "down": 1 - limit * (1 - _MARGIN)},
        )
        rows, first, last, tids, kinds, opens = self.cursor.fetchone()
        tids, kinds, opens = tids or [], kinds or [], opens or []
        return _Flagged(
            dict(zip(tids, kinds, strict=True)),
            dict(zip(tids, opens, strict=True)),
            rows,
            first,
            last,
        )

    # -- step 4: the move rule --------------------------------------------------------------

    def _move_rule(self, flagged: _Flagged) -> dict[str, _Rejection]:
        """``rows_validate``'s walk over the rows that pass the per-row rules; the rejected
        ones by tid."""
        check = {tid for tid, kind in flagged.kinds.items() if kind == "check"}
        if not check:
            return {}
        self.cursor.execute(
            f"SELECT tid::text, close::text, volume::text FROM ("  # noqa: S608
            f"SELECT ctid AS tid, {_open_ms()} AS open_ms, close, volume FROM {_STAGE}) s "
            "WHERE tid <> ALL(%s::tid[]) ORDER BY open_ms",
            [[tid for tid in flagged.kinds if tid not in check]],
        )
        rejected: dict[str, _Rejection] = {}
        volumes: deque[str] = deque(maxlen=VOLUME_WINDOW)
        previous: tuple[str, str] | None = None  # the last good row: (tid, close)
        kept = True
        for tid, close, volume in self.cursor.fetchall():
            if tid in check or not kept:
                trailing = tuple(volumes)
                found = bad_tick(
                    _probe(Decimal(close), Decimal(volume)),
                    None if previous is None else Decimal(previous[1]),
                    max_move_pct=self.max_move_pct,
                    trailing_volumes=[Decimal(v) for v in trailing],
                    min_volume_fraction=MIN_VOLUME_FRACTION,
                )
                if found is not None:
                    if previous is None:  # the first row has nothing to move from
                        raise _Fallback("the move rule rejected the first row")
                    rejected[tid] = _Rejection(previous[0], trailing)
                    kept = False
                    continue
            previous, kept = (tid, close), True
            volumes.append(volume)
        return rejected

    # -- step 5: messages -------------------------------------------------------------------

    def _messages(self, flagged: _Flagged, rejected: dict[str, _Rejection]) -> list[BadRow]:
        named = [t for t, k in flagged.kinds.items() if k in ("unreadable", "bad_tick")]
        named += list(rejected)
        named += [r.previous for r in rejected.values()]
        if not named:
            return []
        self.cursor.execute(
            "SELECT tid::text, rank FROM (SELECT ctid AS tid, row_number() OVER (ORDER BY ctid) "  # noqa: S608
            f"AS rank FROM {_STAGE}) r WHERE tid = ANY(%s::tid[])",
            [named],
        )
        lines = {tid: self._line(self._body_index(rank)) for tid, rank in self.cursor.fetchall()}
        bad: list[BadRow] = []
        for tid, kind in flagged.kinds.items():
            if kind == "unreadable":
                _, found = self._parse(self._text(lines[tid]))
                if not found:
                    raise _Fallback(f"line {lines[tid]}: Postgres finds it unreadable, Python not")
                bad.append(dataclasses.replace(found[0], line=lines[tid], source=self.source))
            elif kind == "bad_tick":
                row = self._row(lines[tid], flagged.open_ms[tid])
                tick = bad_tick(row, None, max_move_pct=self.max_move_pct)
                if tick is None:
                    raise _Fallback(f"line {lines[tid]}: Postgres finds a bad tick, Python not")
                bad.append(BadRow(lines[tid], tick[1], self.source, tick[0]))
        for tid, rejection in rejected.items():
            row = self._row(lines[tid], None)
            previous = self._row(lines[rejection.previous], None)
            tick = bad_tick(
                row,
                previous.close,
                max_move_pct=self.max_move_pct,
                trailing_volumes=[Decimal(v) for v in rejection.trailing],
                min_volume_fraction=MIN_VOLUME_FRACTION,
            )
            if tick is None:
                raise _Fallback(f"line {lines[tid]}: the move rule disagrees with Python")
            bad.append(BadRow(lines[tid], tick[1], self.source, tick[0]))
        return bad

    def _row(self, line: int, open_ms: int | None) -> KlineRow:
        rows, _ = self._parse(self._text(line))
        if not rows or (open_ms is not None and rows[0].open_time_ms != open_ms):
            raise _Fallback(f"line {line}: the staged row does not match the file")
        return rows[0]

    # -- step 6: store ----------------------------------------------------------------------

    def _store(self, flagged: _Flagged, skip: list[str]) -> tuple[int, int]:
        params = {
            "skip": skip,
            "symbol": self.symbol,
            "interval": self.interval,
            "first": to_dt(flagged.first_ms or 0),
            "last": to_dt(flagged.last_ms or 0),
        }
        self.cursor.execute(_ANY_STORED, params)
        if not self.cursor.fetchone()[0]:
            try:
                with transaction.atomic():
                    self.cursor.execute(_insert_sql(self.layout.columns, self.interval), params)
                    return int(self.cursor.rowcount), 0
            except IntegrityError as exc:
                if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                    raise
                # Another writer stored some of these candles meanwhile.
                log.info("%s: a concurrent write; storing with ON CONFLICT", self.source)
        self.cursor.execute(_upsert_sql(self.layout.columns, self.interval), params)
        stored, updated = self.cursor.fetchone()
        return int(stored), int(updated)

    # -- lines ------------------------------------------------------------------------------

    def _line(self, index: int) -> int:
        """The 1-based file line of body line ``index``."""
        return self.layout.first_line + index

    def _body_index(self, rank: int) -> int:
        """The body line of the ``rank``-th staged row (1-based), skipping unloaded lines."""
        skipped = 0
        while True:
            index = rank - 1 + skipped
            now = bisect.bisect_right(self.unloaded, index)
            if now == skipped:
                return index
            skipped = now

    def _text(self, line: int) -> str:
        return self._body_lines()[line - self.layout.first_line]

    def _body_lines(self) -> list[str]:
        if self.lines is None:
            self.lines = self.layout.body.split("\n")
        return self.lines

    def _parse(self, text: str) -> tuple[list[KlineRow], list[BadRow]]:
        return parse_rows(
            f"{self.layout.header}\n{text}\n", source=self.source, interval=self.interval
        )


@dataclass(frozen=True)
class _Rejection:
    """A row the move rule rejected: the last good row before it (tid), and the trailing good
    volumes it was judged against."""

    previous: str
    trailing: tuple[str, ...]


def _probe(close: Decimal, volume: Decimal) -> KlineRow:
    """A row that passes every per-row rule (as the survivors did in SQL) with this close and
    volume: only the move rule can reject it."""
    return KlineRow(
        line=0,
        open_time_ms=0,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=volume,
        close_time_ms=None,
    )


@contextmanager
def _settings(cursor: Any, values: dict[str, str]) -> Iterator[None]:
    """Postgres settings for the statements inside, then back as they were."""
    names = list(values)
    cursor.execute(f"SELECT {', '.join(['current_setting(%s)'] * len(names))}", names)
    before = cursor.fetchone()
    for name, value in values.items():
        cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
    yield
    for name, value in zip(names, before, strict=True):
        cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def _plain_text(body: str) -> bool:
    """Whether ``body`` holds only digits, dots, commas and line ends, with no fraction longer
    than the stored scale and no run of 19 digits (so every value is a finite non-negative
    number that fits ``numeric(28, 10)``). About 0.3 s for 50 MB, run beside the COPY."""
    shape = body.encode("ascii").translate(_DIGITS_AS_ZERO)
    return (
        not shape.translate(None, b"0.,\r\n")
        and b"0" * 19 not in shape
        and b"." + b"0" * (1 - _MIN_EXPONENT) not in shape
    )


def _copyable(row: KlineRow, columns: Sequence[str]) -> str | None:
    """A parsed row as a CSV line Postgres loads to the same values (``None`` if none)."""
    if row.open_time_ms >= _MICROSECONDS_FROM:
        return None
    values: dict[str, object] = {
        "open_time": row.open_time_ms,
        "close_time": row.close_time_ms,
        "trades": row.trades,
        "ignore": 0,
        **{c: getattr(row, c) for c in (*_PRICE_COLUMNS, *_AMOUNT_COLUMNS)},
    }
    return ",".join(
        "NaN" if isinstance(v, Decimal) and v.is_nan() else str(v)
        for v in (values[c] for c in columns)
    )


def _joined(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
