"""Circuit breakers on venue error bursts, per exchange account, in the shared cache (Redis when
configured) so that every worker sees the same state.

``CIRCUIT_ERRORS`` errors within ``CIRCUIT_WINDOW_S`` open the circuit for ``CIRCUIT_OPEN_S``:
no new entry is placed for that account meanwhile (protective orders and cancels still go out).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache


def _window_key(account: str, now: float) -> str:
    return f"circuit:{account}:errors:{int(now // settings.CIRCUIT_WINDOW_S)}"


def _open_key(account: str) -> str:
    return f"circuit:{account}:open"


def record_error(account: str, *, reason: str, now: float | None = None) -> bool:
    """Count one venue error; return True if this opened the circuit."""
    now = time.time() if now is None else now
    key = _window_key(account, now)
    cache.add(key, 0, timeout=settings.CIRCUIT_WINDOW_S * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=settings.CIRCUIT_WINDOW_S * 2)
        count = 1
    if count >= settings.CIRCUIT_ERRORS:
        return bool(
            cache.add(
                _open_key(account),
                f"{count} venue errors within {settings.CIRCUIT_WINDOW_S}s, last: {reason}"[:300],
                timeout=settings.CIRCUIT_OPEN_S,
            )
        )
    return False


def circuit_state(account: str) -> tuple[bool, str]:
    """(open, why)."""
    reason = cache.get(_open_key(account))
    return (reason is not None, reason or "")


def reset(account: str) -> None:
    cache.delete(_open_key(account))
