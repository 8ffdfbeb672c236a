"""Binance USD-M rate-limit governor, shared by every process through Redis.

The Binance venue calls ``acquire()`` before each HTTP request and ``observe()`` with each
response. All state lives in Redis, so the web process, every Celery worker and beat draw on one
budget per IP and per account (reference §6):

- REQUEST_WEIGHT 2400 per minute, counted per IP ("The limits on the API are based on the IPs,
  not the API keys");
- ORDERS 300 per 10 s and 1200 per minute, counted per account;
- a 429 obliges us to back off; "repeatedly violating rate limits and/or failing to back off after
  receiving 429s will result in an automated IP ban (HTTP status 418)", 2 minutes to 3 days.

Windows are fixed and aligned to the epoch (``floor(now / length)``), one Redis key per window
with a TTL, so Redis never grows. Binance's windows follow its server clock; a small skew between
the two is what ``Limits.headroom`` absorbs, together with other clients on the same IP.

Every check-and-reserve runs in one Lua script: Redis executes scripts one at a time, so
concurrent processes can never reserve past a budget between reading and incrementing it.
All times come from ``clock()`` and are passed to Redis as arguments (never Redis ``TIME``), so
tests drive time; TTLs are only garbage collection, expiry decisions compare stored instants with
``clock()``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from execution.venues.errors import RateLimited

#: Error code Binance returns with a 429 on too many new orders (reference §5).
TOO_MANY_ORDERS = -1015
#: Error code of 429 (too many requests) and 418 (IP banned).
TOO_MANY_REQUESTS = -1003

BACKOFF_CAP_S = 60
#: Used when a 418 carries neither a parsable expiry nor Retry-After: the shortest documented ban.
DEFAULT_BAN_S = 120
#: How long the 429 exponent survives without a new 429 or a success resetting it.
BACKOFF_EXPONENT_TTL_S = 600
#: Extra TTL on back-off and ban keys beyond their expiry, so a reader never races the TTL.
EXPIRY_SLACK_S = 60

_BANNED_UNTIL = re.compile(r"banned until (\d+)")

# KEYS[1] ban-until, KEYS[2] back-off-until, KEYS[3..] budget counters.
# ARGV[1] now (ms); per counter i: ARGV[3i-1] amount, ARGV[3i] cap, ARGV[3i+1] TTL (s).
# Returns {0} reserved, {1, ban_until_ms}, {2, backoff_until_ms} or {3, counter_index, used}.
# Nothing is incremented unless every budget has room: a refused reservation leaves no trace.
_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local ban = tonumber(redis.call('GET', KEYS[1]) or '0')
if ban > now then return {1, ban} end
local backoff = tonumber(redis.call('GET', KEYS[2]) or '0')
if backoff > now then return {2, backoff} end
local n = #KEYS - 2
for i = 1, n do
  local amount = tonumber(ARGV[3 * i - 1])
  local cap = tonumber(ARGV[3 * i])
  local used = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
  if used + amount > cap then return {3, i, used} end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i + 2], ARGV[3 * i - 1])
  redis.call('EXPIRE', KEYS[i + 2], ARGV[3 * i + 1])
end
return {0}
"""

# Raise each KEYS[i] to ARGV[2i-1] if that is higher, then (only when raised) EXPIRE ARGV[2i].
# The argument string itself is stored, so 13-digit millisecond instants keep every digit.
_RAISE_TO_LUA = """
for i = 1, #KEYS do
  local value = ARGV[2 * i - 1]
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tonumber(value) > current then
    redis.call('SET', KEYS[i], value, 'EX', ARGV[2 * i])
  end
end
return 0
"""


