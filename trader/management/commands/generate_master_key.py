"""Print a new key for CREDENTIALS_MASTER_KEY (Fernet) or, with --secret-key, a SECRET_KEY."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = __doc__
    # Must run exactly when the keys are missing, so it needs no checks and no database.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--secret-key", action="store_true", help="print a Django SECRET_KEY instead"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["secret_key"]:
            self.stdout.write(secrets.token_urlsafe(64))
            return
        self.stdout.write(Fernet.generate_key().decode())
        self.stderr.write(
            "To rotate: put the new key first in CREDENTIALS_MASTER_KEY (comma-separated, old "
            "keys after it), restart, run `python manage.py rotate_credentials_key`, then drop "
            "the old key."
        )
