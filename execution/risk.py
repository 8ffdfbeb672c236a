"""Pre-trade risk checks: plain data and ``now`` in, a decision with its reasons out.

Pure: no Django, no network, no clock read. The caller gathers the state (kill switches, bot
status, exposure, realized PnL, circuit breaker) and passes the current time as
``RiskInput.now``, so backtest, paper and live run the very same rules (freqtrade passes
``date_now`` to its protections for the same reason).

Every rule is evaluated and reported in ``RiskDecision.checks``, so a refused delivery records
everything that was wrong with it, not only the first thing; ``RiskDecision.code`` is the first
failure in ``RiskCode`` order, which is the order of the checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from execution.rules import format_decimal

__all__ = [
    "Check",
    "Exposure",
    "KillState",
    "RiskCode",
    "RiskDecision",
    "RiskInput",
    "RiskLimits",
    "evaluate",
]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)

ACTIVE = "ACTIVE"
DRY_RUN = "DRY_RUN"
TESTNET = "TESTNET"
LIVE = "LIVE"
_TRADING_MODES = (DRY_RUN, TESTNET, LIVE)
_BOT_ENVIRONMENTS = (TESTNET, LIVE)


class RiskCode(StrEnum):
    """Reason codes recorded on a delivery; the checks run in this order."""

    KILL_SWITCH = "KILL_SWITCH"
    BOT_NOT_ACTIVE = "BOT_NOT_ACTIVE"
    TRADING_MODE = "TRADING_MODE"
    SYMBOL_NOT_TRADABLE = "SYMBOL_NOT_TRADABLE"
    STALE_DATA = "STALE_DATA"
    COOLDOWN = "COOLDOWN"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    EXPOSURE_BOT = "EXPOSURE_BOT"
    EXPOSURE_SYMBOL = "EXPOSURE_SYMBOL"
    EXPOSURE_USER = "EXPOSURE_USER"
    EXPOSURE_ACCOUNT = "EXPOSURE_ACCOUNT"
    DAILY_LOSS = "DAILY_LOSS"
    WEEKLY_LOSS = "WEEKLY_LOSS"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


@dataclass(frozen=True)
class KillState:
    """Which kill switches are on. ``file_on`` is the environment/file switch on the host."""

    global_on: bool = False
    user_on: bool = False
    bot_on: bool = False
    file_on: bool = False


@dataclass(frozen=True)
class Exposure:
    """Current exposure, in the quote asset, BEFORE the order being decided.

    Each notional counts open positions PLUS pending (unfilled) entry orders: an entry that has
    not filled yet still becomes a position if it does, so two signals in a row must not both
    pass on the same headroom. ``open_positions`` should count pending entries for the same
    reason. ``bot`` is this bot; ``symbol`` is this user's exposure on the order's symbol across
    bots; ``user`` is all of this user's bots; ``account`` is everything on the exchange account
    (credential) the order goes to.
    """

    open_positions: int
    bot_notional: Decimal
    symbol_notional: Decimal
    user_notional: Decimal
    account_notional: Decimal


@dataclass(frozen=True)
class RiskLimits:
    """Caps. ``None`` disables the symbol, user, account and weekly caps; the bot cap is
    mandatory. Loss limits are percentages of equity (2 = 2 %)."""

    max_open_positions: int
    max_position_notional: Decimal
    max_symbol_notional: Decimal | None
    max_user_notional: Decimal | None
    max_account_notional: Decimal | None
    daily_loss_limit_pct: Decimal
    weekly_loss_limit_pct: Decimal | None


@dataclass(frozen=True)
class RiskInput:
    """Everything a decision depends on, gathered by the caller.

    ``now`` is the decision time (aware); ``symbol_tradable`` None means the exchange rules are
    unknown (refused); ``candle_close_time`` None means a manual signal without a candle (the
    freshness check is skipped); ``new_notional`` is the order under decision, 0 when it has not
    been sized yet; ``realized_pnl_*`` are negative for a loss. ``symbol`` and ``quote_asset``
    only label the details.
    """

    now: datetime
    kill: KillState
    bot_status: str
    trading_mode: str
    bot_environment: str
    has_credential: bool
    symbol_tradable: bool | None
    candle_close_time: datetime | None
    max_data_age: timedelta
    cooldown_until: datetime | None
    exposure: Exposure
    new_notional: Decimal
    limits: RiskLimits
    equity: Decimal
    realized_pnl_day: Decimal
    realized_pnl_week: Decimal
    circuit_open: bool
    circuit_reason: str = ""
    symbol: str = ""
    quote_asset: str = "USDT"
    #: The data-staleness breaker: the age of the newest candle stored for the bot's feed
    #: (``ingest.selectors.feed_freshness``, market time; None when the feed has no candles,
    #: as for a manual bot with nothing ingested) and the most it may be (None: not checked).
    feed_age: timedelta | None = None
    max_feed_age: timedelta | None = None
    feed: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the input (Decimals, datetimes and durations as strings)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Check:
    code: RiskCode
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class RiskDecision:
    """``code``/``reason`` are those of the first failing check (None/"" when allowed);
    ``checks`` holds every check, passed or not, in ``RiskCode`` order."""

    allowed: bool
    code: RiskCode | None
    reason: str
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.passed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: plain strings, booleans and lists only."""
        return {
            "allowed": self.allowed,
            "code": None if self.code is None else self.code.value,
            "reason": self.reason,
            "checks": [check.as_dict() for check in self.checks],
        }


