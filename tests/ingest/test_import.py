"""File imports against real Postgres: COPY + upsert, idempotence, corrections, bad rows."""

from __future__ import annotations

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
from ingest.services import KlineImportError, kline_upsert_batch, klines_import_file

DATA = Path(__file__).resolve().parents[2] / "execution" / "emulator" / "data"
DUMPS = DATA / "binance-dumps"
BTCPERP = DATA / "BTCUSDT-1m-2022-01.csv"  # the shared BTCPERP-1m-2022-01.csv

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
    result = klines_import_file(path=BTCPERP, symbol="BTCPERP", interval="1m")

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
