"""The crash drill: signals fanned out to bots (each on its own exchange-emulator account)
through real Celery workers, with faults injected at the exchange and workers killed with
SIGKILL at random points and restarted; then the market moves (some stops fill while nobody
listens), one reconciliation pass and one monitor pass, and the exchange is audited against
the database.

    .venv/bin/python bench/crash_drill.py [--signals 50] [--bots 20] [--kills 4] [--seed N]

Faults on every order placement: 5 % refused with a 5xx, 5 % answered with a -1007 timeout
although the order was placed, 5 % placed with the response dropped. Signals are published one
after another (``--interval`` apart) while ``--kills`` times a random worker is SIGKILLed at a
random moment and started again once its unacknowledged tasks can be redelivered
(``CELERY_VISIBILITY_TIMEOUT_S``). Every signal is a long on BTCUSDT at the frozen market
price, of three kinds: a tight stop the market will cross when it is advanced after the drill,
a wide stop it will not, a resting LIMIT entry it will not reach (``drill_terms``); longs stack
on each account, so the exchange's position is the sum of a bot's open trades.

It prints one JSON object: the counts that must be zero (``duplicate_entries``,
``positions_without_one_stop``, ``orphan_protective_orders``, ``deliveries_without_outcome``,
``db_vs_exchange_differences``), what happened (outcomes, redelivered runs, unknown outcomes,
kills), timings, and the details of anything off; it exits 1 if a count is not zero.

Set-up: a database of its own (``DRILL_DATABASE_URL``, created and migrated if missing, flushed
first) and Redis database 9 (broker, cache, rate governor; flushed first: never run it beside
``tests/execution/test_crash_drill.py``, which uses the same Redis database). The exchange's
per-IP weight limit is lifted (and the workers' governor with it), and the circuit breaker is
set not to open, so that every delivery is attempted under the faults: what is drilled is
crash and fault consistency, not throttling.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AS_WORKER = "--as-worker"
IP_WEIGHT_PER_MINUTE = 1_000_000


def worker_main(argv: list[str]) -> None:
    """``celery worker`` whose rate governor allows the emulator's lifted per-IP budget."""
    import django

    django.setup()
    import functools

    import redis as redis_lib

    from config.celery import app
    from execution import services
    from execution.governor import Limits, RateGovernor

    limits = Limits(weight_per_minute=IP_WEIGHT_PER_MINUTE)
    services._governor_for = functools.cache(
        lambda url: RateGovernor(redis_lib.Redis.from_url(url), ip_key="binance", limits=limits)
    )
    app.worker_main(["worker", *argv])


if __name__ == "__main__" and sys.argv[1:2] == [AS_WORKER]:
    worker_main(sys.argv[2:])
    sys.exit(0)

from cryptography.fernet import Fernet

DRILL_DB = os.environ.get(
    "DRILL_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trader_t4_drill"
)
DRILL_REDIS = "redis://127.0.0.1:6379/9"
VAR = Path(tempfile.mkdtemp(prefix="crash-drill-"))
VISIBILITY_S = 5
FAULTS = {"rate_5xx": 0.05, "rate_timeout": 0.05, "rate_drop": 0.05}
for _name in ("TRADING_MODE", "BINANCE_BASE_URL", "TEST_DATABASE_URL", "LIVE_TRADING_CONFIRM"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "dev",
        "DEBUG": "false",
        "DJANGO_DOTENV_FILE": "",
        "VAR_DIR": str(VAR),
        "DATABASE_URL": DRILL_DB,
        "REDIS_URL": DRILL_REDIS,
        "CELERY_BROKER_URL": DRILL_REDIS,
        "RATE_GOVERNOR_REDIS_URL": DRILL_REDIS,
        "CREDENTIALS_MASTER_KEY": Fernet.generate_key().decode(),
        "SECRET_KEY": Fernet.generate_key().decode() * 2,
        "KILL_SWITCH": "0",
        "KILL_SWITCH_FILE": str(VAR / "KILL_SWITCH"),
        "CIRCUIT_ERRORS": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
)


from bench.common import ensure_database

ensure_database(DRILL_DB)

import django

django.setup()

import redis
from django.conf import settings
from django.core.management import call_command
from kombu import pools as kombu_pools

from config.celery import app as celery_app
from execution.models import DeliveryStatus, SignalDelivery
from execution.monitor import monitor_pass
from execution.services import exchange_info_refresh
from tests.execution import lifecycle_fixtures as lf
from tests.execution.worker_fixtures import (
    PY,
    EmulatorProcess,
    Proc,
    account_specs,
    process_env,
)

FINAL = (DeliveryStatus.EXECUTED, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED)


