"""smoke_order, run_exchange_emulator, the venue factory and the safety ladder, against the
emulator (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from execution.emulator.runner import EmulatorThread
from execution.emulator.server import AccountSpec, EmulatorConfig
from execution.services import TradingNotAllowed, venue_for_credential
from tests.factories import make_credential

KEY, SECRET = "smokeKey0000000001", "smoke-secret-value"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator():
    config = EmulatorConfig(
        accounts=(AccountSpec(KEY, SECRET, {"USDT": Decimal(10000)}),), speed=Decimal(0)
    )
    with EmulatorThread(config) as emu:
        yield emu


@pytest.fixture
def emulator_venue_env(emulator, settings, monkeypatch):
    settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
    settings.RATE_GOVERNOR_REDIS_URL = ""
    monkeypatch.setenv("BINANCE_TESTNET_API", KEY)
    monkeypatch.setenv("BINANCE_TESTNET_SECRET", SECRET)
    return emulator


# A resting BUY far below the replayed BTC price: placed, queried and cancelled, never filled.
LIMIT_BUY_40000 = (
    "--symbol", "BTCUSDT", "--side", "BUY", "--type", "LIMIT", "--price", "40000", "--qty",
    "0.01", "--timeInForce", "GTC",
)  # fmt: skip


def smoke(*args: str) -> str:
    out = io.StringIO()
    call_command("smoke_order", *args, stdout=out)
    return out.getvalue()


def test_smoke_limit_order_is_placed_queried_and_cancelled(emulator_venue_env):
    out = smoke(*LIMIT_BUY_40000)
    steps = [
        line.split(" orderId")[0]
        for line in out.splitlines()
        if line.startswith(("[place]", "[query]", "[cancel]"))
    ]
    assert steps == ["[place] NEW", "[query] NEW", "[cancel] CANCELED"]
    assert SECRET not in out
    assert KEY not in out
    assert "****0001" in out


def test_smoke_test_flag_places_nothing(emulator_venue_env):
    out = smoke(
        *LIMIT_BUY_40000,
        "--test",
    )
    assert "[test] accepted by /fapi/v1/order/test (nothing placed)" in out
    emu = emulator_venue_env.emulator
    assert emulator_venue_env.call(emu.engine.open_orders, "1") == []


def test_smoke_conditional_order_goes_to_the_algo_api(emulator_venue_env):
    out = smoke(
        "--symbol",
        "BTCUSDT",
        "--side",
        "BUY",
        "--type",
        "STOP_MARKET",
        "--trigger-price",
        "90000",
        "--qty",
        "0.01",
    )
    assert "[place] NEW algoId" in out
    assert "[cancel] CANCELED algoId" in out


def test_smoke_order_below_min_notional_names_the_rule(emulator_venue_env):
    with pytest.raises(CommandError) as excinfo:
        smoke(
            "--symbol",
            "BTCUSDT",
            "--side",
            "BUY",
            "--type",
            "LIMIT",
            "--price",
            "10000",
            "--qty",
            "0.001",
            "--timeInForce",
            "GTC",
        )
    assert str(excinfo.value) == (
        "pre-flight refused the order: MIN_NOTIONAL: notional 10 (price 10000 x qty 0.001) "
        "is below 50 for BTCUSDT"
    )


def test_smoke_with_a_stored_credential_decrypts_it_for_the_venue(emulator_venue_env, db):
    credential = make_credential(api_key=KEY, api_secret=SECRET)
    out = smoke(
        *LIMIT_BUY_40000,
        "--credential",
        str(credential.pk),
    )
    assert f"[keys] credential {credential.pk}" in out
    assert "[cancel] CANCELED" in out


def test_smoke_refuses_a_live_credential_outside_live_mode(emulator_venue_env, db, settings):
    settings.TRADING_MODE = "TESTNET"
    credential = make_credential(environment="LIVE")
    with pytest.raises(CommandError, match="refusing a LIVE venue: TRADING_MODE=TESTNET"):
        smoke(
            *LIMIT_BUY_40000,
            "--credential",
            str(credential.pk),
        )


def test_live_venue_needs_live_mode_and_confirmation(db, settings):
    credential = make_credential(environment="LIVE")
    settings.TRADING_MODE, settings.LIVE_TRADING_CONFIRM = "LIVE", False
    with pytest.raises(TradingNotAllowed):
        venue_for_credential(credential=credential)
    settings.LIVE_TRADING_CONFIRM = True
    settings.BINANCE_BASE_URL = ""
    venue = venue_for_credential(credential=credential)
    assert venue.settings.base_url == "https://fapi.binance.com/fapi"


def test_inactive_credential_builds_no_venue(db):
    credential = make_credential()
    credential.is_active = False
    credential.save()
    with pytest.raises(TradingNotAllowed, match="inactive"):
        venue_for_credential(credential=credential)


def test_smoke_without_keys_says_how_to_give_them(settings, monkeypatch, db):
    monkeypatch.delenv("BINANCE_TESTNET_API", raising=False)
    monkeypatch.delenv("BINANCE_TESTNET_SECRET", raising=False)
    with pytest.raises(CommandError, match="BINANCE_TESTNET_API and BINANCE_TESTNET_SECRET"):
        smoke("--symbol", "BTCUSDT", "--side", "BUY", "--type", "MARKET", "--qty", "0.01")


def test_run_exchange_emulator_command_serves_binance_paths_and_prints_the_demo_account(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_DOTENV_FILE": "",
        "VAR_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_exchange_emulator",
            "--port",
            str(port),
            "--speed",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/fapi/v1/time", timeout=1
                ) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert body is not None
        assert abs(body["serverTime"] - time.time() * 1000) < 5000
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0]
    account = json.loads(output.split("emulator: demo account ", 1)[1].splitlines()[0])
    assert set(account) == {"api_key", "api_secret"}
    assert "serving BTCUSDT, XRPUSDT, ETHUSDT" in output


def test_run_exchange_emulator_refuses_a_missing_data_file(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("run_exchange_emulator", "--data", f"BTCUSDT={tmp_path / 'nope.csv'}")


def test_exchange_info_refresh_shares_rules_and_new_venues_start_from_them(
    emulator_venue_env, db, settings
):
    from django.core.cache import cache

    from execution.services import EXCHANGE_INFO_CACHE_KEY, exchange_info_refresh, venue_for_keys

    cache.clear()
    rules = exchange_info_refresh(environment="TESTNET")
    assert sorted(rules) == ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
    key = EXCHANGE_INFO_CACHE_KEY.format(base_url=settings.BINANCE_BASE_URL)
    assert cache.get(key)["symbols"][0]["symbol"] == "BTCUSDT"
    venue = venue_for_keys(api_key=KEY, api_secret=SECRET, environment="TESTNET", account_key="t")
    assert venue._rules["BTCUSDT"].tick_size == Decimal("0.10")  # seeded: no request needed


def test_refresh_task_keeps_the_previous_copy_when_the_venue_is_unreachable(db, settings, caplog):
    from django.core.cache import cache

    from execution.services import EXCHANGE_INFO_CACHE_KEY
    from execution.tasks import refresh_exchange_info

    settings.TRADING_MODE = "TESTNET"
    settings.BINANCE_BASE_URL = "http://127.0.0.1:9/fapi"  # nothing listens on the discard port
    settings.RATE_GOVERNOR_REDIS_URL = ""
    key = EXCHANGE_INFO_CACHE_KEY.format(base_url=settings.BINANCE_BASE_URL)
    cache.set(key, {"previous": True})
    refresh_exchange_info()
    assert cache.get(key) == {"previous": True}
    assert "exchangeInfo refresh failed, keeping the previous copy" in caplog.text
