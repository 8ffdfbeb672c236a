"""Start-up configuration rules (pure: an env mapping in, problems out)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from config.startup import parse_fernet_keys, secret_key_problem, startup_problems

GOOD_SECRET = "x" * 30 + "abcdefghijklmnopqrstuvwxyz"
GOOD_KEY = Fernet.generate_key().decode()
PROD = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": GOOD_SECRET,
    "CREDENTIALS_MASTER_KEY": GOOD_KEY,
    "DATABASE_URL": "postgres://app@db/trader",
    "REDIS_URL": "redis://redis:6379/0",
}


def test_production_with_both_keys_has_no_problem():
    assert startup_problems(PROD) == []


def test_dev_without_keys_has_no_problem():
    assert startup_problems({}) == []


@pytest.mark.parametrize(
    ("override", "expected_start"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY is malformed"),
        ({"SECRET_KEY": "django-insecure-" + GOOD_SECRET}, "SECRET_KEY is malformed"),
        ({"CREDENTIALS_MASTER_KEY": ""}, "CREDENTIALS_MASTER_KEY is not set"),
        ({"CREDENTIALS_MASTER_KEY": "not-a-key"}, "CREDENTIALS_MASTER_KEY is malformed"),
        ({"CREDENTIALS_MASTER_KEY": f"{GOOD_KEY},nope"}, "CREDENTIALS_MASTER_KEY is malformed"),
    ],
)
def test_production_key_problem_is_one_line_naming_the_variable(override, expected_start):
    problems = startup_problems({**PROD, **override})
    assert len(problems) == 1
    assert problems[0].startswith(expected_start)
    assert "python manage.py generate_master_key" in problems[0]
    assert "\n" not in problems[0]


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("DATABASE_URL", "DATABASE_URL is not set (DJANGO_ENV=production); set it to postgres://"),
        ("REDIS_URL", "REDIS_URL is not set (DJANGO_ENV=production); set it to redis://"),
    ],
)
def test_production_refuses_the_embedded_database_and_broker(missing, expected):
    env = {k: v for k, v in PROD.items() if k != missing}
    problems = startup_problems(env)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_celery_broker_url_satisfies_the_broker_rule():
    env = {k: v for k, v in PROD.items() if k != "REDIS_URL"}
    assert startup_problems({**env, "CELERY_BROKER_URL": "redis://b:6379/1"}) == []


def test_malformed_master_key_is_refused_in_dev_too():
    problems = startup_problems({"CREDENTIALS_MASTER_KEY": "not-a-key"})
    assert len(problems) == 1
    assert problems[0].startswith("CREDENTIALS_MASTER_KEY is malformed: key #1")


def test_malformed_master_key_is_not_echoed_in_the_problem():
    problems = startup_problems({**PROD, "CREDENTIALS_MASTER_KEY": f"{GOOD_KEY},SECRETJUNK123"})
    assert "key #2" in problems[0]
    assert "SECRETJUNK123" not in problems[0]
    assert GOOD_KEY not in problems[0]


def test_live_trading_requires_confirmation():
    assert startup_problems({"TRADING_MODE": "LIVE"}) == [
        "TRADING_MODE=LIVE requires LIVE_TRADING_CONFIRM=yes "
        "(the safety ladder is DRY_RUN -> TESTNET -> LIVE)"
    ]
    assert startup_problems({"TRADING_MODE": "LIVE", "LIVE_TRADING_CONFIRM": "yes"}) == []


def test_unknown_trading_mode_and_env_are_refused():
    problems = startup_problems({"TRADING_MODE": "YOLO", "DJANGO_ENV": "staging"})
    assert len(problems) == 2
    assert any("TRADING_MODE='YOLO'" in p for p in problems)
    assert any("DJANGO_ENV='staging'" in p for p in problems)


def test_parse_fernet_keys_keeps_order_and_skips_blanks():
    second = Fernet.generate_key().decode()
    assert parse_fernet_keys(f" {GOOD_KEY} ,, {second}") == [GOOD_KEY.encode(), second.encode()]


def test_secret_key_problem_accepts_a_generated_key():
    import secrets

    assert secret_key_problem(secrets.token_urlsafe(64)) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("RECV_WINDOW_MS", "60001"), ("RECV_WINDOW_MS", "0"), ("BINANCE_TIMEOUT_MS", "fast")],
)
def test_exchange_timing_settings_out_of_range_are_refused(name, value):
    problems = startup_problems({name: value})
    assert problems == [
        f"{name}={value!r} must be a whole number of milliseconds, "
        + ("1..60000" if name == "RECV_WINDOW_MS" else "1..600000")
    ]


def test_recv_window_at_binance_maximum_is_accepted():
    assert startup_problems({"RECV_WINDOW_MS": "60000"}) == []
