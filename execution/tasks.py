"""Celery tasks of ``execution``.

``execution.tasks.monitor_*`` go to the ``monitor`` queue, the rest to ``execution``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

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
    from execution.services import exchange_info_refresh

    try:
        exchange_info_refresh(environment=environment)
    except (VenueError, ValueError) as exc:
        log.warning("exchangeInfo refresh failed, keeping the previous copy: %s", exc)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def execute_delivery(self: Any, delivery_id: int) -> None:
    """One signal for one bot. Idempotent (orders are unique per delivery and leg, and a rerun
    settles them by client id), so it is acknowledged only when done: a worker killed midway
    hands it to another, which finishes the job instead of placing a second trio."""
    from execution.models import DeliveryStatus, SignalDelivery
    from execution.services import DeliveryDeferred, delivery_execute

    try:
        delivery_execute(delivery_id=delivery_id)
    except DeliveryDeferred as deferred:
        # Rate budget exhausted before anything was sent: come back (countdown well below the
        # broker's visibility timeout). Out of retries, the outcome is recorded, never dropped.
        if self.request.retries >= settings.DELIVERY_DEFER_RETRIES:
            SignalDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.FAILED,
                reason_code="RATE_LIMITED",
                reason=deferred.reason[:500],
            )
            return
        raise self.retry(
            countdown=min(60.0, max(1.0, deferred.retry_after_s)), max_retries=None
        ) from None


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=300, time_limit=360)
def kill_switch_sweep(switch_id: int) -> None:
    """Cancel what an engaged kill switch covers (and flatten when asked)."""
    from execution.services import kill_switch_sweep as sweep

    sweep(switch_id=switch_id)


@shared_task(ignore_result=True, soft_time_limit=110, time_limit=120)
def monitor_orders() -> None:
    """The order monitor's frequent pass (singleton by a cache lock, jittered)."""
    import time

    from execution.monitor import jitter_s, monitor_run

    time.sleep(jitter_s())
    monitor_run(full=False)


@shared_task(ignore_result=True, soft_time_limit=280, time_limit=300)
def monitor_reconcile() -> None:
    """The periodic full comparison of every account with the database."""
    from execution.monitor import monitor_run

    monitor_run(full=True)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=60, time_limit=90)
def paper_feed(symbol: str, interval: str, open_ms: int) -> None:
    """DRY_RUN: walk a closed candle through the paper accounts on its symbol, then sync their
    orders (``execution.paper_market``). Idempotent: each account walks a candle once."""
    from execution.paper_market import paper_feed_candle

    paper_feed_candle(symbol=symbol, interval=interval, open_ms=open_ms)
