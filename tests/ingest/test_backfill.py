"""Backfill against the project's exchange emulator over HTTP: 4000 candles of replayed past
(three pages of 1500), resumption after an interrupted run, the shared rate governor on real
Redis (DB 7), and the command's arguments and progress bar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY

from execution.services import rate_governor
from execution.venues.base import Kline as VenueKline
from ingest import fetch
from ingest.derive import to_dt, to_ms
from ingest.fetch import BackfillError, BackfillProgress, klines_backfill
from ingest.gaps import kline_gaps
from ingest.models import Kline
from ingest.tasks import ingest_klines
from tests.execution.emulator_fixtures import Harness, running_emulator, wait_for_window
from trader import clock

MINUTE = 60_000
HISTORY = 4000  # closed candles the emulator serves as the past
REDIS_7 = "redis://127.0.0.1:6379/7"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Harness]:
    with running_emulator("backfill", history=HISTORY) as harness:
        yield harness


@pytest.fixture
def market(emulator: Harness, settings: Any) -> Iterator[Harness]:
    settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
    settings.MARKET_CLOCK = "emulator"
    settings.RATE_GOVERNOR_REDIS_URL = ""
    clock.reset()
    fetch._venue.cache_clear()
    emulator.reset()
    yield emulator
    clock.reset()
    fetch._venue.cache_clear()


def first_open(harness: Harness) -> int:
    return harness.call(lambda: harness.emulator.replay.first_open_ms("BTCUSDT"))


def served(harness: Harness) -> list[VenueKline]:
    """Every closed candle the emulator holds, read straight from its replay."""
    replay = harness.emulator.replay
    now = harness.state()["market_time_ms"]
    start, found = first_open(harness), []
    while True:
        page = harness.call(
            lambda s=start: replay.closed_klines("BTCUSDT", now, start_ms=s, limit=1500)
        )
        found += page
        if len(page) < 1500:
            return found
        start = page[-1].open_time_ms + 1


def stored() -> list[tuple[Any, ...]]:
    return [
        (to_ms(k.open_time), k.open, k.high, k.low, k.close, k.volume, to_ms(k.close_time))
        for k in Kline.objects.filter(symbol="BTCUSDT", interval="1m").order_by("open_time")
    ]


def expected(candles: list[VenueKline]) -> list[tuple[Any, ...]]:
    return [
        (k.open_time_ms, k.open, k.high, k.low, k.close, k.volume, k.close_time_ms) for k in candles
    ]


def weight(purpose: str) -> float:
    return (
        REGISTRY.get_sample_value("trader_ingest_request_weight_total", {"purpose": purpose}) or 0
    )


class Interrupted(Exception):
    pass


def test_backfill_stores_every_closed_candle_in_pages_of_1500_with_progress(db, market):
    seen: list[BackfillProgress] = []
    spent = weight("backfill")

    result = klines_backfill(
        symbol="BTCUSDT", interval="1m", start_ms=first_open(market), progress=seen.append
    )

    assert (result.fetched, result.stored, result.requests, result.bad) == (HISTORY, HISTORY, 3, 0)
    assert result.resumed_from_ms is None
    assert stored() == expected(served(market))
    assert [p.done for p in seen] == [1500, 3000, 4000]
    assert {p.total for p in seen} == {HISTORY}
    assert seen[-1].percent == 100.0
    assert all(p.rate > 0 and p.eta_s is not None for p in seen)
    assert weight("backfill") == spent + 30  # three requests of limit > 1000: 10 each
    assert kline_gaps(symbol="BTCUSDT", interval="1m") == []
    # History is never handed to the chain.
    assert not Kline.objects.exclude(chain_started_at=None).exists()


def test_an_interrupted_backfill_resumes_after_the_newest_stored_candle(db, market):
    start = first_open(market)

    def stop_after_first_page(progress: BackfillProgress) -> None:
        raise Interrupted(progress.done)

    with pytest.raises(Interrupted):
        klines_backfill(
            symbol="BTCUSDT", interval="1m", start_ms=start, progress=stop_after_first_page
        )
    assert Kline.objects.count() == 1500

    result = klines_backfill(symbol="BTCUSDT", interval="1m", start_ms=start)

    assert result.resumed_from_ms == start + 1500 * MINUTE
    assert (result.fetched, result.stored, result.requests) == (HISTORY - 1500, HISTORY - 1500, 2)
    assert stored() == expected(served(market))

    again = klines_backfill(symbol="BTCUSDT", interval="1m", start_ms=start)
    assert (again.fetched, again.stored, again.requests) == (0, 0, 0)


def test_a_bounded_backfill_takes_exactly_the_range_start_inclusive_end_exclusive(db, market):
    start = first_open(market) + 100 * MINUTE

    result = klines_backfill(
        symbol="BTCUSDT", interval="1m", start_ms=start + 1, end_ms=start + 31 * MINUTE
    )

    # start + 1 ms is inside the candle opening at start: the range begins with the next one.
    assert result.stored == 30
    assert stored() == expected(served(market)[101:131])


def test_backfill_requests_are_paced_by_the_shared_governor_on_redis(db, market, settings):
    settings.RATE_GOVERNOR_REDIS_URL = REDIS_7
    fetch._venue.cache_clear()
    governor = rate_governor()
    assert governor is not None
    wait_for_window(60_000, 5_000)
    before = int(governor.state()["weight_used_1m"])  # type: ignore[call-overload]

    klines_backfill(symbol="BTCUSDT", interval="1m", start_ms=first_open(market))

    assert int(governor.state()["weight_used_1m"]) >= before + 30  # type: ignore[call-overload]


def test_backfill_refuses_a_derived_interval_an_unknown_one_and_an_empty_range(db, market):
    start = first_open(market)
    with pytest.raises(BackfillError, match="derived from 1m candles, not fetched: backfill 1m"):
        klines_backfill(symbol="BTCUSDT", interval="5m", start_ms=start)
    with pytest.raises(BackfillError, match="unknown interval '7m'"):
        klines_backfill(symbol="BTCUSDT", interval="7m", start_ms=start)
    with pytest.raises(BackfillError, match="is not after start"):
        klines_backfill(symbol="BTCUSDT", interval="1m", start_ms=start, end_ms=start)
    assert not Kline.objects.exists()


def test_backfill_command_draws_progress_on_stderr_and_sums_up_on_stdout(db, market):
    start = to_dt(first_open(market) + 2000 * MINUTE)
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "backfill_klines", "--symbol", "btcusdt", "--interval", "1m",
        "--start", start.isoformat(), stdout=out, stderr=err,
    )  # fmt: skip

    assert "BTCUSDT 1m: fetched 2000, stored 2000, updated 0, bad 0 in 2 request(s)" in (
        out.getvalue()
    )
    bar = err.getvalue()
    assert bar.startswith("\rBTCUSDT 1m [")
    assert "100.0%" in bar
    assert "2,000/2,000 candles" in bar
    assert "c/s" in bar
    assert "ETA" in bar
    assert Kline.objects.count() == 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "7m", "--start", "2024-01-01"], "unknown interval '7m'"),
        (["--interval", "2m", "--start", "2024-01-01"], "backfill 1m"),
        (["--interval", "1h", "--start", "2024-01-01"], "backfill 1m"),
        (
            ["--interval", "1m", "--start", "2024-02-01", "--end", "2024-01-01"],
            "is not after --start",
        ),
        (["--interval", "1m", "--start", "01/02/2024"], "is not a date"),
    ],
)
def test_backfill_command_explains_bad_arguments(db, market, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("backfill_klines", "--symbol", "BTCUSDT", *args, stderr=io.StringIO())


def test_a_backfill_after_the_beat_stored_the_newest_candles_names_the_hole_and_can_fill_it(
    db, market
):
    ingest_klines("BTCUSDT", "1m")  # the beat: the newest 98 closed candles
    start = first_open(market)

    result = klines_backfill(symbol="BTCUSDT", interval="1m", start_ms=start)

    assert (result.fetched, result.requests) == (0, 0)
    assert result.missing_before == HISTORY - (fetch.LATEST_LIMIT - 1)

    out = io.StringIO()
    call_command(
        "backfill_klines", "--symbol", "BTCUSDT", "--interval", "1m",
        "--start", to_dt(start).isoformat(), "--quiet", stdout=out,
    )  # fmt: skip
    assert f"note: {result.missing_before} candle(s) are missing before" in out.getvalue()

    call_command(
        "backfill_klines", "--symbol", "BTCUSDT", "--interval", "1m",
        "--start", to_dt(start).isoformat(), "--quiet", "--repair-gaps", stdout=out,
    )  # fmt: skip
    assert "gap repair: 1 gap(s), stored 3902 candle(s); 0 gap(s) remain" in out.getvalue()
    assert stored() == expected(served(market))
