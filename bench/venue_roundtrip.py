"""Orders/s and round-trip latency through python-binance to the emulator on loopback, with and
without the Redis rate-limit governor.

    .venv/bin/python bench/venue_roundtrip.py [--orders 400]

The emulator runs in its own process (as in production, the exchange is not in our process).
Three runs:
1. generous limits, no governor: the raw cost of a placement (pre-flight + sign + HTTP + match);
2. generous limits, governor on Redis: the governor's overhead per call;
3. Binance's real order limit (300 per 10 s per account), N orders as fast as possible: without
   the governor the venue answers 429s; with it, calls are paced below the limit and none fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import redis

from execution.governor import RateGovernor
from execution.venues.base import OrderRequest, OrderType, Side, TimeInForce
from execution.venues.binance import BinanceFuturesVenue, VenueSettings
from execution.venues.errors import RateLimited

KEY, SECRET = "benchKey0000000001", "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(
    orders_per_10s: int, orders_per_minute: int, weight: int
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    accounts = Path(tempfile.mkdtemp()) / "accounts.json"
    accounts.write_text(
        json.dumps([{"api_key": KEY, "api_secret": SECRET, "balances": {"USDT": "1000000"}}])
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_exchange_emulator",
            "--port",
            str(port),
            "--accounts",
            str(accounts),
            "--speed",
            "0",
            "--orders-per-10s",
            str(orders_per_10s),
            "--orders-per-minute",
            str(orders_per_minute),
            "--weight-per-minute",
            str(weight),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "DJANGO_DOTENV_FILE": ""},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(base + "/fapi/v1/ping", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("emulator did not start")


def run(label: str, venue: BinanceFuturesVenue, orders: int) -> dict[str, float]:
    venue.resync_clock()
    mark = venue.mark_price("BTCUSDT")
    price = (mark * Decimal("0.97")).quantize(Decimal("0.1"))
    latencies: list[float] = []
    rejected = 0
    started = time.perf_counter()
    for n in range(orders):
        request = OrderRequest(
            symbol="BTCUSDT",
            side=Side.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal("0.002"),
            price=price,
            time_in_force=TimeInForce.GTC,
            client_id=f"bench-{label.split()[0]}-{n}",
        )
        t0 = time.perf_counter()
        try:
            venue.place_order(request)
        except RateLimited:
            rejected += 1
        latencies.append((time.perf_counter() - t0) * 1000)
        if n % 150 == 149:  # stay under MAX_NUM_ORDERS (200 open per symbol); not timed
            pause = time.perf_counter()
            venue.cancel_all(symbol="BTCUSDT")
            started += time.perf_counter() - pause
    elapsed = time.perf_counter() - started
    venue.cancel_all(symbol="BTCUSDT")
    latencies.sort()
    result = {
        "orders": orders,
        "rate_limited": rejected,
        "orders_per_s": round(orders / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "max_ms": round(latencies[-1], 2),
    }
    print(f"{label:<44} {json.dumps(result)}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    args = parser.parse_args()
    logging.getLogger("execution.venues.binance").setLevel(logging.ERROR)  # 429s are counted below
    settings = dict(timeout_ms=5000, recv_window_ms=5000)
    client = redis.Redis.from_url(args.redis)

    proc, base = start_emulator(1_000_000, 1_000_000, 10_000_000)
    try:
        plain = BinanceFuturesVenue(
            api_key=KEY,
            api_secret=SECRET,
            settings=VenueSettings(base_url=base + "/fapi", **settings),
        )
        run("1 generous limits, no governor", plain, args.orders)
        client.flushdb()
        governor = RateGovernor(
            client,
            ip_key="bench",
            max_wait_s=30,
            limits=__import__("execution.governor", fromlist=["Limits"]).Limits(
                weight_per_minute=10_000_000, orders_per_10s=1_000_000, orders_per_minute=1_000_000
            ),
        )
        governed = BinanceFuturesVenue(
            api_key=KEY,
            api_secret=SECRET,
            governor=governor,
            settings=VenueSettings(base_url=base + "/fapi", **settings),
        )
        run("2 generous limits, governor on Redis", governed, args.orders)
    finally:
        proc.terminate()
        proc.wait()

    proc, base = start_emulator(300, 1200, 2400)
    try:
        plain = BinanceFuturesVenue(
            api_key=KEY,
            api_secret=SECRET,
            settings=VenueSettings(base_url=base + "/fapi", **settings),
        )
        run("3a Binance limits (300/10s), no governor", plain, args.orders)
    finally:
        proc.terminate()
        proc.wait()
    proc, base = start_emulator(300, 1200, 2400)
    try:
        client.flushdb()
        governed = BinanceFuturesVenue(
            api_key=KEY,
            api_secret=SECRET,
            governor=RateGovernor(client, ip_key="bench", max_wait_s=30),
            settings=VenueSettings(base_url=base + "/fapi", **settings),
        )
        run("3b Binance limits (300/10s), governor", governed, args.orders)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
