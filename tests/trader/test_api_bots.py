"""/api/bots/: validation (400 with field errors, never 500) and pause/resume/stop."""

from __future__ import annotations

import pytest

from tests.factories import BotFactory, make_credential
from trader.models import Bot

URL = "/api/bots/"


def bot_payload(**overrides):
    return {
        "name": "trend-1",
        "environment": "TESTNET",
        "symbol": "BTCUSDT",
        "interval": "1h",
        "strategy": "manual",
        "strategy_params": {},
        "risk_per_trade_pct": "0.5",
        "leverage": 3,
        "max_position_notional": "2500.00",
        "max_open_positions": 2,
        "daily_loss_limit_pct": "4",
        **overrides,
    }


def test_create_bot_on_own_credential(api, user):
    credential = make_credential(owner=user)
    response = api.post(URL, bot_payload(credential=credential.pk), format="json")
    assert response.status_code == 201, response.data
    bot = Bot.objects.get(pk=response.data["id"])
    assert (bot.owner, bot.credential, bot.status) == (user, credential, "ACTIVE")
    assert response.data["max_position_notional"] == "2500.00"  # money as a string, exact


def test_lowercase_symbol_is_normalised(api):
    response = api.post(URL, bot_payload(symbol="ethusdt"), format="json")
    assert response.status_code == 201
    assert response.data["symbol"] == "ETHUSDT"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"symbol": "BTC/USDT"}, "symbol"),
        ({"interval": "7m"}, "interval"),
        ({"leverage": 126}, "leverage"),
        ({"leverage": 0}, "leverage"),
        ({"risk_per_trade_pct": "25"}, "risk_per_trade_pct"),
        ({"risk_per_trade_pct": "abc"}, "risk_per_trade_pct"),
        ({"max_position_notional": "-1"}, "max_position_notional"),
        ({"max_open_positions": 1000}, "max_open_positions"),
        ({"daily_loss_limit_pct": "0"}, "daily_loss_limit_pct"),
        ({"strategy": "martingale"}, "strategy"),
        ({"strategy_params": {"fast": 9}}, "strategy_params"),
        ({"leverage": "three"}, "leverage"),
        ({"environment": "MAINNET"}, "environment"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_bot_field_is_400_naming_it_and_nothing_is_stored(api, overrides, field):
    response = api.post(URL, bot_payload(**overrides), format="json")
    assert response.status_code == 400
    assert field in response.data
    assert Bot.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert Bot.objects.count() == 0


def test_a_list_instead_of_an_object_is_400(api):
    response = api.post(URL, data="[1, 2]", content_type="application/json")
    assert response.status_code == 400


def test_credential_environment_must_match_the_bot(api, user):
    credential = make_credential(owner=user, environment="LIVE")
    response = api.post(URL, bot_payload(credential=credential.pk), format="json")
    assert response.status_code == 400
    assert "credential is for LIVE, the bot trades on TESTNET" in str(response.data["credential"])


def test_duplicate_bot_name_is_400(api, user):
    BotFactory.create(owner=user, name="trend-1")
    response = api.post(URL, bot_payload(), format="json")
    assert response.status_code == 400
    assert "name" in response.data


def test_patch_updates_risk_and_revalidates(api, user):
    bot = BotFactory.create(owner=user)
    response = api.patch(f"{URL}{bot.pk}/", {"leverage": 10}, format="json")
    assert response.status_code == 200
    bot.refresh_from_db()
    assert bot.leverage == 10
    response = api.patch(f"{URL}{bot.pk}/", {"leverage": 500}, format="json")
    assert response.status_code == 400
    bot.refresh_from_db()
    assert bot.leverage == 10


def test_status_is_read_only_in_updates(api, user):
    bot = BotFactory.create(owner=user)
    response = api.patch(f"{URL}{bot.pk}/", {"status": "STOPPED"}, format="json")
    assert response.status_code == 200
    bot.refresh_from_db()
    assert bot.status == "ACTIVE"


@pytest.mark.parametrize(
    ("action", "expected"), [("pause", "PAUSED"), ("resume", "ACTIVE"), ("stop", "STOPPED")]
)
def test_status_commands_set_status_and_are_idempotent(api, user, action, expected):
    bot = BotFactory.create(owner=user, status="PAUSED" if action == "resume" else "ACTIVE")
    for _ in range(2):
        response = api.post(f"{URL}{bot.pk}/{action}/")
        assert response.status_code == 200
        assert response.data["status"] == expected
    bot.refresh_from_db()
    assert bot.status == expected


def test_second_bot_on_same_account_and_symbol_must_share_leverage(api, user):
    credential = make_credential(owner=user)
    BotFactory.create(owner=user, credential=credential, symbol="BTCUSDT", leverage=5, name="a")
    response = api.post(
        URL, bot_payload(name="b", credential=credential.pk, leverage=3), format="json"
    )
    assert response.status_code == 400
    assert "share its leverage" in str(response.data["leverage"])
    assert not Bot.objects.filter(name="b").exists()
    response = api.post(
        URL, bot_payload(name="b", credential=credential.pk, leverage=5), format="json"
    )
    assert response.status_code == 201
