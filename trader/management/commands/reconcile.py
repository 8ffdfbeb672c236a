"""Compare the database with each account's regular orders, algo orders and positions, resolve
every difference, and print what differed and what was done.

    python manage.py reconcile [--bot ID ...] [--dry-run]

A bot whose reconciliation fails is paused with the reason (an alert says why).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from execution.monitor import reconcile


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", type=int, action="append", dest="bots")
        parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        report = reconcile(bot_ids=options["bots"], dry_run=options["dry_run"])
        for line in report.lines():
            self.stdout.write(line)
        if report.errors:
            raise SystemExit(1)