@dataclass(frozen=True)
class Limits:
    """Budgets as Binance publishes them in ``exchangeInfo.rateLimits`` (reference §3.3)."""

    weight_per_minute: int = 2400  # per IP
    orders_per_10s: int = 300  # per account
    orders_per_minute: int = 1200  # per account
    headroom: float = 0.9  # pace below this fraction of each budget

    def __post_init__(self) -> None:
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")
        for name in ("weight_per_minute", "orders_per_10s", "orders_per_minute"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def cap(self, limit: int) -> int:
        """The most we reserve in one window: ``floor(headroom * limit)``."""
        return math.floor(self.headroom * limit + 1e-9)  # 0.29 * 100 is 28.999...


@dataclass(frozen=True)
class _Budget:
    """One counter taking part in a reservation."""

    label: str  # e.g. "order budget 10s for account 7"
    key: str
    amount: int
    limit: int
    cap: int
    window_s: int
    code: int  # the venue's code for this budget, -1003 (weight) or -1015 (orders)


class RateGovernor:
    """Paces one IP's requests and its accounts' orders below Binance's limits, across processes.

    ``ip_key`` names the egress IP (all processes behind one IP must use the same key); accounts
    are counted independently of the IP, as Binance does. ``max_wait_s`` bounds the total time one
    ``acquire()`` may sleep before it raises ``RateLimited`` instead.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        ip_key: str = "default",
        limits: Limits = Limits(),  # frozen, so sharing the default is safe
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 10.0,
        key_prefix: str = "gov",
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._redis = redis_client
        self.ip_key = ip_key
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self.max_wait_s = max_wait_s
        self.key_prefix = key_prefix
        self._reserve = redis_client.register_script(_RESERVE_LUA)
        self._raise_to = redis_client.register_script(_RAISE_TO_LUA)
        self._accounts_seen: set[str] = set()

    # -- keys ---------------------------------------------------------------------------------

    def _ip(self, name: str) -> str:
        return f"{self.key_prefix}:{self.ip_key}:{name}"

    def _weight_key(self, now: float) -> str:
        return self._ip(f"w:{int(now // 60)}")

    def _orders_key(self, account: str, window_s: int, now: float) -> str:
        # Order budgets belong to the account whatever IP it trades from: no ip_key here.
        label = "o10s" if window_s == 10 else "o1m"
        return f"{self.key_prefix}:acct:{account}:{label}:{int(now // window_s)}"

    # -- before a request ---------------------------------------------------------------------

    def acquire(self, *, weight: int, account: str | None = None, orders: int = 0) -> None:
        """Reserve ``weight`` for this IP and ``orders`` for ``account``, waiting if needed.

        Raises ``RateLimited`` at once while a 418 ban is active (``http_status=418``,
        ``banned_until_ms`` set): no call may go out. Waits out a 429 back-off or a full window
        when the total wait stays within ``max_wait_s``; otherwise raises ``RateLimited``
        (``http_status=429`` for a back-off; ``http_status=None`` for a budget we refused
        ourselves, since no request reached the venue), with ``retry_after_s`` set.
        """
        if weight < 0 or orders < 0:
            raise ValueError(f"weight and orders must be >= 0, got {weight} and {orders}")
        if orders and account is None:
            raise ValueError("orders are counted per account: pass account=")
        if account is not None:
            self._accounts_seen.add(account)

        started = self._clock()
        slept = 0.0
        while True:
            now = self._clock()
            budgets = self._budgets(now, weight=weight, account=account, orders=orders)
            for budget in budgets:
                if budget.amount > budget.cap:
                    # No window will ever hold it: waiting would only delay the same answer.
                    raise RateLimited(
                        f"{budget.label}: a request of {budget.amount} exceeds the budget "
                        f"({budget.cap}/{budget.limit} with headroom)",
                        code=budget.code,
                        http_status=None,
                    )
            result = self._reserve(
                keys=[self._ip("ban_until"), self._ip("backoff_until"), *[b.key for b in budgets]],
                args=[_ms(now), *[v for b in budgets for v in (b.amount, b.cap, 2 * b.window_s)]],
            )
            outcome = int(result[0])
            if outcome == 0:
                return
            if outcome == 1:
                banned_until_ms = int(result[1])
                raise RateLimited(
                    f"IP {self.ip_key} banned by the venue until {banned_until_ms} "
                    f"({_iso(banned_until_ms)}); no request may go out before then",
                    http_status=418,
                    retry_after_s=(banned_until_ms - _ms(now)) / 1000,
                    banned_until_ms=banned_until_ms,
                )
            if outcome == 2:
                wait = (int(result[1]) - _ms(now)) / 1000
                message = f"IP {self.ip_key} backing off after a 429 for {wait:g}s more"
                http_status: int | None = 429
                code = TOO_MANY_REQUESTS
            else:
                budget = budgets[int(result[1]) - 1]
                used = int(result[2])
                wait = (math.floor(now / budget.window_s) + 1) * budget.window_s - now
                message = f"{budget.label} exhausted ({used}/{budget.limit})"
                http_status = None
                code = budget.code
            # Bounded even if the injected sleep does not advance the clock.
            waited = max(now - started, slept)
            if waited + wait > self.max_wait_s:
                raise RateLimited(
                    f"{message}; waiting {wait:g}s would exceed max_wait_s={self.max_wait_s:g}",
                    code=code,
                    http_status=http_status,
                    retry_after_s=wait,
                )
            self._sleep(wait)
            slept += wait

    def _budgets(
        self, now: float, *, weight: int, account: str | None, orders: int
    ) -> list[_Budget]:
        """The counters this reservation touches; a zero amount touches none (order POST has
        IP weight 0; a read has no order count)."""
        lim = self.limits
        budgets: list[_Budget] = []
        if weight:
            budgets.append(
                _Budget(
                    label=f"weight budget 1m for IP {self.ip_key}",
                    key=self._weight_key(now),
                    amount=weight,
                    limit=lim.weight_per_minute,
                    cap=lim.cap(lim.weight_per_minute),
                    window_s=60,
                    code=TOO_MANY_REQUESTS,
                )
            )
        if orders and account is not None:
            for window_s, limit, name in (
                (10, lim.orders_per_10s, "10s"),
                (60, lim.orders_per_minute, "1m"),
            ):
                budgets.append(
                    _Budget(
                        label=f"order budget {name} for account {account}",
                        key=self._orders_key(account, window_s, now),
                        amount=orders,
                        limit=limit,
                        cap=lim.cap(limit),
                        window_s=window_s,
                        code=TOO_MANY_ORDERS,
                    )
                )
        return budgets

    # -- after a response ---------------------------------------------------------------------

    def observe(
        self,
        *,
        headers: Mapping[str, str],
        status: int,
        account: str | None = None,
        body_code: int | None = None,
        body_msg: str | None = None,
    ) -> None:
        """Fold a response into the shared state.

        - ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` (any case) raise our
          counters to the venue's figure when it is higher: another client may share the IP or
          account. A lower figure is ignored, since ours includes requests still in flight.
        - 429: back off this IP for ``Retry-After`` seconds, else 1, 2, 4 ... 60 s; the exponent
          lives in Redis and a 2xx response resets it.
          A 429 with -1015 (too many orders) also fills the account's current 10 s window.
        - 418 (or any "banned until <ms>" message): store the ban so every process refuses calls
          until it expires; expiry from the -1003 message, else ``Retry-After``, else 2 minutes.
        """
        now = self._clock()
        lowered = {name.lower(): value for name, value in headers.items()}
        raises: list[tuple[str, int, int]] = []
        used_weight = _int_header(lowered, "x-mbx-used-weight-1m")
        if used_weight is not None:
            raises.append((self._weight_key(now), used_weight, 120))
        if account is not None:
            for window_s, header in ((10, "x-mbx-order-count-10s"), (60, "x-mbx-order-count-1m")):
                count = _int_header(lowered, header)
                if count is not None:
                    raises.append((self._orders_key(account, window_s, now), count, 2 * window_s))
            self._accounts_seen.add(account)

        if status == 429 and body_code == TOO_MANY_ORDERS and account is not None:
            # The venue refused an order on the account's order count: hold this account's
            # orders until its 10 s window rolls, whatever our own count says.
            window_key = self._orders_key(account, 10, now)
            raises.append((window_key, self.limits.orders_per_10s, 20))

        retry_after = _float_header(lowered, "retry-after")
        banned_until_ms = _banned_until_ms(body_msg)
        if status == 418 and (banned_until_ms is None or banned_until_ms <= _ms(now)):
            # No expiry, or one already past by our clock while the venue still bans us (skew):
            # stay out for Retry-After, else the shortest documented ban.
            seconds = retry_after if retry_after is not None else DEFAULT_BAN_S
            banned_until_ms = _ms(now) + math.ceil(seconds * 1000)
        if banned_until_ms is not None and banned_until_ms > _ms(now):
            ttl = math.ceil((banned_until_ms - _ms(now)) / 1000) + EXPIRY_SLACK_S
            raises.append((self._ip("ban_until"), banned_until_ms, ttl))

        if status == 429:
            exponent_key = self._ip("backoff_exp")
            pipe = self._redis.pipeline()  # MULTI/EXEC: the increment and its TTL together
            pipe.incr(exponent_key)
            pipe.expire(exponent_key, BACKOFF_EXPONENT_TTL_S)
            exponent = int(pipe.execute()[0])
            if retry_after is not None:
                delay_s = retry_after
            else:
                delay_s = min(2 ** (exponent - 1), BACKOFF_CAP_S)
            backoff_until_ms = _ms(now) + math.ceil(delay_s * 1000)
            ttl = math.ceil(delay_s) + EXPIRY_SLACK_S
            raises.append((self._ip("backoff_until"), backoff_until_ms, ttl))
        elif 200 <= status < 300:
            self._redis.delete(self._ip("backoff_exp"))

        if raises:
            self._raise_to(
                keys=[key for key, _, _ in raises],
                args=[v for _, value, ttl in raises for v in (value, ttl)],
            )

    # -- diagnostics --------------------------------------------------------------------------

    def state(self, *, accounts: Sequence[str] | None = None) -> dict[str, object]:
        """Current counts, back-off and ban, for metrics and diagnostics.

        Order counts are reported for ``accounts``, by default those this instance has seen.
        ``backoff_until_ms`` / ``banned_until_ms`` are ``None`` once past.
        """
        now = self._clock()
        now_ms = _ms(now)
        names = sorted(self._accounts_seen if accounts is None else set(accounts))
        keys = [
            self._weight_key(now),
            self._ip("backoff_until"),
            self._ip("backoff_exp"),
            self._ip("ban_until"),
        ]
        for account in names:
            keys += [self._orders_key(account, 10, now), self._orders_key(account, 60, now)]
        values = [_as_int(v) for v in self._redis.mget(keys)]
        weight, backoff_until, exponent, banned_until = values[:4]
        lim = self.limits
        return {
            "ip_key": self.ip_key,
            "weight_used_1m": weight,
            "weight_limit_1m": lim.weight_per_minute,
            "weight_cap_1m": lim.cap(lim.weight_per_minute),
            "backoff_until_ms": backoff_until if backoff_until > now_ms else None,
            "backoff_exponent": exponent,
            "banned_until_ms": banned_until if banned_until > now_ms else None,
            "accounts": {
                account: {
                    "orders_used_10s": values[4 + 2 * i],
                    "orders_used_1m": values[5 + 2 * i],
                }
                for i, account in enumerate(names)
            },
        }


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _as_int(value: Any) -> int:
    """A Redis reply (bytes, str or None) as an int; absent keys count as 0."""
    return 0 if value is None else int(value)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None  # a malformed header must not break the call that carried it


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is not used by Binance and is ignored."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def _banned_until_ms(message: str | None) -> int | None:
    """Ban expiry from "... IP banned until 1700000000000" or "IP(1.2.3.4) banned until <ms>"."""
    match = _BANNED_UNTIL.search(message or "")
    return int(match.group(1)) if match else None
