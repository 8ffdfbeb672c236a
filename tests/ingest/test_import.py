"""File imports against real Postgres: COPY + upsert, idempotence, corrections, bad rows."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingest.models import Kline
from ingest.normalize import KlineRow
from ingest.services import _VALUE_FIELDS, KlineImportError, kline_upsert_batch, klines_import_file
from trader.domain import INTERVAL_MS

# Copies of ../shared/data (klines/ and binance-dumps/), see data/README.md.
DATA = Path(__file__).resolve().parent / "data"
DUMPS = DATA
BTCPERP = DATA / "BTCPERP-1m-2022-01.csv"

pytestmark = pytest.mark.django_db(transaction=True)


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


def test_binance_dumps_import_every_column_exactly():
    first = klines_import_file(path=DUMPS / "ADABTC-1m-2021-11-27.csv")
    second = klines_import_file(path=DUMPS / "ADABTC-1m-2021-11-28.csv")

    assert (first.symbol, first.interval, first.stored, first.updated, first.bad) == (
        "ADABTC",
        "1m",
        10,
        0,
        [],
    )
    assert (second.stored, second.updated, second.bad) == (11, 0, [])
    assert first.method == second.method == "postgres"
    candles = Kline.objects.filter(symbol="ADABTC", interval="1m").order_by("open_time")
    assert candles.count() == 21
    head, tail = candles.first(), candles.last()
    assert head is not None
    assert tail is not None
    assert head.open_time == utc(1637971200000)
    assert head.close_time == utc(1637971259999)
    assert (head.open, head.high, head.low, head.close) == (
        Decimal("0.00002853"),
        Decimal("0.00002854"),
        Decimal("0.00002851"),
        Decimal("0.00002854"),
    )
    assert head.volume == Decimal("36304.2")
    assert head.quote_volume == Decimal("1.03547608")
    assert head.trades == 79
    assert head.taker_buy_base == Decimal("19523")
    assert head.taker_buy_quote == Decimal("0.55694227")
    assert tail.open_time == utc(1638058200000)
    assert tail.close == Decimal("0.00002814")
    assert tail.volume == Decimal("12248.3")
    assert tail.trades == 31


def test_btcperp_month_imports_all_45031_candles_exactly():
    result = klines_import_file(path=BTCPERP)

    assert (result.symbol, result.interval, result.method) == ("BTCPERP", "1m", "postgres")
    assert (result.stored, result.updated, result.bad) == (45031, 0, [])
    candles = Kline.objects.filter(symbol="BTCPERP", interval="1m")
    assert candles.count() == 45031
    head = candles.order_by("open_time").first()
    tail = candles.order_by("-open_time").first()
    assert head is not None
    assert tail is not None
    assert head.open_time == utc(1640991600000)
    assert head.close_time == utc(1640991659999)
    assert (head.open, head.high, head.low, head.close, head.volume) == (
        Decimal(46319),
        Decimal(46385),
        Decimal(46319),
        Decimal(46377),
        Decimal("2300413.729"),
    )
    assert tail.open_time == utc(1643693400000)
    assert (tail.open, tail.high, tail.low, tail.close, tail.volume) == (
        Decimal(38525),
        Decimal(38546),
        Decimal(38525),
        Decimal(38544),
        Decimal("685906.9735"),
    )
    assert not Kline.objects.exclude(symbol="BTCPERP").exists()


def test_reimport_is_idempotent_and_a_corrected_close_updates(tmp_path):
    path = tmp_path / "ADABTC-1m-2021-11-27.csv"
    original = (DUMPS / "ADABTC-1m-2021-11-27.csv").read_text()
    path.write_text(original)
    klines_import_file(path=path)

    again = klines_import_file(path=path)
    assert (again.stored, again.updated, again.bad) == (0, 0, [])
    assert Kline.objects.count() == 10

    lines = original.splitlines()
    fields = lines[2].split(",")
    assert fields[4] == "0.00002859"
    fields[4] = "0.00002858"  # within [low, high]: a correction, not a bad tick
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")

    corrected = klines_import_file(path=path)
    assert (corrected.stored, corrected.updated, corrected.bad) == (0, 1, [])
    assert Kline.objects.count() == 10
    assert Kline.objects.get(open_time=utc(int(fields[0]))).close == Decimal("0.00002858")


def test_corrupted_rows_are_named_by_line_and_the_good_ones_kept(tmp_path, capsys):
    lines = BTCPERP.read_text().splitlines()[:11]  # header + 10 candles
    lines[3] = "1640991720000,46411,46400,46411,46425,466452.1722"  # high below low
    lines[5] = "1640991840000,46420,46420,46420,abc,1"  # close not a number
    lines[7] = "1640991960000,46420,46430,46410,46420,-5"  # negative volume
    path = tmp_path / "BTCPERP-1m-2022-01.csv"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(CommandError, match="3 bad row"):
        call_command("import_klines", str(path))

    out, err = capsys.readouterr()
    assert f"{path}: BTCPERP 1m: stored 7, updated 0, bad 3" in out
    assert f"{path}:4: high 46400 is below low 46411" in err
    assert f"{path}:6: close 'abc' is not a number" in err
    assert f"{path}:8: volume -5 is negative" in err
    assert Kline.objects.count() == 7
    assert not Kline.objects.filter(open_time=utc(1640991720000)).exists()


def test_command_imports_clean_files_and_exits_zero(capsys):
    call_command("import_klines", str(DUMPS / "ADABTC-1m-2021-11-27.csv"))
    out, _ = capsys.readouterr()
    assert "ADABTC 1m: stored 10, updated 0, bad 0" in out
    assert Kline.objects.count() == 10


def test_command_takes_symbol_and_interval_for_an_unnamed_file(capsys):
    call_command("import_klines", str(BTCPERP), "--symbol", "BTCPERP", "--interval", "1m")
    out, _ = capsys.readouterr()
    assert "BTCPERP 1m: stored 45031, updated 0, bad 0" in out


def test_command_refuses_a_file_name_without_symbol_and_interval(tmp_path):
    path = tmp_path / "candles.csv"
    path.write_text((DUMPS / "ADABTC-1m-2021-11-27.csv").read_text())

    with pytest.raises(CommandError, match="does not say its symbol and interval"):
        call_command("import_klines", str(path))
    assert Kline.objects.count() == 0
    with pytest.raises(KlineImportError):
        klines_import_file(path=path)


def test_zip_import_reads_the_csv_inside(tmp_path):
    archive = tmp_path / "ADABTC-1m-2021-11-28.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(DUMPS / "ADABTC-1m-2021-11-28.csv", "ADABTC-1m-2021-11-28.csv")

    result = klines_import_file(path=archive)

    assert (result.symbol, result.interval, result.stored, result.bad) == ("ADABTC", "1m", 11, [])
    assert Kline.objects.filter(symbol="ADABTC").count() == 11


def test_zipped_binance_dumps_store_the_same_candles_as_the_csvs(tmp_path):
    for day in ("27", "28"):
        name = f"ADABTC-1m-2021-11-{day}"
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(DUMPS / f"{name}.csv", f"{name}.csv")
    zipped = [klines_import_file(path=tmp_path / f"ADABTC-1m-2021-11-2{d}.zip") for d in "78"]
    from_zip = list(Kline.objects.order_by("open_time").values_list(*_VALUE_FIELDS))
    Kline.objects.all().delete()
    plain = [klines_import_file(path=DUMPS / f"ADABTC-1m-2021-11-2{d}.csv") for d in "78"]

    assert [(r.symbol, r.interval, r.stored, r.bad) for r in zipped] == [
        ("ADABTC", "1m", 10, []),
        ("ADABTC", "1m", 11, []),
    ]
    assert [(r.stored, r.bad) for r in plain] == [(10, []), (11, [])]
    assert list(Kline.objects.order_by("open_time").values_list(*_VALUE_FIELDS)) == from_zip
    assert len(from_zip) == 21


# The shared real candles (../shared/data/klines): name -> symbol, interval, candles, and the
# first and last candle as the file writes them (open_time, open, high, low, close, volume).
REAL_FILES = {
    "ALTBTC-1m-spot-2017-11.csv": (
        "ALTBTC", "1m", 13681,
        "1509836520000,0.00162008,0.00162008,0.00162008,0.00162008,108.1485384",
        "1510700340000,0.00270001,0.00270002,0.00270001,0.00270002,1.94577668",
    ),
    "BTCPERP-1m-2022-01.csv": (
        "BTCPERP", "1m", 45031,
        "1640991600000,46319,46385,46319,46377,2300413.729",
        "1643693400000,38525,38546,38525,38544,685906.9735",
    ),
    "ETHBTC-5m-spot-2018-01.csv": (
        "ETHBTC", "5m", 5760,
        "1515560100000,0.0984,0.0994766,0.09828605,0.0994766,1820.544474",
        "1517287800000,0.10440995,0.10441058,0.10400025,0.10441057,31.94851561",
    ),
    "LTCBTC-5m-spot-2018-01.csv": (
        "LTCBTC", "5m", 5760,
        "1515560100000,0.0169325,0.01702482,0.01690701,0.01690701,1615.447709",
        "1517287800000,0.016084,0.016145,0.01607222,0.016145,20.97095642",
    ),
    "XRPETH-1m-spot-2019-10.csv": (
        "XRPETH", "1m", 2469,
        "1570752000000,0.00141342,0.00141557,0.00141266,0.00141418,1482",
        "1570965540000,0.00152814,0.00152817,0.00152787,0.00152787,785",
    ),
    "XRPUSDT-1h-futures-2021-11.csv": (
        "XRPUSDT", "1h", 100,
        "1637110800000,1.0801,1.09758,1.07654,1.07925,3153694.607",
        "1637467200000,1.07685,1.08229,1.07552,1.0765,1153357.274",
    ),
    "XRPUSDT-5m-futures-2021-11.csv": (
        "XRPUSDT", "5m", 1999,
        "1636934400000,1.1893,1.1954,1.1891,1.1941,9289043.5",
        "1637533800000,1.0733,1.0737,1.0711,1.0713,765844.7",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_candles_import_with_symbol_and_interval_from_the_file_name(name):
    symbol, interval, count, first, last = REAL_FILES[name]

    result = klines_import_file(path=DATA / name)

    assert (result.symbol, result.interval, result.method) == (symbol, interval, "postgres")
    assert (result.stored, result.updated, result.bad) == (count, 0, [])
    candles = Kline.objects.filter(symbol=symbol, interval=interval).order_by("open_time")
    assert candles.count() == count
    step_ms = INTERVAL_MS[interval]
    for candle, line in ((candles.first(), first), (candles.last(), last)):
        assert candle is not None
        open_ms, *values = line.split(",")
        assert candle.open_time == utc(int(open_ms))
        assert candle.close_time == utc(int(open_ms) + step_ms - 1)
        assert [candle.open, candle.high, candle.low, candle.close, candle.volume] == [
            Decimal(v) for v in values
        ]
        assert (candle.quote_volume, candle.trades, candle.taker_buy_base) == (0, 0, 0)

    again = klines_import_file(path=DATA / name)
    assert (again.stored, again.updated, again.bad) == (0, 0, [])


def test_kline_upsert_batch_inserts_then_updates():
    bar = KlineRow(
        line=1,
        open_time_ms=60_000,
        open=Decimal("1.5"),
        high=Decimal(2),
        low=Decimal(1),
        close=Decimal("1.75"),
        volume=Decimal(3),
        close_time_ms=None,
    )
    assert kline_upsert_batch(symbol="X", interval="1m", bars=[bar]) == 1
    assert (
        kline_upsert_batch(symbol="X", interval="1m", bars=[replace(bar, close=Decimal("1.8"))])
        == 1
    )

    stored = Kline.objects.get()
    assert stored.close == Decimal("1.8")
    assert stored.open_time == utc(60_000)
    assert stored.close_time == utc(119_999)


def test_command_draws_a_progress_bar_over_the_files_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_klines",
        str(DUMPS / "ADABTC-1m-2021-11-27.csv"),
        str(DUMPS / "ADABTC-1m-2021-11-28.csv"),
        stdout=out,
        stderr=err,
    )
    assert "\rfile 1/2 [" in err.getvalue()
    assert "\rfile 2/2 [" in err.getvalue()
    assert "100.0%" in err.getvalue()
    assert "ETA" in err.getvalue()
    assert "rows/s" in out.getvalue()
    assert Kline.objects.count() == 21
