"""Pure parsing and bad-tick rules (no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ingest.normalize import (
    KlineRow,
    bad_tick_reason,
    parse_rows,
    rows_validate,
    symbol_interval_from_name,
)

D = Decimal


def row(
    o: str = "100",
    h: str = "101",
    lo: str = "99",
    c: str = "100",
    v: str = "10",
    *,
    open_ms: int = 0,
    line: int = 1,
) -> KlineRow:
    return KlineRow(
        line=line,
        open_time_ms=open_ms,
        open=D(o),
        high=D(h),
        low=D(lo),
        close=D(c),
        volume=D(v),
        close_time_ms=open_ms + 59_999,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BTCUSDT-1m-2024-01.csv", ("BTCUSDT", "1m")),
        ("/data/ETHUSDT-4h-2024-01-02.zip", ("ETHUSDT", "4h")),
        ("XRPUSDT-5m-futures-2021-11.csv", ("XRPUSDT", "5m")),
        ("klines.csv", (None, None)),
        ("BTCUSDT-2024-01.csv", ("BTCUSDT", None)),
    ],
)
def test_symbol_interval_from_name(name, expected):
    assert symbol_interval_from_name(name) == expected


def test_parse_headerless_binance_dump_reads_all_twelve_columns():
    text = (
        "1637971200000,0.00002853,0.00002854,0.00002851,0.00002854,36304.20000000,"
        "1637971259999,1.03547608,79,19523.00000000,0.55694227,0\n"
    )
    rows, bad = parse_rows(text, source="x.csv")
    assert bad == []
    assert rows == [
        KlineRow(
            line=1,
            open_time_ms=1637971200000,
            open=D("0.00002853"),
            high=D("0.00002854"),
            low=D("0.00002851"),
            close=D("0.00002854"),
            volume=D("36304.20000000"),
            close_time_ms=1637971259999,
            quote_volume=D("1.03547608"),
            trades=79,
            taker_buy_base=D("19523.00000000"),
            taker_buy_quote=D("0.55694227"),
        )
    ]


def test_parse_headered_futures_dump_maps_binance_column_names():
    text = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\n"
        "1704067200000,42314.0,42335.8,42289.6,42331.9,289.641,1704067259999,"
        "12256755.30560,3046,201.206,8514266.04040,0\n"
    )
    rows, bad = parse_rows(text, source="x.csv")
    assert bad == []
    assert len(rows) == 1
    assert rows[0].line == 2
    assert rows[0].trades == 3046
    assert rows[0].taker_buy_base == D("201.206")
    assert rows[0].close == D("42331.9")


def test_parse_shared_six_column_format_fills_close_time_from_interval():
    text = "open_time,open,high,low,close,volume\n1640991600000,46319,46385,46319,46377,2300.7\n"
    rows, bad = parse_rows(text, source="x.csv", interval="1m")
    assert bad == []
    assert rows[0].close_time_ms == 1640991659999
    assert rows[0].quote_volume == 0


def test_parse_reports_every_unreadable_line_and_keeps_the_rest():
    text = (
        "open_time,open,high,low,close,volume\n"
        "60000,1,2,1,2,5\n"
        "oops,1,2,1,2,5\n"
        "120000,1,2,1\n"
        "180000,1,x,1,2,5\n"
        "240000,1,2,1,2,5\n"
        "300000,1,2,1,2,0.00000000001\n"
    )
    rows, bad = parse_rows(text, source="f.csv")
    assert [r.line for r in rows] == [2, 6]
    assert [(b.line, b.source) for b in bad] == [
        (3, "f.csv"),
        (4, "f.csv"),
        (5, "f.csv"),
        (7, "f.csv"),
    ]
    assert "open_time 'oops'" in bad[0].reason
    assert "expected 6 fields, got 4" in bad[1].reason
    assert "high 'x' is not a number" in bad[2].reason
    assert "more than 10 decimal places" in bad[3].reason


def test_parse_unknown_header_makes_the_file_one_bad_row():
    rows, bad = parse_rows("time,price\n1,2\n", source="f.csv")
    assert rows == []
    assert len(bad) == 1
    assert bad[0].line == 1
    assert "unknown column 'time'" in bad[0].reason


def test_good_candle_passes():
    assert bad_tick_reason(row(), D(100)) is None


@pytest.mark.parametrize(
    ("candle", "fragment"),
    [
        (row(h="98", lo="99", o="98.5", c="98.5"), "high 98 is below low 99"),
        (row(o="102"), "open 102 is outside [low 99, high 101]"),
        (row(c="98"), "close 98 is outside [low 99, high 101]"),
        (row(o="0", lo="0"), "open 0 is not positive"),
        (row(o="-1", h="1", lo="-2", c="0.5"), "open -1 is not positive"),
        (row(v="NaN"), "volume is NaN"),
        (row(v="-1"), "volume -1 is negative"),
        (row(o="NaN"), "open NaN is not positive"),
    ],
)
def test_bad_tick_rules(candle, fragment):
    reason = bad_tick_reason(candle, D(100))
    assert reason is not None
    assert fragment in reason


def test_spike_without_volume_confirmation_is_a_bad_tick():
    spike = row(o="100", h="120", lo="100", c="120", v="1")
    reason = bad_tick_reason(spike, D(100), max_move_pct=D(10), trailing_volumes=[D(50)] * 5)
    assert reason is not None
    assert "moved 20.00% from the previous close 100" in reason
    assert "without volume confirmation" in reason


def test_spike_with_volume_confirmation_passes():
    spike = row(o="100", h="120", lo="100", c="120", v="5")
    # 5 >= 0.1 * median 50: confirmed.
    assert bad_tick_reason(spike, D(100), max_move_pct=D(10), trailing_volumes=[D(50)] * 5) is None


def test_move_within_limit_needs_no_volume():
    candle = row(o="100", h="109", lo="100", c="109", v="0")
    assert bad_tick_reason(candle, D(100), max_move_pct=D(10), trailing_volumes=[D(50)]) is None


def test_spike_with_no_history_fails_only_on_zero_volume():
    assert bad_tick_reason(row(o="100", h="150", lo="100", c="150", v="0"), D(100)) is not None
    assert bad_tick_reason(row(o="100", h="150", lo="100", c="150", v="1"), D(100)) is None


def test_rows_validate_judges_each_row_against_the_previous_good_close():
    rows = [
        row(open_ms=0, line=1, v="50"),
        row(o="100", h="200", lo="100", c="200", v="0.1", open_ms=60_000, line=2),  # spike
        row(open_ms=120_000, line=3, v="50"),  # back at 100: fine against line 1
        row(h="98", open_ms=180_000, line=4),  # high below close
    ]
    good, bad = rows_validate(rows, source="f.csv", max_move_pct=D(10))
    assert [r.line for r in good] == [1, 3]
    assert [b.line for b in bad] == [2, 4]
    assert all(b.source == "f.csv" for b in bad)


def test_rows_validate_keeps_the_last_row_of_a_repeated_open_time():
    good, bad = rows_validate([row(c="100", line=1), row(c="100.5", line=2)])
    assert bad == []
    assert [(r.line, r.close) for r in good] == [(2, D("100.5"))]
