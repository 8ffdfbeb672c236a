"""Issue 7: from a candle's close on the exchange emulator to the first bot's entry acknowledged,
through the live chain (stream -> ingest -> signals -> execution), for 1 and for 200
(symbol, 1m) pairs with 5 DRY_RUN paper bots each.

    .venv/bin/python bench/chain.py [--pairs 1 200] [--speed S ...] [--candles N ...]
                                    [--warmup-candles N ...] [--drain-s 60] [--workers 1]
                                    [--pool prefork] [--concurrency 2] [--no-beat]

``--speed`` / ``--candles`` / ``--warmup-candles`` give one value per ``--pairs`` entry (the
last one is reused); without them, a case of fewer than 10 pairs runs at speed 12 for 50
candles after 2 warm-up closes, a larger one at speed 1 for 1 candle after 1. The defaults take
about 8 minutes on 2 cores: 1 pair at speed 12 (a 1m candle every 5 s) for 50 candles, then 200
pairs in real time (speed 1: the work of one 200-pair close takes the 2 cores longer than a
minute, so a faster replay would only measure a growing backlog) for 1 candle close, i.e. 200
samples. Prints, per case, what ran and a table of p50 / p99 against the targets (p99 < 1 s
for 1 pair, < 5 s for 200), one line per measured candle (when 12 or fewer), the stage
breakdown of each sample's first acknowledged entry, why samples were not acknowledged, queue
depths, the workers' task times and where the CPU went.

What runs, each a real process as in production (``make run``): ``manage.py
run_exchange_emulator`` replaying 1000 bundled BTCUSDT 1m candles (a copy of the first rows of
execution/emulator/data/BTCUSDT-1m-2022-01.csv) under every bench symbol ``B001USDT``...,
``speed`` times faster than wall time; ``manage.py stream_klines`` (the feeds of ACTIVE bots,
the websocket fast path); Celery worker(s) on every queue (ingest, signals, execution, monitor,
default); Celery beat (``ingest_due`` every ``INGEST_TICK_S`` = 1 s, the order monitor every 15 s,
... : the settings' defaults). ``TRADING_MODE=DRY_RUN`` (paper venues, one per bot),
``MARKET_CLOCK=emulator``. Each pair has 5 bots, each of its own user, running
``bench_every_candle`` (bench/chain_strategy.py: a MARKET BUY on every candle, stop 0.3 %
below, take-profit 0.1 % above), risking 0.01 % of its 10,000 USDT paper balance a trade (about
300 USDT a position), ``max_open_positions`` 100 and 20,000 USDT of open exposure allowed.
``COOLDOWN_AFTER_STOP_S=0`` so a stop-out does not silence a bot for the rest of the run.
Before the stream starts, 60 candles of warm-up history are backfilled with
``ingest.fetch.klines_backfill`` for the first symbol and copied to the others (their candles
are the same file). The bots' ``arm_from_ms`` param is then set to the first measured
candle: the ``--warmup-candles`` closes after start-up go through the whole chain (stream,
evaluation, paper market walk) without signals, so the first measured close finds the
platform warm and idle.

The measure, per (pair, candle): the wall time at which the FIRST of the pair's 5 bots had its
ENTRY order acknowledged, minus the wall time at which the candle closed.

- Close: the candle's market close time (open + 1 interval) converted to wall time with the
  emulator's own anchor: one ``GET /_emulator/state`` gives ``market_time_ms`` and
  ``server_time_ms`` read together and the ``speed``, so ``wall = server_time_ms + (close -
  market_time_ms) / speed`` (the same conversion as ``trader.clock``, without its network
  midpoint error; the emulator shares this machine's clock). This is the moment the exchange
  closes the candle: the emulator's push of the closed candle (its ticker runs every 50 ms) is
  part of the measured latency, as Binance's push delay would be. The stream records no receipt
  time of its own; ``Kline.chain_started_at`` (stored and handed off) is shown as the first stage.
- Acknowledged: ``OrderEvent.created_at`` of the entry's first transition to NEW,
  PARTIALLY_FILLED or FILLED, written by ``execution.services.order_transition`` as soon as the
  venue's answer is in, in the transaction that records it. ``Order.sent_at`` is taken before
  the venue call (not an answer), ``Order.updated_at`` moves on with every later change (fills,
  sync), so the event row is the most faithful stamp of the answer.

The bench waits ``--drain-s`` after the last measured close (less if every sample is in). A
sample not acknowledged by then (still queued, or skipped: a delivery that starts after the
signal expired or after the candle is ``MAX_SIGNAL_CANDLE_AGE_INTERVALS`` old is refused) counts
as longer than the wait: a percentile that falls on such samples prints as ``>wait``.

Stages of each sample's first acknowledged entry: ingest (close -> ``Kline.chain_started_at``),
evaluate (-> ``Evaluation.created_at``: signals queue wait, window read, regime, strategy),
queue (-> ``SignalDelivery.started_at``: commit, publication of the group, execution queue
wait), pre-trade (-> entry ``Order.sent_at``: risk, sizing, the paper venue's price, balance
and leverage calls), venue (-> acknowledged). Queue depths are Redis list lengths sampled every
0.25 s; CPU is /proc's utime + stime of each process group started here, and the machine's busy
time from /proc/stat (the rest is Postgres, Redis and anything else running).

Runs on its own database (``BENCH_DATABASE_URL``, default ``trader_bench_chain``, created and
migrated if missing, flushed before each case) and Redis database (``BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379/4``, flushed before each case); everything talks to 127.0.0.1 only.

Symbols beyond BTCUSDT/ETHUSDT/XRPUSDT: the emulator serves any ``--data NAME=path`` and
describes it with ``exchange_info.generic_row``; the DRY_RUN paper venue only knows
``exchange_info.KNOWN_SYMBOLS`` (``paper_store.paper_rules``). The workers are therefore started
through this script (``--as-worker``), which adds ``generic_row(symbol, price)`` rows for the
bench symbols to ``KNOWN_SYMBOLS`` in the worker process before Celery starts: the kind of row
the emulator serves for them (same price magnitude, so the same tick, step and minimum
notional). No project file is changed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AS_WORKER = "--as-worker"


def worker_main(argv: list[str]) -> None:
    """``celery worker`` whose paper venues know the bench symbols (``BENCH_SYMBOLS``, priced
    like ``BENCH_SAMPLE_PRICE``), see the module docstring."""
    import django

    django.setup()
    from decimal import Decimal

    from config.celery import app
    from execution.emulator.exchange_info import KNOWN_SYMBOLS, generic_row

    price = Decimal(os.environ["BENCH_SAMPLE_PRICE"])
    for symbol in filter(None, os.environ.get("BENCH_SYMBOLS", "").split(",")):
        KNOWN_SYMBOLS.setdefault(symbol, generic_row(symbol, price))
    app.worker_main(["worker", *argv])


if __name__ == "__main__" and sys.argv[1:2] == [AS_WORKER]:
    worker_main(sys.argv[2:])
    sys.exit(0)

import argparse
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.fernet import Fernet

BENCH_DB = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/trader_bench_chain"
)
BENCH_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
VAR = Path(tempfile.mkdtemp(prefix="bench-chain-"))
STRATEGY = "bench_every_candle"
BOTS_PER_PAIR = 5
INTERVAL = "1m"
INTERVAL_MS = 60_000
DATA_ROWS = 1000
HISTORY = 600  # candles of the file already closed when the emulator starts
BACKFILL = 60
NEVER = 2**53 - 1
QUEUES = ("ingest", "signals", "execution", "monitor", "default")
TARGET_P99_MS = {1: 1000, 200: 5000}
BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_ENV": "dev",
    "DEBUG": "false",
    "DJANGO_DOTENV_FILE": "",
    "VAR_DIR": str(VAR),
    "DATABASE_URL": BENCH_DB,
    "REDIS_URL": BENCH_REDIS,
    "CELERY_BROKER_URL": BENCH_REDIS,
    "RATE_GOVERNOR_REDIS_URL": BENCH_REDIS,
    "CREDENTIALS_MASTER_KEY": Fernet.generate_key().decode(),
    "SECRET_KEY": Fernet.generate_key().decode() * 2,
    "KILL_SWITCH": "0",
    "KILL_SWITCH_FILE": str(VAR / "KILL_SWITCH"),
    "HEARTBEAT_INTERVAL_S": "3600",
    "PYTHONUNBUFFERED": "1",
    "TRADING_MODE": "DRY_RUN",
    "MARKET_CLOCK": "emulator",
    "STRATEGY_MODULES": "bench.chain_strategy",
    "COOLDOWN_AFTER_STOP_S": "0",
    "LOG_LEVEL": "INFO",
}
for _name in ("BINANCE_BASE_URL", "TEST_DATABASE_URL", "LIVE_TRADING_CONFIRM"):
    os.environ.pop(_name, None)
os.environ.update(BASE_ENV)

from bench.common import ensure_database

ensure_database(BENCH_DB)

import django

django.setup()

import redis
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command

from execution.models import Order, OrderEvent, SignalDelivery
from ingest.fetch import klines_backfill
from ingest.models import Kline
from signals.models import Evaluation
from trader import clock
from trader.models import Bot, Environment

ACCEPTED = ("NEW", "PARTIALLY_FILLED", "FILLED")
CHAIN_START = re.compile(r"candle closed \S+ \S+ \S+ \(via (\w+)\): chain started")
TASK_DONE = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([0-9.]+)s")
TICK = os.sysconf("SC_CLK_TCK")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process in its own session (so its pool children are found and stopped with it),
    its output collected by a thread."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                tail = "".join(self.lines[-40:])
                raise SystemExit(f"no {text!r} from {self.name}:\n{tail}")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the live processes of this session."""
        return session_cpu_s(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, 15)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait()


