"""Candle loading, the intrabar path and the market replay of the exchange emulator.

Pure Python: no database, no network. Real data from ``execution/emulator/data``.
"""

from __future__ import annotations

import functools
import re
import shutil
import zipfile
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from execution.emulator.market import (
    DATA_DIR,
    INTERVAL_MS,
    MarketReplay,
    intrabar_path,
    load_candles,
    partial_candle,
    price_at,
    symbol_from_path,
)
from execution.venues.base import Kline

D = Decimal
START = 1_800_000_000_000  # the replay's wall-clock start in these tests
MINUTE = 60_000
BTC_FILE = DATA_DIR / "BTCUSDT-1m-2022-01.csv"
XRP_FILE = DATA_DIR / "XRPUSDT-5m-2021-11.csv"
DUMPS = DATA_DIR / "binance-dumps"
DUMP_27 = DUMPS / "ADABTC-1m-2021-11-27.csv"
DUMP_28 = DUMPS / "ADABTC-1m-2021-11-28.csv"
DUMP_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore\n"
)


@functools.cache
def btc_candles() -> list[Kline]:
    return load_candles(BTC_FILE)[1]


def btc_replay(speed: Decimal = Decimal(1)) -> MarketReplay:
    return MarketReplay(
        {"BTCUSDT": btc_candles()},
        interval_ms={"BTCUSDT": MINUTE},
        start_wall_ms=START,
        speed=speed,
    )


def kline(open_ms: int, o: str, h: str, low: str, c: str, volume: str = "1") -> Kline:
    return Kline(
        open_time_ms=open_ms,
        open=D(o),
        high=D(h),
        low=D(low),
        close=D(c),
        volume=D(volume),
        close_time_ms=open_ms + MINUTE - 1,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- loading ---------------------------------------------------------------------------------


def test_load_btcusdt_csv_gives_45031_one_minute_candles_with_exact_ends() -> None:
    interval, candles = load_candles(BTC_FILE)

    assert interval == "1m"
    assert len(candles) == 45_031
    assert candles[0] == Kline(
        open_time_ms=1_640_991_600_000,
        open=D("46319"),
        high=D("46385"),
        low=D("46319"),
        close=D("46377"),
        volume=D("2300413.729"),
        close_time_ms=1_640_991_659_999,
    )
    assert candles[-1] == Kline(
        open_time_ms=1_643_693_400_000,
        open=D("38525"),
        high=D("38546"),
        low=D("38525"),
        close=D("38544"),
        volume=D("685906.9735"),
        close_time_ms=1_643_693_459_999,
    )
    assert all(isinstance(c.close, Decimal) for c in candles)
    assert all(a.close_time_ms + 1 == b.open_time_ms for a, b in pairwise(candles))


def test_load_xrpusdt_csv_gives_1999_five_minute_candles_with_exact_ends() -> None:
    interval, candles = load_candles(XRP_FILE)

    assert interval == "5m"
    assert len(candles) == 1_999
    assert candles[0] == Kline(
        open_time_ms=1_636_934_400_000,
        open=D("1.1893"),
        high=D("1.1954"),
        low=D("1.1891"),
        close=D("1.1941"),
        volume=D("9289043.5"),
        close_time_ms=1_636_934_699_999,
    )
    assert candles[-1] == Kline(
        open_time_ms=1_637_533_800_000,
        open=D("1.0733"),
        high=D("1.0737"),
        low=D("1.0711"),
        close=D("1.0713"),
        volume=D("765844.7"),
        close_time_ms=1_637_534_099_999,
    )


def test_load_ethbtc_csv_gives_5760_five_minute_candles() -> None:
    interval, candles = load_candles(DATA_DIR / "ETHBTC-5m-2018-01.csv")

    assert interval == "5m"
    assert len(candles) == 5_760
    assert candles[0].open == D("0.0984")
    assert candles[-1].close == D("0.10441057")


def test_load_headerless_binance_dump_of_27th_gives_10_candles_with_all_columns() -> None:
    interval, candles = load_candles(DUMP_27)

    assert interval == "1m"
    assert len(candles) == 10
    assert candles[0] == Kline(
        open_time_ms=1_637_971_200_000,
        open=D("0.00002853"),
        high=D("0.00002854"),
        low=D("0.00002851"),
        close=D("0.00002854"),
        volume=D("36304.20000000"),
        close_time_ms=1_637_971_259_999,
        quote_volume=D("1.03547608"),
        trades=79,
        taker_buy_base=D("19523.00000000"),
        taker_buy_quote=D("0.55694227"),
    )
    assert candles[-1] == Kline(
        open_time_ms=1_637_971_740_000,
        open=D("0.00002863"),
        high=D("0.00002865"),
        low=D("0.00002863"),
        close=D("0.00002865"),
        volume=D("8160.50000000"),
        close_time_ms=1_637_971_799_999,
        quote_volume=D("0.23366480"),
        trades=38,
        taker_buy_base=D("4978.00000000"),
        taker_buy_quote=D("0.14254743"),
    )


def test_load_headerless_binance_dump_of_28th_gives_11_candles_with_all_columns() -> None:
    interval, candles = load_candles(DUMP_28)

    assert interval == "1m"
    assert len(candles) == 11
    assert candles[0] == Kline(
        open_time_ms=1_638_057_600_000,
        open=D("0.00002820"),
        high=D("0.00002821"),
        low=D("0.00002817"),
        close=D("0.00002818"),
        volume=D("85342.70000000"),
        close_time_ms=1_638_057_659_999,
        quote_volume=D("2.40584425"),
        trades=96,
        taker_buy_base=D("36241.70000000"),
        taker_buy_quote=D("1.02183287"),
    )
    assert candles[-1] == Kline(
        open_time_ms=1_638_058_200_000,
        open=D("0.00002814"),
        high=D("0.00002816"),
        low=D("0.00002814"),
        close=D("0.00002814"),
        volume=D("12248.30000000"),
        close_time_ms=1_638_058_259_999,
        quote_volume=D("0.34484604"),
        trades=31,
        taker_buy_base=D("8099.80000000"),
        taker_buy_quote=D("0.22808979"),
    )


def test_load_binance_dump_with_header_line_equals_the_headerless_one(tmp_path: Path) -> None:
    headed = write(tmp_path / "ADABTC-1m-2021-11-27.csv", DUMP_HEADER + DUMP_27.read_text())

    assert load_candles(headed) == load_candles(DUMP_27)


def test_load_binance_dump_with_long_header_names_reads_trades_and_taker_volumes(
    tmp_path: Path,
) -> None:
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_asset_volume,number_of_trades,"
        "taker_buy_base_asset_volume,taker_buy_quote_asset_volume,ignore\n"
    )
    headed = write(tmp_path / "ADABTC-1m-x.csv", header + DUMP_27.read_text())

    _, candles = load_candles(headed)

    assert candles == load_candles(DUMP_27)[1]
    assert candles[0].trades == 79
    assert candles[0].taker_buy_base == D("19523.00000000")


