"""Engage or release a kill switch: global by default, or for one bot or user.

    python manage.py kill_switch on [--bot ID | --user ID] [--flatten] [--reason TEXT]
    python manage.py kill_switch off [--bot ID | --user ID]

Engaging stops new entries at once; a task then cancels open entries it covers (and, with
--flatten, closes positions reduce-only). For an emergency without the database, create the
file named by KILL_SWITCH_FILE (or set KILL_SWITCH=1).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.models import KillScope
from execution.services import kill_switch_engage, kill_switch_release
from trader.models import Bot


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("state", choices=["on", "off"])
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--bot", type=int)
        target.add_argument("--user", type=int)
        parser.add_argument("--flatten", action="store_true")
        parser.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        user = bot = None
        scope = KillScope.GLOBAL
        if options["bot"]:
            scope = KillScope.BOT
            bot = Bot.objects.filter(pk=options["bot"]).first()
            if bot is None:
                raise CommandError(f"no bot with id {options['bot']}")
        elif options["user"]:
            scope = KillScope.USER
            user = get_user_model().objects.filter(pk=options["user"]).first()
            if user is None:
                raise CommandError(f"no user with id {options['user']}")
        if options["state"] == "off":
            released = kill_switch_release(scope=scope, user=user, bot=bot)
            self.stdout.write(f"kill switch {scope} released ({released} switch(es))")
            return
        switch = kill_switch_engage(
            scope=scope, user=user, bot=bot, reason=options["reason"], flatten=options["flatten"]
        )
        self.stdout.write(
            f"kill switch {switch.pk} {scope} ENGAGED{' with flatten' if switch.flatten else ''}: "
            "no new entries; open entries are being cancelled"
        )
