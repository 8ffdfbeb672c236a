"""Re-encrypt every stored credential under the first key of CREDENTIALS_MASTER_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from trader.crypto import CredentialKeyError
from trader.services import credentials_reencrypt


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rotated = credentials_reencrypt()
        except CredentialKeyError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"rotated {rotated} credential(s) onto the first master key")