def start_worker(env: dict[str, str], name: str, concurrency: int) -> Proc:
    argv = [
        PY, __file__, AS_WORKER, "-Q", "execution",
        "--pool", "prefork", "--concurrency", str(concurrency), "-n", f"{name}@%h",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = Proc(argv, env, name)
    worker.wait_for_line(" ready.", timeout=90)
    return worker


def reset_state() -> None:
    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    redis.Redis.from_url(DRILL_REDIS).flushdb()
    kombu_pools.reset()
    vars(celery_app)["_pool"] = None
    amqp = vars(celery_app).get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


def pending_count() -> int:
    return SignalDelivery.objects.exclude(status__in=FINAL).count()


def drill(args: argparse.Namespace) -> dict[str, Any]:
    reset_state()
    emulator = EmulatorProcess(
        VAR,
        account_specs("drill", args.bots, usdt="100000"),
        "--weight-per-minute",
        str(IP_WEIGHT_PER_MINUTE),
    )
    try:
        return _drill(args, emulator)
    finally:
        emulator.stop()


def _drill(args: argparse.Namespace, emulator: EmulatorProcess) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workers: dict[str, Proc] = {}
    try:
        accounts = emulator.take_accounts(args.bots)
        bots = [lf.drill_bot(account, f"drill-{n}") for n, account in enumerate(accounts)]
        account_of = {bot.pk: account for bot, account in zip(bots, accounts, strict=True)}
        now, path = lf.replica_path(emulator.base_url, 3 * 86400)
        terms, advance_s = lf.drill_terms(now, path)
        settings.TRADING_MODE = "TESTNET"
        settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
        settings.RATE_GOVERNOR_REDIS_URL = ""  # this process: reconciliation and the audit
        settings.MONITOR_GRACE_S = 0
        settings.MONITOR_POLL_AFTER_S = 0
        exchange_info_refresh(environment="TESTNET")  # what beat keeps in the shared cache
        env = process_env(
            VAR,
            redis_url=DRILL_REDIS,
            TRADING_MODE="TESTNET",
            BINANCE_BASE_URL=emulator.base_url + "/fapi",
            CELERY_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S),
            CIRCUIT_ERRORS="1000000",
        )
        for n in range(args.workers):
            workers[f"w{n}"] = start_worker(env, f"w{n}", args.concurrency)
        emulator.control("faults", **FAULTS)

        # The timeline: signals every --interval seconds; kills at random moments within it.
        window = args.signals * args.interval
        events: list[tuple[float, int, str, Any]] = [
            (n * args.interval, 0, "publish", n) for n in range(args.signals)
        ]
        events += [(rng.uniform(0.3, window + 2.0), 1, "kill", None) for _ in range(args.kills)]
        heapq.heapify(events)
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        while events:
            at, _, kind, item = heapq.heappop(events)
            time.sleep(max(0.0, started + at - time.monotonic()))
            if kind == "publish":
                lf.fan_out_committed(lf.drill_signal(item, terms[lf.drill_kind(item)]))
            elif kind == "kill":
                alive = sorted(name for name, w in workers.items() if w.popen.poll() is None)
                name = rng.choice(alive)
                workers[name].kill_group()
                elapsed = time.monotonic() - started
                kills.append(
                    {"worker": name, "at_s": round(elapsed, 1), "pending": pending_count()}
                )
                # Restart once what it held can be redelivered.
                heapq.heappush(events, (elapsed + VISIBILITY_S + 0.5, 2, "restart", name))
            else:
                workers[item] = start_worker(env, item, args.concurrency)
        published_s = time.monotonic() - started
        deadline = time.monotonic() + args.timeout
        while pending_count() and time.monotonic() < deadline:
            time.sleep(0.5)
        all_final_s = time.monotonic() - started
    finally:
        for worker in workers.values():
            worker.stop()

    lf.advance(emulator, advance_s)  # the tight stops fill while nobody listens
    t0 = time.monotonic()
    printed = StringIO()
    reconcile_exit = 0
    try:
        call_command("reconcile", stdout=printed)
    except SystemExit as exc:
        reconcile_exit = int(exc.code or 0)
    reconcile_s = time.monotonic() - t0
    t0 = time.monotonic()
    monitor = monitor_pass()
    monitor_s = time.monotonic() - t0
    verdict = lf.audit(bots, lambda bot: emulator.client(account_of[bot.pk]))
    counts = verdict["counts"]
    lines = printed.getvalue().splitlines()
    return {
        "signals": args.signals,
        "bots": args.bots,
        "deliveries": SignalDelivery.objects.count(),
        "workers": f"{args.workers}x prefork c={args.concurrency}",
        "faults": FAULTS,
        "seed": args.seed,
        "kills": kills,
        "duplicate_entries": counts["duplicate_entries"],
        "positions_without_one_stop": counts["positions_without_one_stop"],
        "orphan_protective_orders": counts["orphan_protective_orders"],
        "deliveries_without_outcome": counts["deliveries_without_outcome"],
        "db_vs_exchange_differences": counts["open_orders_differ"] + counts["positions_differ"],
        "outcomes": lf.outcomes(bots),
        **lf.drill_stats(bots),
        "reconcile": {
            "exit": reconcile_exit,
            "lines": len(lines),
            "head": lines[:1],
            "kinds": _kinds(lines[1:]),
        },
        "monitor_pass": {"updated": len(monitor.updated), "errors": monitor.errors[:5]},
        "timings_s": {
            "publish_and_kills": round(published_s, 1),
            "all_final": round(all_final_s, 1),
            "reconcile": round(reconcile_s, 1),
            "monitor_pass": round(monitor_s, 1),
        },
        "details": {k: v[:10] for k, v in verdict["details"].items() if v},
    }


def _kinds(lines: list[str]) -> dict[str, int]:
    """Reconciliation report lines by kind (``updated: tr-1-SL: NEW -> FILLED`` -> the change)."""
    counted: dict[str, int] = {}
    for line in lines:
        kind, _, rest = line.partition(": ")
        change = rest.split(": ", 1)[-1] if kind == "updated" else ""
        key = f"{kind} {change}".strip()
        counted[key] = counted.get(key, 0) + 1
    return dict(sorted(counted.items()))


MUST_BE_ZERO = (
    "duplicate_entries",
    "positions_without_one_stop",
    "orphan_protective_orders",
    "deliveries_without_outcome",
    "db_vs_exchange_differences",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=50)
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="per worker (prefork)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between signals")
    parser.add_argument("--timeout", type=float, default=420, help="for the last deliveries")
    parser.add_argument("--seed", type=int, default=random.randrange(10**6))
    args = parser.parse_args()
    result = drill(args)
    print(json.dumps(result, indent=1), flush=True)
    sys.exit(1 if any(result[name] for name in MUST_BE_ZERO) else 0)


if __name__ == "__main__":
    main()