def test_load_zip_holding_one_dump_gives_its_10_candles(tmp_path: Path) -> None:
    archive = tmp_path / "ADABTC-1m-2021-11-27.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(DUMP_27, DUMP_27.name)

    interval, candles = load_candles(archive)

    assert interval == "1m"
    assert len(candles) == 10
    assert candles == load_candles(DUMP_27)[1]


def test_load_zip_holding_two_csvs_raises(tmp_path: Path) -> None:
    archive = tmp_path / "ADABTC-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(DUMP_27, DUMP_27.name)
        zf.write(DUMP_28, DUMP_28.name)

    with pytest.raises(ValueError, match=re.escape("expected one .csv inside")):
        load_candles(archive)


def test_load_folder_of_dumps_gives_21_candles_sorted() -> None:
    interval, candles = load_candles(DUMPS)

    assert interval == "1m"
    assert len(candles) == 21
    assert candles[:10] == load_candles(DUMP_27)[1]
    assert candles[10:] == load_candles(DUMP_28)[1]
    assert candles[0].open_time_ms == 1_637_971_200_000
    assert candles[-1].open_time_ms == 1_638_058_200_000


def test_load_folder_keeps_a_repeated_candle_once(tmp_path: Path) -> None:
    shutil.copy(DUMP_27, tmp_path / DUMP_27.name)
    shutil.copy(DUMP_28, tmp_path / DUMP_28.name)
    lines = DUMP_28.read_text().splitlines(keepends=True)
    write(tmp_path / "ADABTC-1m-2021-11-28-overlap.csv", "".join(lines[8:]))
    with zipfile.ZipFile(tmp_path / "ADABTC-1m-2021-11-27.zip", "w") as zf:
        zf.write(DUMP_27, DUMP_27.name)

    interval, candles = load_candles(tmp_path)

    assert interval == "1m"
    assert len(candles) == 21
    assert candles == load_candles(DUMPS)[1]


