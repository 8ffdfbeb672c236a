"""The project's venue exceptions. Vendor errors (python-binance, HTTP) are translated into these.

Three families decide what the caller may do (style guide §1):

- temporary (``RateLimited``, ``TimestampRejected``, ``ClockSkewError``): nothing happened at the
  venue; a *read* may be retried after the condition clears, a placement is re-decided;
- rejected (``OrderRejected``, ``AuthRejected``, ``NotFound``): terminal, with Binance's code and
  message kept;
- unknown outcome (``UnknownOutcome``): the request may have taken effect; reconcile by client
  order id before anything else. Never resend blindly.
"""

from __future__ import annotations


class VenueError(Exception):
    """Base class. ``code`` and ``message`` are the venue's own (0 / text for transport errors)."""

    def __init__(self, message: str, *, code: int = 0, http_status: int | None = None) -> None:
        super().__init__(f"{message} (code {code})" if code else message)
        self.code = code
        self.message = message
        self.http_status = http_status


class RateLimited(VenueError):
    """429 / -1003 / 418: back off. ``banned_until_ms`` is set for an IP ban (418)."""

    def __init__(
        self,
        message: str,
        *,
        code: int = -1003,
        http_status: int | None = 429,
        retry_after_s: float | None = None,
        banned_until_ms: int | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.retry_after_s = retry_after_s
        self.banned_until_ms = banned_until_ms


class TimestampRejected(VenueError):
    """-1021 / -5028: the request's timestamp was outside the venue's recvWindow."""


class ClockSkewError(VenueError):
    """Our clock and the venue's disagree beyond the threshold even after a resync."""

    def __init__(self, skew_ms: int, threshold_ms: int) -> None:
        super().__init__(
            f"clock skew against the venue is {skew_ms} ms (threshold {threshold_ms} ms) "
            "after a resync; fix the host clock (NTP) before trading"
        )
        self.skew_ms = skew_ms
        self.threshold_ms = threshold_ms


class AuthRejected(VenueError):
    """-1022 / -2014 / -2015: signature, key format, or key/IP/permission rejected."""


class OrderRejected(VenueError):
    """The venue refused the order (filters, margin, would-trigger, reduce-only, duplicate id)."""


class NotFound(VenueError):
    """-2011 / -2013: no such order (unknown, or too old to be queried)."""


class UnknownOutcome(VenueError):
    """Timeout, 5xx, -1006, -1007, 503 "Unknown error": the request may have been executed."""


class PreflightError(ValueError):
    """Refused before any request: names the rule and the values (``execution.rules``)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail
