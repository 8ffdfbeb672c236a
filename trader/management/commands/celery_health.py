"""Tell a live beat and live workers from dead ones, by their heartbeats.

Exit status 0 when beat and a worker on every queue ticked recently, 1 otherwise.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from trader.selectors import process_health


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        health = process_health(now=timezone.now())
        for p in health:
            age = "never seen" if p.age_s is None else f"last tick {p.age_s:.1f}s ago"
            self.stdout.write(f"{p.name:<20} {'alive' if p.alive else 'DEAD':<6} {age}")
        dead = [p.name for p in health if not p.alive]
        if dead:
            beat_alive = next(p.alive for p in health if p.name == "beat")
            cause = (
                "no worker consumes these queues"
                if beat_alive
                else "beat is not running, so no heartbeat is sent to the workers either"
            )
            raise CommandError(f"dead: {', '.join(dead)} ({cause})")