def test_load_folder_with_a_conflicting_repeat_names_both_places(tmp_path: Path) -> None:
    shutil.copy(DUMP_27, tmp_path / DUMP_27.name)
    first_row = DUMP_27.read_text().splitlines()[0].replace("79,19523", "80,19523")
    write(tmp_path / "ADABTC-1m-2021-11-27-b.csv", first_row + "\n")

    expected = (
        f"{tmp_path / 'ADABTC-1m-2021-11-27.csv'}: line 1: open_time 1637971200000 repeats "
        f"{tmp_path / 'ADABTC-1m-2021-11-27-b.csv'} line 1 with different values"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_candles(tmp_path)


def test_load_row_with_non_numeric_price_names_file_and_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "X-1m.csv",
        "open_time,open,high,low,close,volume\n"
        "1640991600000,46319,46385,46319,46377,2300413.729\n"
        "1640991660000,46377,46411,abc,46411,1829623.194\n",
    )

    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 3: low 'abc' is not a number")):
        load_candles(bad)


def test_load_row_with_high_below_low_names_file_and_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "X-1m.csv",
        "open_time,open,high,low,close,volume\n"
        "1640991600000,46319,46385,46319,46377,2300413.729\n"
        "1640991660000,46377,46300,46400,46377,1829623.194\n",
    )

    with pytest.raises(
        ValueError, match=re.escape(f"{bad}: line 3: high 46300 is below low 46400")
    ):
        load_candles(bad)


def test_load_row_with_close_above_high_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-1m.csv", "1640991600000,100,101,99,102,5\n")

    with pytest.raises(
        ValueError, match=re.escape(f"{bad}: line 1: high 101 is below open 100 or close 102")
    ):
        load_candles(bad)


def test_load_row_with_missing_field_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-1m.csv", "1640991600000,100,101,99,100,5\n1640991660000,100,101,99\n")

    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 2: expected 6 fields, got 4")):
        load_candles(bad)


def test_load_row_with_fractional_open_time_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-1m.csv", "1640991600000,100,101,99,100,5\n16409916.5,1,1,1,1,1\n")

    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{bad}: line 2: open_time '16409916.5' is not a whole non-negative number"
        ),
    ):
        load_candles(bad)


def test_load_row_with_negative_volume_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-1m.csv", "open_time,open,high,low,close,volume\n1,1,1,1,1,-2\n")

    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 2: volume -2 is negative")):
        load_candles(bad)


def test_load_unknown_header_column_raises(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-1m.csv", "open_time,open,high,low,close,vol\n1,1,1,1,1,2\n")

    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 1: unknown column 'vol'")):
        load_candles(bad)


def test_load_candles_overlapping_for_the_named_interval_raises(tmp_path: Path) -> None:
    bad = write(tmp_path / "X-5m.csv", "0,1,1,1,1,1\n60000,1,1,1,1,1\n")

    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 2: candle opening at 60000")):
        load_candles(bad)


def test_interval_is_read_from_the_file_name() -> None:
    assert load_candles(BTC_FILE)[0] == "1m"
    assert load_candles(XRP_FILE)[0] == "5m"
    assert load_candles(DUMP_27)[0] == "1m"


def test_interval_is_inferred_from_median_spacing_when_the_name_has_none(tmp_path: Path) -> None:
    # one 15-minute hole does not move the median
    path = write(tmp_path / "data.csv", "0,1,1,1,1,1\n300000,1,1,1,1,1\n600000,1,1,1,1,1\n")
    path.write_text(path.read_text() + "1500000,1,1,1,1,1\n1800000,1,1,1,1,1\n")

    interval, candles = load_candles(path)

    assert interval == "5m"
    assert [c.close_time_ms for c in candles] == [299_999, 599_999, 899_999, 1_799_999, 2_099_999]


def test_interval_of_an_unnamed_dump_is_inferred_from_its_close_times(tmp_path: Path) -> None:
    path = write(tmp_path / "dump.csv", DUMP_27.read_text().splitlines()[0] + "\n")

    interval, candles = load_candles(path)

    assert interval == "1m"
    assert len(candles) == 1


def test_interval_cannot_be_inferred_from_one_unnamed_row_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "0,1,1,1,1,1\n")

    with pytest.raises(ValueError, match="cannot tell the candle interval"):
        load_candles(path)


