"""Beat's scheduler: django-celery-beat's database scheduler that also records its own tick.

Beat writes a ``beat`` heartbeat at most every ``HEARTBEAT_INTERVAL_S``; workers write one per
queue when they run ``trader.tasks.heartbeat``. Together they tell a dead beat (no beat tick)
from a dead worker (beat ticks, the queue's heartbeat does not).
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler


class HeartbeatDatabaseScheduler(DatabaseScheduler):
    _last_heartbeat = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Beat builds its scheduler before it sends ``beat_init`` (the banner names it), so the
        # production guard runs here, before the scheduler touches the database.
        from config.startup import enforce_startup_config

        enforce_startup_config("celery beat")
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(settings.HEARTBEAT_INTERVAL_S)
        now = time.monotonic()
        if now - self._last_heartbeat >= interval:
            from trader.services import heartbeat_record

            heartbeat_record(name="beat")
            self._last_heartbeat = now
        delay = float(super().tick(*args, **kwargs))
        # Wake up in time for the next beat heartbeat even when no task is due for longer.
        return min(delay, interval)
