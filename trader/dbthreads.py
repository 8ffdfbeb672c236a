"""ORM work from long-lived threads (the websocket streams' worker threads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connections

T = TypeVar("T")


def orm_call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ORM code on a long-lived thread the way a request would: drop a connection that is
    too old or broken first, and retry once when the connection fails under us. Only for
    idempotent work (a second run must be safe)."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    except (InterfaceError, OperationalError):
        connections["default"].close()
        return fn(*args, **kwargs)
