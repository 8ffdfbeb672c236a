"""Building venues from configuration and credentials; exchangeInfo kept fresh for them.

This is the one place where a credential is decrypted (``trader.crypto.credential_key_pair``),
because it is where a venue client is built. Nothing here holds the keys beyond the client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from execution.circuit import circuit_state, record_error
from execution.governor import RateGovernor
from execution.models import (
    Cooldown,
    DeliveryStatus,
    KillScope,
    KillSwitch,
    Order,
    OrderEvent,
    OrderLeg,
    SignalDelivery,
)
from execution.risk import Exposure, RiskInput, RiskLimits, evaluate
from execution.rules import SymbolRules, parse_exchange_info
from execution.selectors import (
    OpenTrade,
    cooldown_until,
    day_and_week_start,
    kill_state,
    open_trades,
    realized_pnl_since,
    unfilled_entries,
)
from execution.sizing import SizeInput, position_size
from execution.states import (
    OPEN,
    IllegalTransition,
    OrderState,
    check_transition,
    from_algo_status,
    from_regular_status,
    is_legal,
)
from execution.venues import errors
from execution.venues.base import OrderRequest, OrderType, Side, TimeInForce, VenueOrder
from execution.venues.binance import LIVE_URL, TESTNET_URL, BinanceFuturesVenue, VenueSettings
from signals.models import Signal
from trader.alerts import alert
from trader.clock import market_now, market_speed
from trader.crypto import credential_key_pair
from trader.domain import INTERVAL_SECONDS
from trader.models import ApiCredential, Bot, Environment

log = logging.getLogger(__name__)

EXCHANGE_INFO_CACHE_KEY = "execution:exchange_info:{base_url}"


class DeliveryDeferred(Exception):
    """The delivery could not start yet (rate budget) and nothing was sent: run it again later.
    The task re-queues it with a countdown; it stays PENDING meanwhile."""

    def __init__(self, delivery_id: int, retry_after_s: float, reason: str) -> None:
        super().__init__(f"delivery {delivery_id} deferred {retry_after_s:.1f}s: {reason}")
        self.delivery_id = delivery_id
        self.retry_after_s = retry_after_s
        self.reason = reason


class TradingNotAllowed(Exception):
    """The safety ladder (DRY_RUN -> TESTNET -> LIVE) forbids this venue now."""


def base_url_for(environment: str) -> str:
    """The futures root for an environment; ``BINANCE_BASE_URL`` (the emulator) wins."""
    if settings.BINANCE_BASE_URL:
        return str(settings.BINANCE_BASE_URL).rstrip("/")
    return LIVE_URL if environment == Environment.LIVE else TESTNET_URL


def venue_settings(*, environment: str) -> VenueSettings:
    return VenueSettings(
        base_url=base_url_for(environment),
        timeout_ms=settings.BINANCE_TIMEOUT_MS,
        recv_window_ms=settings.RECV_WINDOW_MS,
        clock_resync_s=settings.CLOCK_RESYNC_S,
        max_clock_skew_ms=settings.CLOCK_SKEW_MAX_MS,
        rules_ttl_s=settings.EXCHANGE_INFO_REFRESH_S or 600.0,
    )


def ensure_environment_allowed(environment: str) -> None:
    """Real money only on the top rung: LIVE needs TRADING_MODE=LIVE and the confirmation."""
    if environment == Environment.LIVE and not (
        settings.TRADING_MODE == "LIVE" and settings.LIVE_TRADING_CONFIRM
    ):
        raise TradingNotAllowed(
            f"refusing a LIVE venue: TRADING_MODE={settings.TRADING_MODE}; LIVE trading needs "
            "TRADING_MODE=LIVE and LIVE_TRADING_CONFIRM=yes (DRY_RUN -> TESTNET -> LIVE)"
        )


@functools.cache
def _governor_for(url: str) -> RateGovernor:
    return RateGovernor(redis.Redis.from_url(url), ip_key="binance")


def rate_governor() -> RateGovernor | None:
    """The process-wide governor on Redis, or None without Redis (a single-process demo)."""
    url = settings.RATE_GOVERNOR_REDIS_URL
    return _governor_for(url) if url else None


def venue_for_keys(
    *, api_key: str, api_secret: str, environment: str, account_key: str
) -> BinanceFuturesVenue:
    ensure_environment_allowed(environment)
    venue = BinanceFuturesVenue(
        api_key=api_key,
        api_secret=api_secret,
        settings=venue_settings(environment=environment),
        governor=rate_governor(),
        account_key=account_key,
    )
    cached = cache.get(EXCHANGE_INFO_CACHE_KEY.format(base_url=venue.settings.base_url))
    if cached:
        venue.seed_rules(cached)
    # The position mode is per account and changes only by hand: asking for it costs weight 30,
    # so one answer serves every venue of the account for POSITION_MODE_CACHE_S.
    dual_key = f"execution:dual:{venue.settings.base_url}:{account_key}"
    dual = cache.get(dual_key)
    if dual is not None:
        venue.seed_position_mode(bool(dual))
    else:
        venue.on_position_mode = lambda value: cache.set(
            dual_key, value, settings.POSITION_MODE_CACHE_S
        )
    return venue


def venue_for_credential(*, credential: ApiCredential) -> BinanceFuturesVenue:
    """A venue trading with ``credential``'s keys on its environment."""
    if not credential.is_active:
        raise TradingNotAllowed(f"credential {credential.pk} is inactive")
    ensure_environment_allowed(credential.environment)
    pair = credential_key_pair(credential=credential)
    return venue_for_keys(
        api_key=pair.api_key,
        api_secret=pair.api_secret,
        environment=credential.environment,
        account_key=f"credential-{credential.pk}",
    )


