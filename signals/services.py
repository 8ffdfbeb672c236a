"""Signals in, deliveries out: creation (idempotent), who receives a signal, and the fan-out to
one ``execution.tasks.execute_delivery`` per receiving bot."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from celery import group
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from execution.models import DeliveryStatus, SignalDelivery
from signals.models import EntryType, Signal, SignalKind, SignalSource, WebhookToken
from trader import domain
from trader.domain import INTERVAL_SECONDS
from trader.models import Bot, BotStatus


def params_hash(params: Any) -> str:
    """A stable digest of strategy params (canonical JSON), to match bots to strategy signals."""
    canonical = json.dumps(params or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def floor_to_interval(moment: datetime, interval: str) -> datetime:
    seconds = INTERVAL_SECONDS[interval]
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=moment.tzinfo or UTC)


def signal_errors(
    *,
    kind: str,
    symbol: str,
    interval: str,
    side: str,
    entry_type: str,
    entry_price: Decimal | None,
    stop_price: Decimal | None,
    take_profit_price: Decimal | None,
    reference_price: Decimal | None,
) -> dict[str, list[str]]:
    """What is wrong with a signal's terms, by field."""
    errors: dict[str, list[str]] = {}
    problem = domain.symbol_problem(symbol)
    if problem:
        errors["symbol"] = [problem]
    if interval not in INTERVAL_SECONDS:
        errors["interval"] = [f"{interval!r} is not a Binance interval"]
    if kind == SignalKind.DISARM:
        return errors
    if side not in ("BUY", "SELL"):
        errors["side"] = ["ARM needs side BUY or SELL"]
    if entry_type not in EntryType.values:
        errors["entry_type"] = ["ARM needs entry_type MARKET or LIMIT"]
    if entry_type == EntryType.LIMIT and entry_price is None:
        errors["entry_price"] = ["a LIMIT entry needs entry_price"]
    if stop_price is None:
        errors["stop_price"] = ["ARM needs a stop_price: no entry without a stop-loss"]
    for name, value in (
        ("entry_price", entry_price),
        ("stop_price", stop_price),
        ("take_profit_price", take_profit_price),
        ("reference_price", reference_price),
    ):
        if value is not None and value <= 0:
            errors.setdefault(name, []).append("must be positive")
    entry = entry_price if entry_type == EntryType.LIMIT else reference_price
    if errors or entry is None or stop_price is None:
        return errors
    buy = side == "BUY"
    if (buy and stop_price >= entry) or (not buy and stop_price <= entry):
        errors["stop_price"] = [
            f"a {side} stop must be {'below' if buy else 'above'} the entry "
            f"({stop_price} vs {entry})"
        ]
    if take_profit_price is not None and (
        (buy and take_profit_price <= entry) or (not buy and take_profit_price >= entry)
    ):
        errors["take_profit_price"] = [
            f"a {side} take-profit must be {'above' if buy else 'below'} the entry "
            f"({take_profit_price} vs {entry})"
        ]
    return errors


def signal_create(
    *,
    source: str,
    source_key: str,
    symbol: str,
    interval: str,
    kind: str,
    candle_time: datetime | None = None,
    owner: Any = None,
    strategy: str = "manual",
    params: Any = None,
    side: str = "",
    entry_type: str = "",
    entry_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    take_profit_price: Decimal | None = None,
    reference_price: Decimal | None = None,
    target_bot_ids: list[int] | None = None,
    expires_at: datetime | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> tuple[Signal, bool]:
    """Create a signal, or return the existing one with the same identity. (signal, created)."""
    now = now or timezone.now()
    symbol = symbol.upper()
    errors = signal_errors(
        kind=kind,
        symbol=symbol,
        interval=interval,
        side=side,
        entry_type=entry_type,
        entry_price=entry_price,
        stop_price=stop_price,
        take_profit_price=take_profit_price,
        reference_price=reference_price,
    )
    if errors:
        raise ValidationError(errors)
    candle = floor_to_interval(candle_time or now, interval)
    identity = {
        "source_key": source_key,
        "symbol": symbol,
        "interval": interval,
        "candle_time": candle,
        "kind": kind,
    }
    defaults = {
        "source": source,
        "owner": owner,
        "strategy": strategy,
        "params_hash": params_hash(params) if source == SignalSource.STRATEGY else "",
        "side": side if kind == SignalKind.ARM else "",
        "entry_type": entry_type if kind == SignalKind.ARM else "",
        "entry_price": entry_price,
        "stop_price": stop_price,
        "take_profit_price": take_profit_price,
        "reference_price": reference_price,
        "target_bot_ids": sorted(set(target_bot_ids or [])),
        "reason": reason[:200],
        "expires_at": expires_at or now + timedelta(seconds=settings.SIGNAL_DEFAULT_TTL_S),
    }
    try:
        with transaction.atomic():
            return Signal.objects.get_or_create(**identity, defaults=defaults)
    except IntegrityError:  # the same signal, created concurrently
        return Signal.objects.get(**identity), False


def signal_recipients(*, signal: Signal) -> list[Bot]:
    """Active bots that receive ``signal``: for a strategy signal, every bot whose strategy,
    params, symbol and interval match; for an API or webhook signal, the named bots of its
    owner, or all of the owner's active bots on the symbol."""
    bots = Bot.objects.filter(status=BotStatus.ACTIVE, symbol=signal.symbol)
    if signal.source == SignalSource.STRATEGY:
        candidates = bots.filter(strategy=signal.strategy, interval=signal.interval)
        return [b for b in candidates if params_hash(b.strategy_params) == signal.params_hash]
    bots = bots.filter(owner_id=signal.owner_id)
    if signal.target_bot_ids:
        bots = bots.filter(pk__in=signal.target_bot_ids)
    return list(bots)


def signal_fan_out(*, signal: Signal) -> list[int]:
    """Create one delivery per receiving bot (once: unique per signal and bot) and, after the
    commit, enqueue their execution as a Celery group on the ``execution`` queue. Returns the
    ids of the deliveries still pending (a repeated fan-out enqueues nothing new)."""
    from execution.tasks import execute_delivery

    bots = signal_recipients(signal=signal)
    with transaction.atomic():
        SignalDelivery.objects.bulk_create(
            [SignalDelivery(signal=signal, bot=bot) for bot in bots], ignore_conflicts=True
        )
        fresh = list(
            SignalDelivery.objects.filter(
                signal=signal, bot__in=bots, status=DeliveryStatus.PENDING, attempts=0
            ).values_list("pk", flat=True)
        )
        if fresh:
            transaction.on_commit(
                lambda: group(execute_delivery.s(pk) for pk in fresh).apply_async(queue="execution")
            )
    return fresh


# --- webhook tokens ---------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def webhook_token_rotate(*, owner: Any) -> str:
    """A new webhook token for ``owner`` (the old one stops working). Shown once."""
    token = secrets.token_urlsafe(32)
    WebhookToken.objects.update_or_create(owner=owner, defaults={"digest": _digest(token)})
    return token


def webhook_token_owner(*, token: str) -> Any | None:
    """The user a webhook token belongs to, or None. The digest comparison is constant-time."""
    digest = _digest(token)
    row = WebhookToken.objects.filter(digest=digest).select_related("owner").first()
    if row is None or not hmac.compare_digest(row.digest, digest):
        return None
    return row.owner
