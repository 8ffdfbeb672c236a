"""One settings module, driven by the environment, with small per-environment overrides.

Every variable is listed in README.md ("Configuration"). ``DJANGO_ENV`` picks the overrides:
``dev`` (default: zero set-up, SQLite and an embedded broker under ``var/``), ``test`` (real
Postgres, fast hashing) and ``production`` (HTTPS, secure cookies, no generated keys).

Settings never exit the process: the serving processes (web, worker, beat) call
``config.startup.enforce_startup_config`` so that a management command such as
``generate_master_key`` still runs when the keys are missing.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from cryptography.fernet import Fernet

from config.startup import TRADING_MODES, load_dotenv, parse_fernet_keys

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
load_dotenv()  # a .env beside manage.py fills in what the real environment does not set

DJANGO_ENV = env.str("DJANGO_ENV", default="dev")
IS_PRODUCTION = DJANGO_ENV == "production"
IS_TEST = DJANGO_ENV == "test"

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
if not IS_PRODUCTION:
    VAR_DIR.mkdir(parents=True, exist_ok=True)


def _generated_in_var(name: str, make: str) -> str:
    """Dev/test only: a key kept in ``var/`` so that web, worker and beat agree on it."""
    path = VAR_DIR / name.lower()
    if not path.exists():
        # Write aside, then link into place: link fails if another process won the race, so
        # every process ends up reading the same key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(make)
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
            logging.getLogger("config").warning(
                "%s is not set; generated one into %s (dev only, never in production)", name, path
            )
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


# --- Secrets -------------------------------------------------------------------------------
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and not IS_PRODUCTION:
    SECRET_KEY = _generated_in_var("SECRET_KEY", secrets.token_urlsafe(64))
elif not SECRET_KEY:
    # Production without SECRET_KEY: web, worker and beat refuse to start (config.startup).
    # A random per-process key lets Django load far enough for that one clear line, and for
    # key-less commands such as generate_master_key; nothing it signs is valid elsewhere.
    SECRET_KEY = secrets.token_urlsafe(64)

# Comma-separated Fernet keys: the first encrypts, all decrypt (MultiFernet).
_raw_master_keys = env.str("CREDENTIALS_MASTER_KEY", default="")
if not _raw_master_keys.strip() and not IS_PRODUCTION:
    _raw_master_keys = _generated_in_var("CREDENTIALS_MASTER_KEY", Fernet.generate_key().decode())
try:
    CREDENTIALS_MASTER_KEYS: list[bytes] = parse_fernet_keys(_raw_master_keys)
except ValueError:
    # Production start-up refuses this with a clear line (config.startup); here we only make
    # sure nothing can encrypt with a broken key.
    CREDENTIALS_MASTER_KEYS = []

TRADING_MODE = env.str("TRADING_MODE", default="DRY_RUN")
if TRADING_MODE not in TRADING_MODES:
    TRADING_MODE = "INVALID"  # refused at start-up; never silently treated as another mode
LIVE_TRADING_CONFIRM = env.str("LIVE_TRADING_CONFIRM", default="") == "yes"

DEBUG = env.bool("DEBUG", default=DJANGO_ENV == "dev")
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS",
    default=[] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"],
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Applications --------------------------------------------------------------------------
INSTALLED_APPS = [
    "django_prometheus",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "trader",
    "ingest",
    "signals",
    "execution",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
# dev: a SQLite file under var/ (zero set-up); test: real Postgres; production: DATABASE_URL.
if IS_TEST:
    _database_url = env.str(
        "TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/trader"
    )
else:
    _database_url = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'trader.sqlite3'}")
_db = env.db_url_config(_database_url)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + IMMEDIATE transactions let web, worker and beat share the file without
    # "database is locked" under the light load of a single-machine demo.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("TEST", {})
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker ----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="trader"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: an embedded broker that needs no server and works across
    # processes (worker, beat and web share the folder; files are claimed under flock).
    for _sub in ("queue", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # Seconds between looks at the queue folders (kombu's default is 1 s, which alone would
        # add seconds to a chain of tasks).
        "polling_interval": env.float("CELERY_FILESYSTEM_POLL_S", default=0.1),
    }
else:
    # Keep every countdown/ETA below this (tasks are redelivered after it on Redis).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600)
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "config.beat:HeartbeatDatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = False

# One queue per kind of work, routed by module. Specific names first: the first match wins.
CELERY_QUEUES_BY_KIND = ("ingest", "signals", "execution", "monitor")
CELERY_TASK_ROUTES = {
    "execution.tasks.monitor_*": {"queue": "monitor"},
    "ingest.tasks.*": {"queue": "ingest"},
    "signals.tasks.*": {"queue": "signals"},
    "execution.tasks.*": {"queue": "execution"},
    "trader.tasks.*": {"queue": "monitor"},
}

HEARTBEAT_INTERVAL_S = env.float("HEARTBEAT_INTERVAL_S", default=10.0)
# A heartbeat older than this means the process (or every consumer of a queue) is gone.
HEARTBEAT_STALE_AFTER_S = env.float("HEARTBEAT_STALE_AFTER_S", default=3 * HEARTBEAT_INTERVAL_S + 5)
CELERY_BEAT_SCHEDULE = {
    f"heartbeat-{queue}": {
        "task": "trader.tasks.heartbeat",
        "schedule": timedelta(seconds=HEARTBEAT_INTERVAL_S),
        "args": (queue,),
        "options": {"queue": queue, "expires": HEARTBEAT_INTERVAL_S * 3},
    }
    for queue in CELERY_QUEUES_BY_KIND
}

# --- Exchange (execution.services builds venues from these) ----------------------------------
# Empty: Binance's testnet (demo) or live URL by the credential's environment. Set it to the
# emulator's root (http://127.0.0.1:9010/fapi) to trade offline against it.
BINANCE_BASE_URL = env.str("BINANCE_BASE_URL", default="")
BINANCE_TIMEOUT_MS = env.int("BINANCE_TIMEOUT_MS", default=5000)
RECV_WINDOW_MS = env.int("RECV_WINDOW_MS", default=5000)
CLOCK_SKEW_MAX_MS = env.int("CLOCK_SKEW_MAX_MS", default=1000)
CLOCK_RESYNC_S = env.float("CLOCK_RESYNC_S", default=60.0)
EXCHANGE_INFO_REFRESH_S = env.float("EXCHANGE_INFO_REFRESH_S", default=600.0)
# The rate-limit governor shares Binance's budgets between processes through Redis; without
# Redis (the embedded dev defaults) each process paces alone.
RATE_GOVERNOR_REDIS_URL = env.str("RATE_GOVERNOR_REDIS_URL", default="") or REDIS_URL
if EXCHANGE_INFO_REFRESH_S > 0:
    CELERY_BEAT_SCHEDULE["refresh-exchange-info"] = {
        "task": "execution.tasks.refresh_exchange_info",
        "schedule": timedelta(seconds=EXCHANGE_INFO_REFRESH_S),
        "options": {"expires": EXCHANGE_INFO_REFRESH_S},
    }

# --- Market data (ingest) ---------------------------------------------------------------------
# The market clock (trader.clock): "wall" against Binance; "emulator" reads the emulator's
# replay clock (the make run demo replays candles faster than real time).
MARKET_CLOCK = env.str("MARKET_CLOCK", default="wall")
MARKET_CLOCK_RESYNC_S = env.float("MARKET_CLOCK_RESYNC_S", default=30.0)
# Candles whose move from the previous close exceeds this percent without volume confirmation
# are rejected as bad ticks.
INGEST_MAX_MOVE_PCT = env.str("INGEST_MAX_MOVE_PCT", default="10")
# Beat looks for closed candles this often; each fetch waits a random 0..JITTER after the close
# (the exchange needs a moment to finalise the candle, and many pairs should not fire together).
INGEST_TICK_S = env.float("INGEST_TICK_S", default=1.0)
INGEST_JITTER_S = env.float("INGEST_JITTER_S", default=2.0)
# A feed whose newest closed candle is older than this many intervals is stale.
INGEST_STALE_INTERVALS = env.float("INGEST_STALE_INTERVALS", default=3.0)
# Intervals built from stored 1m candles instead of being fetched.
INGEST_DERIVED_INTERVALS = tuple(
    env.list("INGEST_DERIVED_INTERVALS", default=["2m", "5m", "15m", "1h", "4h"])
)
# Which Binance environment market data (klines) is read from: TESTNET or LIVE; empty: LIVE when
# TRADING_MODE=LIVE, else TESTNET. BINANCE_BASE_URL (the emulator) wins over both.
INGEST_ENVIRONMENT = env.str("INGEST_ENVIRONMENT", default="")
# The kline websocket stream (manage.py stream_klines, from INGEST_ENVIRONMENT's streams):
# reconnect backoff (doubling from BASE, capped, jittered), how often the wanted feeds are re-read.
STREAM_RECONNECT_BASE_S = env.float("STREAM_RECONNECT_BASE_S", default=1.0)
STREAM_RECONNECT_CAP_S = env.float("STREAM_RECONNECT_CAP_S", default=60.0)
STREAM_RESUBSCRIBE_S = env.float("STREAM_RESUBSCRIBE_S", default=30.0)
if INGEST_TICK_S > 0:
    CELERY_BEAT_SCHEDULE["ingest-due"] = {
        "task": "ingest.tasks.ingest_due",
        "schedule": timedelta(seconds=INGEST_TICK_S),
        "options": {"expires": max(INGEST_TICK_S, 1.0)},
    }

# --- Signals: strategies ----------------------------------------------------------------------
# Extra modules whose strategies register themselves on import (dotted paths, comma-separated).
STRATEGY_MODULES = tuple(env.list("STRATEGY_MODULES", default=[]))
# Strategies the chain does not evaluate and new bots cannot choose (keys, comma-separated).
STRATEGIES_DISABLED = tuple(env.list("STRATEGIES_DISABLED", default=[]))

# --- Signals: regime thresholds (signals.regime) ----------------------------------------------
# ADX at or above REGIME_ADX_TREND is a trend; a trend holds while ADX stays above
# REGIME_ADX_RANGE (hysteresis); below it the market ranges.
REGIME_ADX_TREND = env.float("REGIME_ADX_TREND", default=25.0)
REGIME_ADX_RANGE = env.float("REGIME_ADX_RANGE", default=20.0)
# For 1h candles, scaled to other intervals by the square root of their length (ATR % and EMA
# slope grow so): ATR as a percent of the close above which the market is "high volatility"
# (wins over trend), and the least the slow EMA must move, in percent per candle, for a trend.
REGIME_ATR_PCT_HIGH = env.float("REGIME_ATR_PCT_HIGH", default=2.5)
REGIME_EMA_SLOPE_MIN_PCT = env.float("REGIME_EMA_SLOPE_MIN_PCT", default=0.03)

# --- Execution and risk -----------------------------------------------------------------------
# Prefix of every client order id we send: two platforms sharing one exchange account must
# use different prefixes. Letters, digits and '-' only.
CLIENT_ID_PREFIX = env.str("CLIENT_ID_PREFIX", default="tr-")
# A file whose existence engages the global kill switch (an operator can `touch` it).
KILL_SWITCH_FILE = env.str("KILL_SWITCH_FILE", default=str(VAR_DIR / "KILL_SWITCH"))
KILL_SWITCH = env.bool("KILL_SWITCH", default=False)
# A signal's candle may be at most this many intervals old when a bot acts on it.
MAX_SIGNAL_CANDLE_AGE_INTERVALS = env.float("MAX_SIGNAL_CANDLE_AGE_INTERVALS", default=2.0)
SIGNAL_DEFAULT_TTL_S = env.int("SIGNAL_DEFAULT_TTL_S", default=300)
COOLDOWN_AFTER_STOP_S = env.int("COOLDOWN_AFTER_STOP_S", default=3600)
WEEKLY_LOSS_LIMIT_PCT = env.str("WEEKLY_LOSS_LIMIT_PCT", default="")  # empty: no weekly limit
MAX_SYMBOL_NOTIONAL_USDT = env.str("MAX_SYMBOL_NOTIONAL_USDT", default="")  # per user and symbol
MAX_USER_NOTIONAL_USDT = env.str("MAX_USER_NOTIONAL_USDT", default="")
MAX_ACCOUNT_NOTIONAL_USDT = env.str("MAX_ACCOUNT_NOTIONAL_USDT", default="")  # per credential
MAKER_FEE = env.str("MAKER_FEE", default="0.0002")
TAKER_FEE = env.str("TAKER_FEE", default="0.0005")
BALANCE_CACHE_S = env.float("BALANCE_CACHE_S", default=5.0)
POSITION_MODE_CACHE_S = env.int("POSITION_MODE_CACHE_S", default=3600)
TAKE_PROFIT_RETRIES = env.int("TAKE_PROFIT_RETRIES", default=2)
# A delivery refused by the rate budget before anything was sent is retried this many times.
DELIVERY_DEFER_RETRIES = env.int("DELIVERY_DEFER_RETRIES", default=20)
# Circuit breaker: this many venue errors for one account within the window opens it for
# CIRCUIT_OPEN_S (state in the shared cache, so every worker sees it).
CIRCUIT_ERRORS = env.int("CIRCUIT_ERRORS", default=5)
CIRCUIT_WINDOW_S = env.int("CIRCUIT_WINDOW_S", default=60)
CIRCUIT_OPEN_S = env.int("CIRCUIT_OPEN_S", default=120)
PAPER_BALANCE_USDT = env.str("PAPER_BALANCE_USDT", default="10000")
# Closed orders (and closed algo orders) a paper account remembers, newest first, with their
# trades; the platform's own history is in Postgres. Bounds the state rewritten on every call.
PAPER_HISTORY_KEEP = env.int("PAPER_HISTORY_KEEP", default=100)
PAPER_MAKER_FEE = MAKER_FEE
PAPER_TAKER_FEE = TAKER_FEE
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
ALERT_DEDUPE_S = env.int("ALERT_DEDUPE_S", default=300)
ALERT_ESCALATE_AFTER = env.int("ALERT_ESCALATE_AFTER", default=3)

# --- Order monitor and reconciliation ---------------------------------------------------------
MONITOR_INTERVAL_S = env.float("MONITOR_INTERVAL_S", default=15.0)
MONITOR_FULL_EVERY_S = env.float("MONITOR_FULL_EVERY_S", default=300.0)
MONITOR_POLL_AFTER_S = env.int("MONITOR_POLL_AFTER_S", default=120)  # open orders this quiet
MONITOR_GRACE_S = env.int("MONITOR_GRACE_S", default=10)  # leave just-touched orders to their task
MONITOR_STALE_ENTRY_S = env.int("MONITOR_STALE_ENTRY_S", default=86400)
MONITOR_LOCK_S = env.int("MONITOR_LOCK_S", default=120)
MONITOR_JITTER_S = env.float("MONITOR_JITTER_S", default=2.0)
RECONCILE_CANCEL_FOREIGN = env.bool("RECONCILE_CANCEL_FOREIGN", default=False)
if MONITOR_INTERVAL_S > 0:
    CELERY_BEAT_SCHEDULE["monitor-orders"] = {
        "task": "execution.tasks.monitor_orders",
        "schedule": timedelta(seconds=MONITOR_INTERVAL_S),
        "options": {"expires": MONITOR_INTERVAL_S},
    }
    CELERY_BEAT_SCHEDULE["monitor-reconcile"] = {
        "task": "execution.tasks.monitor_reconcile",
        "schedule": timedelta(seconds=MONITOR_FULL_EVERY_S),
        "options": {"expires": MONITOR_FULL_EVERY_S},
    }

# --- Auth, API -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if IS_TEST:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "auth": env.str("AUTH_THROTTLE_RATE", default="10/minute"),
        "webhook": env.str("WEBHOOK_THROTTLE_RATE", default="120/minute"),
    },
    "EXCEPTION_HANDLER": "trader.api.errors.exception_handler",
    # Proxies in front of the web process; 0 means the client address is REMOTE_ADDR, so a
    # client cannot dodge the token-endpoint throttle with a forged X-Forwarded-For.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,  # a used refresh token cannot be replayed
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Trader API",
    "DESCRIPTION": "Bots, encrypted exchange credentials and trading for Binance USD-M futures.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Self-hosted Swagger UI assets: the docs page works on a machine without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"OrderStateEnum": "execution.states.ORDER_STATE_CHOICES"},
}

# --- I18N, static --------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# whitenoise serves the admin's and Swagger UI's assets from gunicorn, no proxy set-up needed.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if IS_PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Logging -------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "trader.logging.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(processName)s: %(message)s"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production overrides ------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if IS_PRODUCTION:
    DEBUG = False
    # gunicorn serves the collected static files (admin, Swagger UI) itself.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

if IS_TEST:
    # Throttling is tested explicitly; schemathesis must not trip it.
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
        "auth": env.str("AUTH_THROTTLE_RATE", default="10000/minute"),
        "webhook": env.str("WEBHOOK_THROTTLE_RATE", default="10000/minute"),
    }
