"""Finding missing candles (Postgres window function and the Python walk) and re-fetching them
from the project's exchange emulator over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY

from execution.venues.base import Kline as VenueKline
from ingest import fetch, gaps
from ingest.derive import to_dt, to_ms
from ingest.gaps import Gap, gaps_repair, kline_gaps
from ingest.models import Kline
from ingest.services import klines_store_live
from ingest.tasks import ingest_klines
from tests.execution.emulator_fixtures import Harness, running_emulator
from trader import clock

MINUTE = 60_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def emulator() -> Iterator[Harness]:
    with running_emulator("gaps") as harness:
        yield harness


@pytest.fixture
def market(emulator: Harness, settings: Any) -> Iterator[Harness]:
    settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
    settings.MARKET_CLOCK = "emulator"
    settings.RATE_GOVERNOR_REDIS_URL = ""
    clock.reset()
    fetch._venue.cache_clear()
    yield emulator
    clock.reset()


def store_minutes(symbol: str, offsets: list[int], interval: str = "1m") -> None:
    step = {"1m": MINUTE, "1h": 60 * MINUTE}[interval]
    klines_store_live(
        symbol=symbol,
        interval=interval,
        bars=[
            VenueKline(
                open_time_ms=T0 + i * step,
                open=Decimal(100),
                high=Decimal(101),
                low=Decimal(99),
                close=Decimal(100),
                volume=Decimal(1),
                close_time_ms=T0 + (i + 1) * step - 1,
            )
            for i in offsets
        ],
    )


def rows(symbol: str) -> list[tuple[Any, ...]]:
    return list(
        Kline.objects.filter(symbol=symbol)
        .order_by("interval", "open_time")
        .values_list("interval", "open_time", "open", "high", "low", "close", "volume")
    )


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_gaps_name_each_run_of_missing_candles(db):
    store_minutes("XUSDT", [0, 1, 2, 5, 6, 10])

    assert kline_gaps(symbol="XUSDT", interval="1m") == [
        Gap(T0 + 3 * MINUTE, T0 + 4 * MINUTE, 2),
        Gap(T0 + 7 * MINUTE, T0 + 9 * MINUTE, 3),
    ]
    assert kline_gaps(symbol="XUSDT", interval="1m", start=T0 + 5 * MINUTE) == [
        Gap(T0 + 7 * MINUTE, T0 + 9 * MINUTE, 3)
    ]
    assert kline_gaps(symbol="NOPEUSDT", interval="1m") == []


def test_a_range_that_should_start_and_end_with_candles_it_lacks_has_gaps_there(db):
    store_minutes("XUSDT", [3, 4])

    found = kline_gaps(
        symbol="XUSDT",
        interval="1m",
        start=to_dt(T0),
        end=to_dt(T0 + 6 * MINUTE),
        now_ms=T0 + 3600_000,
    )

    assert found == [Gap(T0, T0 + 2 * MINUTE, 3), Gap(T0 + 5 * MINUTE, T0 + 6 * MINUTE, 2)]
    # An end in the future counts only candles closed by market now.
    assert kline_gaps(
        symbol="XUSDT", interval="1m", start=T0, end=T0 + 3600_000, now_ms=T0 + 6 * MINUTE + 1
    ) == [Gap(T0, T0 + 2 * MINUTE, 3), Gap(T0 + 5 * MINUTE, T0 + 5 * MINUTE, 1)]
    assert kline_gaps(
        symbol="EMPTYUSDT", interval="1m", start=T0, end=T0 + MINUTE, now_ms=T0 + 3600_000
    ) == [Gap(T0, T0 + MINUTE, 2)]


def test_the_window_function_and_the_python_walk_agree(db):
    store_minutes("XUSDT", [0, 2, 3, 9, 10, 11, 40, 41, 100])
    store_minutes("XUSDT", [0, 1, 4, 5], interval="1h")
    last = T0 + 100 * MINUTE

    for interval, end in (("1m", last), ("1h", T0 + 5 * 60 * MINUTE)):
        assert gaps._steps_sql("XUSDT", interval, T0, end) == gaps._steps_python(
            "XUSDT", interval, T0, end
        )
    assert [g.count for g in kline_gaps(symbol="XUSDT", interval="1m")] == [1, 5, 28, 58]
    assert kline_gaps(symbol="XUSDT", interval="1h") == [
        Gap(T0 + 2 * 60 * MINUTE, T0 + 3 * 60 * MINUTE, 2)
    ]


def test_gap_repair_refetches_deleted_candles_equal_to_what_they_were(db, market):
    ingest_klines("BTCUSDT", "1m")
    before = rows("BTCUSDT")
    opens = list(
        Kline.objects.filter(symbol="BTCUSDT")
        .order_by("open_time")
        .values_list("open_time", flat=True)
    )
    holes = [opens[10], opens[11], opens[12], opens[50]]
    Kline.objects.filter(symbol="BTCUSDT", open_time__in=holes).delete()
    assert kline_gaps(symbol="BTCUSDT", interval="1m") == [
        Gap(to_ms(opens[10]), to_ms(opens[12]), 3),
        Gap(to_ms(opens[50]), to_ms(opens[50]), 1),
    ]
    found_before = metric("trader_ingest_gaps_found_total", {"symbol": "BTCUSDT", "interval": "1m"})
    repaired_before = metric(
        "trader_ingest_gap_candles_repaired_total", {"symbol": "BTCUSDT", "interval": "1m"}
    )

    result = gaps_repair(symbol="BTCUSDT", interval="1m")

    assert (len(result.found), result.repaired, result.remaining) == (2, 4, [])
    assert rows("BTCUSDT") == before
    assert (
        metric("trader_ingest_gaps_found_total", {"symbol": "BTCUSDT", "interval": "1m"})
        == found_before + 2
    )
    assert (
        metric("trader_ingest_gap_candles_repaired_total", {"symbol": "BTCUSDT", "interval": "1m"})
        == repaired_before + 4
    )
    # Repaired history is not handed to the chain: only the newest candle ever was.
    assert Kline.objects.exclude(chain_started_at=None).count() == 1


def test_repairing_a_derived_interval_refetches_its_1m_candles_and_rebuilds_it(db, market):
    ingest_klines("BTCUSDT", "1m")
    newest = to_ms(Kline.objects.order_by("-open_time").values_list("open_time", flat=True)[0])
    window = newest - newest % (5 * MINUTE) - 10 * 5 * MINUTE
    Kline.objects.filter(symbol="BTCUSDT", open_time=to_dt(window + 2 * MINUTE)).delete()

    result = gaps_repair(
        symbol="BTCUSDT", interval="5m", start=window - 5 * MINUTE, end=window + 5 * MINUTE
    )

    assert [g.first_open_ms for g in result.found] == [window - 5 * MINUTE]
    assert result.remaining == []
    assert Kline.objects.filter(symbol="BTCUSDT", interval="5m").count() == 3
    assert Kline.objects.filter(symbol="BTCUSDT", open_time=to_dt(window + 2 * MINUTE)).exists()


def test_kline_gaps_command_prints_the_gaps_and_exits_1_until_repaired(db, market, capsys):
    ingest_klines("BTCUSDT", "1m")
    opens = list(
        Kline.objects.filter(symbol="BTCUSDT")
        .order_by("open_time")
        .values_list("open_time", flat=True)
    )
    Kline.objects.filter(open_time__in=opens[20:22]).delete()
    first = opens[20].isoformat().replace("+00:00", "Z")

    with pytest.raises(CommandError, match=r"1 gap\(s\), 2 candle\(s\) missing"):
        call_command("kline_gaps", "--symbol", "BTCUSDT", "--interval", "1m")
    assert f"gap {first} .. " in capsys.readouterr().out

    call_command("kline_gaps", "--symbol", "BTCUSDT", "--interval", "1m", "--repair")
    out = capsys.readouterr().out
    assert "repaired: stored 2 candle(s); 0 gap(s) remain" in out

    call_command("kline_gaps", "--symbol", "BTCUSDT", "--interval", "1m")
    assert "BTCUSDT 1m: no gaps" in capsys.readouterr().out


def test_kline_gaps_command_refuses_bad_arguments(db):
    with pytest.raises(CommandError, match="unknown interval '7m'"):
        call_command("kline_gaps", "--symbol", "BTCUSDT", "--interval", "7m")
    with pytest.raises(CommandError, match="is before --start"):
        call_command(
            "kline_gaps", "--symbol", "BTCUSDT", "--interval", "1m",
            "--start", "2024-02-01", "--end", "2024-01-01",
        )  # fmt: skip
    with pytest.raises(CommandError, match="is not a date"):
        call_command(
            "kline_gaps", "--symbol", "BTCUSDT", "--interval", "1m", "--start", "yesterday"
        )
