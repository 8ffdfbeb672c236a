"""The Celery app: settings under the ``CELERY_`` namespace, tasks discovered per app.

Queues are one per kind of work (``ingest``, ``signals``, ``execution``, ``monitor``; see
``CELERY_TASK_ROUTES``). The worker (at ``worker_init``) and beat (in its scheduler,
``config.beat``) refuse to start on a production misconfiguration.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("trader")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _worker_refuses_bad_config(**_: Any) -> None:
    from config.startup import enforce_startup_config

    enforce_startup_config("celery worker")


@signals.worker_process_shutdown.connect
def _worker_process_metrics_dead(pid: int | None = None, **_: Any) -> None:
    from config.metrics import process_dead

    process_dead(pid or os.getpid())