def evaluate(inp: RiskInput) -> RiskDecision:
    """Run every pre-trade check on ``inp`` and return the decision.

    Raises ``ValueError`` when ``now`` (or a time compared with it) is naive: comparing a naive
    local time with an aware UTC one would be silently wrong by the UTC offset.
    """
    _require_aware("now", inp.now)
    _require_aware("candle_close_time", inp.candle_close_time)
    _require_aware("cooldown_until", inp.cooldown_until)

    checks = tuple(rule(inp) for rule in _RULES)
    first_failure = next((check for check in checks if not check.passed), None)
    if first_failure is None:
        return RiskDecision(allowed=True, code=None, reason="", checks=checks)
    return RiskDecision(
        allowed=False, code=first_failure.code, reason=first_failure.detail, checks=checks
    )


# --------------------------------------------------------------------------- the rules


def _kill_switch(inp: RiskInput) -> Check:
    kill = inp.kill
    on = [
        name
        for name, flag in (
            ("global", kill.global_on),
            ("user", kill.user_on),
            ("bot", kill.bot_on),
            ("file", kill.file_on),
        )
        if flag
    ]
    if on:
        return _fail(RiskCode.KILL_SWITCH, f"kill switch on: {', '.join(on)}")
    return _pass(RiskCode.KILL_SWITCH, "no kill switch on")


def _bot_active(inp: RiskInput) -> Check:
    if inp.bot_status != ACTIVE:
        return _fail(RiskCode.BOT_NOT_ACTIVE, f"bot status is {inp.bot_status}, not {ACTIVE}")
    return _pass(RiskCode.BOT_NOT_ACTIVE, f"bot status is {ACTIVE}")


def _trading_mode(inp: RiskInput) -> Check:
    mode, env = inp.trading_mode, inp.bot_environment
    code = RiskCode.TRADING_MODE
    if mode not in _TRADING_MODES:
        return _fail(code, f"unknown trading mode {mode!r} (expected one of {_TRADING_MODES})")
    if env not in _BOT_ENVIRONMENTS:
        return _fail(code, f"unknown bot environment {env!r} (expected one of {_BOT_ENVIRONMENTS})")
    if mode == DRY_RUN:
        return _pass(code, f"trading mode {DRY_RUN}: paper venue, bot environment {env}")
    problems = []
    if env == LIVE and mode != LIVE:
        problems.append(f"a {LIVE} bot needs trading mode {LIVE}, platform is in {mode}")
    if not inp.has_credential:
        problems.append(f"trading mode {mode} needs an exchange credential, bot has none")
    if problems:
        return _fail(code, "; ".join(problems))
    # A TESTNET bot under LIVE mode is fine: it still trades on the testnet.
    return _pass(code, f"trading mode {mode}, bot environment {env}, credential present")


def _symbol_tradable(inp: RiskInput) -> Check:
    code = RiskCode.SYMBOL_NOT_TRADABLE
    label = inp.symbol or "symbol"
    if inp.symbol_tradable is None:
        return _fail(code, f"exchange rules unknown for {label}")
    if not inp.symbol_tradable:
        return _fail(code, f"{label} is not tradable on the exchange")
    return _pass(code, f"{label} is tradable")


def _fresh_data(inp: RiskInput) -> Check:
    code = RiskCode.STALE_DATA
    feed_age, max_feed_age = inp.feed_age, inp.max_feed_age
    if feed_age is not None and max_feed_age is not None and feed_age > max_feed_age:
        # Ingestion has stopped for this feed: no entry, manual or not, on stale market data.
        return _fail(
            code,
            f"market data {inp.feed or inp.symbol} stale: newest candle closed {feed_age} ago "
            f"> max {max_feed_age}",
        )
    feed_note = ""
    if feed_age is not None and max_feed_age is not None:
        feed_note = f"market data {inp.feed or inp.symbol} age {feed_age} <= max {max_feed_age}; "
    close = inp.candle_close_time
    if close is None:
        if feed_note:
            return _pass(code, f"{feed_note}no candle (manual signal)")
        return _pass(code, "no candle (manual signal): freshness not checked")
    if close > inp.now:
        # A close time in the future is a candle still forming: never trade on it.
        return _fail(
            code,
            f"candle closes at {close.isoformat()}, after now {inp.now.isoformat()}: "
            "not closed yet",
        )
    age = inp.now - close
    if age > inp.max_data_age:
        return _fail(
            code,
            f"data age {age} > max {inp.max_data_age} (candle closed {close.isoformat()})",
        )
    return _pass(code, f"{feed_note}data age {age} <= max {inp.max_data_age}")


