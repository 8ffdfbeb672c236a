"""The one door from market data to the rest of the chain.

Every live ingestion path (beat's fetch, the websocket stream, a derived interval completing)
calls ``candle_closed`` for the newest closed candle it stored. The first call for a candle
marks it (``Kline.chain_started_at``, set by one conditional UPDATE, so two paths or a
redelivered task racing on the same candle cannot both win) and, after the caller's
transaction commits, starts the next stage: ``signals.tasks.evaluate_candle`` on the
``signals`` queue. Every later call for the same candle is a no-op that returns False.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ingest.models import Kline
from trader.domain import to_ms

logger = logging.getLogger(__name__)


def candle_closed(*, symbol: str, interval: str, open_time: datetime, path: str) -> bool:
    """Hand the stored, closed candle ``(symbol, interval, open_time)`` to the next stage, once.

    ``path`` names who saw the close (``beat``, ``stream``, ``derived``, ...) for the log.
    Returns True when this call started the chain, False when the candle was already handed
    off or is not stored (a candle must be stored before it is handed off)."""
    started = Kline.objects.filter(
        symbol=symbol, interval=interval, open_time=open_time, chain_started_at__isnull=True
    ).update(chain_started_at=timezone.now())
    if not started:
        return False
    ms = to_ms(open_time)
    logger.info(
        "candle closed %s %s %s (via %s): chain started",
        symbol,
        interval,
        open_time.isoformat(),
        path,
    )
    transaction.on_commit(lambda: chain_start(symbol=symbol, interval=interval, open_ms=ms))
    return True


def chain_start(*, symbol: str, interval: str, open_ms: int) -> None:
    """Enqueue the next stages for one closed candle (what ``candle_closed`` runs on commit):
    in DRY_RUN the paper market's walk of it, and the strategies' evaluation."""
    from django.conf import settings

    from signals.tasks import evaluate_candle

    if settings.TRADING_MODE == "DRY_RUN":
        from execution.tasks import paper_feed

        paper_feed.apply_async((symbol, interval, open_ms), queue="execution")
    evaluate_candle.apply_async((symbol, interval, open_ms), queue="signals")
