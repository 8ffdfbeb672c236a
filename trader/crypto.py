"""Encryption of exchange credentials at rest (cryptography's MultiFernet).

``CREDENTIALS_MASTER_KEY`` holds comma-separated Fernet keys: the first encrypts, every one
decrypts, so a new key can be put first and old rows rotated onto it at leisure
(``manage.py rotate_credentials_key``). Decryption of a credential happens in exactly one place,
:func:`credential_key_pair`, called only where a venue client is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from trader.domain import mask_api_key

if TYPE_CHECKING:
    from trader.models import ApiCredential


class CredentialKeyError(Exception):
    """The master key is missing, or a stored token cannot be decrypted with it."""


def _multifernet() -> MultiFernet:
    keys = settings.CREDENTIALS_MASTER_KEYS
    if not keys:
        raise CredentialKeyError(
            "CREDENTIALS_MASTER_KEY is missing or malformed; "
            "make one with: python manage.py generate_master_key"
        )
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    """Encrypt under the first master key."""
    return _multifernet().encrypt(plaintext.encode()).decode()


def rotate(token: str) -> str:
    """Re-encrypt a token under the first master key (it may have been made with any of them)."""
    try:
        return _multifernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialKeyError("a stored token matches none of the master keys") from None


@dataclass(frozen=True)
class ApiKeyPair:
    """A decrypted key pair. Its repr is masked so it cannot leak through a log or traceback."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiKeyPair(api_key={mask_api_key(self.api_key[-4:])}, api_secret=****)"

    __str__ = __repr__


def credential_key_pair(*, credential: ApiCredential) -> ApiKeyPair:
    """The one function that decrypts a credential; call it only to build a venue client."""
    fernet = _multifernet()
    try:
        api_key = fernet.decrypt(credential.api_key_encrypted.encode()).decode()
        api_secret = fernet.decrypt(credential.api_secret_encrypted.encode()).decode()
    except InvalidToken:
        raise CredentialKeyError(
            f"credential {credential.pk} cannot be decrypted with CREDENTIALS_MASTER_KEY "
            "(was the key that encrypted it removed?)"
        ) from None
    return ApiKeyPair(api_key=api_key, api_secret=api_secret)