def test_explicit_interval_overrides_the_name_and_sets_close_times(tmp_path: Path) -> None:
    path = write(tmp_path / "X-1m.csv", "0,1,1,1,1,1\n3600000,1,1,1,1,1\n")

    interval, candles = load_candles(path, interval="1h")

    assert interval == "1h"
    assert [c.close_time_ms for c in candles] == [3_599_999, 7_199_999]


def test_unknown_explicit_interval_raises() -> None:
    with pytest.raises(ValueError, match="unknown interval '2m'"):
        load_candles(BTC_FILE, interval="2m")


def test_monthly_candles_close_at_the_calendar_month_end(tmp_path: Path) -> None:
    jan, feb = 1_704_067_200_000, 1_706_745_600_000  # 2024-01-01, 2024-02-01 UTC
    path = write(tmp_path / "X-1M-2024.csv", f"{jan},1,1,1,1,1\n{feb},1,1,1,1,1\n")

    interval, candles = load_candles(path)

    assert interval == "1M"
    assert [c.close_time_ms for c in candles] == [feb - 1, 1_709_251_200_000 - 1]  # 2024-03-01


def test_dump_with_microsecond_times_is_read_in_milliseconds(tmp_path: Path) -> None:
    row = "1735689600000000,1,2,1,2,3,1735689659999999,6,4,1,2,0\n"
    path = write(tmp_path / "ADAUSDT-1m-2025-01-01.csv", row)

    _, candles = load_candles(path)

    assert candles[0].open_time_ms == 1_735_689_600_000
    assert candles[0].close_time_ms == 1_735_689_659_999


def test_symbol_from_path_is_the_name_up_to_the_first_dash() -> None:
    assert symbol_from_path(Path("BTCPERP-1m-2022-01.csv")) == "BTCPERP"
    assert symbol_from_path("XRPUSDT-5m-futures-2021-11.csv") == "XRPUSDT"
    assert symbol_from_path(DUMP_27) == "ADABTC"
    assert symbol_from_path(DUMPS) == "ADABTC"


def test_interval_ms_covers_binance_intervals_with_a_30_day_month() -> None:
    assert INTERVAL_MS == {
        "1m": 60_000,
        "3m": 180_000,
        "5m": 300_000,
        "15m": 900_000,
        "30m": 1_800_000,
        "1h": 3_600_000,
        "2h": 7_200_000,
        "4h": 14_400_000,
        "6h": 21_600_000,
        "8h": 28_800_000,
        "12h": 43_200_000,
        "1d": 86_400_000,
        "3d": 259_200_000,
        "1w": 604_800_000,
        "1M": 2_592_000_000,
    }


# -- the intrabar path -------------------------------------------------------------------------


def test_bullish_candle_path_goes_open_low_high_close() -> None:
    candle = kline(0, "100", "110", "95", "105")

    assert intrabar_path(candle) == [
        (D(0), D("100")),
        (D(1) / D(3), D("95")),
        (D(2) / D(3), D("110")),
        (D(1), D("105")),
    ]


def test_bearish_candle_path_goes_open_high_low_close() -> None:
    candle = kline(0, "105", "110", "95", "100")

    assert intrabar_path(candle) == [
        (D(0), D("105")),
        (D(1) / D(3), D("110")),
        (D(2) / D(3), D("95")),
        (D(1), D("100")),
    ]


def test_flat_candle_path_goes_like_a_bullish_one() -> None:
    candle = kline(0, "100", "101", "99", "100")

    assert [price for _, price in intrabar_path(candle)] == [D("100"), D("99"), D("101"), D("100")]


def test_price_at_interpolates_between_vertices_at_the_candles_places() -> None:
    candle = kline(0, "100.00", "110.00", "95.00", "105.00")

    assert price_at(candle, D(0)) == D("100.00")
    assert price_at(candle, D(1) / D(3)) == D("95.00")
    assert price_at(candle, D("0.5")) == D("102.50")
    assert price_at(candle, D(2) / D(3)) == D("110.00")
    assert price_at(candle, D("0.9")) == D("106.50")
    assert price_at(candle, D(1)) == D("105.00")


