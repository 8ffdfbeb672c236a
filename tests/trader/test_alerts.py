"""trader.alerts.alert: stored, logged, counted, de-duplicated, escalated, posted, scrubbed.

The webhook is a real HTTP server on 127.0.0.1; the database is the real Postgres test DB.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY

from tests.factories import UserFactory
from trader.alerts import alert
from trader.models import Alert, Severity

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass
class Webhook:
    url: str
    status: int = 200
    bodies: list[bytes] = field(default_factory=list)

    @property
    def posts(self) -> list[Any]:
        return [json.loads(body) for body in self.bodies]


@pytest.fixture(autouse=True)
def _alert_settings(settings):
    settings.ALERT_WEBHOOK_URL = ""
    settings.ALERT_DEDUPE_S = 300
    settings.ALERT_ESCALATE_AFTER = 3


@pytest.fixture
def webhook(settings):
    """A Slack-style webhook receiver on 127.0.0.1; ``status`` is what it answers."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_port}/hooks/T000/B000/webhook-token-XYZ"
    settings.ALERT_WEBHOOK_URL = hook.url
    yield hook
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def raise_alert(db, django_capture_on_commit_callbacks):
    """Call ``alert`` and run its on-commit delivery as a real commit would."""

    def call(*args: Any, **kwargs: Any) -> Alert | None:
        with django_capture_on_commit_callbacks(execute=True):
            return alert(*args, **kwargs)

    return call


def _alert_logs(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "trader.alerts"]


def _counted(severity: str, key_prefix: str) -> float:
    labels = {"severity": severity, "key_prefix": key_prefix}
    return REGISTRY.get_sample_value("trader_alerts_total", labels) or 0.0


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        (Severity.INFO, logging.INFO),
        (Severity.WARNING, logging.WARNING),
        (Severity.CRITICAL, logging.CRITICAL),
    ],
)
def test_alert_stores_row_logs_at_its_level_and_counts_by_key_prefix(
    raise_alert, caplog, severity, level
):
    caplog.set_level(logging.INFO, logger="trader.alerts")
    before = _counted(severity, "order_unknown")

    row = raise_alert(severity, "order_unknown:42", "state unknown", {"bot_id": 7}, now=T0)

    assert row is not None
    stored = Alert.objects.get()
    assert (stored.pk, stored.owner_id, stored.severity, stored.key, stored.message) == (
        row.pk,
        None,
        severity,
        "order_unknown:42",
        "state unknown",
    )
    assert stored.context == {"bot_id": 7}
    assert (stored.count, stored.first_at, stored.last_at) == (1, T0, T0)
    assert (stored.escalated, stored.delivered, stored.delivery_error) == (False, False, "")
    assert _alert_logs(caplog) == [(level, 'order_unknown:42: state unknown {"bot_id": 7}')]
    assert _counted(severity, "order_unknown") == before + 1


def test_metric_labels_carry_the_key_prefix_never_the_message(raise_alert):
    raise_alert(Severity.WARNING, "feed_stale:BTCUSDT:1h", "unique-message-text-0x5f", now=T0)

    samples = [
        sample
        for metric in REGISTRY.collect()
        if metric.name == "trader_alerts"
        for sample in metric.samples
        if sample.name == "trader_alerts_total"
    ]
    labels = [s.labels for s in samples if s.labels["key_prefix"] == "feed_stale"]
    assert labels == [{"severity": "WARNING", "key_prefix": "feed_stale"}]
    assert not [s for s in samples if "unique-message-text" in json.dumps(s.labels)]


def test_repeat_within_window_bumps_count_and_posts_once(raise_alert, webhook, caplog):
    caplog.set_level(logging.INFO, logger="trader.alerts")

    first = raise_alert(Severity.WARNING, "feed_stale:BTCUSDT", "no kline", now=T0)
    second = raise_alert(
        Severity.WARNING, "feed_stale:BTCUSDT", "no kline", now=T0 + timedelta(seconds=300)
    )

    assert first is not None
    assert second is not None
    assert second.pk == first.pk
    row = Alert.objects.get()
    assert (row.count, row.first_at, row.last_at) == (2, T0, T0 + timedelta(seconds=300))
    assert (row.delivered, row.delivery_error, row.escalated) == (True, "", False)
    text = "[WARNING] feed_stale:BTCUSDT: no kline"
    assert webhook.posts == [{"text": text, "content": text}]
    assert _alert_logs(caplog) == [
        (logging.WARNING, "feed_stale:BTCUSDT: no kline"),
        (logging.WARNING, "feed_stale:BTCUSDT: no kline (x2)"),
    ]