def session_cpu_s(session: int) -> float:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK, sum(values) / TICK


def percentile(sorted_values: list[float], q: float) -> float:
    index = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def data_file() -> Path:
    """The first DATA_ROWS candles of the bundled BTCUSDT 1m month (the name tells the
    emulator the interval)."""
    source = ROOT / "execution/emulator/data/BTCUSDT-1m-2022-01.csv"
    lines = source.read_text().splitlines()[: DATA_ROWS + 1]
    path = VAR / "BENCH-1m-2022-01.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def sample_price(path: Path) -> str:
    return path.read_text().splitlines()[HISTORY + 1].split(",")[4]


def symbols_for(pairs: int) -> list[str]:
    return [f"B{n:03d}USDT" for n in range(1, pairs + 1)]


def reset_state() -> None:
    call_command("flush", interactive=False, verbosity=0)
    redis.Redis.from_url(BENCH_REDIS).flushdb()
    clock.reset()


def make_bots(symbols: list[str]) -> None:
    n = len(symbols) * BOTS_PER_PAIR
    users = User.objects.bulk_create(
        [User(username=f"chain{i}", password="!") for i in range(n)]  # noqa: S106
    )
    Bot.objects.bulk_create(
        [
            Bot(
                owner=user,
                name="chain",
                environment=Environment.TESTNET,
                symbol=symbols[i // BOTS_PER_PAIR],
                interval=INTERVAL,
                strategy=STRATEGY,
                strategy_params={"arm_from_ms": NEVER},  # moved to the first measured candle
                risk_per_trade_pct=Decimal("0.01"),  # about 300 USDT a position
                leverage=5,
                max_position_notional=Decimal("20000"),  # the bot's open exposure
                max_open_positions=100,
            )
            for i, user in enumerate(users)
        ]
    )


def warm_up_history(symbols: list[str]) -> None:
    """Backfill the first symbol through the emulator's REST API, copy its rows to the rest."""
    now_ms = clock.market_now_ms()
    klines_backfill(symbol=symbols[0], interval=INTERVAL, start_ms=now_ms - BACKFILL * INTERVAL_MS)
    rows = list(Kline.objects.filter(symbol=symbols[0], interval=INTERVAL))
    copies = []
    for symbol in symbols[1:]:
        for row in rows:
            copy = Kline(
                **{f.attname: getattr(row, f.attname) for f in Kline._meta.concrete_fields}
            )
            copy.pk = None
            copy.symbol = symbol
            copies.append(copy)
    Kline.objects.bulk_create(copies, batch_size=5000)


@dataclass
class Case:
    pairs: int
    speed: Decimal
    candles: int
    warmup: int
    procs: dict[str, Proc] = field(default_factory=dict)
    depth_max: Counter[str] = field(default_factory=Counter)
    depth_at_close: list[int] = field(default_factory=list)


def start_emulator(case: Case, symbols: list[str], path: Path) -> str:
    port = free_port()
    data = [arg for s in symbols for arg in ("--data", f"{s}={path}")]
    case.procs["emulator"] = proc = Proc(
        "emulator",
        [
            sys.executable, "manage.py", "run_exchange_emulator", "--port", str(port),
            "--speed", str(case.speed), "--history", str(HISTORY), "--control", *data,
        ],
        {**os.environ, "LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(base + "/fapi/v1/ping", timeout=1).ok:
                return base
        except requests.ConnectionError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("emulator did not start:\n" + "".join(proc.lines[-40:]))
        time.sleep(0.2)


def start_platform(case: Case, env: dict[str, str], args: argparse.Namespace) -> None:
    for n in range(args.workers):
        case.procs[f"worker{n}"] = Proc(
            f"worker{n}",
            [
                sys.executable, __file__, AS_WORKER, "-Q", ",".join(QUEUES),
                "--pool", args.pool, "--concurrency", str(args.concurrency),
                "--loglevel", "INFO", "-n", f"chain{n}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            env,
        )  # fmt: skip
    for n in range(args.workers):
        case.procs[f"worker{n}"].wait_for(" ready.", timeout=120)


def anchor(base: str) -> tuple[int, int, Decimal]:
    state = requests.get(base + "/_emulator/state", timeout=10).json()
    return int(state["market_time_ms"]), int(state["server_time_ms"]), Decimal(state["speed"])


def run_case(case: Case, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    symbols = symbols_for(case.pairs)
    reset_state()
    busy0, total0 = machine_busy()
    time.sleep(3)
    busy1, total1 = machine_busy()
    busy_before = 100 * (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
    set_up_started = time.monotonic()
    base = start_emulator(case, symbols, path)
    settings.BINANCE_BASE_URL = base + "/fapi"
    env = {
        **os.environ,
        "BINANCE_BASE_URL": base + "/fapi",
        "BENCH_SYMBOLS": ",".join(symbols),
        "BENCH_SAMPLE_PRICE": sample_price(path),
    }
    try:
        make_bots(symbols)
        start_platform(case, env, args)
        warm_up_history(symbols)
        case.procs["stream"] = stream = Proc(
            "stream", [sys.executable, "manage.py", "stream_klines"], env
        )
        stream.wait_for("connected connection", timeout=60)
        if args.beat:
            case.procs["beat"] = Proc(
                "beat",
                [sys.executable, "-m", "celery", "-A", "config", "beat", "--pidfile=",
                 "-l", "INFO"],
                env,
            )  # fmt: skip
        set_up_s = time.monotonic() - set_up_started
        market0, wall0, speed = anchor(base)

        def wall_of(market_ms: int) -> float:
            return (wall0 + (market_ms - market0) / float(speed)) / 1000

        first_open = market0 - market0 % INTERVAL_MS + case.warmup * INTERVAL_MS
        Bot.objects.update(strategy_params={"arm_from_ms": first_open})
        opens = [first_open + k * INTERVAL_MS for k in range(case.candles)]
        window_start = wall_of(first_open)
        last_close = wall_of(opens[-1] + INTERVAL_MS)
        while time.time() < window_start:
            time.sleep(0.05)
        cpu0 = {name: p.cpu_s() for name, p in case.procs.items()}
        busy0, total0 = machine_busy()
        watched = {datetime.fromtimestamp(o / 1000, UTC) for o in opens}
        expected = case.pairs * case.candles
        broker = redis.Redis.from_url(BENCH_REDIS)
        closes = [wall_of(o + INTERVAL_MS) for o in opens]
        deadline = last_close + args.drain_s
        next_check = last_close
        while time.time() < deadline:
            now = time.time()
            pipe = broker.pipeline()
            for queue in QUEUES:
                pipe.llen(queue)
            depths = dict(zip(QUEUES, pipe.execute(), strict=True))
            for queue, depth in depths.items():
                case.depth_max[queue] = max(case.depth_max[queue], int(depth))
            while closes and now >= closes[0]:  # the queues as a candle closes: left over
                closes.pop(0)
                case.depth_at_close.append(sum(int(d) for d in depths.values()))
            if now >= next_check:
                next_check = now + 1
                if acked_count(watched) >= expected:
                    break
            time.sleep(0.25)
        cpu1 = {name: p.cpu_s() for name, p in case.procs.items()}
        busy1, total1 = machine_busy()
        stopped = time.time()
        window_s = stopped - window_start
    finally:
        for name in ("beat", "stream", *[n for n in case.procs if n.startswith("worker")],
                     "emulator"):  # fmt: skip
            if name in case.procs:
                case.procs[name].stop()
    for name, proc in case.procs.items():
        (VAR / f"{case.pairs}-{name}.log").write_text("".join(proc.lines))
    result = analyse(symbols, opens, wall_of)
    result.update(
        bounds_ms=[(stopped - wall_of(o + INTERVAL_MS)) * 1000 for o in opens],
        busy_before_pct=busy_before,
        set_up_s=set_up_s,
        window_s=window_s,
        machine_busy_pct=100 * (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1),
        cpu_pct={n: 100 * (cpu1[n] - cpu0[n]) / window_s for n in cpu0},
        tasks=task_times(
            [line for n, p in case.procs.items() if n.startswith("worker") for line in p.lines]
        ),
        paths=Counter(
            m.group(1)
            for p in case.procs.values()
            for line in p.lines
            if (m := CHAIN_START.search(line))
        ),
    )
    return result


def task_times(lines: list[str]) -> dict[str, tuple[int, float]]:
    """Task name -> (runs, seconds) from the workers' "succeeded in" lines (the whole run)."""
    runs: Counter[str] = Counter()
    seconds: dict[str, float] = defaultdict(float)
    for line in lines:
        if m := TASK_DONE.search(line):
            name = m.group(1).rsplit(".", 1)[1]
            runs[name] += 1
            seconds[name] += float(m.group(2))
    return {name: (runs[name], seconds[name]) for name in sorted(runs)}


def acked_count(watched: set[datetime]) -> int:
    return (
        OrderEvent.objects.filter(
            order__leg="ENTRY",
            to_state__in=ACCEPTED,
            order__delivery__signal__strategy=STRATEGY,
            order__delivery__signal__candle_time__in=watched,
        )
        .values("order__delivery__signal_id")
        .distinct()
        .count()
    )


def analyse(symbols: list[str], opens: list[int], wall_of: Any) -> dict[str, Any]:
    times = [EPOCH + timedelta(milliseconds=o) for o in opens]
    close_wall = {t: wall_of(o + INTERVAL_MS) for t, o in zip(times, opens, strict=True)}
    key_set = set(symbols)
    chain = {
        (s, t): at
        for s, t, at in Kline.objects.filter(
            interval=INTERVAL, open_time__in=times, symbol__in=key_set
        ).values_list("symbol", "open_time", "chain_started_at")
    }
    evaluations = {
        (s, t): (at, status)
        for s, t, at, status in Evaluation.objects.filter(
            strategy=STRATEGY, interval=INTERVAL, candle_time__in=times
        ).values_list("symbol", "candle_time", "created_at", "status")
    }
    first: dict[tuple[str, datetime], tuple[datetime, int]] = {}
    for s, t, at, order_id in OrderEvent.objects.filter(
        order__leg="ENTRY",
        to_state__in=ACCEPTED,
        order__delivery__signal__strategy=STRATEGY,
        order__delivery__signal__candle_time__in=times,
    ).values_list(
        "order__delivery__signal__symbol",
        "order__delivery__signal__candle_time",
        "created_at",
        "order_id",
    ):
        if (s, t) not in first or at < first[(s, t)][0]:
            first[(s, t)] = (at, order_id)
    orders = {
        pk: (sent, started)
        for pk, sent, started in Order.objects.filter(
            pk__in=[o for _, o in first.values()]
        ).values_list("pk", "sent_at", "delivery__started_at")
    }
    latencies: list[float] = []
    per_candle: dict[datetime, list[float]] = {t: [] for t in times}
    stages: dict[str, list[float]] = defaultdict(list)
    for (s, t), (acked, order_id) in first.items():
        closed = close_wall[t]
        latencies.append((acked.timestamp() - closed) * 1000)
        per_candle[t].append(latencies[-1])
        sent, started = orders[order_id]
        marks: list[tuple[str, datetime | None]] = [
            ("ingest", chain.get((s, t))),
            ("evaluate", (evaluations.get((s, t)) or (None, ""))[0]),
            ("queue", started),
            ("pre-trade", sent),
            ("venue", acked),
        ]
        before = closed
        for name, mark in marks:
            if mark is None:
                continue
            stages[name].append((mark.timestamp() - before) * 1000)
            before = mark.timestamp()
    missing = [(s, t) for s in symbols for t in times if (s, t) not in first]
    why: Counter[str] = Counter()
    for s, t in missing:
        evaluation = evaluations.get((s, t))
        if (s, t) not in chain:
            why["candle not stored"] += 1
        elif evaluation is None:
            why["not evaluated"] += 1
        elif evaluation[1] != "EVALUATED":
            why[f"evaluation {evaluation[1]}"] += 1
        else:
            codes = SignalDelivery.objects.filter(
                signal__symbol=s, signal__candle_time=t, signal__strategy=STRATEGY
            ).values_list("status", "reason_code")
            why["deliveries " + ",".join(sorted({f"{a}/{b}" for a, b in codes}) or ["none"])] += 1
    latencies.sort()
    return {
        "samples": len(latencies),
        "expected": len(symbols) * len(times),
        "latencies": latencies,
        "per_candle": [sorted(per_candle[t]) for t in times],
        "stages": {k: sorted(v) for k, v in stages.items()},
        "missing": why,
    }


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def censored(acked: list[float], expected: int, q: float, bound_ms: float) -> str:
    """The q-quantile (nearest rank) of ``expected`` samples of which ``acked`` (sorted) were
    acknowledged; the rest were not by the end of the wait, so they count as longer than
    ``bound_ms`` (the shortest wait of them), and a quantile falling on them is "> bound"."""
    if not expected:
        return "-"
    rank = max(1, min(expected, round(q * expected)))
    return fmt_ms(acked[rank - 1]) if rank <= len(acked) else f">{fmt_ms(bound_ms)}"


def report(case: Case, result: dict[str, Any], args: argparse.Namespace) -> None:
    lat = result["latencies"]
    expected = result["expected"]
    bound = min(result["bounds_ms"])
    p50 = censored(lat, expected, 0.5, bound)
    p99 = censored(lat, expected, 0.99, bound)
    target = TARGET_P99_MS.get(case.pairs)
    met = "-"
    rank = max(1, min(expected, round(0.99 * expected)))
    if target is not None and expected:
        if rank <= len(lat):
            met = "yes" if lat[rank - 1] < target else "NO"
        else:  # the p99 sample was not acknowledged within the wait
            met = "NO" if bound >= target else "?"
    period = 60 / float(case.speed)
    print(
        f"\n== {case.pairs} pair(s) x {BOTS_PER_PAIR} bots = {case.pairs * BOTS_PER_PAIR} "
        f"bots; emulator speed {case.speed} (a 1m candle every {period:.1f} s); "
        f"{case.candles} candles measured after {case.warmup} warm-up; "
        f"set-up {result['set_up_s']:.0f} s, window {result['window_s']:.0f} s",
        flush=True,
    )
    header = (
        f"{'pairs':>5} {'bots':>5} {'samples':>9} {'p50_ms':>8} {'p99_ms':>8} "
        f"{'max_ms':>8} {'target_p99':>10} {'met':>4}"
    )
    print(header)
    print(
        f"{case.pairs:>5} {case.pairs * BOTS_PER_PAIR:>5} "
        f"{str(result['samples']) + '/' + str(expected):>9} {p50:>8} "
        f"{p99:>8} {fmt_ms(lat[-1] if lat else None):>8} "
        f"{'< ' + fmt_ms(target) if target else '-':>10} {met:>4}"
    )
    if len(result["per_candle"]) <= 12:
        for k, values in enumerate(result["per_candle"], start=1):
            edge = result["bounds_ms"][k - 1]
            print(
                f"  candle {k:>2}: {len(values):>4}/{case.pairs} acknowledged, p50 "
                f"{censored(values, case.pairs, 0.5, edge)} ms, p99 "
                f"{censored(values, case.pairs, 0.99, edge)} ms, first "
                f"{fmt_ms(values[0] if values else None)} ms, last "
                f"{fmt_ms(values[-1] if values else None)} ms"
            )
    print("stages of the first acknowledged entry (ms):   p50      p99")
    for name in ("ingest", "evaluate", "queue", "pre-trade", "venue"):
        values = result["stages"].get(name) or []
        if values:
            print(
                f"  {name:<10} {fmt_ms(statistics.median(values)):>32} "
                f"{fmt_ms(percentile(values, 0.99)):>8}"
            )
    if result["missing"]:
        print(f"  not acknowledged: {dict(result['missing'])}")
    paths = dict(result["paths"])
    print(f"  chains started by path: {paths}")
    print(
        f"  queue depth max: {dict(case.depth_max)}; total queued as each candle closed: "
        f"{case.depth_at_close}"
    )
    tasks = ", ".join(
        f"{name} {n} x {1000 * s / n:,.0f} ms" for name, (n, s) in result["tasks"].items()
    )
    print(f"  worker tasks over the whole run (runs x mean wall time): {tasks}")
    cpu = ", ".join(f"{n} {v:.0f}%" for n, v in result["cpu_pct"].items())
    print(
        f"  CPU (% of one core over the window): {cpu}; machine busy "
        f"{result['machine_busy_pct']:.0f}% of {100 * (os.cpu_count() or 1)}% (before the "
        f"case started, others' load alone: {result['busy_before_pct']:.0f}%)"
    )
    print(
        f"  workers: {args.workers} x {args.pool} concurrency {args.concurrency}, queues "
        f"{','.join(QUEUES)}; beat {'on' if args.beat else 'off'}; stream_klines 1 process "
        "(2 writer threads)",
        flush=True,
    )


def pick(values: list[Any], index: int) -> Any:
    return values[min(index, len(values) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", nargs="+", type=int, default=[1, 200])
    parser.add_argument(
        "--speed", nargs="+", type=Decimal, help="default: 12 below 10 pairs, else 1"
    )
    parser.add_argument("--candles", nargs="+", type=int, help="default: 50 below 10 pairs, else 1")
    parser.add_argument(
        "--warmup-candles", nargs="+", type=int, help="default: 2 below 10 pairs, else 1"
    )
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after the last measured close, wait at most this long")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", type=int, default=2, help="per worker")
    parser.add_argument("--no-beat", dest="beat", action="store_false")
    args = parser.parse_args()
    started = time.monotonic()
    call_command("migrate", verbosity=0)
    path = data_file()
    print(
        "bench/chain.py: candle close on the emulator -> first bot's entry acknowledged "
        f"(DRY_RUN paper bots, {os.cpu_count()} cores)",
        flush=True,
    )
    for index, pairs in enumerate(args.pairs):
        few = pairs < 10
        case = Case(
            pairs=pairs,
            speed=pick(args.speed, index) if args.speed else Decimal(12 if few else 1),
            candles=pick(args.candles, index) if args.candles else 50 if few else 1,
            warmup=pick(args.warmup_candles, index) if args.warmup_candles else 2 if few else 1,
        )
        result = run_case(case, args, path)
        report(case, result, args)
    print(f"\ntotal run time {time.monotonic() - started:.0f} s; process logs in {VAR}", flush=True)


if __name__ == "__main__":
    main()
