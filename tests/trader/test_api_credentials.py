"""/api/credentials/: write-only secrets, masked key, validation, conflicts."""

from __future__ import annotations

from tests.factories import BotFactory, make_credential
from trader.crypto import credential_key_pair
from trader.models import ApiCredential

URL = "/api/credentials/"
NEW = {
    "label": "main",
    "environment": "TESTNET",
    "api_key": "AKEY-created-by-api-4321",
    "api_secret": "SecretCreatedByApi-zz9",
}


def test_create_stores_encrypted_and_answers_with_masked_key_only(api, user):
    response = api.post(URL, NEW, format="json")
    assert response.status_code == 201, response.data
    assert response.data["api_key_masked"] == "****4321"
    assert "api_key" not in response.data
    assert "api_secret" not in response.data
    credential = ApiCredential.objects.get(pk=response.data["id"])
    assert credential.owner == user
    pair = credential_key_pair(credential=credential)
    assert pair.api_secret == NEW["api_secret"]


def test_create_without_secret_is_400_naming_the_field(api):
    response = api.post(URL, {**NEW, "api_secret": ""}, format="json")
    assert response.status_code == 400
    assert "api_secret" in response.data
    assert ApiCredential.objects.count() == 0


def test_duplicate_label_for_same_owner_is_400(api, user):
    make_credential(owner=user, label="main")
    response = api.post(URL, NEW, format="json")
    assert response.status_code == 400
    assert "label" in response.data
    assert ApiCredential.objects.filter(owner=user).count() == 1


def test_same_label_for_another_owner_is_fine(api, other_user):
    make_credential(owner=other_user, label="main")
    assert api.post(URL, NEW, format="json").status_code == 201


def test_replacing_key_pair_needs_both_halves_and_stamps_rotation(api, user):
    credential = make_credential(owner=user)
    response = api.patch(f"{URL}{credential.pk}/", {"api_key": "AKEY-new-0000"}, format="json")
    assert response.status_code == 400
    assert "api_secret" in response.data

    response = api.patch(
        f"{URL}{credential.pk}/",
        {"api_key": "AKEY-new-0000", "api_secret": "NewSecret-123456"},
        format="json",
    )
    assert response.status_code == 200
    assert response.data["api_key_masked"] == "****0000"
    credential.refresh_from_db()
    assert credential.rotated_at > credential.created_at
    assert credential_key_pair(credential=credential).api_secret == "NewSecret-123456"


def test_label_only_update_keeps_the_key_pair(api, user):
    credential = make_credential(owner=user)
    before = credential.api_secret_encrypted
    response = api.patch(f"{URL}{credential.pk}/", {"label": "renamed"}, format="json")
    assert response.status_code == 200
    credential.refresh_from_db()
    assert (credential.label, credential.api_secret_encrypted) == ("renamed", before)


def test_deleting_a_credential_used_by_a_bot_is_409_and_keeps_it(api, user):
    credential = make_credential(owner=user)
    BotFactory.create(owner=user, credential=credential)
    response = api.delete(f"{URL}{credential.pk}/")
    assert response.status_code == 409
    assert ApiCredential.objects.filter(pk=credential.pk).exists()


def test_changing_environment_under_attached_bots_is_refused(api, user):
    credential = make_credential(owner=user)
    BotFactory.create(owner=user, credential=credential, environment="TESTNET")
    response = api.patch(f"{URL}{credential.pk}/", {"environment": "LIVE"}, format="json")
    assert response.status_code == 400
    assert "environment" in response.data
    credential.refresh_from_db()
    assert credential.environment == "TESTNET"


def test_unauthenticated_request_is_401(client, db):
    assert client.get(URL).status_code == 401
