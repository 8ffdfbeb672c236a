"""Celery tasks of ``signals`` (routed to the ``signals`` queue)."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def evaluate_candle(symbol: str, interval: str, open_ms: int) -> None:
    """Evaluate every strategy some active bot runs on ``symbol``/``interval`` on the candles up
    to the one opening at ``open_ms`` (epoch ms), once per (strategy, params), and fan out the
    resulting signals. Idempotent: a redelivery evaluates nothing twice."""
    from signals.evaluation import candle_evaluate

    candle_evaluate(symbol=symbol, interval=interval, open_ms=open_ms)