def test_repeat_after_window_opens_a_new_row_and_posts_again(raise_alert, webhook):
    raise_alert(Severity.WARNING, "feed_stale:BTCUSDT", "no kline", now=T0)
    raise_alert(Severity.WARNING, "feed_stale:BTCUSDT", "no kline", now=T0 + timedelta(seconds=301))

    rows = list(Alert.objects.order_by("first_at").values_list("count", "first_at", "last_at"))
    later = T0 + timedelta(seconds=301)
    assert rows == [(1, T0, T0), (1, later, later)]
    text = "[WARNING] feed_stale:BTCUSDT: no kline"
    assert webhook.posts == [{"text": text, "content": text}] * 2


def test_window_slides_with_last_at_so_a_steady_repeat_stays_on_one_row(raise_alert, webhook):
    for minute in range(0, 20, 4):  # every 4 minutes for 16 minutes, window 5 minutes
        raise_alert(
            Severity.INFO, "funding:BTCUSDT", "rate high", now=T0 + timedelta(minutes=minute)
        )

    row = Alert.objects.get()
    assert (row.count, row.first_at, row.last_at) == (5, T0, T0 + timedelta(minutes=16))
    assert len(webhook.posts) == 1


def test_critical_repeated_escalates_once_with_escalated_prefix(raise_alert, webhook):
    for second in range(4):
        raise_alert(
            Severity.CRITICAL,
            "stop_missing:9",
            "position without stop",
            now=T0 + timedelta(seconds=second),
        )

    row = Alert.objects.get()
    assert (row.count, row.escalated, row.delivered) == (4, True, True)
    first = "[CRITICAL] stop_missing:9: position without stop"
    escalated = f"ESCALATED {first} (x3 within 300 s)"
    assert webhook.posts == [
        {"text": first, "content": first},
        {"text": escalated, "content": escalated},
    ]


def test_warning_repeated_past_the_threshold_never_escalates(raise_alert, webhook):
    for second in range(4):
        raise_alert(Severity.WARNING, "slippage:9", "high", now=T0 + timedelta(seconds=second))

    row = Alert.objects.get()
    assert (row.count, row.escalated) == (4, False)
    assert len(webhook.posts) == 1


def test_critical_after_warning_of_same_key_upgrades_the_row_and_posts(raise_alert, webhook):
    raise_alert(Severity.WARNING, "drawdown:3", "daily loss 4%", now=T0)
    raise_alert(Severity.CRITICAL, "drawdown:3", "daily loss 6%", now=T0 + timedelta(seconds=10))

    row = Alert.objects.get()
    assert (row.severity, row.count, row.message) == (Severity.CRITICAL, 2, "daily loss 4%")
    assert [post["text"] for post in webhook.posts] == [
        "[WARNING] drawdown:3: daily loss 4%",
        "[CRITICAL] drawdown:3: daily loss 6%",
    ]


def test_webhook_answering_500_records_delivery_error_and_does_not_raise(
    raise_alert, webhook, caplog
):
    webhook.status = 500

    row = raise_alert(Severity.CRITICAL, "order_unknown:1", "timeout", now=T0)

    assert row is not None
    assert (row.delivered, row.delivery_error) == (False, "HTTP 500")
    row.refresh_from_db()
    assert (row.delivered, row.delivery_error) == (False, "HTTP 500")
    assert len(webhook.bodies) == 1
    assert (logging.WARNING, "alert order_unknown:1: webhook delivery failed: HTTP 500") in (
        _alert_logs(caplog)
    )


def test_webhook_with_nothing_listening_records_connection_error_without_the_url(
    raise_alert, settings, caplog
):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{port}/hooks/secret-path-123"

    row = raise_alert(Severity.CRITICAL, "order_unknown:1", "timeout", now=T0)

    assert row is not None
    row.refresh_from_db()
    assert (row.delivered, row.delivery_error) == (False, "ConnectionError")
    logs = _alert_logs(caplog)
    assert (logging.WARNING, "alert order_unknown:1: webhook delivery failed: ConnectionError") in (
        logs
    )
    assert not [message for _, message in logs if "secret-path-123" in message]


