"""Credentials at rest: MultiFernet encryption, one decryption point, key rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from tests.factories import make_credential
from trader.crypto import CredentialKeyError, credential_key_pair, encrypt
from trader.models import ApiCredential

SECRET = "TopSecretValue-DoNotLeak-9f83"


def test_encrypted_values_round_trip_and_are_not_stored_in_clear(db):
    credential = make_credential(api_key="AKEY-roundtrip-7777", api_secret=SECRET)
    stored = ApiCredential.objects.values().get(pk=credential.pk)
    assert SECRET not in str(stored)
    assert "AKEY-roundtrip-7777" not in str(stored)
    assert stored["api_key_last4"] == "7777"
    pair = credential_key_pair(credential=ApiCredential.objects.get(pk=credential.pk))
    assert (pair.api_key, pair.api_secret) == ("AKEY-roundtrip-7777", SECRET)


def test_key_pair_repr_and_str_are_masked(db):
    pair = credential_key_pair(credential=make_credential(api_secret=SECRET))
    for text in (repr(pair), str(pair), f"{pair}"):
        assert SECRET not in text
        assert "****" in text


def test_rotation_with_two_keys_then_decrypting_with_only_the_new_key(db, settings):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    settings.CREDENTIALS_MASTER_KEYS = [old]
    first = make_credential(api_secret=SECRET)
    second = make_credential(api_key="AKEY-second-2222", api_secret="another-secret-value")

    settings.CREDENTIALS_MASTER_KEYS = [new, old]  # new key first: encrypts; old still decrypts
    assert credential_key_pair(credential=first).api_secret == SECRET
    call_command("rotate_credentials_key", stdout=(out := __import__("io").StringIO()))
    assert out.getvalue().strip() == "rotated 2 credential(s) onto the first master key"

    settings.CREDENTIALS_MASTER_KEYS = [new]  # the old key is gone
    assert (
        credential_key_pair(credential=ApiCredential.objects.get(pk=first.pk)).api_secret == SECRET
    )
    pair = credential_key_pair(credential=ApiCredential.objects.get(pk=second.pk))
    assert pair.api_key == "AKEY-second-2222"


def test_decrypting_without_the_encrypting_key_fails_without_leaking(db, settings):
    settings.CREDENTIALS_MASTER_KEYS = [Fernet.generate_key()]
    credential = make_credential(api_secret=SECRET)
    settings.CREDENTIALS_MASTER_KEYS = [Fernet.generate_key()]
    with pytest.raises(CredentialKeyError) as excinfo:
        credential_key_pair(credential=credential)
    assert f"credential {credential.pk} cannot be decrypted" in str(excinfo.value)
    assert SECRET not in str(excinfo.value)
    assert credential.api_secret_encrypted not in str(excinfo.value)


def test_rotation_command_fails_clearly_when_a_row_matches_no_key(db, settings):
    settings.CREDENTIALS_MASTER_KEYS = [Fernet.generate_key()]
    make_credential()
    settings.CREDENTIALS_MASTER_KEYS = [Fernet.generate_key()]
    with pytest.raises(Exception, match="matches none of the master keys"):
        call_command("rotate_credentials_key")


def test_encrypt_without_master_key_refuses(settings):
    settings.CREDENTIALS_MASTER_KEYS = []
    with pytest.raises(CredentialKeyError, match="generate_master_key"):
        encrypt("x")


def test_only_crypto_module_decrypts():
    """Decryption has one home: no other module calls Fernet/MultiFernet decrypt."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in ("trader", "ingest", "signals", "execution", "config")
        for path in (root / package).rglob("*.py")
        if ".decrypt(" in path.read_text() and path.name != "crypto.py"
    ]
    assert offenders == []
