"""Run the platform on one machine: migrate, ensure an admin, then every process together.

This is ``make run``. It needs nothing but this checkout: with no ``DATABASE_URL`` or
``REDIS_URL`` it uses SQLite and the embedded broker under ``var/``. Output of every process is
shown with its name; Ctrl-C (or SIGTERM) stops them all cleanly; if one dies, all are stopped
and the exit status is non-zero.

``--demo`` (what ``make run`` passes) runs the whole pipeline live on replayed real data: it
starts the exchange emulator replaying the bundled candles ``--speed`` times faster than real
time, points the platform at it (``BINANCE_BASE_URL``, ``MARKET_CLOCK=emulator``), creates a
demo user with paper bots (DRY_RUN), backfills their warm-up history, and starts web, worker,
beat and the kline stream (plus the user-data stream in TESTNET/LIVE). The terminal shows each
signal, order and fill as it happens, and a summary line whenever the counts change.

Without ``--demo`` the same processes run against whatever the environment configures
(``DATABASE_URL``, ``REDIS_URL``, ``TRADING_MODE`` and credentials in the admin): the real thing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.metrics import ENV as METRICS_ENV
from config.metrics import multiprocess_dir_prepare
from config.startup import enforce_startup_config
from execution.userstream import STREAMING_MODES
from trader.services import demo_superuser_ensure

STOP_GRACE_S = 20.0
#: Candles of past the demo emulator serves, and how many 5m candles of them are backfilled.
DEMO_HISTORY = 1500
DEMO_WARMUP_CANDLES = 250


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]


def emulator_process(*, port: int, speed: str) -> ProcessSpec:
    """The exchange emulator, replaying the bundled real candles ``speed`` times faster."""
    manage = str(settings.BASE_DIR / "manage.py")
    return ProcessSpec(
        "exchange",
        [
            sys.executable,
            manage,
            "run_exchange_emulator",
            "--port",
            str(port),
            "--speed",
            speed,
            "--history",
            str(DEMO_HISTORY),
            "--control",
        ],
    )


def platform_processes(*, port: int) -> list[ProcessSpec]:
    """The processes of a one-machine platform, in start order."""
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    queues = ",".join((*settings.CELERY_QUEUES_BY_KIND, settings.CELERY_TASK_DEFAULT_QUEUE))
    streams = [ProcessSpec("klines", [python, manage, "stream_klines"])]
    if settings.TRADING_MODE in STREAMING_MODES:
        streams.append(ProcessSpec("userdata", [python, manage, "stream_user_data"]))
    return [
        ProcessSpec("web", [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"]),
        ProcessSpec(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                queues,
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
        ),
        ProcessSpec(
            "beat",
            [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--pidfile="],
        ),
        *streams,
    ]


class Supervisor:
    """Starts processes, prefixes their output, and stops them all together."""

    def __init__(self, specs: list[ProcessSpec], out: Any) -> None:
        self.specs = specs
        self.out = out
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._print_lock = threading.Lock()
        self._stopping = threading.Event()

    def _pump(self, name: str, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout or ():
            with self._print_lock:
                self.out.write(f"{name:>7} | {line.rstrip()}\n")
                self.out.flush()

    def start(self) -> None:
        for spec in self.specs:
            self.start_one(spec)

    def start_one(self, spec: ProcessSpec) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            spec.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=settings.BASE_DIR,
            # Own process group: Ctrl-C reaches only us, and we stop the children in order.
            start_new_session=True,
        )
        self.procs[spec.name] = proc
        threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True).start()

    def wait(self) -> int:
        """Block until a stop is asked for (0) or a process dies on its own (1)."""
        while not self._stopping.is_set():
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    self.out.write(f"platform: {name} exited with status {code}; stopping all\n")
                    return 1
            self._stopping.wait(0.5)
        return 0

    def request_stop(self) -> None:
        self._stopping.set()

    def say(self, text: str) -> None:
        with self._print_lock:
            self.out.write(f"{text}\n")
            self.out.flush()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--demo",
            action="store_true",
            help="run the pipeline on the emulator replaying bundled real data (make run)",
        )
        parser.add_argument(
            "--emulator-port", type=int, default=int(os.environ.get("EMULATOR_PORT", "9010"))
        )
        parser.add_argument(
            "--speed",
            default=os.environ.get("DEMO_SPEED", "30"),
            help="demo: market time per wall time (30: a 1m candle closes every 2 s)",
        )
        parser.add_argument(
            "--pulse-s", type=float, default=3.0, help="seconds between progress checks"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        enforce_startup_config("platform")
        port = options["port"]
        # Every child writes its metrics where the web's /metrics adds them up (config.metrics).
        metrics_dir = Path(os.environ.get(METRICS_ENV) or settings.BASE_DIR / "var" / "prometheus")
        os.environ[METRICS_ENV] = str(multiprocess_dir_prepare(metrics_dir))
        supervisor = Supervisor(platform_processes(port=port), self.stdout)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: supervisor.request_stop())
        status = 1
        try:
            if options["demo"]:
                self._demo_exchange(supervisor, options)
            call_command("migrate", interactive=False, verbosity=0)
            password = demo_superuser_ensure()
            self.stdout.write(
                f"platform: DJANGO_ENV={settings.DJANGO_ENV} TRADING_MODE={settings.TRADING_MODE}"
            )
            engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
            broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
            self.stdout.write(f"platform: database {engine}, broker {broker}")
            if password:
                self.stdout.write(
                    f"platform: created superuser 'admin' with one-time password {password} "
                    "(shown once; change it in the admin)"
                )
            if options["demo"]:
                self._demo_setup()
            self.stdout.write(
                f"platform: admin http://127.0.0.1:{port}/admin/  API docs "
                f"http://127.0.0.1:{port}/api/docs/  ready http://127.0.0.1:{port}/readyz"
            )
            if not supervisor._stopping.is_set():
                supervisor.start()
                threading.Thread(
                    target=self._pulse, args=(supervisor, options["pulse_s"]), daemon=True
                ).start()
                status = supervisor.wait()
            else:
                status = 0
        finally:
            self.stdout.write("platform: stopping")
            supervisor.stop()
            self.stdout.write("platform: stopped")
        if status:
            raise SystemExit(status)

    def _demo_exchange(self, supervisor: Supervisor, options: dict[str, Any]) -> None:
        """Start the emulator and point this process and every child at it."""
        port = free_port(options["emulator_port"])
        base_url = f"http://127.0.0.1:{port}/fapi"
        overrides = {
            "BINANCE_BASE_URL": base_url,
            "MARKET_CLOCK": "emulator",
            "TRADING_MODE": os.environ.get("TRADING_MODE", "DRY_RUN"),
            # A 1m candle closes every few seconds: look for closes often, with little jitter.
            "INGEST_TICK_S": os.environ.get("INGEST_TICK_S", "1"),
            "INGEST_JITTER_S": os.environ.get("INGEST_JITTER_S", "0.3"),
            # Cooldowns are wall time: an hour after a stop would be days of replayed market.
            "COOLDOWN_AFTER_STOP_S": os.environ.get("COOLDOWN_AFTER_STOP_S", "60"),
        }
        os.environ.update(overrides)
        settings.BINANCE_BASE_URL = base_url
        settings.MARKET_CLOCK = "emulator"
        supervisor.start_one(emulator_process(port=port, speed=str(options["speed"])))
        wait_until_up(f"{base_url}/v1/ping", supervisor)
        self.stdout.write(
            f"platform: demo exchange {base_url} replaying bundled real candles at "
            f"{options['speed']}x (market clock from the emulator)"
        )

    def _demo_setup(self) -> None:
        from ingest.feeds import fetched_feeds, needed_feeds
        from ingest.fetch import klines_backfill
        from trader.clock import market_now_ms, reset
        from trader.demo import demo_bots_ensure, demo_user_ensure
        from trader.domain import INTERVAL_MS

        reset()
        user, password = demo_user_ensure(password=os.environ.get("DEMO_PASSWORD") or None)
        if password:
            self.stdout.write(
                f"platform: created user 'demo' with password {password} (API: POST "
                "/api/auth/token/ with these)"
            )
        bots = demo_bots_ensure(owner=user)
        self.stdout.write("platform: demo bots (paper): " + ", ".join(f"{b} #{b.pk}" for b in bots))
        now_ms = market_now_ms()
        for feed in fetched_feeds(needed_feeds()):
            start_ms = now_ms - DEMO_WARMUP_CANDLES * INTERVAL_MS["5m"]
            try:
                result = klines_backfill(
                    symbol=feed.symbol, interval=feed.interval, start_ms=start_ms, end_ms=now_ms
                )
            except Exception as exc:  # the demo goes on; the feed stays cold until beat fills it
                self.stdout.write(f"platform: warm-up history {feed} failed: {exc}")
                continue
            self.stdout.write(
                f"platform: warm-up history {feed}: {result.stored} candles stored "
                f"({result.requests} request(s))"
            )

    def _pulse(self, supervisor: Supervisor, every_s: float) -> None:
        from django.db import close_old_connections

        from trader.pulse import Pulse

        pulse = Pulse()
        while not supervisor._stopping.wait(every_s):
            try:
                for line in pulse.lines():
                    supervisor.say(f"{'pulse':>8} | {line}")
            except Exception as exc:  # a locked SQLite file now and then: try again later
                supervisor.say(f"{'pulse':>8} | (skipped: {type(exc).__name__})")
            finally:
                close_old_connections()


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port the OS picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def wait_until_up(url: str, supervisor: Supervisor, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor._stopping.is_set():
            return
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own local URL)
                return
        except OSError:
            time.sleep(0.2)
    raise CommandError(f"the emulator did not answer at {url} within {timeout_s:.0f}s")
