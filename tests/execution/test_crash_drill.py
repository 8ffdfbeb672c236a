"""The crash drill, short: 5 signals x 4 bots through a real Celery worker against the exchange
emulator in its own process with faults on (5 % 5xx, 5 % timeouts after execution, 5 % dropped
responses after execution); the worker is killed with SIGKILL at a random point and restarted;
then the market moves (some stops fill while nobody listens), one reconciliation pass and one
monitor pass; then the exchange must equal the database. ``bench/crash_drill.py`` is the full
drill (50 signals x 20 bots, several kills).

The worker uses Redis database 9 (flushed before and after) as broker and cache; so does the
bench: do not run the two at once.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.core.management import call_command

from execution.models import DeliveryStatus, SignalDelivery
from execution.monitor import monitor_pass
from tests.execution import lifecycle_fixtures as lf
from tests.execution.worker_fixtures import (
    EmulatorProcess,
    Proc,
    account_specs,
    celery_publishing_to,
    process_env,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DRILL_REDIS_URL = "redis://127.0.0.1:6379/9"
SIGNALS, BOTS = 5, 4
VISIBILITY_S = 3
FAULTS = {"rate_5xx": 0.05, "rate_timeout": 0.05, "rate_drop": 0.05}
FINAL = (DeliveryStatus.EXECUTED, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED)


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(DRILL_REDIS_URL)
    client.flushdb()
    try:
        with celery_publishing_to(DRILL_REDIS_URL):
            yield DRILL_REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path, account_specs("drl", BOTS, usdt="100000"))
    yield emu
    emu.stop()


@pytest.fixture
def workers() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for worker in started:
        worker.stop()


def finished(signal_id: int) -> bool:
    pending = SignalDelivery.objects.filter(signal_id=signal_id).exclude(status__in=FINAL)
    return not pending.exists()


def test_crash_drill_leaves_no_duplicate_no_unprotected_position_and_the_exchange_equal_to_the_db(
    tmp_path, settings, broker, emulator, workers
):
    seed = int(os.environ.get("CRASH_DRILL_SEED") or random.randrange(10**6))
    rng = random.Random(seed)
    print(f"\ncrash drill seed {seed}")
    settings.TRADING_MODE = "TESTNET"
    settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
    settings.RATE_GOVERNOR_REDIS_URL = ""
    settings.KILL_SWITCH = False
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL_SWITCH")
    settings.MONITOR_GRACE_S = 0
    settings.MONITOR_POLL_AFTER_S = 0
    accounts = emulator.take_accounts(BOTS)
    bots = [lf.drill_bot(account, f"drill-{n}") for n, account in enumerate(accounts)]
    account_of = {bot.pk: account for bot, account in zip(bots, accounts, strict=True)}
    now, path = lf.replica_path(emulator.base_url, 3 * 86400)
    terms, advance_s = lf.drill_terms(now, path)
    env = process_env(
        tmp_path,
        redis_url=DRILL_REDIS_URL,
        TRADING_MODE="TESTNET",
        BINANCE_BASE_URL=emulator.base_url + "/fapi",
        CELERY_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S),
    )
    emulator.control("faults", **FAULTS)
    workers.append(start_worker(env, name="drill-1", concurrency=2))
    kill_at, kill_after_s = rng.randrange(SIGNALS), rng.uniform(0.0, 0.8)
    started = time.monotonic()

    for n in range(SIGNALS):
        signal = lf.drill_signal(n, terms[lf.drill_kind(n)])
        lf.fan_out_committed(signal)
        if n == kill_at:  # mid-signal: runs in flight, messages reserved but unacknowledged
            time.sleep(kill_after_s)
            workers[-1].kill_group()
            # A starting worker restores what was unacknowledged for longer than this.
            time.sleep(VISIBILITY_S + 0.5)
            workers.append(start_worker(env, name=f"drill-{len(workers) + 1}", concurrency=2))
        wait_until(functools.partial(finished, signal.pk), timeout=60, step=0.2)
    placed_s = time.monotonic() - started
    workers[-1].stop()

    lf.advance(emulator, advance_s)  # the "tight" stops fill; nobody is listening
    printed = StringIO()
    call_command("reconcile", stdout=printed)
    report = monitor_pass()
    verdict = lf.audit(bots, lambda bot: emulator.client(account_of[bot.pk]))
    print(
        json.dumps(
            {
                "seed": seed,
                "kill": {"signal": kill_at, "after_s": round(kill_after_s, 2)},
                "placed_s": round(placed_s, 1),
                "outcomes": lf.outcomes(bots),
                **lf.drill_stats(bots),
                "reconcile_lines": len(printed.getvalue().splitlines()),
                "monitor": {"updated": len(report.updated), "errors": report.errors},
                **verdict,
            },
            indent=1,
        )
    )

    assert verdict["counts"] == {
        "duplicate_entries": 0,
        "positions_without_one_stop": 0,
        "orphan_protective_orders": 0,
        "deliveries_without_outcome": 0,
        "open_orders_differ": 0,
        "positions_differ": 0,
    }, verdict["details"]
    assert SignalDelivery.objects.filter(bot__in=bots).count() == SIGNALS * BOTS
    assert report.errors == []
