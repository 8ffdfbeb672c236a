"""Celery tasks of ``execution``.

``execution.tasks.monitor_*`` go to the ``monitor`` queue, the rest to ``execution``.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from execution.services import exchange_info_refresh
from execution.venues.errors import VenueError

log = logging.getLogger(__name__)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=60)
def refresh_exchange_info() -> None:
    """Keep exchangeInfo fresh for every venue (beat, every EXCHANGE_INFO_REFRESH_S).

    In DRY_RUN without ``BINANCE_BASE_URL`` nothing trades on an exchange, so nothing is
    fetched. A failed refresh keeps the previous copy (it expires after three periods).
    """
    if settings.TRADING_MODE == "DRY_RUN" and not settings.BINANCE_BASE_URL:
        return
    environment = "LIVE" if settings.TRADING_MODE == "LIVE" else "TESTNET"
    try:
        exchange_info_refresh(environment=environment)
    except (VenueError, ValueError) as exc:
        log.warning("exchangeInfo refresh failed, keeping the previous copy: %s", exc)
