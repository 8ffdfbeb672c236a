"""The plaintext secret never appears in an API response, admin page, log record or exception."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ValidationError

from tests.factories import BotFactory, UserFactory, make_credential
from trader import services
from trader.models import ApiCredential

SECRET = "Plaintext-Secret-zq8Xy2Lw7"
KEY = "PlaintextApiKey-FULL-ab12"


@pytest.fixture
def everything_logged(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, including django.db.backends SQL
    return caplog


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert KEY not in text


def test_secret_absent_from_every_api_response(api, user, everything_logged):
    created = api.post(
        "/api/credentials/",
        {"label": "main", "environment": "TESTNET", "api_key": KEY, "api_secret": SECRET},
        format="json",
    )
    assert created.status_code == 201
    pk = created.data["id"]
    bot = api.post(
        "/api/bots/",
        {"name": "b", "credential": pk, "symbol": "BTCUSDT", "interval": "1h"},
        format="json",
    )
    responses = [
        created,
        bot,
        api.get("/api/credentials/"),
        api.get(f"/api/credentials/{pk}/"),
        api.patch(f"/api/credentials/{pk}/", {"label": "renamed"}, format="json"),
        api.patch(f"/api/credentials/{pk}/", {"api_key": KEY}, format="json"),  # 400
        api.patch(f"/api/credentials/{pk}/", {"api_key": KEY, "api_secret": "x y"}, format="json"),
        api.post("/api/credentials/", {"label": "main", "api_key": KEY, "api_secret": SECRET}),
        api.post(
            "/api/credentials/",
            {"label": "renamed", "api_key": KEY, "api_secret": SECRET},
            format="json",
        ),
        api.get("/api/bots/"),
        api.get(f"/api/bots/{bot.data['id']}/"),
        api.get("/api/schema/"),
    ]
    codes = [r.status_code for r in responses]
    assert codes == [201, 201, 200, 200, 200, 400, 400, 415, 400, 200, 200, 200]
    for response in responses:
        _assert_clean(response.content.decode())
    for record in everything_logged.records:
        _assert_clean(record.getMessage())
    assert created.data["api_key_masked"] == "****ab12"


def test_secret_absent_from_admin_pages(client, db, everything_logged):
    admin = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(admin)
    credential = make_credential(owner=admin, api_key=KEY, api_secret=SECRET)
    BotFactory.create(owner=admin, credential=credential)
    pages = [
        client.get("/admin/trader/apicredential/"),
        client.get(f"/admin/trader/apicredential/{credential.pk}/change/"),
        client.get("/admin/trader/apicredential/add/"),
        client.get("/admin/trader/bot/"),
        client.get(f"/admin/trader/bot/{BotFactory._meta.model.objects.get().pk}/change/"),
        # a failing form post (label clash) re-renders the page: the typed secret must not return
        client.post(
            "/admin/trader/apicredential/add/",
            {
                "owner": admin.pk,
                "label": credential.label,
                "environment": "TESTNET",
                "is_active": "on",
                "api_key": KEY,
                "api_secret": SECRET,
            },
        ),
    ]
    assert [p.status_code for p in pages] == [200] * 6
    for page in pages:
        html = page.content.decode()
        _assert_clean(html)
    assert "****ab12" in pages[0].content.decode()
    assert "****ab12" in pages[1].content.decode()
    for record in everything_logged.records:
        _assert_clean(record.getMessage())


def test_secret_absent_from_exceptions_and_reprs(db, everything_logged):
    credential = make_credential(api_key=KEY, api_secret=SECRET)
    texts = [str(credential), repr(credential), str(ApiCredential.objects.values().get())]
    with pytest.raises(ValidationError) as excinfo:
        services.credential_update(credential=credential, api_key=KEY)  # half a pair
    texts.append(str(excinfo.value))
    with pytest.raises(ValidationError) as excinfo:
        services.credential_create(
            owner=credential.owner, label="bad", environment="TESTNET", api_key=KEY, api_secret="x"
        )
    texts.append(str(excinfo.value))
    for text in texts:
        _assert_clean(text)
    for record in everything_logged.records:
        _assert_clean(record.getMessage())
