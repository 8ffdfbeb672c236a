"""Candle file import throughput into Postgres: ``klines_import_file``, file to committed rows.

    .venv/bin/python bench/ingest.py [--reps N] [--no-reference]

Two files, each into an empty table (``fresh``) and again over itself (``reimport``: every
candle exists unchanged, nothing is written):

- ``btcperp``: the bundled real 45,031-candle BTCPERP month (6 columns);
- ``year``: 525,600 deterministic 1m candles (a seeded random walk) as a Binance 12-column CSV.

Each case runs ``--reps`` times (default 3) through the Postgres path (``ingest.bulk``), and
once through the Python reference (``ingest.normalize`` + ``klines_store``, what every file
took before) for comparison. One JSON line per case: ``rows_per_s`` (best run; also the median)
against the 200,000 target, the seconds, the Postgres backend's CPU seconds and this process's
(when the database is local: with other work on the machine, wall time exceeds CPU time), and
for the Postgres path the seconds of each step (``read``, ``copy``, ``classify``, ``move_rule``,
``messages``, ``store``; see ``ingest.bulk``).

Runs on a database of its own (``BENCH_DATABASE_URL``, default ``trader_bench_ingest``, created
and migrated if missing); the kline table is emptied before each fresh case.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_DB = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trader_bench_ingest"
)
for _name in ("TEST_DATABASE_URL",):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "dev",
        "DEBUG": "false",
        "DJANGO_DOTENV_FILE": "",
        "DATABASE_URL": BENCH_DB,
    }
)
TARGET = 200_000
YEAR = 525_600

from bench.common import ensure_database

ensure_database(BENCH_DB)

import django

django.setup()

from django.core.management import call_command
from django.db import connection

from ingest import services
from ingest.models import Kline
from ingest.services import ImportResult, klines_import_file

BTCPERP = ROOT / "execution" / "emulator" / "data" / "BTCUSDT-1m-2022-01.csv"


def synthetic_year(path: Path, seed: int = 20240101) -> None:
    """525,600 1m candles from 2024-01-01 UTC in Binance's 12 columns: a seeded random walk in
    0.1 steps, volumes in 0.001."""
    rng = random.Random(seed)
    start_ms = 1_704_067_200_000
    price = 420_000  # tenths

    def tenths(v: int) -> str:
        return f"{v // 10}.{v % 10}"

    def thousandths(v: int) -> str:
        return f"{v // 1000}.{v % 1000:03d}"

    def ten_thousandths(v: int) -> str:
        return f"{v // 10_000}.{v % 10_000:04d}"

    with path.open("w") as f:
        for i in range(YEAR):
            o = price
            c = max(10, o + rng.randint(-30, 30))
            h = max(o, c) + rng.randint(0, 10)
            lo = max(1, min(o, c) - rng.randint(0, 10))
            v = rng.randint(1_000, 500_000)
            open_ms = start_ms + i * 60_000
            f.write(
                f"{open_ms},{tenths(o)},{tenths(h)},{tenths(lo)},{tenths(c)},{thousandths(v)},"
                f"{open_ms + 59_999},{ten_thousandths(v * c)},{v // 100},"
                f"{thousandths(v // 2)},{ten_thousandths(v // 2 * c)},0\n"
            )
            price = c


class _Steps(logging.Handler):
    """Collects the step timings ``ingest.bulk`` logs for each import."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        steps = getattr(record, "steps", None)
        if steps:
            self.last = dict(steps)


def backend_cpu_s() -> float | None:
    """The Postgres backend's CPU seconds so far (``None`` unless the database is local)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), inet_server_addr()::text")
        pid, address = cursor.fetchone()
    if address not in (None, "127.0.0.1/32", "::1/128"):
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def empty() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE ingest_kline")


def measure(run: Callable[[], ImportResult], steps: _Steps) -> dict[str, Any]:
    pg0, py0, t0 = backend_cpu_s(), time.process_time(), time.perf_counter()
    steps.last = {}
    result = run()
    seconds = time.perf_counter() - t0
    pg1 = backend_cpu_s()
    return {
        "seconds": seconds,
        "pg_cpu_s": None if pg0 is None or pg1 is None else round(pg1 - pg0, 2),
        "py_cpu_s": round(time.process_time() - py0, 2),
        "steps": {k: round(v, 3) for k, v in steps.last.items()},
        "result": result,
    }


def case(
    name: str,
    rows: int,
    run: Callable[[], ImportResult],
    *,
    reps: int,
    before: Callable[[], None],
    steps: _Steps,
    reference: bool = False,
) -> None:
    runs = []
    for _ in range(reps):
        before()
        if reference:
            real = services.klines_import_text
            services.klines_import_text = lambda **_: None
            try:
                runs.append(measure(run, steps))
            finally:
                services.klines_import_text = real
        else:
            runs.append(measure(run, steps))
    best = min(runs, key=lambda r: r["seconds"])
    result: ImportResult = best["result"]
    rate = rows / best["seconds"]
    print(
        json.dumps(
            {
                "case": name,
                "method": result.method,
                "rows": rows,
                "stored": result.stored,
                "updated": result.updated,
                "bad": len(result.bad),
                "rows_per_s": round(rate),
                "median_rows_per_s": round(rows / statistics.median(r["seconds"] for r in runs)),
                "target_rows_per_s": TARGET,
                "meets_target": rate >= TARGET,
                "seconds": round(best["seconds"], 3),
                "runs": reps,
                "pg_cpu_s": best["pg_cpu_s"],
                "py_cpu_s": best["py_cpu_s"],
                **({"steps": best["steps"]} if best["steps"] else {}),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    steps = _Steps()
    bulk_log = logging.getLogger("ingest.bulk")
    bulk_log.addHandler(steps)
    bulk_log.setLevel(logging.DEBUG)
    bulk_log.propagate = False

    with tempfile.TemporaryDirectory() as tmp:
        year = Path(tmp) / "SYNTH-1m-2024.csv"
        synthetic_year(year)
        files = [
            ("btcperp", 45_031, lambda: klines_import_file(path=BTCPERP, symbol="BTCPERP")),
            ("year", YEAR, lambda: klines_import_file(path=year)),
        ]
        for label, rows, run in files:
            for reference in (False, True):
                if reference and args.no_reference:
                    continue
                suffix = "_python" if reference else ""
                reps = 1 if reference else args.reps
                for kind, before in (("fresh", empty), ("reimport", lambda: None)):
                    case(
                        f"{label}_{kind}{suffix}",
                        rows,
                        run,
                        reps=reps,
                        before=before,
                        steps=steps,
                        reference=reference,
                    )
    assert Kline.objects.filter(symbol="SYNTH").count() == YEAR


if __name__ == "__main__":
    main()
