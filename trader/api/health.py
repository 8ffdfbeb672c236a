"""Liveness and readiness probes (unauthenticated, no secrets, no user data)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from config.celery import app as celery_app
from trader.logging import redact
from trader.selectors import process_health


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests."""
    return JsonResponse({"status": "ok"})


def _error(exc: BaseException) -> str:
    # Redacted: a broker URL in an error message may carry a password.
    return redact(f"{type(exc).__name__}: {exc}")[:200]


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return _error(exc)
    return None


def _check_migrations() -> str | None:
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return _error(exc)
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        return f"{len(plan)} unapplied migration(s): {names}"
    return None


def _market_data() -> dict[str, Any]:
    """Feeds of active bots whose newest candle is stale (or missing). Reported only: stale
    market data is the workers' problem, and the API must stay usable to pause bots."""
    from ingest.selectors import feed_freshness

    try:
        rows = feed_freshness()
    except Exception as exc:  # e.g. the emulator's market clock unreachable
        return {"error": _error(exc)}
    return {
        "stale": [row.name for row in rows if row.stale],
        "feeds": {
            row.name: {
                "age_s": None if row.age_seconds is None else round(row.age_seconds, 1),
                "stale": row.stale,
            }
            for row in rows
        },
    }


def _check_broker() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return _error(exc)
    return None


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: database reachable, migrations applied, broker reachable.

    Workers and beat are reported (a dead worker is told from a live one) but do not make the
    web process unready: the API stays usable, e.g. to pause bots, while workers restart. So are
    the active bots' market-data feeds (``market_data.stale``).
    """
    checks = {
        "database": _check_database(),
        "migrations": None,
        "broker": _check_broker(),
    }
    if checks["database"] is None:
        checks["migrations"] = _check_migrations()
    failing = [name for name, problem in checks.items() if problem is not None]
    body: dict[str, Any] = {
        "status": "fail" if failing else "ok",
        "failing": failing,
        "checks": {name: problem or "ok" for name, problem in checks.items()},
    }
    if checks["database"] is None and checks["migrations"] is None:
        body["processes"] = {
            p.name: {"alive": p.alive, "age_s": None if p.age_s is None else round(p.age_s, 1)}
            for p in process_health(now=timezone.now())
        }
        body["market_data"] = _market_data()
    return JsonResponse(body, status=503 if failing else 200)
