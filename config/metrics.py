"""Prometheus across processes: what a worker or a stream counts reaches the web's ``/metrics``.

``prometheus_client`` keeps each process's metrics in that process. With
``PROMETHEUS_MULTIPROC_DIR`` set (before ``prometheus_client`` is imported, so in the
environment each process starts with), every process writes its values to files in that
directory, and ``/metrics`` (django-prometheus) adds up the files of every process on the
machine. The directory must be shared by the web, worker, beat and stream processes of one
machine, and emptied before they start: ``run_platform`` does both. A process that ends is
marked dead, so its live gauges (open stream connections) stop counting.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir_prepare(path: Path) -> Path:
    """Create ``path`` and remove the metric files a previous run left there."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def process_dead(pid: int) -> None:
    """Tell the multiprocess collector that ``pid`` has ended (no-op in single-process mode)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
