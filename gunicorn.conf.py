"""gunicorn settings, loaded by default from the working directory.

The production guard runs in the master before any worker forks: a misconfigured web process
exits once with the clear line instead of gunicorn re-spawning failing workers forever.
"""

import os
from typing import Any

from config.metrics import process_dead
from config.startup import enforce_startup_config

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
accesslog = "-"


def on_starting(server: object) -> None:
    enforce_startup_config("web")


def child_exit(server: object, worker: Any) -> None:
    # With PROMETHEUS_MULTIPROC_DIR (config.metrics): the worker's live gauges stop counting.
    process_dead(worker.pid)


# gunicorn 27's control socket would live under $HOME, which the image's app user cannot write;
# nothing here uses it.
control_socket_disable = True
