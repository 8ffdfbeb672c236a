"""Read-side queries. Every user-facing query starts from the requesting user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from trader.models import ApiCredential, Bot, Heartbeat


def credentials_for_user(*, user: Any) -> QuerySet[ApiCredential]:
    return ApiCredential.objects.filter(owner=user)


def bots_for_user(*, user: Any) -> QuerySet[Bot]:
    return Bot.objects.filter(owner=user).select_related("credential")


@dataclass(frozen=True)
class ProcessHealth:
    name: str
    last_seen: datetime | None
    age_s: float | None
    alive: bool


def process_health(*, now: datetime) -> list[ProcessHealth]:
    """Beat's tick and each queue's worker tick, with their age; a missing one is not alive."""
    stale_after = float(settings.HEARTBEAT_STALE_AFTER_S)
    seen = {hb.name: hb.last_seen for hb in Heartbeat.objects.all()}
    names = ["beat", *(f"worker:{q}" for q in settings.CELERY_QUEUES_BY_KIND)]
    result = []
    for name in names:
        last = seen.get(name)
        age = (now - last).total_seconds() if last else None
        result.append(ProcessHealth(name, last, age, age is not None and age <= stale_after))
    return result
