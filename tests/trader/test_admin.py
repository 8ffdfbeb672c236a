"""Admin: credentials are created through the services (encrypted) and bots validated alike."""

from __future__ import annotations

import pytest

from tests.factories import UserFactory, make_credential
from trader.crypto import credential_key_pair
from trader.models import ApiCredential, Bot


@pytest.fixture
def admin_client(client, db):
    admin = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(admin)
    client.admin_user = admin
    return client


def test_admin_adds_a_credential_encrypted(admin_client):
    admin = admin_client.admin_user
    response = admin_client.post(
        "/admin/trader/apicredential/add/",
        {
            "owner": admin.pk,
            "label": "from-admin",
            "environment": "TESTNET",
            "is_active": "on",
            "api_key": "AdminKey-000011",
            "api_secret": "AdminSecret-777",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    credential = ApiCredential.objects.get(label="from-admin")
    assert credential.api_key_masked == "****0011"
    assert credential_key_pair(credential=credential).api_secret == "AdminSecret-777"


def test_admin_change_without_secrets_keeps_the_pair(admin_client):
    credential = make_credential(owner=admin_client.admin_user)
    before = credential.api_secret_encrypted
    response = admin_client.post(
        f"/admin/trader/apicredential/{credential.pk}/change/",
        {"owner": credential.owner_id, "label": "renamed", "environment": "TESTNET"},
    )
    assert response.status_code == 302
    credential.refresh_from_db()
    assert (credential.label, credential.is_active) == ("renamed", False)
    assert credential.api_secret_encrypted == before


def test_admin_refuses_a_bot_on_another_users_credential(admin_client):
    other = UserFactory.create()
    credential = make_credential(owner=other)
    response = admin_client.post(
        "/admin/trader/bot/add/",
        {
            "owner": admin_client.admin_user.pk,
            "name": "x",
            "credential": credential.pk,
            "environment": "TESTNET",
            "symbol": "BTCUSDT",
            "interval": "1h",
            "strategy": "manual",
            "strategy_params": "{}",
            "risk_per_trade_pct": "1",
            "leverage": "1",
            "max_position_notional": "100",
            "max_open_positions": "1",
            "daily_loss_limit_pct": "5",
            "status": "ACTIVE",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "no such credential" in response.content.decode()
    assert not Bot.objects.exists()


def test_admin_pause_action_pauses_selected_bots(admin_client):
    from tests.factories import BotFactory

    bots = [BotFactory.create(owner=admin_client.admin_user) for _ in range(2)]
    response = admin_client.post(
        "/admin/trader/bot/",
        {"action": "pause_bots", "_selected_action": [b.pk for b in bots]},
    )
    assert response.status_code == 302
    assert set(Bot.objects.values_list("status", flat=True)) == {"PAUSED"}
