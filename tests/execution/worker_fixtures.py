"""Real processes for the execution tests: Celery workers and the exchange emulator.

A worker runs ``celery -A config worker`` in its own session (process group), against the
pytest-django test database and a Redis database of its own, with the environment given
(``TRADING_MODE``, ``BINANCE_BASE_URL``, ...). The emulator runs ``manage.py
run_exchange_emulator --control`` with a generated accounts file. Output of both is collected
by a reader thread so that a test can wait for a line, and so a failure shows the tail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import requests
from binance.client import Client
from django.conf import settings
from django.db import connection
from kombu import pools as kombu_pools

from config.celery import app as celery_app

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
#: Settings a worker must not inherit from the test run.
_NOT_INHERITED = {
    "DJANGO_ENV",
    "DATABASE_URL",
    "TEST_DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "RATE_GOVERNOR_REDIS_URL",
    "SECRET_KEY",
    "CREDENTIALS_MASTER_KEY",
    "TRADING_MODE",
    "LIVE_TRADING_CONFIRM",
    "BINANCE_BASE_URL",
    "KILL_SWITCH",
    "KILL_SWITCH_FILE",
    "CELERY_VISIBILITY_TIMEOUT_S",
}


def wait_until(predicate: Callable[[], T], *, timeout: float, step: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_database_url() -> str:
    """The pytest-django test database, for a process started by the test."""
    s = connection.settings_dict
    host, port = s["HOST"] or "127.0.0.1", s["PORT"] or 5432
    return f"postgres://{s['USER']}@{host}:{port}/{s['NAME']}"


def process_env(tmp_path: Path, *, redis_url: str, **overrides: str) -> dict[str, str]:
    """A worker's environment: the test database, ``redis_url`` as broker, cache and governor,
    this run's credential keys (so it can decrypt what the test encrypted), DEBUG off."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(
        {
            "DJANGO_ENV": "dev",
            "DEBUG": "false",
            "DJANGO_DOTENV_FILE": "",
            "PYTHONUNBUFFERED": "1",
            "VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": worker_database_url(),
            "REDIS_URL": redis_url,
            "SECRET_KEY": settings.SECRET_KEY,
            "CREDENTIALS_MASTER_KEY": ",".join(
                k.decode() for k in settings.CREDENTIALS_MASTER_KEYS
            ),
            "KILL_SWITCH_FILE": str(settings.KILL_SWITCH_FILE),
            "HEARTBEAT_INTERVAL_S": "3600",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


class Proc:
    """A child process in its own session, its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: one signal reaches every child
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, tail: int = 60) -> str:
        return "\n".join(self.lines[-tail:])

    def wait_for_line(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}):\n{self.output()}"
                )
            return any(text in line for line in self.lines)

        try:
            wait_until(seen, timeout=timeout, step=0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{self.name}: {exc}; no line with {text!r}:\n{self.output()}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL the whole process group (a prefork worker and its children): no clean-up,
        no message handed back to the broker, as in a crash (the kernel still closes its
        sockets, so the database sees its sessions end)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self._reader.join(timeout=5)


def start_worker(
    env: dict[str, str], *, name: str, concurrency: int = 2, pool: str = "prefork"
) -> Proc:
    """A worker consuming the ``execution`` queue; returns once it says it is ready."""
    argv = [
        PY, "-m", "celery", "-A", "config", "worker", "-Q", "execution",
        "--pool", pool, "--concurrency", str(concurrency), "-n", f"{name}@%h",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = Proc(argv, env, name)
    try:
        worker.wait_for_line(" ready.", timeout=60)
    except AssertionError:
        worker.stop()
        raise
    return worker


# --- the emulator in its own process -----------------------------------------------------------


def account_specs(prefix: str, count: int, usdt: str = "10000") -> list[dict[str, Any]]:
    """Emulator accounts (the accounts-file rows): API keys of letters and digits."""
    return [
        {
            "api_key": f"{prefix}Key{n:05d}AbCdEfGh",
            "api_secret": f"{prefix}-secret-{n:05d}-0123456789abcdef",
            "balances": {"USDT": usdt},
        }
        for n in range(count)
    ]


class EmulatorProcess:
    """``manage.py run_exchange_emulator`` with a frozen market and the control API."""

    def __init__(self, tmp_path: Path, accounts: list[dict[str, Any]], *args: str) -> None:
        self.accounts = accounts
        self._used = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        accounts_file = tmp_path / f"accounts-{self.port}.json"
        accounts_file.write_text(json.dumps(accounts))
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env.update({"DJANGO_DOTENV_FILE": "", "PYTHONUNBUFFERED": "1", "DJANGO_ENV": "dev"})
        env["VAR_DIR"] = str(tmp_path / "var")
        argv = [
            PY, "manage.py", "run_exchange_emulator", "--port", str(self.port),
            "--accounts", str(accounts_file), "--speed", "0", "--control", *args,
        ]  # fmt: skip
        self.proc = Proc(argv, env, "emulator")
        wait_until(self._up, timeout=60, step=0.1)

    def _up(self) -> bool:
        if self.proc.popen.poll() is not None:
            raise AssertionError(f"emulator exited:\n{self.proc.output()}")
        try:
            return requests.get(self.base_url + "/fapi/v1/ping", timeout=1).ok
        except requests.ConnectionError:
            return False

    def control(self, action: str, **body: Any) -> dict[str, Any]:
        response = requests.post(f"{self.base_url}/_emulator/{action}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def state(self) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/_emulator/state", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def price(self, symbol: str = "BTCUSDT") -> Decimal:
        return Decimal(self.state()["prices"][symbol])

    def take_accounts(self, count: int) -> list[dict[str, Any]]:
        """Accounts nobody has used yet (each starts flat, without orders)."""
        taken = self.accounts[self._used : self._used + count]
        if len(taken) < count:
            raise RuntimeError("emulator account pool exhausted")
        self._used += count
        return taken

    def client(self, account: dict[str, Any]) -> Client:
        """An unmodified python-binance client on ``account``."""
        client = Client(account["api_key"], account["api_secret"], ping=False)
        client.FUTURES_URL = self.base_url + "/fapi"
        return client

    def stop(self) -> None:
        self.proc.stop()


# --- publishing from the test process ----------------------------------------------------------


@contextmanager
def celery_publishing_to(broker_url: str, **transport_options: Any) -> Iterator[None]:
    """Make this process's Celery app publish to ``broker_url`` (the test settings use the
    embedded filesystem broker); the connection pools are rebuilt on the way in and out."""
    conf = celery_app.conf
    saved = {
        "broker_url": conf.broker_url,
        "broker_transport_options": conf.broker_transport_options,
    }

    def reset_pools() -> None:
        kombu_pools.reset()  # the process-wide registries are keyed by URL: empty them
        vars(celery_app)["_pool"] = None  # rebuilt from the configuration on next use
        amqp = vars(celery_app).get("amqp")
        if amqp is not None:
            amqp._producer_pool = None

    reset_pools()
    conf.update(broker_url=broker_url, broker_transport_options=transport_options)
    try:
        yield
    finally:
        reset_pools()
        conf.update(saved)
