"""Every endpoint is scoped to the requesting user: another user's object is a 404."""

from __future__ import annotations

import pytest

from tests.factories import BotFactory, make_credential
from trader.models import ApiCredential, Bot


@pytest.fixture
def owned_by_other(other_user):
    credential = make_credential(owner=other_user, label="theirs")
    bot = BotFactory.create(owner=other_user, credential=credential)
    return {"credential": credential, "bot": bot}


def _object_requests(objs):
    c, b = objs["credential"].pk, objs["bot"].pk
    return [
        ("get", f"/api/credentials/{c}/", None),
        ("put", f"/api/credentials/{c}/", {"label": "x", "environment": "TESTNET"}),
        ("patch", f"/api/credentials/{c}/", {"label": "mine-now"}),
        ("delete", f"/api/credentials/{c}/", None),
        ("get", f"/api/bots/{b}/", None),
        ("put", f"/api/bots/{b}/", {"name": "x", "symbol": "BTCUSDT", "interval": "1h"}),
        ("patch", f"/api/bots/{b}/", {"leverage": 5}),
        ("delete", f"/api/bots/{b}/", None),
        ("post", f"/api/bots/{b}/pause/", None),
        ("post", f"/api/bots/{b}/resume/", None),
        ("post", f"/api/bots/{b}/stop/", None),
    ]


@pytest.mark.parametrize("index", range(11))
def test_another_users_object_is_404_and_untouched(api, owned_by_other, index):
    method, url, body = _object_requests(owned_by_other)[index]
    response = getattr(api, method)(url, body, format="json")
    assert response.status_code == 404, (method, url, response.data)
    credential = ApiCredential.objects.get(pk=owned_by_other["credential"].pk)
    bot = Bot.objects.get(pk=owned_by_other["bot"].pk)
    assert credential.label == "theirs"
    assert (bot.leverage, bot.status) == (2, "ACTIVE")


def test_lists_show_only_own_objects(api, user, owned_by_other):
    mine = make_credential(owner=user, label="mine")
    my_bot = BotFactory.create(owner=user, credential=mine)
    for url, expected in (("/api/credentials/", mine.pk), ("/api/bots/", my_bot.pk)):
        response = api.get(url)
        assert response.status_code == 200
        assert [row["id"] for row in response.data["results"]] == [expected]


def test_bot_cannot_be_created_on_another_users_credential(api, owned_by_other):
    response = api.post(
        "/api/bots/",
        {
            "name": "sneaky",
            "credential": owned_by_other["credential"].pk,
            "symbol": "BTCUSDT",
            "interval": "1h",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.data["credential"] == ["No such credential."]
    assert not Bot.objects.filter(name="sneaky").exists()


def test_own_bot_cannot_be_moved_onto_another_users_credential(api, user, owned_by_other):
    bot = BotFactory.create(owner=user)
    response = api.patch(
        f"/api/bots/{bot.pk}/", {"credential": owned_by_other["credential"].pk}, format="json"
    )
    assert response.status_code == 400
    bot.refresh_from_db()
    assert bot.credential is None


def test_service_refuses_a_foreign_credential_even_without_the_api(user, owned_by_other):
    from django.core.exceptions import ValidationError

    from trader.services import bot_create

    with pytest.raises(ValidationError) as excinfo:
        bot_create(
            owner=user,
            name="direct",
            credential=owned_by_other["credential"],
            symbol="BTCUSDT",
            interval="1h",
        )
    assert excinfo.value.message_dict["credential"] == ["no such credential"]
