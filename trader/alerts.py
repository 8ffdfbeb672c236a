"""The one way to raise an alert: log it, count it, store it de-duplicated, post it to a webhook.

``alert(Severity.CRITICAL, "order_unknown:42", "order state unknown after timeout", {...})``

- Secrets never leave this module: the message and every string in the context go through
  ``trader.logging.redact``, and a context entry whose name looks secret is replaced whole.
- Repeats of the same key for the same owner within ``ALERT_DEDUPE_S`` of the row's ``last_at``
  bump ``count``/``last_at`` on one row and are not posted again; a CRITICAL that repeats
  ``ALERT_ESCALATE_AFTER`` times is posted once more, prefixed ``ESCALATED``.
- The webhook (Slack/Discord-compatible, ``ALERT_WEBHOOK_URL``) is called outside any
  transaction with a short timeout; a failure is recorded on the row and logged, never raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from prometheus_client import Counter

from trader.logging import redact
from trader.models import Alert, Severity

log = logging.getLogger("trader.alerts")

ALERTS = Counter(
    "trader_alerts_total",
    "Alerts raised (repeats included), by severity and the key's prefix before the first ':'.",
    ["severity", "key_prefix"],
)

WEBHOOK_TIMEOUT_S = 2.0
# Discord refuses a message longer than 2000 characters; Slack takes more, so this is the bound.
WEBHOOK_TEXT_MAX = 2000
MASK = "****"
_SECRET_NAME = re.compile(r"secret|signature|password|passwd|api[_-]?key|token", re.I)
_LOG_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}
_RANK = {severity: rank for rank, severity in enumerate(Severity.values)}


def alert(
    severity: str,
    key: str,
    message: str,
    context: Mapping[str, Any] | None = None,
    *,
    owner_id: int | None = None,
    now: datetime | None = None,
) -> Alert | None:
    """Raise an alert; return its (possibly de-duplicated) row, or None if it could not be stored.

    ``key`` identifies the condition (``"<kind>:<detail>"``; the kind labels the metric).
    ``owner_id`` scopes the alert to a user; None is platform-wide. Never raises except
    ``ValueError`` for an unknown severity (a programming error, refused before any effect).

    Inside ``atomic()`` the row and the post follow the caller's transaction: the post is sent
    on commit, and a rollback drops both (the log line and the metric remain). Raise an alert
    about a failure after leaving the block that the failure rolls back.
    """
    if severity not in _LOG_LEVELS:
        raise ValueError(f"unknown alert severity {severity!r}")
    severity = Severity(severity)
    now = now or timezone.now()
    key = redact(key)[: Alert._meta.get_field("key").max_length]
    message = redact(message)
    clean_context = scrub(context or {})

    ALERTS.labels(severity=severity.value, key_prefix=key.split(":", 1)[0]).inc()

    try:
        row, post_text = _store(severity, key, message, clean_context, owner_id=owner_id, now=now)
    except DatabaseError:
        # The database being down is when an alert matters most: log and post without a row.
        log.exception("alert %s: could not be stored", key)
        _log(severity, key, message, clean_context, count=1)
        if _webhook_url():
            _deliver(None, _webhook_text(severity, key, message))
        return None

    _log(severity, key, message, clean_context, count=row.count)
    if post_text is not None and _webhook_url():
        transaction.on_commit(_delivery(row, post_text), robust=True)
    return row


def scrub(value: Any, *, name: str = "") -> Any:
    """Return ``value`` as plain JSON with secrets masked (recursively, for dicts and lists).

    An entry whose name looks secret (``api_key``, ``X-MBX-APIKEY``, ``listenToken`` ...) is
    replaced whole by ``****``; every other string goes through ``redact``. Values JSON cannot
    hold (Decimal, datetime, NaN ...) become strings, so the row, the log and the post agree.
    """
    if name and _SECRET_NAME.search(name):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): scrub(v, name=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return redact(str(value))


# --- Storage -------------------------------------------------------------------------------


def _store(
    severity: Severity,
    key: str,
    message: str,
    context: dict[str, Any],
    *,
    owner_id: int | None,
    now: datetime,
) -> tuple[Alert, str | None]:
    """Insert or bump the row for ``key`` and ``owner_id``; return it and the text to post."""
    window = timedelta(seconds=float(getattr(settings, "ALERT_DEDUPE_S", 300)))
    escalate_after = int(getattr(settings, "ALERT_ESCALATE_AFTER", 3))
    with transaction.atomic():
        _lock_key(key, owner_id)
        row = (
            Alert.objects.select_for_update()
            .filter(key=key, owner_id=owner_id, last_at__gte=now - window)
            .order_by("-last_at", "-pk")
            .first()
        )
        if row is None:
            row = Alert.objects.create(
                owner_id=owner_id,
                severity=severity,
                key=key,
                message=message,
                context=context,
                first_at=now,
                last_at=now,
            )
            return row, _webhook_text(severity, key, message)

        row.count += 1
        row.last_at = max(row.last_at, now)
        post_text = None
        if _RANK[severity] > _RANK[row.severity]:
            # A WARNING must not silence a CRITICAL of the same key: an upgrade is news.
            row.severity = severity
            post_text = _webhook_text(severity, key, message)
        if severity == Severity.CRITICAL and row.count >= escalate_after and not row.escalated:
            row.escalated = True
            post_text = (
                f"ESCALATED {_webhook_text(severity, key, message)} "
                f"(x{row.count} within {window.total_seconds():g} s)"
            )
        row.save(update_fields=["count", "last_at", "severity", "escalated"])
        return row, post_text


def _lock_key(key: str, owner_id: int | None) -> None:
    """Serialize alerts of one key and owner until the transaction ends.

    ``select_for_update`` locks an existing row but not the absence of one, so two first
    alerts of a key could both insert. On Postgres a transaction-level advisory lock closes
    that gap (held to the outermost commit, when the new row becomes visible to others);
    SQLite (dev) already serializes writers with its IMMEDIATE transactions.
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(f"alert:{owner_id}:{key}".encode(), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, signed=True)])


