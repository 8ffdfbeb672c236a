"""Real processes: fail-fast starts, the deploy check, beat + worker on Redis, ``make run``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from django.db import connection

from trader.models import Heartbeat

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GOOD_SECRET = "k" * 40 + "abcdefghijklmnop"
GOOD_MASTER = Fernet.generate_key().decode()
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def clean_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A process environment with none of the test run's settings leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DJANGO_ENV",
            "DATABASE_URL",
            "REDIS_URL",
            "CELERY_BROKER_URL",
            "SECRET_KEY",
            "CREDENTIALS_MASTER_KEY",
            "TRADING_MODE",
            "LIVE_TRADING_CONFIRM",
        }
    }
    # DJANGO_DOTENV_FILE="": a developer's .env must not change what these processes see.
    env.update(
        {"VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1", "DJANGO_DOTENV_FILE": ""}
    )
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


STARTS = {
    "web (gunicorn)": [PY, "-m", "gunicorn", "config.wsgi:application", "-b", "127.0.0.1:0"],
    "web (runserver)": [PY, "manage.py", "runserver", "127.0.0.1:0", "--noreload"],
    "worker": [PY, "-m", "celery", "-A", "config", "worker", "--pool", "solo"],
    "beat": [PY, "-m", "celery", "-A", "config", "beat", "--pidfile="],
}
MISSING = {
    "SECRET_KEY": "FATAL ({proc}): SECRET_KEY is not set (DJANGO_ENV=production); make one with: "
    "python manage.py generate_master_key --secret-key",
    "CREDENTIALS_MASTER_KEY": "FATAL ({proc}): CREDENTIALS_MASTER_KEY is not set "
    "(DJANGO_ENV=production); make one with: python manage.py generate_master_key",
}


@pytest.mark.parametrize("missing", sorted(MISSING))
@pytest.mark.parametrize("process", sorted(STARTS))
def test_production_start_without_a_key_exits_nonzero_with_one_clear_line(
    tmp_path, process, missing
):
    env = clean_env(
        tmp_path,
        DJANGO_ENV="production",
        SECRET_KEY=GOOD_SECRET,
        CREDENTIALS_MASTER_KEY=GOOD_MASTER,
        ALLOWED_HOSTS="localhost",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL=REDIS_TEST_URL,
    )
    env.pop(missing)
    result = run(STARTS[process], env)
    assert result.returncode != 0
    proc = "web" if process.startswith("web") else f"celery {process}"
    expected = MISSING[missing].format(proc=proc)
    fatal_lines = [line for line in result.stderr.splitlines() if line.startswith("FATAL")]
    assert fatal_lines == [expected], result.stderr[-3000:]


def test_live_mode_without_confirmation_stops_the_worker(tmp_path):
    env = clean_env(tmp_path, TRADING_MODE="LIVE")
    result = run(STARTS["worker"], env)
    assert result.returncode == 2
    assert "FATAL (celery worker): TRADING_MODE=LIVE requires LIVE_TRADING_CONFIRM=yes" in (
        result.stderr
    )


def test_generate_master_key_runs_in_production_without_keys(tmp_path):
    env = clean_env(tmp_path, DJANGO_ENV="production")
    result = run([PY, "manage.py", "generate_master_key"], env)
    assert result.returncode == 0, result.stderr
    Fernet(result.stdout.strip().encode())  # a usable key
    result = run([PY, "manage.py", "generate_master_key", "--secret-key"], env)
    assert result.returncode == 0
    assert len(result.stdout.strip()) >= 50


def test_deploy_check_passes_with_production_settings(tmp_path):
    env = clean_env(
        tmp_path,
        DJANGO_ENV="production",
        SECRET_KEY=GOOD_SECRET,
        CREDENTIALS_MASTER_KEY=GOOD_MASTER,
        ALLOWED_HOSTS="trader.example.com",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL=REDIS_TEST_URL,
    )
    result = run([PY, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.django_db(transaction=True)
def test_beat_schedules_heartbeats_that_a_real_worker_on_redis_executes(tmp_path):
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = clean_env(
        tmp_path,
        DJANGO_ENV="dev",
        DATABASE_URL=_database_url(),
        REDIS_URL=REDIS_TEST_URL,
        HEARTBEAT_INTERVAL_S="1",
        HEARTBEAT_STALE_AFTER_S="4",
    )
    worker = subprocess.Popen(
        [*STARTS["worker"][:6], "-Q", "ingest,signals,execution,monitor", "--loglevel", "INFO"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    beat = subprocess.Popen(
        [*STARTS["beat"], "--loglevel", "INFO"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    names = {"beat", "worker:ingest", "worker:signals", "worker:execution", "worker:monitor"}
    try:
        seen = _wait_for(lambda: set(Heartbeat.objects.values_list("name", flat=True)) >= names, 45)
        assert seen, f"heartbeats: {list(Heartbeat.objects.values_list('name', flat=True))}"
        healthy = run([PY, "manage.py", "celery_health"], env)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "worker:execution     alive" in healthy.stdout
    finally:
        worker_log = _stop(worker)
    try:
        # The worker is gone, beat keeps ticking: celery_health must tell the two apart.
        time.sleep(5)
        dead = run([PY, "manage.py", "celery_health"], env)
        assert dead.returncode == 1
        assert "beat                 alive" in dead.stdout
        assert "worker:execution     DEAD" in dead.stdout
        assert "no worker consumes these queues" in dead.stderr
    finally:
        beat_log = _stop(beat)
    assert "Task trader.tasks.heartbeat" in worker_log
    assert "Sending due task heartbeat-execution" in beat_log


def test_run_platform_starts_web_worker_beat_on_embedded_defaults_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = clean_env(tmp_path, HEARTBEAT_INTERVAL_S="1")
    platform = subprocess.Popen(
        [PY, "manage.py", "run_platform", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                body = json.loads(r.read())
        except OSError:
            return False
        return all(p["alive"] for p in body.get("processes", {}).values())

    try:
        assert _wait_for(ready, 90), "platform did not become ready"
    finally:
        platform.send_signal(signal.SIGINT)
        code: int | None = None
        try:
            code = platform.wait(timeout=40)
        except subprocess.TimeoutExpired:
            platform.kill()
        output = platform.stdout.read() if platform.stdout else ""
    assert code == 0, output[-3000:]
    assert "created superuser 'admin' with one-time password" in output
    assert "database sqlite3, broker filesystem" in output
    assert output.rstrip().endswith("platform: stopped")


def test_make_run_demo_trades_on_replayed_data_and_the_api_shows_the_first_fill(tmp_path):
    """``make run`` itself (``run_platform --demo``): emulator, paper bots, web, worker, beat and
    the kline stream on embedded defaults; a fill reaches the API, then Ctrl-C stops it all."""
    port, emulator_port = free_port(), free_port()
    env = clean_env(tmp_path, DEMO_PASSWORD="demo-smoke-password")
    platform = subprocess.Popen(
        [PY, "manage.py", "run_platform", "--demo", "--port", str(port),
         "--emulator-port", str(emulator_port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(platform.stdout or ()), daemon=True, name="platform-output"
    )
    reader.start()
    api = f"http://127.0.0.1:{port}/api"
    token: dict[str, str] = {}

    def first_fill() -> list[dict]:
        try:
            if not token:
                request = urllib.request.Request(  # noqa: S310 (our local server)
                    f"{api}/auth/token/",
                    data=json.dumps(
                        {"username": "demo", "password": "demo-smoke-password"}
                    ).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 (local)
                    token["access"] = json.loads(r.read())["access"]
            request = urllib.request.Request(  # noqa: S310 (our local server)
                f"{api}/fills/", headers={"Authorization": f"Bearer {token['access']}"}
            )
            with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 (local)
                body = json.loads(r.read())
        except OSError:
            return []
        return body["results"] if isinstance(body, dict) else body

    fills: list[dict] = []
    metrics = ""
    try:
        deadline = time.monotonic() + 300
        while not fills and time.monotonic() < deadline and platform.poll() is None:
            fills = first_fill()
            time.sleep(2)
        if fills:  # the web's /metrics, with what the stream process counted
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as r:
                metrics = r.read().decode()
    finally:
        platform.send_signal(signal.SIGINT)
        code: int | None = None
        try:
            code = platform.wait(timeout=60)
        except subprocess.TimeoutExpired:
            platform.kill()
        reader.join(timeout=10)
    output = "".join(lines)
    assert fills, f"no fill reached the API:\n{output[-6000:]}"
    assert fills[0]["symbol"] == "BTCUSDT"
    # Counted only in the kline stream's process, shown by the web's: multiprocess metrics.
    stored = re.search(
        r'^trader_ingest_candles_stored_total\{interval="1m",path="stream"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert stored, metrics[-3000:]
    assert float(stored.group(1)) >= 1
    assert "platform: warm-up history BTCUSDT 1m:" in output
    assert "pulse | signal ARM" in output
    assert "pulse | fill" in output
    assert code == 0, output[-3000:]
    assert output.rstrip().endswith("platform: stopped")
