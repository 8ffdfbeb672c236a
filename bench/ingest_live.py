"""Issue 6: live ingestion of 100 symbols at 1m from the exchange emulator: the time from a
candle's close to all 100 symbols' candle stored, and the request weight it costs against
Binance's 2,400 per minute and IP.

    .venv/bin/python bench/ingest_live.py [--symbols 100] [--speed 6] [--closes 10]
                                          [--cases beat:default beat:0 stream]
                                          [--settle-s 10] [--drain-s 30] [--concurrency 2]

Cases (one after the other, on the same emulator): ``beat:default`` is the REST polling path as
configured by default (beat runs ``ingest.tasks.ingest_due`` every ``INGEST_TICK_S`` = 1 s; each
feed whose newest candle closed gets one ``ingest_klines`` after a random 0..``INGEST_JITTER_S``
= 2 s of MARKET time, i.e. 0..2/speed s of wall time); ``beat:J`` the same with
``INGEST_JITTER_S=J`` (``beat:0``: no jitter, the floor); ``stream``: ``manage.py
stream_klines`` (the websocket push path) and no beat.

What runs, each a real process (as ``make run`` / production): ``manage.py
run_exchange_emulator`` replaying 1000 bundled BTCUSDT 1m candles under every bench symbol
``B001USDT``... (``bench/chain.py``'s data file), ``--speed`` times faster than wall time (speed
6: a 1m candle closes every 10 s), Binance's weight limit (2400 per IP per minute); one Celery
worker (prefork, ``--concurrency`` 2) on every queue (ingest, signals, execution, monitor,
default), started through ``bench/chain.py --as-worker`` so its DRY_RUN paper venues know the
bench symbols; Celery beat with the settings' schedule (or ``stream_klines``).
``TRADING_MODE=DRY_RUN``, ``MARKET_CLOCK=emulator``. One ACTIVE bot per symbol (1m, strategy
``manual``: the feed is needed, the chain after the hand-off evaluates nothing and trades
nothing). Every case starts from an empty database and Redis database; beat's first tick fetches
each symbol's history (98 candles, weight 1 a symbol) and the bench waits for it (the stream
case starts without history and waits for the websocket), then measures the ``--closes``
candles closing at least ``--settle-s`` later.

Latency, per (symbol, candle): stored = ``Kline.chain_started_at`` (set at the hand-off, just
after the candle is stored) or, for a candle stored without being handed off (a fetch
that brought two candles hands off the newest), the first time this script's poll of the
database (every 0.2 s) saw it; minus the candle's close in wall time (its market close time
converted with the emulator's anchor, ``bench.chain.anchor``). Per candle close, "all 100
stored" is the largest of its symbols' latencies. Percentiles are nearest-rank.

Two things to read the latency with. Beat ticks every 1 s of wall time and, at speed 6, a
candle closes every 10 s: the wait from a close to the next tick (``tick_ms``) hardly changes
from close to close (it is set by when beat started, as it would be against Binance, whose
closes fall on whole minutes), so it is shown per close and subtracted in ``all-tick``. And the
per-close work (for each symbol an ``ingest_klines``, then the hand-off's ``paper_feed`` and
``evaluate_candle``; plus ``ingest_due`` every second, which checks all 100 feeds) runs on the
same two worker processes: when it takes longer than the replay's period the worker falls a
close behind, a later fetch brings two candles (the older is stored without a hand-off:
``no_handoff`` / ``behind``) and the weight per close drops below one request per symbol. That
backlog belongs to the replay speed, not to real time (a close a minute); a lower ``--speed``
shows the figure without it.

Request weight: the emulator's access log (run at LOG_LEVEL INFO) lists every request with its
time (ms) and query, so each ``/fapi`` request of the platform is weighed with the emulator's
rules (klines by ``limit``: [1,100) 1, [100,500) 2, [500,1000] 5, more 10; the other public
routes the platform uses weigh 1) and attributed to the candle close it follows (window
``[close_k, close_k + period)``; the measured window is ``closes`` whole periods). The
exchange's own counter is read as well: every second this script sends ``GET /fapi/v1/time``
(weight 1, its own User-Agent, left out of the platform's figures) and keeps the
``X-MBX-USED-WEIGHT-1M`` header, the emulator's count for the IP (127.0.0.1: everyone here) in
the current wall-clock minute (fixed windows, ``wall_ms // 60000``, as Binance's). Raw figures
are per WALL minute at ``speed``; at speed S a wall minute holds S candle closes, so the
real-time figure (1m candles at speed 1: one close per minute) is the raw one divided by S.
Requests made on a wall-time schedule (exchange info, ...) are not multiplied by the speed, so
the per-close figure plus the non-kline weight per wall minute is shown too. 429/418: the
emulator's answers with those statuses (access log) and worker log lines naming
``RateLimited`` (our governor's refusals included).

Runs on its own database (``LIVE_DATABASE_URL``, default ``trader_bench_live``, created and
migrated if missing, flushed before each case) and Redis database (``LIVE_REDIS_URL``, default
``redis://127.0.0.1:6379/3``, flushed before each case and at the end); 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIVE_DB = os.environ.get(
    "LIVE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trader_bench_live"
)
LIVE_REDIS = os.environ.get("LIVE_REDIS_URL", "redis://127.0.0.1:6379/3")
# bench.chain sets the environment up and Django with it on import (its database and Redis
# database come from these two variables).
os.environ["BENCH_DATABASE_URL"] = LIVE_DB
os.environ["BENCH_REDIS_URL"] = LIVE_REDIS

import argparse
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench import chain

INTERVAL = chain.INTERVAL  # after django.setup() (done by bench.chain): the models below

import redis
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command

from ingest.models import Kline
from trader.models import Bot, Environment

INTERVAL_MS = chain.INTERVAL_MS
PROBE_UA = "bench-ingest-live-probe"
BUDGET = 2400
POLL_S = 0.2
BEAT_SEND = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO celery\.beat .*Sending due task ingest-due"
)
ACCESS = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO aiohttp\.access .*?"
    r'"(GET|POST|PUT|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"'
)
#: What the emulator charges (execution/emulator/server.py ``_routes``) for the public routes
#: the ingest path could call; anything else is listed as "other" at weight 1.
ROUTE_WEIGHT = {
    "/fapi/v1/time": 1,
    "/fapi/v1/ping": 1,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/premiumIndex": 1,
    "/fapi/v1/ticker/price": 1,
    "/fapi/v2/ticker/price": 1,
}


def klines_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


@dataclass
class Request:
    at: float  # wall time the emulator logged the answer
    path: str
    weight: int
    status: int
    probe: bool


@dataclass
class Probe:
    """``GET /fapi/v1/time`` once a second; keeps (server wall ms, X-MBX-USED-WEIGHT-1M,
    status) of each answer."""

    base: str
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        session = requests.Session()
        session.headers["User-Agent"] = PROBE_UA
        while not self.stop.wait(1.0 - time.time() % 1.0 + 0.5):  # at the half second
            try:
                response = session.get(self.base + "/fapi/v1/time", timeout=2)
                server_ms = int(response.json().get("serverTime", time.time() * 1000))
                used = int(response.headers.get("X-MBX-USED-WEIGHT-1M", "-1"))
                self.samples.append((server_ms, used, response.status_code))
            except (requests.RequestException, ValueError):
                continue

    def minute_last(self) -> dict[int, tuple[int, int]]:
        """Wall minute -> (the header at the minute's last probe, probes sent in the minute)."""
        last: dict[int, int] = {}
        count: Counter[int] = Counter()
        for server_ms, used, _ in self.samples:
            minute = server_ms // 60000
            last[minute] = used
            count[minute] += 1
        return {m: (last[m], count[m]) for m in last}


def log_time(text: str) -> float:
    """A logging ``asctime`` (local time, ms) as epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007 (local)


def access_requests(lines: list[str]) -> list[Request]:
    found = []
    for line in lines:
        m = ACCESS.match(line)
        if m is None:
            continue
        at = log_time(m.group(1))
        url = urlsplit(m.group(3))
        if not url.path.startswith("/fapi/"):
            continue  # the market clock's /_emulator/state: no weight
        if url.path == "/fapi/v1/klines":
            limit = int((parse_qs(url.query).get("limit") or ["500"])[0])
            weight = klines_weight(limit)
        else:
            weight = ROUTE_WEIGHT.get(url.path, 1)
        found.append(
            Request(
                at=at,
                path=url.path,
                weight=weight,
                status=int(m.group(4)),
                probe=m.group(5) == PROBE_UA,
            )
        )
    return found


def start_emulator(symbols: list[str], path: Path, speed: Decimal) -> tuple[chain.Proc, str]:
    """``bench.chain``'s emulator with the access log on (``LOG_LEVEL=INFO``) and the weight
    limit stated; returns it and its root URL once it answers."""
    port = chain.free_port()
    data = [arg for s in symbols for arg in ("--data", f"{s}={path}")]
    proc = chain.Proc(
        "emulator",
        [
            sys.executable, "manage.py", "run_exchange_emulator", "--port", str(port),
            "--speed", str(speed), "--history", str(chain.HISTORY), "--control",
            "--weight-per-minute", str(BUDGET), *data,
        ],
        {**os.environ, "LOG_LEVEL": "INFO"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(base + "/fapi/v1/ping", timeout=1).ok:
                return proc, base
        except requests.ConnectionError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("emulator did not start:\n" + "".join(proc.lines[-40:]))
        time.sleep(0.2)


def make_bots(symbols: list[str]) -> None:
    """One ACTIVE manual bot per symbol, all of one user."""
    owner = User.objects.create(username="ingest-live", password="!")  # noqa: S106
    Bot.objects.bulk_create(
        [
            Bot(
                owner=owner,
                name=f"live-{symbol}",
                environment=Environment.TESTNET,
                symbol=symbol,
                interval=INTERVAL,
                strategy="manual",
                strategy_params={},
                risk_per_trade_pct=Decimal("0.01"),
                leverage=5,
                max_position_notional=Decimal("1000"),
            )
            for symbol in symbols
        ]
    )


@dataclass
class Case:
    label: str
    path: str  # "beat" or "stream"
    jitter_s: float | None  # None: the settings' default
    procs: dict[str, chain.Proc] = field(default_factory=dict)


def parse_case(text: str) -> Case:
    if text == "stream":
        return Case(label="stream", path="stream", jitter_s=None)
    kind, _, jitter = text.partition(":")
    if kind != "beat":
        raise SystemExit(f"unknown case {text!r}: beat[:default|:<jitter s>] or stream")
    value = None if jitter in ("", "default") else float(jitter)
    return Case(label=text if jitter else "beat:default", path="beat", jitter_s=value)


def steal_s() -> float:
    """CPU seconds the hypervisor gave to others (``steal`` in /proc/stat) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / chain.TICK if len(fields) > 8 else 0.0


def open_dt(open_ms: int) -> datetime:
    return chain.EPOCH + timedelta(milliseconds=open_ms)


def run_case(
    case: Case,
    args: argparse.Namespace,
    emulator: chain.Proc,
    base: str,
    symbols: list[str],
    path: Path,
) -> dict[str, Any]:
    chain.reset_state()  # flush the database and the Redis database, forget the clock anchor
    busy0, total0 = chain.machine_busy()
    time.sleep(2)
    busy1, total1 = chain.machine_busy()
    busy_before = 100 * (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
    set_up_started = time.monotonic()
    make_bots(symbols)
    env = {
        **os.environ,
        "BINANCE_BASE_URL": base + "/fapi",
        "BENCH_SYMBOLS": ",".join(symbols),
        "BENCH_SAMPLE_PRICE": chain.sample_price(path),
        "INGEST_TICK_S": "1",
    }
    if case.jitter_s is not None:
        env["INGEST_JITTER_S"] = f"{case.jitter_s:g}"
    else:
        env.pop("INGEST_JITTER_S", None)
    worker = case.procs["worker"] = chain.Proc(
        "worker",
        [
            sys.executable, str(ROOT / "bench/chain.py"), chain.AS_WORKER,
            "-Q", ",".join(chain.QUEUES), "--pool", "prefork",
            "--concurrency", str(args.concurrency), "--loglevel", "INFO", "-n", "live0@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        env,
    )  # fmt: skip
    try:
        worker.wait_for(" ready.", timeout=120)
        if case.path == "beat":
            case.procs["beat"] = chain.Proc(
                "beat",
                [sys.executable, "-m", "celery", "-A", "config", "beat", "--pidfile=",
                 "-l", "INFO"],
                env,
            )  # fmt: skip
            # Beat's first tick fetches every symbol's history (98 candles, weight 1 each).
            deadline = time.monotonic() + 120
            while Kline.objects.values("symbol").distinct().count() < len(symbols):
                if time.monotonic() > deadline:
                    raise SystemExit("history not fetched for every symbol within 120 s")
                time.sleep(0.5)
        else:
            stream = case.procs["stream"] = chain.Proc(
                "stream", [sys.executable, "manage.py", "stream_klines"], env
            )
            stream.wait_for("connected", timeout=60)
        set_up_s = time.monotonic() - set_up_started
        market0, wall0, speed = chain.anchor(base)
        period = INTERVAL_MS / float(speed) / 1000

        def wall_of(market_ms: int) -> float:
            return (wall0 + (market_ms - market0) / float(speed)) / 1000

        earliest = time.time() + args.settle_s
        first_open = market0 - market0 % INTERVAL_MS
        while wall_of(first_open + INTERVAL_MS) < earliest:
            first_open += INTERVAL_MS
        opens = [first_open + k * INTERVAL_MS for k in range(args.closes)]
        closes = [wall_of(o + INTERVAL_MS) for o in opens]
        dates = [open_dt(o) for o in opens]
        window = (closes[0], closes[-1] + period)
        while time.time() < window[0]:
            time.sleep(0.05)
        watched = {**case.procs, "emulator": emulator}
        cpu0 = {name: p.cpu_s() for name, p in watched.items()}
        mbusy0, mtotal0 = chain.machine_busy()
        steal0 = steal_s()
        seen: dict[tuple[str, datetime], float] = {}
        done = [False] * len(opens)
        broker = redis.Redis.from_url(chain.BENCH_REDIS)
        depth_max = 0
        deadline = window[1] + args.drain_s
        while True:
            now = time.time()
            due = [dates[k] for k in range(len(opens)) if closes[k] <= now and not done[k]]
            if due:
                for s, t in Kline.objects.filter(
                    interval=INTERVAL, open_time__in=due, symbol__in=symbols
                ).values_list("symbol", "open_time"):
                    seen.setdefault((s, t), now)
                for k in range(len(opens)):
                    if dates[k] in due:
                        done[k] = sum(1 for s in symbols if (s, dates[k]) in seen) == len(symbols)
            depth_max = max(depth_max, int(broker.llen("ingest")))
            if (now >= window[1] and all(done)) or now >= deadline:
                break
            time.sleep(POLL_S)
        stopped = time.time()
        cpu1 = {name: p.cpu_s() for name, p in watched.items()}
        mbusy1, mtotal1 = chain.machine_busy()
        steal1 = steal_s()
    finally:
        for name in ("beat", "stream", "worker"):
            if name in case.procs:
                case.procs[name].stop()
    for name, proc in case.procs.items():
        (chain.VAR / f"live-{case.label.replace(':', '-')}-{name}.log").write_text(
            "".join(proc.lines)
        )
    handed = {
        (s, t): at
        for s, t, at in Kline.objects.filter(
            interval=INTERVAL, open_time__in=dates, symbol__in=symbols
        ).values_list("symbol", "open_time", "chain_started_at")
    }
    # Beat's sends of ingest_due: the first after a close is when the platform can first see it.
    sends = sorted(
        log_time(m.group(1))
        for line in case.procs.get("beat", case.procs["worker"]).lines
        if (m := BEAT_SEND.match(line))
    )
    per_close: list[dict[str, Any]] = []
    all_lat: list[float] = []
    for k, t in enumerate(dates):
        tick = next((at for at in sends if at >= closes[k]), None)
        lat: list[float] = []
        fallback = 0
        for s in symbols:
            if (s, t) not in handed:
                continue
            at = handed[(s, t)]
            if at is None:
                fallback += 1
                stored = seen.get((s, t), stopped)
            else:
                stored = at.timestamp()
            lat.append((stored - closes[k]) * 1000)
        lat.sort()
        all_lat.extend(lat)
        per_close.append(
            {
                "stored": len(lat),
                "all_ms": lat[-1] if len(lat) == len(symbols) else None,
                "p50_ms": statistics.median(lat) if lat else None,
                "first_ms": lat[0] if lat else None,
                "first_seen_fallback": fallback,
                "tick_ms": None if tick is None else (tick - closes[k]) * 1000,
                "bound_ms": (stopped - closes[k]) * 1000,
            }
        )
    all_lat.sort()
    worker_lines = case.procs["worker"].lines
    return {
        "case": case,
        "speed": speed,
        "period": period,
        "closes": closes,
        "window": window,
        "stopped": stopped,
        "set_up_s": set_up_s,
        "per_close": per_close,
        "latencies": all_lat,
        "depth_max": depth_max,
        "retries": sum("retrying in" in line for line in worker_lines),
        "gave_up": sum("giving up until the next tick" in line for line in worker_lines),
        "rate_limited_log": sum("RateLimited" in line for line in worker_lines),
        "tasks": chain.task_times(worker_lines),
        "cpu_pct": {n: 100 * (cpu1[n] - cpu0[n]) / (stopped - window[0]) for n in cpu0},
        "machine_busy_pct": 100 * (mbusy1 - mbusy0) / (mtotal1 - mtotal0) * (os.cpu_count() or 1),
        "steal_pct": 100 * (steal1 - steal0) / (mtotal1 - mtotal0) * (os.cpu_count() or 1),
        "busy_before_pct": busy_before,
    }


def weigh(result: dict[str, Any], reqs: list[Request], probe: Probe) -> None:
    """Add the request weight figures of the case's measured window to ``result``."""
    start, end = result["window"]
    period = result["period"]
    mine = [r for r in reqs if not r.probe and start <= r.at < end]
    per_close = [0] * len(result["closes"])
    for r in mine:
        per_close[min(len(per_close) - 1, int((r.at - start) // period))] += r.weight
    by_path: Counter[str] = Counter()
    weight_by_path: Counter[str] = Counter()
    for r in mine:
        by_path[r.path] += 1
        weight_by_path[r.path] += r.weight
    # Raw per wall minute: the busiest 60 s (sliding) of the platform's requests in the window
    # (a fixed wall-clock minute, as the exchange counts, holds no more than that).
    times = sorted((r.at, r.weight) for r in mine)
    busiest = lo = running = 0
    for at, weight in times:
        running += weight
        while times[lo][0] <= at - 60:
            running -= times[lo][1]
            lo += 1
        busiest = max(busiest, running)
    other = sum(r.weight for r in mine if r.path != "/fapi/v1/klines")
    # The exchange's own counter: the highest X-MBX-USED-WEIGHT-1M a probe read in the window,
    # against what the access log shows for its wall minute up to that probe.
    in_window = [p for p in probe.samples if start <= p[0] / 1000 < end]
    exchange: dict[str, Any] | None = None
    if in_window:
        server_ms, used, _ = max(in_window, key=lambda p: p[1])
        minute_start = server_ms // 60000 * 60
        at = server_ms / 1000
        exchange = {
            "used": used,
            "minute": minute_start,
            "seconds": at - minute_start,
            "platform": sum(
                r.weight for r in reqs if not r.probe and minute_start <= r.at <= at + 0.05
            ),
            "probes": sum(1 for p in probe.samples if minute_start * 1000 <= p[0] <= server_ms),
        }
    in_case = [r for r in reqs if start - 300 <= r.at <= result["stopped"]]
    result.update(
        weight_per_close=per_close,
        requests_by_path=dict(by_path),
        weight_by_path=dict(weight_by_path),
        busiest_60s=busiest,
        other_per_60s=other * 60 / (end - start),
        exchange=exchange,
        window_weight=sum(per_close),
        venue_429=sum(1 for r in in_case if r.status == 429),
        venue_418=sum(1 for r in in_case if r.status == 418),
    )


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def pct(sorted_values: list[float], q: float) -> float | None:
    return chain.percentile(sorted_values, q) if sorted_values else None


def report(result: dict[str, Any], n_symbols: int) -> dict[str, Any]:
    case: Case = result["case"]
    speed = float(result["speed"])
    period = result["period"]
    if case.path == "beat":
        jitter = case.jitter_s if case.jitter_s is not None else float(settings.INGEST_JITTER_S)
        how = (
            f"beat path: INGEST_TICK_S=1, INGEST_JITTER_S={jitter:g}"
            f"{' (default)' if case.jitter_s is None else ''} = 0..{jitter / speed:.2f} s wall "
            f"at speed {speed:g}"
        )
    else:
        how = "stream path: manage.py stream_klines, no beat"
    print(
        f"\n== {case.label}: {how}; {n_symbols} symbols x 1m; a close every {period:.1f} s; "
        f"{len(result['closes'])} closes measured; set-up {result['set_up_s']:.0f} s",
        flush=True,
    )
    print(f"{'close':>5} {'stored':>8} {'all_ms':>8} {'p50_ms':>8} {'first_ms':>8} "
          f"{'tick_ms':>7} {'no_handoff':>10} {'weight':>6}")  # fmt: skip
    totals: list[float] = []
    after_tick: list[float] = []
    ticks: list[float] = []
    incomplete = 0
    for k, row in enumerate(result["per_close"], start=1):
        all_ms = row["all_ms"]
        if all_ms is None:
            incomplete += 1
            shown = f">{fmt_ms(row['bound_ms'])}"
        else:
            totals.append(all_ms)
            shown = fmt_ms(all_ms)
        if row["tick_ms"] is not None:
            ticks.append(row["tick_ms"])
            if all_ms is not None:
                after_tick.append(all_ms - row["tick_ms"])
        print(
            f"{k:>5} {row['stored']:>4}/{n_symbols:<3} {shown:>8} {fmt_ms(row['p50_ms']):>8} "
            f"{fmt_ms(row['first_ms']):>8} {fmt_ms(row['tick_ms']):>7} "
            f"{row['first_seen_fallback']:>10} "
            f"{result['weight_per_close'][k - 1]:>6}"
        )
    totals.sort()
    # An incomplete close counts as longer than any complete one.
    ranked: list[float | None] = [*totals, *([None] * incomplete)]

    def q(values: list[float | None], p: float) -> str:
        if not values:
            return "-"
        v = values[max(0, min(len(values) - 1, round(p * len(values)) - 1))]
        return ">wait" if v is None else fmt_ms(v)

    lat = result["latencies"]
    summary = {
        "case": case.label,
        "all_p50": q(ranked, 0.5),
        "all_p99": q(ranked, 0.99),
        "all_max": q(ranked, 1.0),
        "sym_p50": fmt_ms(statistics.median(lat) if lat else None),
        "sym_p99": fmt_ms(pct(lat, 0.99)),
        "tick": fmt_ms(statistics.mean(ticks) if ticks else None),
        "behind": str(sum(row["first_seen_fallback"] for row in result["per_close"])),
        "after_tick_p50": fmt_ms(statistics.median(after_tick) if after_tick else None),
    }
    print(
        f"time to all {n_symbols} stored over {len(ranked)} closes (ms): p50 {summary['all_p50']}"
        f", p99 {summary['all_p99']}, max {summary['all_max']}; per-symbol latency "
        f"({len(lat)} samples): p50 {summary['sym_p50']}, p99 {summary['sym_p99']}"
    )
    if ticks:
        after_tick.sort()
        print(
            f"  tick_ms: the first ingest_due beat sent after the close, mean {summary['tick']} "
            f"(beat ticks every 1 s of wall time and a close comes every {period:g} s, so the "
            f"phase barely moves between closes: it is fixed by when beat started); time to all "
            f"stored after that tick: p50 {summary['after_tick_p50']}, max "
            f"{fmt_ms(after_tick[-1] if after_tick else None)}"
        )
    per_close = result["weight_per_close"]
    mean_close = statistics.mean(per_close) if per_close else 0.0
    raw = result["busiest_60s"]
    scaled = raw / speed
    close_based = mean_close + result["other_per_60s"]
    print(
        f"request weight of the platform (emulator access log): {result['window_weight']} in "
        f"the {len(per_close)} close periods = {mean_close:.1f} per close (min {min(per_close)}, "
        f"max {max(per_close)}); requests {result['requests_by_path']}, weight "
        f"{result['weight_by_path']}"
    )
    exchange = result["exchange"]
    if exchange is not None:
        at = datetime.fromtimestamp(exchange["minute"], UTC).strftime("%H:%M")
        agree = exchange["platform"] + exchange["probes"]
        print(
            f"  emulator's counter: highest X-MBX-USED-WEIGHT-1M read in the window "
            f"{exchange['used']} ({exchange['seconds']:.0f} s into wall minute {at} UTC); the "
            f"access log up to that probe: platform {exchange['platform']} + this script's "
            f"probes {exchange['probes']} = {agree}"
        )
    print(
        f"  budget: raw (busiest 60 s at speed {speed:g}, {speed:g} closes a wall minute) "
        f"{raw} = {100 * raw / BUDGET:.1f} % of {BUDGET}; real time (1m candles at speed 1: "
        f"1 close a minute) = raw / {speed:g} = {scaled:.0f} a minute = "
        f"{100 * scaled / BUDGET:.1f} % of {BUDGET} (or per close + the wall-clock-scheduled "
        f"non-klines weight per minute {result['other_per_60s']:.1f} = {close_based:.0f})"
    )
    print(
        f"  429 answers {result['venue_429']}, 418 answers {result['venue_418']}; worker log "
        f"lines naming RateLimited {result['rate_limited_log']}"
    )
    print(
        f"  ingest_klines retries (candle not served closed yet, or venue error) "
        f"{result['retries']}, gave up {result['gave_up']}; ingest queue depth max "
        f"{result['depth_max']}"
    )
    tasks = ", ".join(
        f"{name} {n} x {1000 * s / n:,.0f} ms" for name, (n, s) in result["tasks"].items()
    )
    print(f"  worker tasks over the case (runs x mean wall time): {tasks}")
    cpu = ", ".join(f"{n} {v:.0f}%" for n, v in result["cpu_pct"].items())
    print(
        f"  CPU (% of one core over the measured window): {cpu}; machine busy "
        f"{result['machine_busy_pct']:.0f}% of {100 * (os.cpu_count() or 1)}%, of which "
        f"hypervisor steal {result['steal_pct']:.0f}% (in the 2 s "
        f"before the case, with only the emulator of this bench running: "
        f"{result['busy_before_pct']:.0f}%)",
        flush=True,
    )
    summary.update(
        weight_close=f"{mean_close:.1f}",
        raw_min=str(raw),
        scaled_min=f"{scaled:.0f}",
        close_based=f"{close_based:.0f}",
        limited=f"{result['venue_429']}/{result['venue_418']}",
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--speed", type=Decimal, default=Decimal(6))
    parser.add_argument("--closes", type=int, default=10, help="measured candle closes a case")
    parser.add_argument("--cases", nargs="+", default=["beat:default", "beat:0", "stream"])
    parser.add_argument(
        "--settle-s", type=float, default=10.0, help="first measured close this long after set-up"
    )
    parser.add_argument(
        "--drain-s", type=float, default=30.0, help="after the window, wait for stragglers"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (prefork)")
    args = parser.parse_args()
    cases = [parse_case(text) for text in args.cases]
    started = time.monotonic()
    redis.Redis.from_url(LIVE_REDIS).flushdb()
    call_command("migrate", verbosity=0)
    path = chain.data_file()
    symbols = chain.symbols_for(args.symbols)
    print(
        f"bench/ingest_live.py: {args.symbols} symbols x 1m from the emulator (speed "
        f"{args.speed}), candle close -> stored, and request weight against {BUDGET}/min "
        f"({os.cpu_count()} cores)",
        flush=True,
    )
    emulator, base = start_emulator(symbols, path, args.speed)
    settings.BINANCE_BASE_URL = base + "/fapi"
    probe = Probe(base)
    probe.start()
    results = []
    try:
        for case in cases:
            results.append(run_case(case, args, emulator, base, symbols, path))
    finally:
        probe.stop.set()
        emulator.stop()
        (chain.VAR / "live-emulator.log").write_text("".join(emulator.lines))
        redis.Redis.from_url(LIVE_REDIS).flushdb()
    reqs = access_requests(emulator.lines)
    summaries = []
    for result in results:
        weigh(result, reqs, probe)
        summaries.append(report(result, args.symbols))
    probes_limited = sum(1 for _, _, status in probe.samples if status in (418, 429))
    print(
        f"\nSummary ({args.symbols} symbols, 1m, emulator speed {args.speed}: a close every "
        f"{60 / float(args.speed):.0f} s; latencies in ms; weight budget {BUDGET} per minute "
        "per IP; real time = raw per wall minute / speed)"
    )
    header = (
        f"{'case':<14} {'closes':>6} {'all_p50':>8} {'all_p99':>8} {'all_max':>8} "
        f"{'sym_p50':>8} {'sym_p99':>8} {'tick':>5} {'all-tick':>8} {'w/close':>8} "
        f"{'raw_w/min':>9} {'real_w/min':>10} {'behind':>6} "
        f"{'close_based':>11} {'429/418':>7}"
    )
    print(header)
    for s, result in zip(summaries, results, strict=True):
        print(
            f"{s['case']:<14} {len(result['closes']):>6} {s['all_p50']:>8} {s['all_p99']:>8} "
            f"{s['all_max']:>8} {s['sym_p50']:>8} {s['sym_p99']:>8} {s['tick']:>5} "
            f"{s['after_tick_p50']:>8} {s['weight_close']:>8} "
            f"{s['raw_min']:>9} {s['scaled_min']:>10} {s['behind']:>6} {s['close_based']:>11} "
            f"{s['limited']:>7}"
        )
    print(
        "all_*: per close, the time until all symbols' candle was stored (p50/p99/max over the "
        "closes); sym_*: per (symbol, close); tick: mean wait from the close to beat's first "
        "ingest_due after it; all-tick: p50 of all_ms - tick; w/close: the platform's weight "
        "per close period; raw_w/min: its busiest 60 s at this speed; real_w/min: raw / speed "
        "(one 1m close a minute); behind: candles stored by a fetch that also brought the next "
        "one (the platform was a close behind: no hand-off, first-seen time used); "
        "close_based: w/close + wall-clock-scheduled weight a minute; 429/418: emulator answers"
    )
    print(
        f"probes answered 429/418: {probes_limited}; total run time "
        f"{time.monotonic() - started:.0f} s; process logs in {chain.VAR}",
        flush=True,
    )


if __name__ == "__main__":
    main()
