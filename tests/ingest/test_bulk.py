"""The Postgres fast path (``ingest.bulk``) against the Python reference (``ingest.normalize``):
on every file, the same stored candles, the same counts, and the same bad lines with the same
rule and message. Real files, hand-made corrupted ones, and seeded random corrupted ones."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ingest import bulk, services
from ingest.bulk import _plain_text
from ingest.models import Kline
from ingest.normalize import KLINE_COLUMNS, KlineRow, parse_rows, rows_validate
from ingest.services import (
    _VALUE_FIELDS,
    ImportResult,
    KlineImportError,
    kline_upsert_batch,
    klines_import_file,
)

pytestmark = pytest.mark.django_db(transaction=True)

DATA = Path(__file__).resolve().parent / "data"
HEADER6 = "open_time,open,high,low,close,volume"
T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SEEDS = 30


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        Kline.objects.order_by("symbol", "interval", "open_time").values_list(
            "symbol", "interval", "open_time", *_VALUE_FIELDS
        )
    )


def import_both(
    path: Path, monkeypatch: pytest.MonkeyPatch, *, before: list[KlineRow] | None = None, **kw
) -> tuple[ImportResult, ImportResult, list[tuple[Any, ...]]]:
    """Import ``path`` by the fast path and by the reference, each from the same start
    (``before`` stored first); assert they agree; return both results and the table."""
    results, tables = [], []
    for reference in (False, True):
        Kline.objects.all().delete()
        if before:
            kline_upsert_batch(symbol="BTCPERP", interval="1m", bars=before)
        with monkeypatch.context() as patch:
            if reference:
                patch.setattr(services, "klines_import_text", lambda **_: None)
            results.append(klines_import_file(path=path, **kw))
        tables.append(snapshot())
    fast, ref = results
    assert ref.method == "python"
    assert (fast.symbol, fast.interval, fast.stored, fast.updated) == (
        ref.symbol,
        ref.interval,
        ref.stored,
        ref.updated,
    )
    assert fast.bad == ref.bad  # line, message, source and rule
    assert tables[0] == tables[1]
    return fast, ref, tables[0]


REAL = sorted(p.name for p in DATA.glob("*.csv"))


# At 0.1% the move rule checks thousands of candles of each file (the 45,031 of BTCPERP only
# at the default: it takes the reference 10 s).
@pytest.mark.parametrize(
    ("name", "max_move_pct"),
    [(name, Decimal(10)) for name in REAL]
    + [(name, Decimal("0.1")) for name in REAL if not name.startswith("BTCPERP")],
)
def test_real_files_agree_with_the_reference_at_any_move_limit(name, max_move_pct, monkeypatch):
    fast, ref, table = import_both(DATA / name, monkeypatch, max_move_pct=max_move_pct)

    assert fast.method == "postgres"
    assert len(table) == fast.stored
    if max_move_pct == Decimal("0.1") and name.startswith(("ALTBTC", "LTCBTC", "XRPETH")):
        # Real moves above so tight a limit, on thin volume: the move rule rejects some.
        assert {b.rule for b in ref.bad} == {"move_unconfirmed"}


def test_hand_made_corrupted_file_agrees_line_by_line(tmp_path, monkeypatch):
    def at(i: int) -> int:
        return T0 + i * 60_000

    lines = [
        HEADER6,
        f"{at(0)},100,101,99,100,50",
        f"{at(1)},100,101,99,100.5,50",
        f"{at(2)},100,99,101,100,50",  # high below low
        f"{at(3)},100,101,99,abc,50",  # not a number
        f"{at(4)},100,101,99,100,-5",  # negative volume
        "",  # blank: skipped
        ",,,,,",  # all empty: skipped
        f"{at(5)},100,101,99",  # too few fields
        f"{at(6)},100,101,99,100,50,7",  # too many fields
        f"{at(7)},100.00000000001,101,99,100,50",  # more than 10 decimal places
        f"{at(8)},100.00000000000,101,99,100,50",  # 11 places, but all zero: readable
        f"{at(9)},100,101,99,100,NaN",
        f"{at(10)},0,101,0,100,50",  # not positive
        f"{at(11)},100,125,100,120,0.5",  # +20% on a tenth of the usual volume: a spike
        f"{at(12)},100,101,99,100.2,50",  # back: fine against the close before the spike
        f"{at(13)},100,125,100,120,40",  # +20% on good volume: confirmed
        f"{at(14)},120,121,119,120.5,40",
        f"{at(15)},120,120,80,84,1",  # -30% on no volume: rejected ...
        f"{at(16)},84,85,83,84,1",  # ... and so is the new level, candle after candle
        f"{at(17)},84,85,83,84.5,2",
        f"{at(18)},84,85,83,84,45",  # until volume confirms it
        f"{at(19)},84,85,83,84.2,0",  # a zero volume that moved little: fine
        f"{at(0)},100,102,98,101,60",  # a later line for an open time: it wins
        f"{at(1)},100,99,101,100,60",  # ... even when it is a bad tick (both are left out)
        f"{at(-3)},100,101,99,100,50",  # out of order: sorted by open time
        f"{at(20)},84,85,83,Infinity,50",  # out of range
        f"{at(21)},84,85,83,84,1e20",  # out of range
        f"{at(22)},84,85,83,84,1_000",  # Python reads 1_000; Postgres does not
        f"{at(23)}, 84 ,85,  83,84.1 ,50",  # spaces around fields
        f"{at(24)},8.4e1,85,83,84,50",  # exponent
        f"-{at(25)},84,85,83,84,50",  # negative time
        f"{at(26)}.0,84,85,83,84,50",  # not a whole number
        f"{at(27)},84,85,83,84,sNaN",
        f"{at(28)},84,85,83,84,0.0000001",  # small: str() gives 1E-7
        f"{at(29)},0.00000001,0.00000002,0.00000001,0.00000002,1",  # -99.99%: rejected
    ]
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text("\n".join(lines) + "\n")

    fast, ref, table = import_both(path, monkeypatch)

    assert fast.method == "postgres"
    by_line = {b.line: b.rule or "unreadable" for b in ref.bad}
    assert by_line == {
        4: "high_below_low",
        5: "unreadable",
        6: "volume_negative",
        9: "unreadable",
        10: "unreadable",
        11: "unreadable",
        13: "volume_nan",
        14: "non_positive_price",
        15: "move_unconfirmed",
        19: "move_unconfirmed",
        20: "move_unconfirmed",
        21: "move_unconfirmed",
        25: "high_below_low",
        27: "unreadable",
        28: "unreadable",
        32: "unreadable",
        33: "unreadable",
        34: "volume_nan",
        36: "move_unconfirmed",
    }
    # 33 rows, 19 bad, and lines 2 and 3 superseded by lines 23 and 24 (silently, as ever).
    assert len(table) == fast.stored == 12


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # Binance's 12 columns, headered under Binance's names, times in microseconds (2025 on).
        (
            "BTCPERP-1m-2025-01.csv",
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore\n"
            "1735689600000000,1,2,1,2,5,1735689659999999,10,3,2,4,0\n"
            "1735689660000000,2,2,1,1.5,5,1735689719999999,-10,3,2,4,0\n"
            "1735689720000000,2,2,1,1.5,5,1735689600000000,10,3,2,4,x\n"
            "1735689780000000,2,2,1,1.5,5,1735689839999999,10,-3,2,4,\n"
            "1735689840000000,2,2,1,1.5,5,1735689899999999,10,3.5,2,4,0\n"
            "1735689900000000,1.5,2,1,1.6,5,1735689959999999,10,3,NaN,4,0\n",
        ),
        # Columns in another order, some optional ones missing, CRLF line ends, a BOM.
        (
            "BTCPERP-1m-2022-02.csv",
            "\ufeffOpen_Time,Close,Low,High,Open,Volume,Number Of Trades\r\n"
            f"{T0},100,99,101,100,5,7\r\n"
            f"{T0 + 60_000},100,99,101,100,5,-7\r\n"
            f"{T0 + 120_000},100,99,101,100,5,7.5\r\n",
        ),
        # Months: the close time is the next month's start minus 1 ms.
        (
            "BTCPERP-1M-2024.csv",
            f"{HEADER6}\n"
            "1704067200000,100,101,99,100,5\n"  # 2024-01
            "1706745600000,100,101,99,100,5\n"  # 2024-02 (leap)
            "1733011200000,100,101,99,100,5\n",  # 2024-12
        ),
        # A headerless 6-column file whose later lines have other widths.
        (
            "BTCPERP-1h-2022.csv",
            f"{T0},1,2,1,2,5\n{T0 + 3_600_000},1,2,1,2,5,9\n\n{T0 + 7_200_000},1,2,1,2,5\n",
        ),
    ],
)
def test_file_formats_agree(name, text, tmp_path, monkeypatch):
    path = tmp_path / name
    path.write_text(text, newline="")

    fast, _, table = import_both(path, monkeypatch)

    assert fast.method == "postgres"
    assert table


@pytest.mark.parametrize(("columns", "empty"), [(6, i) for i in range(6)] + [(12, 11)])
def test_an_empty_field_in_digits_only_text_agrees(columns, empty, tmp_path, monkeypatch):
    good = [str(T0 + 60_000), "100", "101", "99", "100", "5", str(T0 + 119_999), "7", "3"]
    good += ["1", "2", "0"]
    hole = list(good[:columns])
    hole[empty] = ""
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    first = f"{T0},100,101,99,100,5" + (f",{T0 + 59_999},7,3,1,2,0" if columns == 12 else "")
    path.write_text(f"{first}\n{','.join(hole)}\n")

    fast, _, table = import_both(path, monkeypatch)

    assert fast.method == "postgres"
    assert len(table) == (2 if empty == 11 else 1)  # "ignore" may be empty


@pytest.mark.parametrize(
    "text",
    [
        f'{HEADER6}\n{T0},"100",101,99,100,5\n',  # quotes
        f"{HEADER6}\n{T0},100,101,99,100,+5\n",  # a sign Postgres accepts in whole numbers
        f"{HEADER6}\n{T0},100,101,99,100,5,-0\n",  # -0: Postgres reads 0
        f"{HEADER6}\n{T0},100,101,99,100,5\u00a0\n",  # not ASCII
        f"{HEADER6}\n{T0},100,101,99,100,5\x00\n",  # NUL
        "time,price\n1,2\n",  # a header the reference refuses
    ],
)
def test_files_the_fast_path_cannot_read_exactly_go_to_the_reference(text, tmp_path, monkeypatch):
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text(text, newline="")

    fast, _, _ = import_both(path, monkeypatch)

    assert fast.method == "python"


def test_a_file_csv_cannot_read_is_refused_with_its_name(tmp_path):
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    # A carriage return inside a line (Python's csv reads \r only as a line end).
    path.write_text(f"{HEADER6}\n{T0},100,101,99,100,5\r{T0 + 60_000},1,2,1,2,5\n", newline="")

    with pytest.raises(KlineImportError, match=f"{path}: not a CSV file"):
        klines_import_file(path=path)
    assert not Kline.objects.exists()


def test_reimport_and_corrections_over_stored_candles_agree(tmp_path, monkeypatch):
    lines = (DATA / "BTCPERP-1m-2022-01.csv").read_text().splitlines()[:200]
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text("\n".join(lines) + "\n")
    first, _, stored = import_both(path, monkeypatch)
    before = [
        KlineRow(
            line=0,
            open_time_ms=(row[2] - EPOCH) // timedelta(milliseconds=1),
            open=row[3],
            high=row[4],
            low=row[5],
            # every third candle stored with another close: the file corrects it
            close=row[6] if i % 3 else row[4],
            volume=row[7],
            close_time_ms=None,
        )
        for i, row in enumerate(stored[20:150])
    ]

    fast, _, _ = import_both(path, monkeypatch, before=before)

    assert first.stored == 199
    assert fast.stored == 199 - 130
    assert 30 < fast.updated <= 44
    assert fast.method == "postgres"


def test_a_candle_stored_by_another_writer_meanwhile_is_upserted(tmp_path, monkeypatch):
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text("\n".join((DATA / path.name).read_text().splitlines()[:50]) + "\n")
    klines_import_file(path=path)
    Kline.objects.filter(open_time__second=0, open_time__minute__lt=10).delete()
    Kline.objects.filter(open_time__minute=30).update(close=Decimal("46000"))
    # As if the candles were stored between the check for stored ones and the insert:
    monkeypatch.setattr(bulk, "_ANY_STORED", "SELECT %(symbol)s IS NULL")

    result = klines_import_file(path=path)

    assert (result.method, result.stored, result.updated, result.bad) == ("postgres", 10, 1, [])
    assert Kline.objects.count() == 49


def test_too_many_lines_postgres_cannot_read_go_to_the_reference(tmp_path, monkeypatch):
    lines = [HEADER6] + [f"{T0 + i * 60_000},1,2,1,{'x' if i % 2 else 2},5" for i in range(9)]
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(bulk, "_MAX_UNLOADABLE", 3)

    fast, _, table = import_both(path, monkeypatch)

    assert fast.method == "python"
    assert len(table) == 5


# --- seeded random corrupted files ----------------------------------------------------------

# Corruptions that keep the text to digits, dots, commas and line ends (bulk._plain_text).
_PLAIN = (
    *("high_low", "open_out", "close_out", "zero", "dup", "swap", "blank", "commas", "empty"),
    *("spike", "shift", "quiet", "zero_volume", "few", "many"),
)
_ANY = (
    *_PLAIN,
    *("abc", "neg", "nan", "long", "long_zeros", "huge", "inf", "underscore"),
    *("spaces", "exp", "neg_time", "dot_time", "neg_other", "close_first", "frac_trades"),
)


def random_file(rng: random.Random, kinds: tuple[str, ...]) -> tuple[str, str]:
    """A Binance-like file (6 or 12 columns, headered or not, ms or µs) of a random walk with
    corruptions drawn from ``kinds``; (file name, text)."""
    wide = rng.random() < 0.5
    micro = wide and rng.random() < 0.3
    scale = 1000 if micro else 1
    header = rng.random() < 0.5
    columns = 12 if wide else 6
    lines: list[str] = []
    if header:
        lines.append(",".join(KLINE_COLUMNS[:columns]))
    price, shift_left, shift = 10_000, 0, 1.0
    opens: list[int] = []
    for i in range(rng.randint(30, 160)):
        open_ms = T0 + i * 60_000
        opens.append(open_ms)
        kind = rng.choice(kinds) if rng.random() < 0.35 else "ok"
        price = max(100, price + rng.randint(-40, 40))
        o, c = price, max(100, price + rng.randint(-40, 40))
        volume = str(Decimal(rng.randint(100, 9999)).scaleb(-2))
        if shift_left:
            o, c, volume, shift_left = int(o * shift), int(c * shift), "0.01", shift_left - 1
        if kind == "spike":
            c = int(c * rng.choice((0.7, 0.85, 1.2, 1.5)))
            volume = rng.choice(("0", "0.01", "0.5", "5", volume))
        elif kind == "shift":
            shift, shift_left = rng.choice((0.6, 1.5)), rng.randint(1, 5)
        h, lo = max(o, c) + rng.randint(0, 9), min(o, c) - rng.randint(0, 9)
        f = {
            "open_time": str((open_ms if kind != "dup" else rng.choice(opens)) * scale),
            "open": str(Decimal(o).scaleb(-2)),
            "high": str(Decimal(h).scaleb(-2)),
            "low": str(Decimal(lo).scaleb(-2)),
            "close": str(Decimal(c).scaleb(-2)),
            "volume": volume,
            "close_time": str((open_ms + 59_999) * scale + (999 if micro else 0)),
            "quote_volume": "12.5",
            "trades": str(rng.randint(0, 99)),
            "taker_buy_base": "1.5",
            "taker_buy_quote": "2.5",
            "ignore": "0",
        }
        name = rng.choice(("open", "high", "low", "close", "volume"))
        field = rng.choice(KLINE_COLUMNS[:columns])  # any of them, for an empty field
        match kind:
            case "high_low":
                f["high"], f["low"] = f["low"], f["high"]
            case "open_out":
                f["open"] = str(Decimal(h + 5).scaleb(-2))
            case "close_out":
                f["close"] = str(Decimal(lo - 5).scaleb(-2))
            case "zero":
                f[name] = "0"
            case "quiet":
                f["volume"] = "0.01"
            case "zero_volume":
                f["volume"] = "0"
            case "long_zeros":
                f[name] += ("" if "." in f[name] else ".") + "000000000000"
            case "abc":
                f[name] = "abc"
            case "empty":
                f[field] = ""
            case "neg":
                f[name] = "-" + f[name]
            case "nan":
                f[name] = rng.choice(("NaN", "nan"))
            case "long":
                f[name] += ("" if "." in f[name] else ".") + "00000000001"
            case "huge":
                f[name] = rng.choice(("1e18", "1000000000000000000", "999999999999999999"))
            case "inf":
                f[name] = rng.choice(("Infinity", "inf"))
            case "underscore":
                f["volume"] = "1_000"
            case "spaces":
                f[name] = f"  {f[name]} "
            case "exp":
                f[name] = f"{f[name]}e0"
            case "neg_time":
                f["open_time"] = "-" + f["open_time"]
            case "dot_time":
                f["open_time"] += ".0"
            case "neg_other" if wide:
                f[rng.choice(("quote_volume", "taker_buy_base", "taker_buy_quote"))] = "-1"
            case "close_first" if wide:
                f["close_time"] = str((open_ms - 1) * scale)
            case "frac_trades" if wide:
                f["trades"] = "2.5"
        line = ",".join(f[c] for c in KLINE_COLUMNS[:columns])
        if kind == "blank":
            lines.append("")
        elif kind == "commas":
            lines.append("," * (columns - 1))
        elif kind == "few":
            line = line.rsplit(",", 1)[0]
        elif kind == "many":
            line += ",1"
        if kind == "swap" and lines:
            lines.insert(len(lines) - 1, line)
        else:
            lines.append(line)
    ending = "\r\n" if rng.random() < 0.2 else "\n"
    return "BTCPERP-1m-2022-01.csv", ending.join(lines) + ending


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_corrupted_files_agree_with_the_reference(seed, tmp_path, monkeypatch):
    rng = random.Random(seed)
    kinds = _PLAIN if seed % 3 == 0 else _ANY
    name, text = random_file(rng, kinds)
    path = tmp_path / name
    path.write_text(text, newline="")
    max_move_pct = rng.choice((Decimal("0.5"), Decimal(2), Decimal(10)))
    shapes: list[bool] = []

    def plain_text(body: str) -> bool:
        shapes.append(_plain_text(body))
        return shapes[-1]

    monkeypatch.setattr(bulk, "_plain_text", plain_text)

    fast, _, _ = import_both(path, monkeypatch, max_move_pct=max_move_pct)

    assert fast.method == "postgres"
    assert shapes == [kinds == _PLAIN]  # the cheap predicate (plain text) and the full one


def test_the_random_files_hit_every_rule():
    rules: Counter[str] = Counter()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        name, text = random_file(rng, _PLAIN if seed % 3 == 0 else _ANY)
        rows, unreadable = parse_rows(text, source=name, interval="1m")
        _, bad = rows_validate(rows, max_move_pct=rng.choice((Decimal("0.5"), Decimal(2))))
        rules.update(b.rule or "unreadable" for b in unreadable + bad)

    assert set(rules) >= {
        "unreadable",
        "non_positive_price",
        "high_below_low",
        "open_outside_range",
        "close_outside_range",
        "volume_nan",
        "volume_negative",
        "other_volume_invalid",
        "close_before_open",
        "move_unconfirmed",
    }
