"""Start-up guards shared by the web process, the Celery worker and beat.

Settings never refuse to load (management commands such as ``generate_master_key`` must run
without keys); the processes that serve traffic or trade call :func:`enforce_startup_config`
first, which prints one clear line and exits non-zero when production is misconfigured.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet

TRADING_MODES = ("DRY_RUN", "TESTNET", "LIVE")
DJANGO_ENVS = ("dev", "test", "production")
KEY_HINT = "make one with: python manage.py generate_master_key"
SECRET_HINT = "make one with: python manage.py generate_master_key --secret-key"  # noqa: S105


def parse_fernet_keys(raw: str) -> list[bytes]:
    """Split a comma-separated list of Fernet keys; raise ValueError naming the bad position."""
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    if not keys:
        raise ValueError("no key given")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            # The key itself is never echoed: it is secret material.
            raise ValueError(
                f"key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return [key.encode() for key in keys]


def secret_key_problem(value: str) -> str | None:
    """Why ``value`` is unfit as a production SECRET_KEY, or None (Django's security.W009 rule)."""
    if not value:
        return "is not set"
    if len(value) < 50 or len(set(value)) < 5 or value.startswith("django-insecure-"):
        return "is malformed (needs at least 50 characters, 5 distinct, no 'django-insecure-')"
    return None


def startup_problems(env: Mapping[str, str]) -> list[str]:
    """Every configuration error that must stop a serving process, as one line each."""
    problems: list[str] = []
    django_env = env.get("DJANGO_ENV", "dev")
    if django_env not in DJANGO_ENVS:
        problems.append(f"DJANGO_ENV={django_env!r} is not one of {', '.join(DJANGO_ENVS)}")
    mode = env.get("TRADING_MODE", "DRY_RUN")
    if mode not in TRADING_MODES:
        problems.append(f"TRADING_MODE={mode!r} is not one of {', '.join(TRADING_MODES)}")
    if mode == "LIVE" and env.get("LIVE_TRADING_CONFIRM") != "yes":
        problems.append(
            "TRADING_MODE=LIVE requires LIVE_TRADING_CONFIRM=yes "
            "(the safety ladder is DRY_RUN -> TESTNET -> LIVE)"
        )
    for name, low, high in (("RECV_WINDOW_MS", 1, 60000), ("BINANCE_TIMEOUT_MS", 1, 600000)):
        raw = env.get(name)
        if raw is not None and not (raw.isdigit() and low <= int(raw) <= high):
            problems.append(f"{name}={raw!r} must be a whole number of milliseconds, {low}..{high}")
    raw_keys = env.get("CREDENTIALS_MASTER_KEY", "")
    if raw_keys.strip():
        try:
            parse_fernet_keys(raw_keys)
        except ValueError as exc:
            problems.append(f"CREDENTIALS_MASTER_KEY is malformed: {exc}; {KEY_HINT}")
    if django_env == "production":
        secret_problem = secret_key_problem(env.get("SECRET_KEY", ""))
        if secret_problem:
            problems.append(f"SECRET_KEY {secret_problem} (DJANGO_ENV=production); {SECRET_HINT}")
        if not raw_keys.strip():
            problems.append(
                f"CREDENTIALS_MASTER_KEY is not set (DJANGO_ENV=production); {KEY_HINT}"
            )
        # The embedded defaults (SQLite, a folder as broker) are for one-machine demos only.
        if not env.get("DATABASE_URL"):
            problems.append(
                "DATABASE_URL is not set (DJANGO_ENV=production); "
                "set it to postgres://USER:PASSWORD@HOST:5432/NAME"
            )
        if not (env.get("REDIS_URL") or env.get("CELERY_BROKER_URL")):
            problems.append(
                "REDIS_URL is not set (DJANGO_ENV=production); set it to redis://HOST:6379/0"
            )
    return problems


def load_dotenv() -> None:
    """Fill unset variables from ``.env`` beside manage.py (real environment variables win).

    ``DJANGO_DOTENV_FILE`` names another file; set it empty to read none (the test suite does,
    so a developer's ``.env`` never leaks into tests). Skipped when ``DJANGO_ENV=test``.
    """
    raw = os.environ.get("DJANGO_DOTENV_FILE")
    path = Path(raw) if raw else Path(__file__).resolve().parent.parent / ".env"
    if raw == "" or os.environ.get("DJANGO_ENV") == "test" or not path.is_file():
        return
    import environ

    environ.Env.read_env(path, overwrite=False)


def enforce_startup_config(process: str) -> None:
    """Exit with status 2 and one line per problem if this process must not start.

    Reads ``.env`` first, exactly as the settings do, so every process judges the same config.
    """
    load_dotenv()
    problems = startup_problems(os.environ)
    if problems:
        for problem in problems:
            sys.stderr.write(f"FATAL ({process}): {problem}\n")
        sys.stderr.flush()
        raise SystemExit(2)