def test_price_at_rounds_half_even_to_the_most_places_among_the_prices() -> None:
    candle = kline(0, "1.5", "1.75", "1.25", "1.5")

    price = price_at(candle, D("0.1"))  # 1.5 - 0.25 * 0.3 = 1.425

    assert isinstance(price, Decimal)
    assert str(price) == "1.42"


def test_price_at_outside_zero_to_one_raises() -> None:
    with pytest.raises(ValueError, match=re.escape("fraction 1.5 is outside 0..1")):
        price_at(kline(0, "1", "1", "1", "1"), D("1.5"))


def test_partial_candle_halfway_through_a_bearish_candle() -> None:
    candle = Kline(
        open_time_ms=0,
        open=D("105"),
        high=D("110"),
        low=D("95"),
        close=D("100"),
        volume=D("9.99"),
        close_time_ms=59_999,
        quote_volume=D("3"),
        trades=7,
        taker_buy_base=D("4.00"),
        taker_buy_quote=D("1.5"),
    )

    assert partial_candle(candle, D("0.5")) == Kline(
        open_time_ms=0,
        open=D("105"),
        high=D("110"),
        low=D("102"),  # 102.5 rounded half-even to the candle's 0 places
        close=D("102"),
        volume=D("4.99"),
        close_time_ms=59_999,
        quote_volume=D("1"),
        trades=3,
        taker_buy_base=D("2.00"),
        taker_buy_quote=D("0.7"),
    )


def test_partial_candle_at_zero_is_flat_at_the_open_and_at_one_is_the_candle() -> None:
    candle = kline(0, "100", "110", "95", "105", volume="12.5")

    assert partial_candle(candle, D(0)) == kline(0, "100", "100", "100", "100", volume="0.0")
    assert partial_candle(candle, D(1)) == candle


# -- the replay ------------------------------------------------------------------------------


def test_replay_present_candle_opens_at_start_after_500_of_history() -> None:
    replay = btc_replay()

    candles = replay.klines("BTCUSDT", START)

    assert len(candles) == 500
    assert candles[-1] == Kline(  # candle 500 of the file, just opened
        open_time_ms=START,
        open=D("47054"),
        high=D("47054"),
        low=D("47054"),
        close=D("47054"),
        volume=D("0.000"),
        close_time_ms=START + MINUTE - 1,
    )
    assert candles[-2].open_time_ms == START - MINUTE
    assert candles[0].open_time_ms == START - 499 * MINUTE
    assert replay.shift("BTCUSDT") == START - 1_641_021_600_000
    assert replay.first_open_ms("BTCUSDT") == START - 500 * MINUTE


def test_replay_klines_end_with_the_open_candle_partial_at_the_elapsed_fraction() -> None:
    replay = btc_replay()

    candles = replay.klines("BTCUSDT", START + 90_000, limit=3)

    assert candles == [
        kline(START - MINUTE, "47045", "47057", "47011", "47054", "1368156.451"),
        kline(START, "47054", "47062", "47041", "47057", "1166166.689"),
        # file candle 501 (bearish 47057 -> 47062 -> 47041 -> 47049) half way through, at
        # (47062 + 47041) / 2 = 47051.5 -> 47052, with half its volume 391200.1108
        kline(START + MINUTE, "47057", "47062", "47052", "47052", "195600.0554"),
    ]
    assert candles[-1].close_time_ms == START + 119_999


def test_replay_klines_never_include_a_candle_from_the_future() -> None:
    replay = btc_replay()

    for now in (
        START,
        START + 1,
        START + 59_999,
        START + 60_000,
        START + 61_234,
        START + 7 * MINUTE,
    ):
        candles = replay.klines("BTCUSDT", now, start_ms=START - MINUTE, limit=1500)

        assert all(c.open_time_ms <= now for c in candles)
        assert candles[-1].open_time_ms <= now <= candles[-1].close_time_ms
        assert len(candles) == (now - START) // MINUTE + 2


def test_replay_klines_starting_in_the_future_are_empty() -> None:
    replay = btc_replay()

    assert replay.klines("BTCUSDT", START + 30_000, start_ms=START + MINUTE) == []


def test_replay_klines_between_start_and_end_include_both_ends() -> None:
    replay = btc_replay()

    candles = replay.klines("BTCUSDT", START, start_ms=START - 5 * MINUTE, end_ms=START - MINUTE)

    assert [c.open_time_ms for c in candles] == [START - k * MINUTE for k in (5, 4, 3, 2, 1)]


