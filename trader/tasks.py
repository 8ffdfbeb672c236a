"""Operational tasks of the ``trader`` app."""

from __future__ import annotations

from celery import shared_task

from trader.services import heartbeat_record


@shared_task(ignore_result=True, soft_time_limit=10, time_limit=20)
def heartbeat(queue: str) -> None:
    """Record that a worker consuming ``queue`` is alive (beat sends one to each queue)."""
    heartbeat_record(name=f"worker:{queue}")