def _cooldown(inp: RiskInput) -> Check:
    code = RiskCode.COOLDOWN
    until = inp.cooldown_until
    if until is not None and until > inp.now:
        return _fail(code, f"cooldown until {until.isoformat()} ({until - inp.now} left)")
    return _pass(code, "no cooldown")


def _open_positions(inp: RiskInput) -> Check:
    code = RiskCode.MAX_OPEN_POSITIONS
    count, cap = inp.exposure.open_positions, inp.limits.max_open_positions
    if count >= cap:
        return _fail(code, f"open positions {count} >= max {cap}")
    return _pass(code, f"open positions {count} < max {cap}")


def _exposure(
    inp: RiskInput, code: RiskCode, label: str, current: Decimal, cap: Decimal | None
) -> Check:
    if cap is None:
        return _pass(code, f"no {label} exposure cap")
    total = current + inp.new_notional
    over = total > cap
    text = (
        f"{label} exposure {_num(current)} + new {_num(inp.new_notional)}"
        f" {'>' if over else '<='} cap {_num(cap)} {inp.quote_asset}"
    )
    return _fail(code, text) if over else _pass(code, text)


def _exposure_bot(inp: RiskInput) -> Check:
    cap = inp.limits.max_position_notional
    return _exposure(inp, RiskCode.EXPOSURE_BOT, "bot", inp.exposure.bot_notional, cap)


def _exposure_symbol(inp: RiskInput) -> Check:
    label = f"{inp.symbol} symbol" if inp.symbol else "symbol"
    cap = inp.limits.max_symbol_notional
    return _exposure(inp, RiskCode.EXPOSURE_SYMBOL, label, inp.exposure.symbol_notional, cap)


def _exposure_user(inp: RiskInput) -> Check:
    cap = inp.limits.max_user_notional
    return _exposure(inp, RiskCode.EXPOSURE_USER, "user", inp.exposure.user_notional, cap)


def _exposure_account(inp: RiskInput) -> Check:
    cap = inp.limits.max_account_notional
    return _exposure(inp, RiskCode.EXPOSURE_ACCOUNT, "account", inp.exposure.account_notional, cap)


def _loss_check(
    inp: RiskInput, code: RiskCode, period: str, pnl: Decimal, pct: Decimal | None
) -> Check:
    if pct is None:
        return _pass(code, f"no {period} loss limit")
    asset = inp.quote_asset
    if inp.equity <= 0:
        # Fail closed: with no equity there is no loss budget to compare against (and an
        # equity that failed to load must not read as "no limit").
        return _fail(code, f"equity {_num(inp.equity)} {asset} <= 0: no {period} loss budget")
    limit = inp.equity * pct / _HUNDRED
    loss = -pnl
    text = (
        f"{period} loss {_num(loss)} {'>=' if loss >= limit else '<'} limit {_num(pct)}% of "
        f"equity {_num(inp.equity)} = {_num(limit)} {asset}"
    )
    return _fail(code, text) if loss >= limit else _pass(code, text)


def _daily_loss(inp: RiskInput) -> Check:
    return _loss_check(
        inp,
        RiskCode.DAILY_LOSS,
        "daily",
        inp.realized_pnl_day,
        inp.limits.daily_loss_limit_pct,
    )


def _weekly_loss(inp: RiskInput) -> Check:
    return _loss_check(
        inp,
        RiskCode.WEEKLY_LOSS,
        "weekly",
        inp.realized_pnl_week,
        inp.limits.weekly_loss_limit_pct,
    )


def _circuit(inp: RiskInput) -> Check:
    code = RiskCode.CIRCUIT_OPEN
    if inp.circuit_open:
        return _fail(code, f"circuit breaker open: {inp.circuit_reason or 'no reason given'}")
    return _pass(code, "circuit breaker closed")


# In RiskCode order; a test asserts the two stay aligned.
_RULES: tuple[Callable[[RiskInput], Check], ...] = (
    _kill_switch,
    _bot_active,
    _trading_mode,
    _symbol_tradable,
    _fresh_data,
    _cooldown,
    _open_positions,
    _exposure_bot,
    _exposure_symbol,
    _exposure_user,
    _exposure_account,
    _daily_loss,
    _weekly_loss,
    _circuit,
)


# --------------------------------------------------------------------------- helpers


def _pass(code: RiskCode, detail: str) -> Check:
    return Check(code=code, passed=True, detail=detail)


def _fail(code: RiskCode, detail: str) -> Check:
    return Check(code=code, passed=False, detail=detail)


def _num(value: Decimal) -> str:
    return format_decimal(value)


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        # Seconds, exactly (total_seconds() is a float).
        whole = Decimal(value.days * 86_400 + value.seconds)
        return format_decimal(whole + Decimal(value.microseconds).scaleb(-6))
    if isinstance(value, StrEnum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    return value