def test_secrets_in_message_and_context_never_reach_row_log_or_webhook(
    raise_alert, webhook, caplog
):
    caplog.set_level(logging.INFO, logger="trader.alerts")
    context = {
        "api_key": "AKIAEXAMPLE0001",
        "request": {
            "query": "symbol=BTCUSDT&signature=deadbeef01",
            "headers": {"X-MBX-APIKEY": "hdrkey0002"},
            "listenToken": ["tok0003"],
            "notes": ["password=hunter0004", "plain"],
        },
        "db_url": "postgres://app:pgpass0005@db/trader",
        "qty": Decimal("0.010"),
    }

    raise_alert(Severity.CRITICAL, "auth_failed:7", "rejected api_secret=abc123 for bot", context)

    secrets = ["AKIAEXAMPLE0001", "deadbeef01", "hdrkey0002", "tok0003", "hunter0004"]
    secrets += ["pgpass0005", "abc123"]
    row = Alert.objects.get()
    assert row.message == "rejected api_secret=**** for bot"
    assert row.context == {
        "api_key": "****",
        "request": {
            "query": "symbol=BTCUSDT&signature=****",
            "headers": {"X-MBX-APIKEY": "****"},
            "listenToken": "****",
            "notes": ["password=****", "plain"],
        },
        "db_url": "postgres://app:****@db/trader",
        "qty": "0.010",
    }
    records = [r for r in caplog.records if r.name == "trader.alerts"]
    assert len(records) == 1
    posted = b"".join(webhook.bodies).decode()
    assert webhook.posts[0]["text"] == "[CRITICAL] auth_failed:7: rejected api_secret=**** for bot"
    for secret in secrets:
        assert secret not in row.message + json.dumps(row.context)
        assert secret not in records[0].getMessage()
        assert secret not in posted


def test_owner_alerts_belong_to_that_user_and_dedupe_per_owner(raise_alert, webhook):
    user, other = UserFactory.create(), UserFactory.create()

    for owner_id in (user.pk, other.pk, None, user.pk):
        raise_alert(Severity.WARNING, "margin_low:1", "margin ratio 80%", owner_id=owner_id, now=T0)

    assert list(user.alerts.values_list("key", "count")) == [("margin_low:1", 2)]
    assert list(other.alerts.values_list("key", "count")) == [("margin_low:1", 1)]
    assert list(Alert.objects.filter(owner=None).values_list("key", "count")) == [
        ("margin_low:1", 1)
    ]
    assert len(webhook.posts) == 3


def test_alert_inside_atomic_posts_only_after_commit(
    db, webhook, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            row = alert(Severity.CRITICAL, "kill_switch:all", "engaged", now=T0)
            assert webhook.bodies == []
        assert webhook.bodies == []  # the test's own transaction has not committed either

    assert len(callbacks) == 1
    assert len(webhook.bodies) == 1
    assert row is not None
    row.refresh_from_db()
    assert row.delivered is True


@pytest.mark.django_db(transaction=True)
def test_alert_outside_a_transaction_posts_before_returning(webhook):
    row = alert(Severity.CRITICAL, "kill_switch:all", "engaged", now=T0)

    assert row is not None
    assert (row.delivered, row.delivery_error) == (True, "")
    text = "[CRITICAL] kill_switch:all: engaged"
    assert webhook.posts == [{"text": text, "content": text}]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_alerts_of_a_key_make_one_row():
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def raise_one() -> None:
        try:
            barrier.wait()
            alert(Severity.WARNING, "race:1", "concurrent", now=T0)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=raise_one) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert list(Alert.objects.values_list("key", "count")) == [("race:1", threads_n)]


def test_unknown_severity_raises_value_error_and_stores_nothing(db, webhook):
    with pytest.raises(ValueError, match="unknown alert severity 'FATAL'"):
        alert("FATAL", "x:1", "boom")

    assert Alert.objects.count() == 0
    assert webhook.bodies == []


def test_admin_lists_alerts_read_only_and_filters_by_severity(raise_alert, client):
    admin_user = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    raise_alert(Severity.CRITICAL, "order_unknown:5", "timeout", now=T0)
    raise_alert(Severity.INFO, "heartbeat:beat", "back", now=T0)
    row = Alert.objects.get(key="order_unknown:5")

    listing = client.get("/admin/trader/alert/", {"severity__exact": "CRITICAL"})
    change = client.post(f"/admin/trader/alert/{row.pk}/change/", {"message": "edited"})

    assert listing.status_code == 200
    assert "order_unknown:5" in listing.content.decode()
    assert "heartbeat:beat" not in listing.content.decode()
    assert client.get("/admin/trader/alert/add/").status_code == 403
    assert change.status_code == 302
    row.refresh_from_db()
    assert row.message == "timeout"
