"""Candle import throughput into Postgres through the COPY path.

    .venv/bin/python bench/ingest.py

Prints one JSON line per case, ``rows_per_s`` against a target of 200,000:

- ``file_btcperp_45031``: ``klines_import_file`` on the bundled 45,031-candle BTCPERP month
  (read, parse, validate, COPY into staging, upsert), into an empty table;
- ``synthetic_year_store``: 525,600 deterministic 1m candles (a seeded random walk), already
  parsed, through ``klines_store`` (COPY + upsert) into an empty table;
- ``synthetic_year_file``: the same year written as a Binance 12-column CSV, then imported
  end to end with ``klines_import_file`` (a re-import: every candle exists and is unchanged);
- ``synthetic_year_file_fresh``: the same file into an empty table.

Runs on a database of its own (``BENCH_DATABASE_URL``, default ``trader_bench_ingest``, created
and migrated if missing; the kline table is emptied before each case).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

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

from ingest.models import Kline
from ingest.normalize import KlineRow
from ingest.services import klines_import_file, klines_store

BTCPERP = ROOT / "execution" / "emulator" / "data" / "BTCUSDT-1m-2022-01.csv"


def synthetic_year(seed: int = 20240101) -> list[KlineRow]:
    """525,600 1m candles from 2024-01-01 UTC: a seeded random walk in 0.1 steps."""
    rng = random.Random(seed)
    start_ms = 1_704_067_200_000
    price = 420_000  # tenths
    rows = []
    for i in range(YEAR):
        o = price
        c = max(10, o + rng.randint(-30, 30))
        h = max(o, c) + rng.randint(0, 10)
        lo = max(1, min(o, c) - rng.randint(0, 10))
        v = rng.randint(1_000, 500_000)
        open_ms = start_ms + i * 60_000
        rows.append(
            KlineRow(
                line=i + 1,
                open_time_ms=open_ms,
                open=Decimal(o).scaleb(-1),
                high=Decimal(h).scaleb(-1),
                low=Decimal(lo).scaleb(-1),
                close=Decimal(c).scaleb(-1),
                volume=Decimal(v).scaleb(-3),
                close_time_ms=open_ms + 59_999,
                quote_volume=Decimal(v * c).scaleb(-4),
                trades=v // 100,
                taker_buy_base=Decimal(v // 2).scaleb(-3),
                taker_buy_quote=Decimal(v // 2 * c).scaleb(-4),
            )
        )
        price = c
    return rows


def write_csv(rows: list[KlineRow], path: Path) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(
                f"{r.open_time_ms},{r.open},{r.high},{r.low},{r.close},{r.volume},"
                f"{r.close_time_ms},{r.quote_volume},{r.trades},{r.taker_buy_base},"
                f"{r.taker_buy_quote},0\n"
            )


def empty() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE ingest_kline")


def report(case: str, rows: int, seconds: float, **extra: object) -> None:
    rate = rows / seconds
    print(
        json.dumps(
            {
                "case": case,
                "rows": rows,
                "seconds": round(seconds, 3),
                "rows_per_s": round(rate),
                "target_rows_per_s": TARGET,
                "meets_target": rate >= TARGET,
                **extra,
            }
        ),
        flush=True,
    )


def main() -> None:
    call_command("migrate", verbosity=0)

    empty()
    t = time.perf_counter()
    result = klines_import_file(path=BTCPERP, symbol="BTCPERP", interval="1m")
    report("file_btcperp_45031", result.stored, time.perf_counter() - t, bad=len(result.bad))

    rows = synthetic_year()
    empty()
    t = time.perf_counter()
    stored, updated = klines_store(symbol="SYNTH", interval="1m", rows=rows)
    report("synthetic_year_store", stored, time.perf_counter() - t, updated=updated)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SYNTH-1m-2024.csv"
        write_csv(rows, path)
        t = time.perf_counter()
        result = klines_import_file(path=path)
        report(
            "synthetic_year_file",
            YEAR,
            time.perf_counter() - t,
            stored=result.stored,
            updated=result.updated,
            bad=len(result.bad),
        )
        empty()
        t = time.perf_counter()
        result = klines_import_file(path=path)
        report(
            "synthetic_year_file_fresh",
            result.stored,
            time.perf_counter() - t,
            bad=len(result.bad),
        )
    assert Kline.objects.filter(symbol="SYNTH").count() == YEAR


if __name__ == "__main__":
    main()
