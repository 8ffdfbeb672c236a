"""RateGovernor against a real Redis (DB 14), with a controllable clock and a recording sleep."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from execution.governor import Limits, RateGovernor
from execution.venues.errors import RateLimited

REDIS_URL = os.environ.get("TEST_GOVERNOR_REDIS_URL", "redis://127.0.0.1:6379/14")
# Aligned to both windows: T0 % 60 == 0 and T0 % 10 == 0.
T0 = 1_700_000_040.0
T0_MINUTE = int(T0 // 60)
T0_10S = int(T0 // 10)


class Clock:
    """Test time: ``sleep`` records each duration and advances ``now`` by it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def governor(
    client: redis.Redis, clock: Clock, *, max_wait_s: float = 10.0, **limits: Any
) -> RateGovernor:
    return RateGovernor(
        client, limits=Limits(**limits), clock=clock, sleep=clock.sleep, max_wait_s=max_wait_s
    )


def test_limits_default_to_binance_usdm_budgets_with_ten_percent_headroom() -> None:
    limits = Limits()

    assert (limits.weight_per_minute, limits.orders_per_10s, limits.orders_per_minute) == (
        2400,
        300,
        1200,
    )
    assert (limits.cap(2400), limits.cap(300), limits.cap(1200)) == (2160, 270, 1080)


def test_weight_within_headroom_is_reserved_without_waiting(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock, weight_per_minute=100)

    gov.acquire(weight=40)
    gov.acquire(weight=50)

    assert r.get(f"gov:default:w:{T0_MINUTE}") == b"90"
    assert clock.sleeps == []


def test_weight_budget_exhausted_waits_for_next_minute_then_reserves_there(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, weight_per_minute=100, max_wait_s=60.0)
    clock.now = T0 + 15
    gov.acquire(weight=90)

    gov.acquire(weight=5)

    assert clock.sleeps == [45.0]
    assert r.get(f"gov:default:w:{T0_MINUTE}") == b"90"
    assert r.get(f"gov:default:w:{T0_MINUTE + 1}") == b"5"


def test_weight_budget_exhausted_beyond_max_wait_raises_naming_the_budget(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, weight_per_minute=100, max_wait_s=10.0)
    clock.now = T0 + 15
    gov.acquire(weight=90)

    with pytest.raises(RateLimited) as exc:
        gov.acquire(weight=1)

    assert exc.value.message == (
        "weight budget 1m for IP default exhausted (90/100); waiting 45s would exceed max_wait_s=10"
    )
    assert (exc.value.code, exc.value.http_status, exc.value.retry_after_s) == (-1003, None, 45.0)
    assert clock.sleeps == []
    assert r.get(f"gov:default:w:{T0_MINUTE}") == b"90"


def test_weight_budget_paces_to_the_next_minute_then_raises_when_that_fills_too(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, weight_per_minute=100, max_wait_s=30.0)
    other_process = governor(r, clock, weight_per_minute=100)
    clock.now = T0 + 50
    gov.acquire(weight=90)

    def sleep_while_another_process_takes_the_next_minute(seconds: float) -> None:
        clock.sleep(seconds)
        other_process.acquire(weight=90)

    pacing = RateGovernor(
        r,
        limits=Limits(weight_per_minute=100),
        clock=clock,
        sleep=sleep_while_another_process_takes_the_next_minute,
        max_wait_s=30.0,
    )
    with pytest.raises(RateLimited) as exc:
        pacing.acquire(weight=1)

    assert clock.sleeps == [10.0]
    assert exc.value.message == (
        "weight budget 1m for IP default exhausted (90/100); waiting 60s would exceed max_wait_s=30"
    )
    assert r.get(f"gov:default:w:{T0_MINUTE + 1}") == b"90"


def test_request_heavier_than_the_whole_budget_raises_without_waiting(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, weight_per_minute=100, max_wait_s=600.0)

    with pytest.raises(RateLimited) as exc:
        gov.acquire(weight=91)

    assert exc.value.message == (
        "weight budget 1m for IP default: a request of 91 exceeds the budget (90/100 with headroom)"
    )
    assert clock.sleeps == []
    assert r.keys("gov:*") == []