def exchange_info_refresh(*, environment: str = Environment.TESTNET) -> dict[str, SymbolRules]:
    """Fetch exchangeInfo (unsigned, no keys) and share it with every process through the cache."""
    base = base_url_for(environment)
    venue = BinanceFuturesVenue(
        api_key="",
        api_secret="",
        settings=venue_settings(environment=environment),
        governor=rate_governor(),
        account_key="public",
    )
    payload: dict[str, Any] = venue.client.futures_exchange_info()
    rules = parse_exchange_info(payload)  # validate before sharing: bad data never replaces good
    ttl = int(settings.EXCHANGE_INFO_REFRESH_S * 3) or 1800
    cache.set(EXCHANGE_INFO_CACHE_KEY.format(base_url=base), payload, ttl)
    not_trading = sorted(s for s, r in rules.items() if not r.tradable)
    log.info(
        "exchangeInfo from %s: %d symbols, %d not TRADING%s",
        base,
        len(rules),
        len(not_trading),
        f" ({', '.join(not_trading[:10])})" if not_trading else "",
    )
    return rules


# =============================================================================================
# Orders: state transitions in one place
# =============================================================================================


def order_transition(
    *,
    order_id: int,
    to_state: str,
    cause: str,
    detail: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Order:
    """Move an order to ``to_state`` (legal transitions only) and record the event.

    Staying in the same state updates ``fields`` without an event, except PARTIALLY_FILLED
    whose fills changed (a new event per fill). An illegal transition raises
    ``IllegalTransition``; an older report can never move a newer state backwards.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        current = order.state
        changed_fill = "filled_qty" in fields and Decimal(fields["filled_qty"]) != order.filled_qty
        same = current == to_state
        if not same:
            check_transition(current, to_state)
        for name, value in fields.items():
            setattr(order, name, value)
        order.state = to_state
        order.save()
        if not same or (to_state == OrderState.PARTIALLY_FILLED and changed_fill):
            OrderEvent.objects.create(
                order=order,
                from_state=current,
                to_state=to_state,
                cause=cause[:64],
                detail=_jsonable(detail or {}),
            )
        return order


def order_note(*, order: Order, cause: str, detail: Mapping[str, Any] | None = None) -> None:
    """An event without a state change (a failed attempt, a retry)."""
    OrderEvent.objects.create(
        order=order,
        from_state=order.state,
        to_state=order.state,
        cause=cause[:64],
        detail=_jsonable(detail or {}),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _state_of(venue_order: VenueOrder) -> OrderState:
    if venue_order.is_algo:
        filled = venue_order.status == "FINISHED" and venue_order.avg_price > 0
        return from_algo_status(venue_order.status, filled=filled)
    return from_regular_status(venue_order.status)


def order_apply_venue(*, order: Order, venue_order: VenueOrder, cause: str) -> Order:
    """Record what the venue says about ``order``. A report that would move the order
    backwards (stale) is recorded as a note and ignored."""
    state = _state_of(venue_order)
    filled = venue_order.executed_qty
    if venue_order.is_algo and state == OrderState.FILLED:
        filled = venue_order.quantity or order.quantity
    fields: dict[str, Any] = {
        "venue_order_id": venue_order.venue_id,
        "venue_status": venue_order.status,
        "filled_qty": max(filled, order.filled_qty),
        "avg_price": venue_order.avg_price or order.avg_price,
    }
    if venue_order.update_time_ms > order.venue_update_ms:
        fields["venue_update_ms"] = venue_order.update_time_ms
    if order.state != state and not is_legal(order.state, state):
        order_note(
            order=order,
            cause="stale venue report ignored",
            detail={"venue_status": venue_order.status, "state": order.state},
        )
        return order
    try:
        return order_transition(order_id=order.pk, to_state=state, cause=cause, **fields)
    except IllegalTransition:
        # Another report (the stream, a placement) moved the order on meanwhile: under the
        # row lock this one turned out older than what is recorded, so it changes nothing.
        order.refresh_from_db()
        order_note(
            order=order,
            cause="stale venue report ignored",
            detail={"venue_status": venue_order.status, "state": order.state},
        )
        return order


# =============================================================================================
# Venues for bots
# =============================================================================================


def venue_for_bot(*, bot: Bot) -> Any:
    """DRY_RUN: the bot's paper account (shared by every worker). TESTNET/LIVE: its credential."""
    if settings.TRADING_MODE == "DRY_RUN":
        from execution.venues.paper_store import PersistentPaperVenue

        return PersistentPaperVenue(bot_id=bot.pk)
    if bot.credential is None:
        raise TradingNotAllowed(
            f"bot {bot.pk} has no credential: it can only paper-trade (DRY_RUN)"
        )
    return venue_for_credential(credential=bot.credential)


def account_key_for(*, bot: Bot) -> str:
    """Who shares rate limits, balances and circuit breakers: the exchange account."""
    if settings.TRADING_MODE == "DRY_RUN":
        return f"paper-bot-{bot.pk}"
    return f"credential-{bot.credential_id}"


def market_price(*, symbol: str) -> Decimal | None:
    """The latest known market price (set by market-data ingestion), or None."""
    raw = cache.get(f"market:price:{symbol}")
    return Decimal(str(raw)) if raw is not None else None


def _balances(venue: Any, account: str) -> tuple[Decimal, Decimal]:
    """(wallet, available) in USDT, cached briefly per account."""
    key = f"execution:balance:{account}"
    cached = cache.get(key)
    if cached is None:
        usdt = next((b for b in venue.balances() if b.asset == "USDT"), None)
        cached = (str(usdt.wallet_balance), str(usdt.available_balance)) if usdt else ("0", "0")
        cache.set(key, cached, settings.BALANCE_CACHE_S)
    return Decimal(cached[0]), Decimal(cached[1])


def _ensure_leverage(venue: Any, account: str, bot: Bot) -> None:
    key = f"execution:leverage:{account}:{bot.symbol}"
    if cache.get(key) != bot.leverage:
        venue.set_leverage(symbol=bot.symbol, leverage=bot.leverage)
        cache.set(key, bot.leverage, 3600)


# =============================================================================================
# Signal delivery: risk, sizing, placement with compensation
# =============================================================================================

TEMPORARY = (errors.RateLimited, errors.TimestampRejected, errors.ClockSkewError)


def client_order_id(*, delivery_id: int, leg: str) -> str:
    """Deterministic: (delivery, leg) always gives the same id, valid for Binance's pattern."""
    code = {"ENTRY": "E", "STOP_LOSS": "SL", "TAKE_PROFIT": "TP"}.get(leg, leg)
    return f"{settings.CLIENT_ID_PREFIX}{delivery_id}-{code}"


def _finish(
    delivery: SignalDelivery, status: str, code: str, reason: str, **decision: Any
) -> SignalDelivery:
    SignalDelivery.objects.filter(pk=delivery.pk).update(
        status=status,
        reason_code=code[:32],
        reason=reason,
        decision={**delivery.decision, **_jsonable(decision)},
        finished_at=timezone.now(),
    )
    delivery.refresh_from_db()
    log.info("delivery %s -> %s %s %s", delivery.pk, status, code, reason)
    return delivery


@contextlib.contextmanager
def _delivery_claim(delivery_id: int) -> Iterator[bool]:
    """Yield True if this is the only live run of the delivery, False if another one is.

    A redelivered run that follows a dead one settles its orders by client id, but two live
    runs at once (a task enqueued twice, or redelivered while the first still runs) could both
    find an order absent at the venue and both send it: a MARKET entry would fill twice. On
    Postgres a session-level advisory lock makes runs exclusive without holding a transaction
    open across venue calls; it is released at the end, or by the server when a killed run's
    connection closes. SQLite (the single-machine demo) has no such lock and is not guarded.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    digest = hashlib.blake2b(f"delivery:{delivery_id}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        claimed = bool(cursor.fetchone()[0])
    try:
        yield claimed
    finally:
        if claimed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def delivery_execute(*, delivery_id: int, now: datetime | None = None) -> SignalDelivery:
    """Execute one signal for one bot. Safe to run twice: a redelivered task finds the orders
    of the first run (unique per delivery and leg) and settles them instead of placing more;
    a run that starts while another is live leaves the delivery to that one (if it dies, the
    broker redelivers its message)."""
    with _delivery_claim(delivery_id) as claimed:
        if not claimed:
            log.warning("delivery %s is being executed by another run: left to it", delivery_id)
            return SignalDelivery.objects.get(pk=delivery_id)
        return _delivery_execute(delivery_id=delivery_id, now=now)


def _delivery_execute(*, delivery_id: int, now: datetime | None) -> SignalDelivery:
    now = now or timezone.now()
    delivery = SignalDelivery.objects.select_related("signal", "bot", "bot__credential").get(
        pk=delivery_id
    )
    if delivery.status != DeliveryStatus.PENDING:
        return delivery
    SignalDelivery.objects.filter(pk=delivery.pk).update(
        attempts=F("attempts") + 1, started_at=Coalesce(F("started_at"), Value(now))
    )
    signal = delivery.signal
    try:
        if now > signal.expires_at and not delivery.orders.exists():
            return _finish(
                delivery,
                DeliveryStatus.SKIPPED,
                "STALE_SIGNAL",
                f"signal expired at {signal.expires_at.isoformat()}",
            )
        if signal.kind == "DISARM":
            return _disarm(delivery)
        return _arm(delivery, now)
    except TradingNotAllowed as exc:
        return _finish(delivery, DeliveryStatus.SKIPPED, "TRADING_MODE", str(exc))
    except DeliveryDeferred:
        raise
    except Exception as exc:
        log.exception("delivery %s failed", delivery.pk)
        placed = delivery.orders.exclude(
            state__in=[OrderState.PENDING, OrderState.REJECTED]
        ).exists()
        if placed:
            alert(
                "CRITICAL",
                f"delivery_error:{delivery.pk}",
                f"delivery {delivery.pk} failed after orders reached the venue: "
                f"{type(exc).__name__}",
                {"bot": delivery.bot_id, "signal": signal.pk},
                owner_id=delivery.bot.owner_id,
            )
        _finish(delivery, DeliveryStatus.FAILED, "ERROR", f"{type(exc).__name__}: {exc}"[:500])
        raise


def _exposure(bot: Bot, trades: list[OpenTrade]) -> Exposure:
    def total(selected: list[OpenTrade]) -> Decimal:
        return sum((t.notional for t in selected), Decimal(0))

    mine = [t for t in trades if t.bot_id == bot.pk]
    return Exposure(
        open_positions=len(mine),
        bot_notional=total(mine),
        symbol_notional=total(
            [t for t in trades if t.owner_id == bot.owner_id and t.symbol == bot.symbol]
        ),
        user_notional=total([t for t in trades if t.owner_id == bot.owner_id]),
        account_notional=total(
            [
                t
                for t in trades
                if bot.credential_id is not None and t.credential_id == bot.credential_id
            ]
        ),
    )


def _optional_decimal(raw: str) -> Decimal | None:
    return Decimal(raw) if raw else None


def _candle_close_on_wall(candle_time: datetime, interval_s: int, now: datetime) -> datetime:
    """When the signal's candle closed, in wall time. Against Binance market time is wall time;
    on an emulator replaying ``speed`` times faster the market clock runs ahead, and the
    candle's market age is scaled back to wall seconds (``trader.clock``)."""
    close = candle_time + timedelta(seconds=interval_s)
    if settings.MARKET_CLOCK != "emulator":
        return close
    market_age = (market_now() - close).total_seconds()
    return now - timedelta(seconds=market_age / float(market_speed()))


def _risk_input(
    *,
    bot: Bot,
    signal: Signal,
    now: datetime,
    equity: Decimal,
    rules: Any,
    new_notional: Decimal,
    account: str,
) -> RiskInput:
    owner_bots = list(Bot.objects.filter(owner_id=bot.owner_id).values_list("pk", flat=True))
    credential_bots = (
        list(Bot.objects.filter(credential_id=bot.credential_id).values_list("pk", flat=True))
        if bot.credential_id
        else []
    )
    trades = open_trades(bot_ids=sorted(set(owner_bots) | set(credential_bots)))
    day, week = day_and_week_start(now)
    interval_s = INTERVAL_SECONDS.get(signal.interval, 60)
    open_circuit, circuit_reason = circuit_state(account)
    return RiskInput(
        now=now,
        kill=kill_state(bot=bot),
        bot_status=bot.status,
        trading_mode=settings.TRADING_MODE,
        bot_environment=bot.environment,
        has_credential=bot.credential_id is not None,
        symbol_tradable=None if rules is None else bool(rules.tradable),
        candle_close_time=_candle_close_on_wall(signal.candle_time, interval_s, now)
        if signal.source == "STRATEGY"
        else None,
        max_data_age=timedelta(
            seconds=interval_s * settings.MAX_SIGNAL_CANDLE_AGE_INTERVALS / float(market_speed())
        ),
        cooldown_until=cooldown_until(bot_id=bot.pk, symbol=signal.symbol, now=now),
        exposure=_exposure(bot, trades),
        new_notional=new_notional,
        limits=RiskLimits(
            max_open_positions=bot.max_open_positions,
            max_position_notional=bot.max_position_notional,
            max_symbol_notional=_optional_decimal(settings.MAX_SYMBOL_NOTIONAL_USDT),
            max_user_notional=_optional_decimal(settings.MAX_USER_NOTIONAL_USDT),
            max_account_notional=_optional_decimal(settings.MAX_ACCOUNT_NOTIONAL_USDT),
            daily_loss_limit_pct=bot.daily_loss_limit_pct,
            weekly_loss_limit_pct=_optional_decimal(settings.WEEKLY_LOSS_LIMIT_PCT),
        ),
        equity=equity,
        realized_pnl_day=realized_pnl_since(bot_ids=[bot.pk], since=day),
        realized_pnl_week=realized_pnl_since(bot_ids=[bot.pk], since=week),
        circuit_open=open_circuit,
        circuit_reason=circuit_reason,
        symbol=signal.symbol,
        **_feed_staleness(bot),
    )


def _feed_staleness(bot: Bot) -> dict[str, Any]:
    """The data-staleness breaker's input: how old the newest candle of the bot's feed is, and
    the most it may be (``INGEST_STALE_INTERVALS`` intervals), both in market time."""
    from ingest.feeds import Feed
    from ingest.selectors import feed_freshness

    feed = Feed(bot.symbol, bot.interval)
    if bot.interval not in INTERVAL_SECONDS:
        return {}
    (freshness,) = feed_freshness(feeds=[feed])
    limit = INTERVAL_SECONDS[bot.interval] * float(settings.INGEST_STALE_INTERVALS)
    return {
        "feed": str(feed),
        "feed_age": None
        if freshness.age_seconds is None
        else timedelta(seconds=freshness.age_seconds),
        "max_feed_age": timedelta(seconds=limit),
    }


def _arm(delivery: SignalDelivery, now: datetime) -> SignalDelivery:
    bot, signal = delivery.bot, delivery.signal
    venue = venue_for_bot(bot=bot)
    account = account_key_for(bot=bot)
    existing = list(delivery.orders.all())
    if existing:  # a redelivery: settle what the first run left, place nothing twice
        return _drive(delivery, venue, account)
    try:
        rules = venue.rules_for(signal.symbol)
    except errors.PreflightError:
        rules = None
    except errors.RateLimited as exc:
        raise DeliveryDeferred(delivery.pk, exc.retry_after_s or 5.0, str(exc)) from None
    if settings.TRADING_MODE == "DRY_RUN":
        price = market_price(symbol=signal.symbol) or signal.reference_price or signal.entry_price
        if price is None:
            return _finish(
                delivery,
                DeliveryStatus.SKIPPED,
                "NO_MARKET_PRICE",
                f"no market price known for {signal.symbol} to paper-trade against",
            )
        venue.feed_price(signal.symbol, Decimal(price))
    try:
        wallet, available = _balances(venue, account)
        risk_input = _risk_input(
            bot=bot,
            signal=signal,
            now=now,
            equity=wallet,
            rules=rules,
            new_notional=Decimal(0),
            account=account,
        )
        decision = evaluate(risk_input)
        if not decision.allowed:
            return _finish(
                delivery,
                DeliveryStatus.SKIPPED,
                str(decision.code),
                decision.reason,
                risk=decision.as_dict(),
            )
        if rules is None:  # unreachable: the risk check refuses an unknown symbol
            raise TradingNotAllowed(f"no exchange rules for {signal.symbol}")
        mark = venue.mark_price(signal.symbol)
        entry_price = signal.entry_price if signal.entry_type == "LIMIT" else mark
        if entry_price is None or signal.stop_price is None:  # the model's check forbids it
            raise TradingNotAllowed(f"signal {signal.pk} has no entry or stop price")
        size = position_size(
            SizeInput(
                equity=wallet,
                risk_pct=bot.risk_per_trade_pct,
                entry_price=Decimal(entry_price),
                stop_price=Decimal(signal.stop_price),
                side=Side(signal.side),
                entry_is_maker=signal.entry_type == "LIMIT",
                maker_fee=Decimal(settings.MAKER_FEE),
                taker_fee=Decimal(settings.TAKER_FEE),
                max_notional=bot.max_position_notional,
                leverage=bot.leverage,
                available_balance=available,
                rules=rules,
                market_entry=signal.entry_type == "MARKET",
            )
        )
        if size.reason:
            return _finish(
                delivery, DeliveryStatus.SKIPPED, size.reason, size.detail, risk=decision.as_dict()
            )
        # The same facts, now with the order's notional: gathering them again (six queries,
        # about 15 % of a placement's time) would read the same rows.
        decision = evaluate(dataclasses.replace(risk_input, new_notional=size.notional))
        if not decision.allowed:
            return _finish(
                delivery,
                DeliveryStatus.SKIPPED,
                str(decision.code),
                decision.reason,
                risk=decision.as_dict(),
            )
        # Before any order row exists: a venue that refuses or cannot be reached here (rate
        # limit, timeout, leverage rejected) must not leave never-sent PENDING orders behind,
        # which would count as an open trade of the bot for ever.
        _ensure_leverage(venue, account, bot)
    except errors.RateLimited as exc:
        # Nothing was sent: wait for the budget instead of failing (the signal's expiry still
        # bounds how long); a venue answer (429/418) also counts toward the circuit breaker.
        if exc.http_status is not None:
            record_error(account, reason=f"RateLimited {exc.code}")
        raise DeliveryDeferred(delivery.pk, exc.retry_after_s or 5.0, str(exc)) from None
    except (*TEMPORARY, errors.UnknownOutcome, errors.AuthRejected) as exc:
        record_error(account, reason=f"{type(exc).__name__} {exc.code}")
        return _finish(
            delivery, DeliveryStatus.FAILED, "VENUE_UNAVAILABLE", f"{type(exc).__name__}: {exc}"
        )
    sizing = {
        "quantity": size.quantity,
        "notional": size.notional,
        "risk_amount": size.risk_amount,
        "entry_price": entry_price,
        "equity": wallet,
    }
    SignalDelivery.objects.filter(pk=delivery.pk).update(
        decision=_jsonable({"risk": decision.as_dict(), "sizing": sizing})
    )
    delivery.refresh_from_db()
    exit_side = "SELL" if signal.side == "BUY" else "BUY"
    common = {
        "bot": bot,
        "delivery": delivery,
        "venue": venue.name,
        "credential_id": bot.credential_id,
        "symbol": signal.symbol,
    }
    try:
        with transaction.atomic():
            Order.objects.bulk_create(
                [
                    Order(
                        **common,
                        leg=OrderLeg.ENTRY,
                        side=signal.side,
                        type=signal.entry_type,
                        quantity=size.quantity,
                        price=signal.entry_price if signal.entry_type == "LIMIT" else None,
                        client_order_id=client_order_id(delivery_id=delivery.pk, leg="ENTRY"),
                    ),
                    Order(
                        **common,
                        leg=OrderLeg.STOP_LOSS,
                        side=exit_side,
                        type="STOP_MARKET",
                        is_algo=True,
                        reduce_only=True,
                        quantity=size.quantity,
                        trigger_price=signal.stop_price,
                        client_order_id=client_order_id(delivery_id=delivery.pk, leg="STOP_LOSS"),
                    ),
                    *(
                        [
                            Order(
                                **common,
                                leg=OrderLeg.TAKE_PROFIT,
                                side=exit_side,
                                type="TAKE_PROFIT_MARKET",
                                is_algo=True,
                                reduce_only=True,
                                quantity=size.quantity,
                                trigger_price=signal.take_profit_price,
                                client_order_id=client_order_id(
                                    delivery_id=delivery.pk, leg="TAKE_PROFIT"
                                ),
                            )
                        ]
                        if signal.take_profit_price
                        else []
                    ),
                ]
            )
    except IntegrityError:  # a concurrent run of the same delivery created them first
        return _drive(delivery, venue, account)
    return _drive(delivery, venue, account)


def _request(order: Order) -> OrderRequest:
    return OrderRequest(
        symbol=order.symbol,
        side=Side(order.side),
        type=OrderType(order.type),
        quantity=order.quantity,
        price=order.price,
        trigger_price=order.trigger_price,
        time_in_force=TimeInForce.GTC if order.type == "LIMIT" else None,
        reduce_only=order.reduce_only,
        client_id=order.client_order_id,
    )


def _lookup(order: Order, venue: Any) -> VenueOrder | None:
    """The venue's view of ``order`` by client id; None if it has no such order."""
    try:
        if order.is_algo:
            return venue.get_algo_order(symbol=order.symbol, client_id=order.client_order_id)
        return venue.get_order(symbol=order.symbol, client_id=order.client_order_id)
    except errors.NotFound:
        return None


def _mark_sent(order: Order) -> bool:
    """Claim the send: only a PENDING order is sent (a DISARM or kill switch may have cancelled
    it meanwhile, under the same row lock)."""
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.state != OrderState.PENDING:
            return False
        locked.sent_at = timezone.now()
        locked.attempts += 1
        locked.save(update_fields=["sent_at", "attempts", "updated_at"])
        return True


def order_settle(*, order: Order, venue: Any, account: str, attempts: int = 1) -> Order:
    """Bring a PENDING or UNKNOWN order to a known state, never sending it blindly.

    An order that may have reached the venue (UNKNOWN, or PENDING already sent) is first looked
    up by client id; it is sent again only when the venue provably does not have it, and at
    most ``attempts`` sends happen here (a rejected order does not occupy its client id, so a
    retry reuses it). Ends in a venue state, REJECTED, or UNKNOWN when the venue cannot be
    reached to find out (the monitor resolves it later).
    """
    sends = 0
    known_absent = False
    while True:
        order.refresh_from_db()
        if order.state not in (OrderState.PENDING, OrderState.UNKNOWN):
            return order
        may_exist = order.state == OrderState.UNKNOWN or order.sent_at is not None
        if may_exist and not known_absent:
            try:
                found = _lookup(order, venue)
            except errors.VenueError as exc:
                record_error(account, reason=f"lookup {type(exc).__name__}")
                if order.state == OrderState.PENDING:
                    order = order_transition(
                        order_id=order.pk,
                        to_state=OrderState.UNKNOWN,
                        cause="lookup failed",
                        last_error=str(exc)[:500],
                    )
                return order
            if found is not None:
                return order_apply_venue(
                    order=order, venue_order=found, cause="resolved by client id"
                )
        if sends >= attempts:
            return order_transition(
                order_id=order.pk,
                to_state=OrderState.REJECTED,
                cause="not placed",
                detail={"sends": sends},
                last_error=order.last_error or "not placed",
            )
        if order.state == OrderState.UNKNOWN:  # proven absent: it was never placed
            order = order_transition(
                order_id=order.pk, to_state=OrderState.PENDING, cause="absent at venue: not placed"
            )
        if not _mark_sent(order):
            order.refresh_from_db()
            return order  # cancelled meanwhile (DISARM, kill switch): do not send
        sends += 1
        known_absent = False
        try:
            placed = (venue.place_algo_order if order.is_algo else venue.place_order)(
                _request(order)
            )
        except errors.UnknownOutcome as exc:
            record_error(account, reason=f"UnknownOutcome {exc.code}")
            order_transition(
                order_id=order.pk,
                to_state=OrderState.UNKNOWN,
                cause="unknown outcome",
                detail={"error": str(exc)},
                last_error=str(exc)[:500],
            )
            continue  # look it up before anything else
        except (
            errors.OrderRejected,
            errors.PreflightError,
            errors.AuthRejected,
            *TEMPORARY,
        ) as exc:
            if not isinstance(exc, errors.OrderRejected | errors.PreflightError):
                record_error(account, reason=type(exc).__name__)
            Order.objects.filter(pk=order.pk).update(last_error=str(exc)[:500])
            order_note(order=order, cause=f"send {sends} refused", detail={"error": str(exc)})
            known_absent = True
            continue
        return order_apply_venue(order=order, venue_order=placed, cause="placed")


def order_cancel(*, order: Order, venue: Any, account: str, cause: str) -> Order:
    """Cancel ``order`` wherever it is: never sent -> CANCELED locally (under the row lock the
    sender also takes); at the venue -> cancelled there; absent there -> CANCELED."""
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.state == OrderState.PENDING and locked.sent_at is None:
            locked.state = OrderState.CANCELED
            locked.save(update_fields=["state", "updated_at"])
            OrderEvent.objects.create(
                order=locked,
                from_state=OrderState.PENDING,
                to_state=OrderState.CANCELED,
                cause=f"{cause} (never sent)",
            )
            return locked
    order = (
        order_settle(order=order, venue=venue, account=account, attempts=0)
        if order.state in (OrderState.PENDING, OrderState.UNKNOWN)
        else order
    )
    order.refresh_from_db()
    if order.state not in (OrderState.NEW, OrderState.PARTIALLY_FILLED):
        return order
    try:
        cancelled = (venue.cancel_algo_order if order.is_algo else venue.cancel_order)(
            symbol=order.symbol, client_id=order.client_order_id
        )
    except errors.NotFound:
        found = _lookup(order, venue)
        if found is None:
            return order_transition(
                order_id=order.pk, to_state=OrderState.CANCELED, cause=f"{cause}: absent at venue"
            )
        return order_apply_venue(order=order, venue_order=found, cause=cause)
    return order_apply_venue(order=order, venue_order=cancelled, cause=cause)


def position_close(
    *, entry: Order, venue: Any, account: str, qty: Decimal, cause: str
) -> Order | None:
    """Close ``qty`` of the position an entry opened with a reduce-only MARKET order (its own
    ``CLOSE`` leg with a fresh deterministic client id)."""
    if qty <= 0:
        return None
    n = Order.objects.filter(delivery=entry.delivery, leg=OrderLeg.CLOSE).count() + 1
    close = Order.objects.create(
        bot_id=entry.bot_id,
        delivery=entry.delivery,
        leg=OrderLeg.CLOSE,
        venue=entry.venue,
        credential_id=entry.credential_id,
        symbol=entry.symbol,
        side="SELL" if entry.side == "BUY" else "BUY",
        type="MARKET",
        reduce_only=True,
        quantity=qty,
        client_order_id=f"{settings.CLIENT_ID_PREFIX}{entry.delivery_id}-X{n}",
    )
    order_note(order=close, cause=cause)
    return order_settle(order=close, venue=venue, account=account, attempts=2)


def _legs(delivery: SignalDelivery) -> dict[str, Order]:
    """Each leg's latest generation (a protective order resized to a partial fill)."""
    from execution.lifecycle import latest_legs

    return latest_legs(delivery.pk)


def _drive(delivery: SignalDelivery, venue: Any, account: str) -> SignalDelivery:
    """Entry, then stop-loss, then take-profit; the same path for a first run and a redelivery."""
    legs = _legs(delivery)
    entry, stop, take = (
        legs[OrderLeg.ENTRY],
        legs[OrderLeg.STOP_LOSS],
        legs.get(OrderLeg.TAKE_PROFIT),
    )
    owner = delivery.bot.owner_id
    if entry.state == OrderState.PENDING and entry.sent_at is None:
        kill = kill_state(bot=delivery.bot)
        if any(
            (kill.global_on, kill.user_on, kill.bot_on, kill.file_on)
        ):  # last look before sending
            for order in (entry, stop, take):
                if order is not None:
                    order_cancel(order=order, venue=venue, account=account, cause="kill switch")
            return _finish(
                delivery,
                DeliveryStatus.SKIPPED,
                "KILL_SWITCH",
                "kill switch engaged before the entry was sent",
            )
    entry = order_settle(order=entry, venue=venue, account=account, attempts=1)
    if (
        entry.state in (OrderState.REJECTED, OrderState.CANCELED, OrderState.EXPIRED)
        and not entry.filled_qty
    ):
        for order in (stop, take):
            if order is not None:
                order_cancel(order=order, venue=venue, account=account, cause="entry not placed")
        # REJECTED: the venue refused it (or it proved absent); CANCELED: withdrawn before it
        # was sent (kill switch, DISARM).
        code = "ENTRY_REJECTED" if entry.state == OrderState.REJECTED else "ENTRY_CANCELLED"
        return _finish(
            delivery, DeliveryStatus.FAILED, code, entry.last_error or f"entry {entry.state}"
        )
    # The entry is live, filled, or UNKNOWN (may exist): protect it either way. Protective
    # orders are reduce-only, so they do nothing if the entry never fills.
    stop = order_settle(order=stop, venue=venue, account=account, attempts=2)
    if stop.state not in (OrderState.NEW, OrderState.FILLED, OrderState.PARTIALLY_FILLED):
        return _stop_loss_emergency(delivery, entry, stop, take, venue, account)
    if take is not None:
        take = order_settle(
            order=take, venue=venue, account=account, attempts=1 + settings.TAKE_PROFIT_RETRIES
        )
        if take.state not in (OrderState.NEW, OrderState.FILLED, OrderState.UNKNOWN):
            alert(
                "WARNING",
                f"take_profit_failed:{delivery.pk}",
                f"take-profit of bot {delivery.bot_id} on {entry.symbol} could not be placed "
                f"after {1 + settings.TAKE_PROFIT_RETRIES} attempts; the stop-loss is in place",
                {"delivery": delivery.pk, "error": take.last_error},
                owner_id=owner,
            )
    entry.refresh_from_db()
    if entry.filled_qty > 0:  # the trade's position exists from its first fill
        from execution.lifecycle import position_sync

        position_sync(delivery_id=delivery.pk)
    summary = {
        "entry": entry.state,
        "filled": entry.filled_qty,
        "stop_loss": stop.state,
        "take_profit": take.state if take else None,
    }
    if entry.state == OrderState.UNKNOWN:
        alert(
            "WARNING",
            f"entry_unknown:{delivery.pk}",
            f"entry of bot {delivery.bot_id} on {entry.symbol} has an unknown outcome; "
            "protective orders are placed; the monitor will resolve it",
            {"delivery": delivery.pk},
            owner_id=owner,
        )
    return _finish(
        delivery,
        DeliveryStatus.EXECUTED,
        "PLACED",
        f"entry {entry.state}, stop-loss {stop.state}",
        orders=summary,
    )


def _stop_loss_emergency(
    delivery: SignalDelivery,
    entry: Order,
    stop: Order,
    take: Order | None,
    venue: Any,
    account: str,
) -> SignalDelivery:
    """No live stop-loss: cancel the entry if unfilled, else close what filled, and alert."""
    entry = order_cancel(order=entry, venue=venue, account=account, cause="stop-loss failed")
    entry.refresh_from_db()
    closed = position_close(
        entry=entry,
        venue=venue,
        account=account,
        qty=entry.filled_qty,
        cause="stop-loss failed: flatten",
    )
    if take is not None:
        order_cancel(order=take, venue=venue, account=account, cause="stop-loss failed")
    flattened = closed is not None and closed.state == OrderState.FILLED
    unprotected = entry.filled_qty > 0 and not flattened
    alert(
        "CRITICAL",
        f"stop_loss_failed:{delivery.pk}",
        f"stop-loss of bot {delivery.bot_id} on {entry.symbol} could not be placed "
        f"({stop.last_error or stop.state}); "
        + (
            "POSITION UNPROTECTED: closing it failed"
            if unprotected
            else f"entry {entry.state}, filled {entry.filled_qty} "
            + ("closed" if flattened else "(nothing to close)")
        ),
        {"delivery": delivery.pk, "entry": entry.client_order_id, "stop": stop.client_order_id},
        owner_id=delivery.bot.owner_id,
    )
    return _finish(
        delivery,
        DeliveryStatus.FAILED,
        "STOP_LOSS_FAILED",
        f"stop-loss not placed ({stop.last_error or stop.state}); entry {entry.state}, "
        f"closed {closed.filled_qty if closed else 0}",
    )


def _disarm(delivery: SignalDelivery) -> SignalDelivery:
    """Withdraw this bot's unfilled entries of the signal's strategy and symbol, with their
    protective orders. Filled positions keep their protection."""
    bot, signal = delivery.bot, delivery.signal
    venue = venue_for_bot(bot=bot)
    account = account_key_for(bot=bot)
    cancelled = 0
    for entry in unfilled_entries(bot_ids=[bot.pk], symbol=signal.symbol, strategy=signal.strategy):
        entry = order_cancel(order=entry, venue=venue, account=account, cause="DISARM")
        if entry.filled_qty:
            continue  # it filled meanwhile: the position keeps its stop and take-profit
        siblings = Order.objects.filter(delivery_id=entry.delivery_id).exclude(pk=entry.pk)
        for sibling in siblings.exclude(leg=OrderLeg.CLOSE):
            order_cancel(order=sibling, venue=venue, account=account, cause="DISARM")
        cancelled += 1
    return _finish(
        delivery, DeliveryStatus.EXECUTED, "DISARMED", f"cancelled {cancelled} unfilled entries"
    )


# =============================================================================================
# Kill switch
# =============================================================================================


def kill_switch_engage(
    *,
    scope: str,
    user: Any = None,
    bot: Bot | None = None,
    reason: str = "",
    flatten: bool = False,
    by: Any = None,
) -> KillSwitch:
    """Engage a kill switch (idempotent per target). From the commit on, no new entry is placed
    anywhere it covers; then ``execution.tasks.kill_switch_sweep`` cancels open entries."""
    from execution.tasks import kill_switch_sweep

    target = {
        "user": user if scope == KillScope.USER else None,
        "bot": bot if scope == KillScope.BOT else None,
    }
    try:
        with transaction.atomic():
            switch = KillSwitch.objects.create(
                scope=scope, reason=reason, flatten=flatten, engaged_by=by, **target
            )
    except IntegrityError:
        switch = KillSwitch.objects.get(scope=scope, released_at__isnull=True, **target)
        if flatten and not switch.flatten:
            KillSwitch.objects.filter(pk=switch.pk).update(flatten=True)
    owner_id = getattr(user, "pk", None) or (bot.owner_id if bot else None)
    alert(
        "CRITICAL",
        f"kill_switch:{scope}:{getattr(user, 'pk', '') if user else ''}{bot.pk if bot else ''}",
        f"kill switch engaged ({scope}){': ' + reason if reason else ''}"
        + (" with flatten" if flatten else ""),
        {"switch": switch.pk},
        owner_id=owner_id,
    )
    transaction.on_commit(lambda: kill_switch_sweep.delay(switch.pk))
    return switch


def kill_switch_release(*, scope: str, user: Any = None, bot: Bot | None = None) -> int:
    target = {
        "user": user if scope == KillScope.USER else None,
        "bot": bot if scope == KillScope.BOT else None,
    }
    released = KillSwitch.objects.filter(scope=scope, released_at__isnull=True, **target).update(
        released_at=timezone.now()
    )
    if released:
        # Keyed and owned like the engage alert, so the owner sees the release next to it.
        alert(
            "INFO",
            f"kill_switch_released:{scope}:{user.pk if user else ''}{bot.pk if bot else ''}",
            f"kill switch released ({scope})",
            {},
            owner_id=getattr(user, "pk", None) or (bot.owner_id if bot else None),
        )
    return released


def _covered_bots(switch: KillSwitch) -> QuerySet[Bot]:
    if switch.scope == KillScope.GLOBAL:
        return Bot.objects.all()
    if switch.scope == KillScope.USER:
        return Bot.objects.filter(owner_id=switch.user_id)
    return Bot.objects.filter(pk=switch.bot_id or 0)


def kill_switch_sweep(*, switch_id: int) -> list[dict[str, Any]]:
    """Cancel every open entry (and the protective orders of unfilled ones) of the bots a
    switch covers; with ``flatten``, also close their positions reduce-only and cancel their
    protective orders. Everything done is recorded on the switch."""
    switch = KillSwitch.objects.get(pk=switch_id)
    actions: list[dict[str, Any]] = []
    bots = {b.pk: b for b in _covered_bots(switch).select_related("credential")}
    venues: dict[int, tuple[Any, str]] = {}

    def venue_of(bot_id: int) -> tuple[Any, str]:
        if bot_id not in venues:
            venues[bot_id] = (venue_for_bot(bot=bots[bot_id]), account_key_for(bot=bots[bot_id]))
        return venues[bot_id]

    entries = Order.objects.filter(bot_id__in=bots, leg=OrderLeg.ENTRY, state__in=OPEN)
    for entry in entries.select_related("delivery"):
        try:
            venue, account = venue_of(entry.bot_id)
            entry = order_cancel(order=entry, venue=venue, account=account, cause="kill switch")
            actions.append({"cancelled": entry.client_order_id, "state": entry.state})
            if not entry.filled_qty and entry.delivery is not None:
                for sibling in entry.delivery.orders.exclude(pk=entry.pk).filter(state__in=OPEN):
                    order_cancel(order=sibling, venue=venue, account=account, cause="kill switch")
        except (errors.VenueError, TradingNotAllowed) as exc:
            actions.append({"error": f"{entry.client_order_id}: {type(exc).__name__}: {exc}"})
    if switch.flatten:
        for trade in open_trades(bot_ids=list(bots)):
            if trade.position_qty <= 0:
                continue
            entry = Order.objects.select_related("delivery").get(pk=trade.entry_id)
            try:
                venue, account = venue_of(entry.bot_id)
                closed = position_close(
                    entry=entry,
                    venue=venue,
                    account=account,
                    qty=trade.position_qty,
                    cause="kill switch flatten",
                )
                actions.append(
                    {
                        "closed": trade.position_qty,
                        "entry": entry.client_order_id,
                        "state": closed.state if closed else None,
                    }
                )
                for sibling in Order.objects.filter(delivery_id=entry.delivery_id).filter(
                    leg__in=[OrderLeg.STOP_LOSS, OrderLeg.TAKE_PROFIT], state__in=OPEN
                ):
                    order_cancel(
                        order=sibling, venue=venue, account=account, cause="kill switch flatten"
                    )
            except (errors.VenueError, TradingNotAllowed) as exc:
                actions.append(
                    {"error": f"flatten {entry.client_order_id}: {type(exc).__name__}: {exc}"}
                )
    KillSwitch.objects.filter(pk=switch.pk).update(actions=_jsonable(actions))
    errors_seen = [a for a in actions if "error" in a]
    alert(
        "CRITICAL" if errors_seen else "WARNING",
        f"kill_switch_sweep:{switch.pk}",
        f"kill switch {switch.pk}: {len(actions) - len(errors_seen)} actions, "
        f"{len(errors_seen)} errors",
        {"actions": actions[:50]},
        owner_id=switch.user_id or (switch.bot.owner_id if switch.bot is not None else None),
    )
    return actions


def cooldown_set(*, bot_id: int, symbol: str, reason: str, now: datetime | None = None) -> Cooldown:
    """Pause new entries of ``bot_id`` on ``symbol`` for COOLDOWN_AFTER_STOP_S (after a stop-out;
    the order monitor calls this when it sees a stop-loss fill)."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.COOLDOWN_AFTER_STOP_S)
    cooldown, _ = Cooldown.objects.update_or_create(
        bot_id=bot_id, symbol=symbol, defaults={"until": until, "reason": reason[:200]}
    )
    return cooldown
