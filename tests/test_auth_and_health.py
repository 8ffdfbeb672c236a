"""JWT auth with a throttled token endpoint; liveness and readiness probes."""

from __future__ import annotations

from tests.factories import PASSWORD


def test_jwt_token_pair_then_refresh_then_authenticated_call(client, user):
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, "application/json"
    )
    assert response.status_code == 200
    access, refresh = response.json()["access"], response.json()["refresh"]
    assert client.get("/api/bots/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200
    response = client.post("/api/auth/token/refresh/", {"refresh": refresh}, "application/json")
    assert response.status_code == 200
    assert "access" in response.json()


def test_wrong_password_is_401(client, user):
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": "nope"}, "application/json"
    )
    assert response.status_code == 401


def test_token_endpoint_is_throttled(client, user, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/minute"})
    codes = [
        client.post(
            "/api/auth/token/", {"username": user.username, "password": "x"}, "application/json"
        ).status_code
        for _ in range(4)
    ]
    assert codes == [401, 401, 401, 429]


def test_forged_forwarded_for_does_not_dodge_the_throttle(client, user, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "2/minute"})
    codes = [
        client.post(
            "/api/auth/token/",
            {"username": user.username, "password": "x"},
            "application/json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        ).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 429]


def test_a_used_refresh_token_cannot_be_replayed(client, user):
    tokens = client.post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, "application/json"
    ).json()
    first = client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, "application/json"
    )
    replay = client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, "application/json"
    )
    assert (first.status_code, replay.status_code) == (200, 401)


def test_healthz_is_ok_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ok_with_database_migrations_and_broker(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["checks"] == {"database": "ok", "migrations": "ok", "broker": "ok"}
    assert set(body["processes"]) == {
        "beat",
        "worker:ingest",
        "worker:signals",
        "worker:execution",
        "worker:monitor",
    }


def test_readyz_is_503_naming_an_unreachable_broker_without_its_password(client, db, monkeypatch):
    from config.celery import app

    # nothing listens on port 1
    monkeypatch.setitem(app.conf, "broker_url", "redis://:hunter2@127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert "hunter2" not in response.content.decode()


def test_readyz_reports_a_dead_worker_from_a_live_beat(client, db):
    from datetime import timedelta

    from django.utils import timezone

    from trader.models import Heartbeat

    now = timezone.now()
    Heartbeat.objects.create(name="beat", last_seen=now)
    Heartbeat.objects.create(name="worker:execution", last_seen=now - timedelta(hours=1))
    processes = client.get("/readyz").json()["processes"]
    assert processes["beat"]["alive"] is True
    assert processes["worker:execution"]["alive"] is False
    assert processes["worker:ingest"] == {"alive": False, "age_s": None}