def test_order_budget_10s_exhausted_for_one_account_leaves_other_account_and_ip_weight_free(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, weight_per_minute=100, orders_per_10s=10, max_wait_s=0.0)
    gov.acquire(weight=0, account="7", orders=9)

    with pytest.raises(RateLimited) as exc:
        gov.acquire(weight=1, account="7", orders=1)
    gov.acquire(weight=0, account="8", orders=9)
    gov.acquire(weight=90)

    assert exc.value.message == (
        "order budget 10s for account 7 exhausted (9/10); waiting 10s would exceed max_wait_s=0"
    )
    assert (exc.value.code, exc.value.retry_after_s) == (-1015, 10.0)
    assert r.get(f"gov:acct:7:o10s:{T0_10S}") == b"9"
    assert r.get(f"gov:acct:8:o10s:{T0_10S}") == b"9"
    # The refused reservation left no weight behind: the full 90 was still available.
    assert r.get(f"gov:default:w:{T0_MINUTE}") == b"90"


def test_order_budget_1m_exhausted_raises_naming_the_1m_budget(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, orders_per_10s=300, orders_per_minute=20, max_wait_s=30.0)
    for _ in range(18):
        gov.acquire(weight=0, account="7", orders=1)

    with pytest.raises(RateLimited) as exc:
        gov.acquire(weight=0, account="7", orders=1)

    assert exc.value.message == (
        "order budget 1m for account 7 exhausted (18/20); waiting 60s would exceed max_wait_s=30"
    )
    assert r.get(f"gov:acct:7:o10s:{T0_10S}") == b"18"
    assert r.get(f"gov:acct:7:o1m:{T0_MINUTE}") == b"18"


def test_order_budget_10s_exhausted_waits_for_the_next_10s_window(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, orders_per_10s=10, max_wait_s=10.0)
    clock.now = T0 + 3
    gov.acquire(weight=0, account="7", orders=9)

    gov.acquire(weight=0, account="7", orders=1)

    assert clock.sleeps == [7.0]
    assert r.get(f"gov:acct:7:o10s:{T0_10S + 1}") == b"1"
    assert r.get(f"gov:acct:7:o1m:{T0_MINUTE}") == b"10"


def test_orders_without_account_are_refused_before_any_reservation(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock)

    with pytest.raises(ValueError, match="orders are counted per account"):
        gov.acquire(weight=1, orders=1)

    assert r.keys("gov:*") == []