def test_replay_klines_from_start_take_the_first_limit_candles() -> None:
    replay = btc_replay()

    candles = replay.klines("BTCUSDT", START, start_ms=START - 500 * MINUTE - 7, limit=2)

    assert [c.open_time_ms for c in candles] == [START - 500 * MINUTE, START - 499 * MINUTE]
    assert candles[0].open == D("46319")


def test_replay_klines_up_to_end_take_the_last_limit_candles() -> None:
    replay = btc_replay()

    candles = replay.klines("BTCUSDT", START, end_ms=START - MINUTE + 1, limit=2)

    assert [c.open_time_ms for c in candles] == [START - 2 * MINUTE, START - MINUTE]


def test_replay_klines_limit_is_capped_at_1500() -> None:
    replay = btc_replay()

    assert len(replay.klines("BTCUSDT", START + 2000 * MINUTE, limit=2000)) == 1500
    with pytest.raises(ValueError, match="limit 0 must be at least 1"):
        replay.klines("BTCUSDT", START, limit=0)


def test_replay_closed_klines_leave_out_the_open_candle() -> None:
    replay = btc_replay()

    candles = replay.closed_klines("BTCUSDT", START + 90_000, limit=2)

    assert [c.open_time_ms for c in candles] == [START - MINUTE, START]
    assert candles[-1].close == D("47057")


def test_replay_price_follows_the_intrabar_path() -> None:
    replay = btc_replay()

    # file candle 500 is bullish: 47054 -> 47041 -> 47062 -> 47057
    assert replay.price("BTCUSDT", START) == D("47054")
    assert replay.price("BTCUSDT", START + 10_000) == D("47048")  # 47047.5, half-even
    assert replay.price("BTCUSDT", START + 20_000) == D("47041")
    assert replay.price("BTCUSDT", START + 40_000) == D("47062")
    assert replay.price("BTCUSDT", START + 59_999) == D("47057")
    assert replay.price("BTCUSDT", START + 60_000) == D("47057")  # candle 501's open


def test_replay_speed_10_runs_market_time_ten_times_as_fast() -> None:
    replay = btc_replay(speed=D(10))

    assert replay.market_ms(START) == START
    assert replay.market_ms(START + 1_000) == START + 10_000
    assert replay.market_ms(START + 6_000) == START + MINUTE
    assert replay.klines("BTCUSDT", replay.market_ms(START + 6_000))[-1].open_time_ms == (
        START + MINUTE
    )
    assert replay.price("BTCUSDT", replay.market_ms(START + 2_000)) == D("47041")


def test_replay_fractional_speed_floors_market_time_to_the_millisecond() -> None:
    replay = btc_replay(speed=D("2.5"))

    assert replay.market_ms(START + 3) == START + 7
    assert replay.market_ms(START - 3) == START - 8


def test_path_between_crosses_a_candle_boundary_with_every_vertex() -> None:
    replay = btc_replay()

    path = replay.path_between("BTCUSDT", START + 30_000, START + 90_000)

    assert path == [
        (START + 40_000, D("47062")),  # candle 500: high
        (START + 60_000, D("47057")),  # candle 500: close
        (START + 60_000, D("47057")),  # candle 501: open
        (START + 80_000, D("47062")),  # candle 501: high
        (START + 90_000, D("47052")),  # now, half way between high and low
    ]


def test_path_between_ending_on_a_vertex_does_not_repeat_it() -> None:
    replay = btc_replay()

    path = replay.path_between("BTCUSDT", START, START + 20_000)

    assert path == [(START + 20_000, D("47041"))]


def test_path_between_equal_instants_is_the_price_there() -> None:
    replay = btc_replay()

    assert replay.path_between("BTCUSDT", START + 10_000, START + 10_000) == [
        (START + 10_000, D("47048"))
    ]
    with pytest.raises(ValueError, match="is before from_ms"):
        replay.path_between("BTCUSDT", START + 1, START)