# --- Logging -------------------------------------------------------------------------------


def _log(
    severity: Severity, key: str, message: str, context: dict[str, Any], *, count: int
) -> None:
    repeat = f" (x{count})" if count > 1 else ""
    details = f" {json.dumps(context, sort_keys=True)}" if context else ""
    log.log(_LOG_LEVELS[severity], "%s: %s%s%s", key, message, details, repeat)


# --- Webhook -------------------------------------------------------------------------------


def _webhook_url() -> str:
    return str(getattr(settings, "ALERT_WEBHOOK_URL", "") or "")


def _webhook_text(severity: Severity, key: str, message: str) -> str:
    return f"[{severity.value}] {key}: {message}"


def _delivery(row: Alert, text: str) -> Callable[[], None]:
    def deliver() -> None:
        _deliver(row, text)

    return deliver


def _deliver(row: Alert | None, text: str) -> None:
    """Post ``text`` and record the outcome on ``row``; never raises."""
    error = _post(_webhook_url(), text[:WEBHOOK_TEXT_MAX])
    if error:
        log.warning("alert %s: webhook delivery failed: %s", row.key if row else "-", error)
    if row is None:
        return
    row.delivered, row.delivery_error = not error, error
    try:
        Alert.objects.filter(pk=row.pk).update(delivered=row.delivered, delivery_error=error)
    except DatabaseError:
        log.exception("alert %s: could not record the webhook outcome", row.key)


def _post(url: str, text: str) -> str:
    """Post to a Slack- or Discord-style webhook; return "" on success, else a short error.

    The error names the exception class or the HTTP status only: requests' messages carry the
    URL, and a webhook URL is itself a secret (anyone holding it can post to the channel).
    """
    try:
        # Slack reads "text", Discord reads "content"; each ignores the other's field.
        response = requests.post(
            url, json={"text": text, "content": text}, timeout=WEBHOOK_TIMEOUT_S
        )
    except Exception as exc:  # delivery must never raise to the caller
        return type(exc).__name__
    if not 200 <= response.status_code < 300:  # Slack answers 200, Discord 204
        return f"HTTP {response.status_code}"
    return ""