@pytest.mark.parametrize(
    ("weight", "orders", "expected_successes"),
    [
        pytest.param(3, 0, 30, id="weight-binding-90-of-100"),
        pytest.param(1, 1, 45, id="orders-10s-binding-45-of-50"),
    ],
)
def test_two_governors_sharing_redis_never_overshoot_under_concurrent_acquire(
    r: redis.Redis, clock: Clock, weight: int, orders: int, expected_successes: int
) -> None:
    # Two clients with their own connection pools stand for two processes; time stands still,
    # so every attempt lands in the same windows and no refusal waits.
    clients = [redis.Redis.from_url(REDIS_URL) for _ in range(2)]
    govs = [
        governor(c, clock, weight_per_minute=100, orders_per_10s=50, max_wait_s=0.0)
        for c in clients
    ]
    successes: list[int] = []
    refusals: list[int] = []
    start = threading.Barrier(8)

    def hammer(gov: RateGovernor) -> None:
        start.wait()
        for _ in range(40):
            try:
                gov.acquire(weight=weight, account="7" if orders else None, orders=orders)
                successes.append(1)
            except RateLimited:
                refusals.append(1)

    threads = [threading.Thread(target=hammer, args=(govs[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()

    assert len(successes) == expected_successes
    assert len(refusals) == 8 * 40 - expected_successes
    assert int(r.get(f"gov:default:w:{T0_MINUTE}") or 0) == expected_successes * weight
    assert int(r.get(f"gov:acct:7:o10s:{T0_10S}") or 0) == expected_successes * orders
    assert expected_successes * weight <= 0.9 * 100
    assert expected_successes * orders <= 0.9 * 50


def test_observe_raises_weight_counter_to_a_higher_header_value_and_ignores_a_lower_one(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock)
    gov.acquire(weight=5)

    gov.observe(headers={"X-MBX-USED-WEIGHT-1M": "1500"}, status=200)
    gov.observe(headers={"x-mbx-used-weight-1m": "10"}, status=200)

    assert gov.state()["weight_used_1m"] == 1500
    assert r.get(f"gov:default:w:{T0_MINUTE}") == b"1500"


def test_observe_raises_order_counters_from_headers_in_any_case(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock)
    gov.acquire(weight=0, account="7", orders=1)

    gov.observe(
        headers={"X-Mbx-Order-Count-10s": "42", "x-mbx-order-count-1M": "300"},
        status=200,
        account="7",
    )

    assert gov.state()["accounts"] == {"7": {"orders_used_10s": 42, "orders_used_1m": 300}}


def test_weight_observed_from_another_client_makes_the_next_acquire_wait(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock, max_wait_s=60.0)
    clock.now = T0 + 20
    gov.observe(headers={"X-MBX-USED-WEIGHT-1M": "2160"}, status=200)

    gov.acquire(weight=1)

    assert clock.sleeps == [40.0]


def test_429_makes_next_acquire_wait_exponentially_and_a_success_resets_the_exponent(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock)

    sleeps_per_429 = []
    for _ in range(3):
        gov.observe(headers={}, status=429, body_code=-1003)
        gov.acquire(weight=1)
        sleeps_per_429.append(clock.sleeps[-1])
    gov.observe(headers={}, status=200)
    gov.observe(headers={}, status=429, body_code=-1003)
    gov.acquire(weight=1)

    assert sleeps_per_429 == [1.0, 2.0, 4.0]
    assert clock.sleeps[-1] == 1.0
    assert gov.state()["backoff_exponent"] == 1


def test_429_exponential_backoff_is_capped_at_60_seconds(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)

    for _ in range(8):
        gov.observe(headers={}, status=429)

    assert gov.state()["backoff_exponent"] == 8
    assert gov.state()["backoff_until_ms"] == int(T0 * 1000) + 60_000


def test_429_with_retry_after_waits_that_many_seconds(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)
    gov.observe(headers={"Retry-After": "7"}, status=429)

    gov.acquire(weight=1)

    assert clock.sleeps == [7.0]


def test_429_backoff_longer_than_max_wait_raises_and_reserves_nothing(
    r: redis.Redis, clock: Clock
) -> None:
    first = governor(r, clock, max_wait_s=10.0)
    second = governor(r, clock, max_wait_s=10.0)
    first.observe(headers={"retry-after": "30"}, status=429)

    with pytest.raises(RateLimited) as exc:
        second.acquire(weight=1)

    assert exc.value.message == (
        "IP default backing off after a 429 for 30s more; waiting 30s would exceed max_wait_s=10"
    )
    assert (exc.value.http_status, exc.value.retry_after_s) == (429, 30.0)
    assert clock.sleeps == []
    assert r.get(f"gov:default:w:{T0_MINUTE}") is None


def test_429_too_many_orders_fills_the_accounts_10s_window(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock, max_wait_s=60.0)
    clock.now = T0 + 4

    gov.observe(
        headers={}, status=429, account="7", body_code=-1015, body_msg="Too many new orders."
    )
    gov.acquire(weight=0, account="7", orders=1)

    # 1 s for the IP back-off, then the rest of the 10 s window the venue said was full.
    assert clock.sleeps == [1.0, 5.0]


@pytest.mark.parametrize(
    "message",
    [
        "Way too many requests; IP banned until 1700000100000. "
        "Please use the websocket for live updates to avoid bans.",
        "Way too many requests; IP(1.2.3.4) banned until 1700000100000",
    ],
)
def test_418_ban_blocks_acquire_in_a_second_governor_until_the_clock_passes_expiry(
    r: redis.Redis, clock: Clock, message: str
) -> None:
    first = governor(r, clock, max_wait_s=600.0)
    second = governor(r, clock, max_wait_s=600.0)
    first.observe(headers={}, status=418, body_code=-1003, body_msg=message)

    clock.now = 1_700_000_099.999
    with pytest.raises(RateLimited) as exc:
        second.acquire(weight=1)
    refused_weight = r.get(f"gov:default:w:{int(clock.now // 60)}")
    clock.now = 1_700_000_100.0
    second.acquire(weight=1)

    assert (exc.value.http_status, exc.value.code, exc.value.banned_until_ms) == (
        418,
        -1003,
        1_700_000_100_000,
    )
    assert exc.value.retry_after_s == 0.001
    assert clock.sleeps == []  # a ban is never slept through
    assert refused_weight is None
    assert r.get(f"gov:default:w:{int(clock.now // 60)}") == b"1"


def test_418_without_expiry_in_message_uses_retry_after(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)

    gov.observe(headers={"Retry-After": "300"}, status=418, body_code=-1003)

    assert gov.state()["banned_until_ms"] == int(T0 * 1000) + 300_000


def test_418_with_nothing_to_parse_bans_for_the_shortest_documented_ban(
    r: redis.Redis, clock: Clock
) -> None:
    gov = governor(r, clock)

    gov.observe(headers={}, status=418)

    assert gov.state()["banned_until_ms"] == int(T0 * 1000) + 120_000


def test_shorter_ban_never_replaces_a_longer_one(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)
    gov.observe(headers={}, status=418, body_msg="IP banned until 1700000900000")

    gov.observe(headers={}, status=418, body_msg="IP banned until 1700000100000")

    assert gov.state()["banned_until_ms"] == 1_700_000_900_000


def test_ban_on_one_ip_key_leaves_another_ip_key_free(r: redis.Redis, clock: Clock) -> None:
    banned = RateGovernor(r, ip_key="egress-a", clock=clock, sleep=clock.sleep)
    other = RateGovernor(r, ip_key="egress-b", clock=clock, sleep=clock.sleep)
    banned.observe(headers={}, status=418, body_msg="IP banned until 1700000900000")

    other.acquire(weight=1)

    with pytest.raises(RateLimited):
        banned.acquire(weight=1)
    assert r.get(f"gov:egress-b:w:{T0_MINUTE}") == b"1"


def test_key_prefix_separates_governors_on_one_redis(r: redis.Redis, clock: Clock) -> None:
    a = RateGovernor(r, clock=clock, key_prefix="live", limits=Limits(weight_per_minute=10))
    b = RateGovernor(r, clock=clock, key_prefix="demo", limits=Limits(weight_per_minute=10))

    a.acquire(weight=9)
    b.acquire(weight=9)

    assert sorted(r.keys("*")) == [
        f"demo:default:w:{T0_MINUTE}".encode(),
        f"live:default:w:{T0_MINUTE}".encode(),
    ]


def test_every_key_is_written_with_a_ttl(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)

    gov.acquire(weight=1, account="7", orders=1)
    gov.observe(headers={"X-MBX-USED-WEIGHT-1M": "50"}, status=200)
    gov.observe(headers={}, status=429)
    gov.observe(headers={}, status=418, body_msg="IP banned until 1700000100000")

    ttls = {key.decode(): r.ttl(key) for key in r.scan_iter("gov:*")}
    assert ttls.keys() == {
        f"gov:default:w:{T0_MINUTE}",
        f"gov:acct:7:o10s:{T0_10S}",
        f"gov:acct:7:o1m:{T0_MINUTE}",
        "gov:default:backoff_exp",
        "gov:default:backoff_until",
        "gov:default:ban_until",
    }
    # Redis may have rounded down by one second if the test ran across a second boundary.
    assert ttls[f"gov:default:w:{T0_MINUTE}"] in (119, 120)
    assert ttls[f"gov:acct:7:o10s:{T0_10S}"] in (19, 20)
    assert ttls[f"gov:acct:7:o1m:{T0_MINUTE}"] in (119, 120)
    assert ttls["gov:default:backoff_exp"] in (599, 600)
    assert ttls["gov:default:backoff_until"] in (60, 61)  # 1 s back-off + 60 s slack
    assert ttls["gov:default:ban_until"] in (119, 120)  # 60 s ban + 60 s slack


def test_state_reports_counts_backoff_and_ban(r: redis.Redis, clock: Clock) -> None:
    gov = governor(r, clock)
    gov.acquire(weight=12, account="7", orders=2)
    gov.observe(headers={"Retry-After": "5"}, status=429)
    gov.observe(headers={}, status=418, body_msg="IP banned until 1700000100000")

    assert gov.state() == {
        "ip_key": "default",
        "weight_used_1m": 12,
        "weight_limit_1m": 2400,
        "weight_cap_1m": 2160,
        "backoff_until_ms": int(T0 * 1000) + 5000,
        "backoff_exponent": 1,
        "banned_until_ms": 1_700_000_100_000,
        "accounts": {"7": {"orders_used_10s": 2, "orders_used_1m": 2}},
    }
    clock.now = 1_700_000_100.0
    assert gov.state()["backoff_until_ms"] is None
    assert gov.state()["banned_until_ms"] is None