def test_replay_loops_back_to_the_first_candle_with_time_still_monotonic() -> None:
    candles = [
        kline(0, "10", "12", "9", "11"),
        kline(60_000, "11", "13", "10", "12"),
        kline(120_000, "12", "14", "11", "13"),
    ]
    replay = MarketReplay({"X": candles}, interval_ms={"X": MINUTE}, start_wall_ms=START, history=1)
    first = START - MINUTE  # candle 0; candle 1 is the present

    served = replay.klines("X", first + 7 * MINUTE + 30_000, limit=1500)

    assert replay.span("X") == 3 * MINUTE
    assert [c.open_time_ms for c in served] == [first + k * MINUTE for k in range(8)]
    assert [str(c.open) for c in served] == ["10", "11", "12", "10", "11", "12", "10", "11"]
    assert all(a.close_time_ms + 1 == b.open_time_ms for a, b in pairwise(served))
    assert served[-1].close == D("12")  # candle 1 half way, between low 10 and high 13: 11.5
    assert replay.price("X", first + 3 * MINUTE) == D("10")  # lap 2 opens with candle 0's open
    assert replay.path_between("X", first + 3 * MINUTE - 1, first + 3 * MINUTE) == [
        (first + 3 * MINUTE, D("13")),  # the last candle's close
        (first + 3 * MINUTE, D("10")),  # then the first candle's open, at the same instant
    ]


def test_replay_of_btc_far_past_its_data_is_on_a_later_lap() -> None:
    replay = btc_replay()
    lap = replay.span("BTCUSDT")

    assert lap == 45_031 * MINUTE
    assert replay.price("BTCUSDT", START - 500 * MINUTE + lap) == D("46319")
    assert replay.price("BTCUSDT", START + 3 * lap + 10_000) == D("47048")
    latest = replay.klines("BTCUSDT", START + 3 * lap + 10_000, limit=2)
    assert [c.open_time_ms for c in latest] == [START + 3 * lap - MINUTE, START + 3 * lap]


def test_replay_in_a_hole_of_the_data_holds_the_last_close() -> None:
    candles = [kline(0, "10", "12", "9", "11"), kline(60_000, "11", "13", "10", "12")]
    candles.append(kline(240_000, "15", "16", "14", "15"))  # two minutes missing before it
    replay = MarketReplay({"X": candles}, interval_ms={"X": MINUTE}, start_wall_ms=START, history=1)

    assert replay.price("X", START + 90_000) == D("12")
    assert replay.klines("X", START + 90_000)[-1] == kline(START, "11", "13", "10", "12")
    assert replay.path_between("X", START + 50_000, START + 190_000) == [
        (START + 60_000, D("12")),
        (START + 180_000, D("15")),
        (START + 190_000, D("14")),  # 15 -> 14 (its low) at a third: 14.5 at a sixth, half-even
    ]


def test_replay_with_less_data_than_history_starts_at_the_last_candle() -> None:
    candles = [kline(0, "10", "12", "9", "11"), kline(60_000, "11", "13", "10", "12")]
    replay = MarketReplay({"X": candles}, interval_ms={"X": MINUTE}, start_wall_ms=START)

    assert [c.open_time_ms for c in replay.klines("X", START)] == [START - MINUTE, START]


def test_replay_price_scale_multiplies_prices_but_not_base_volume() -> None:
    replay = MarketReplay.from_files(
        {"ETHUSDT": "ETHBTC-5m-2018-01.csv", "BTCUSDT": "BTCUSDT-1m-2022-01.csv"},
        start_wall_ms=START,
        history=0,
        price_scale={"ETHUSDT": D(15000)},
    )

    first = replay.klines("ETHUSDT", START + 5 * MINUTE)[0]

    assert replay.symbols() == ["ETHUSDT", "BTCUSDT"]
    assert replay.interval("ETHUSDT") == 5 * MINUTE
    assert first.open == D("1476.0000")  # 0.0984 BTC x 15000
    assert first.open_time_ms == START
    assert first.high == D("1492.149")  # 0.0994766 x 15000
    assert first.volume == D("1820.544474")
    assert replay.price("BTCUSDT", START) == D("46319")


def test_replay_of_an_unknown_symbol_raises_key_error() -> None:
    with pytest.raises(KeyError, match="ETHUSDT"):
        btc_replay().price("ETHUSDT", START)


def test_replay_rejects_overlapping_candles() -> None:
    candles = [kline(0, "1", "1", "1", "1"), kline(30_000, "1", "1", "1", "1")]

    with pytest.raises(ValueError, match="must not overlap"):
        MarketReplay({"X": candles}, interval_ms={"X": MINUTE}, start_wall_ms=START)
