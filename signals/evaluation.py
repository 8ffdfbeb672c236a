"""The signals stage of the chain: strategies evaluated on a candle that just closed.

``candle_evaluate`` runs once per hand-off (``ingest.handoff.candle_closed``). It finds the
strategies some ACTIVE bot runs on the symbol and interval, once per distinct (strategy,
params), reads the window of stored candles up to the closed one, and refuses it with a
recorded reason when it is stale (the candle closed too long ago on the market clock) or
gapped (a candle missing inside the window). Otherwise it classifies the regime once and lets
each strategy decide. Each (candle, strategy, params) is evaluated at most once: the
``Evaluation`` row, the ``Signal`` rows and the deliveries are written in one transaction, and
the row's unique constraint turns a second evaluation (the beat and stream paths both firing,
a redelivered task, two workers) into a no-op that rolls back everything it did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from ingest.models import Kline
from signals.models import Evaluation, EvaluationStatus, Signal, SignalKind, SignalSource
from signals.regime import RegimeReading, RegimeThresholds, classify
from signals.services import params_hash, signal_create, signal_fan_out
from signals.strategies import get_strategy
from signals.strategies.base import Action, Candles, Decision, StrategyState
from signals.strategies.registry import is_enabled
from trader.clock import market_now, market_to_wall
from trader.domain import INTERVAL_MS, to_dt, to_ms
from trader.models import Bot, BotStatus

log = logging.getLogger(__name__)
#: Candles read beyond the longest warm-up, so indicators settle (EMA/ADX smoothing).
WINDOW_MARGIN = 50


@dataclass(frozen=True)
class Subscription:
    """One distinct (strategy, params) that active bots run on a symbol and interval."""

    strategy: str
    params: Mapping[str, Any]
    params_hash: str


def subscriptions(*, symbol: str, interval: str) -> list[Subscription]:
    """Every enabled, evaluated strategy some ACTIVE bot runs here, once per distinct params."""
    found: dict[tuple[str, str], Subscription] = {}
    bots = Bot.objects.filter(status=BotStatus.ACTIVE, symbol=symbol, interval=interval)
    for key, params in bots.values_list("strategy", "strategy_params"):
        try:
            cls = get_strategy(key)
        except LookupError:
            log.error("bot strategy %r is not registered: not evaluated", key)
            continue
        if not cls.evaluated or not is_enabled(key):
            continue
        digest = params_hash(params)
        found.setdefault((key, digest), Subscription(key, params or {}, digest))
    return sorted(found.values(), key=lambda s: (s.strategy, s.params_hash))


def regime_thresholds(interval: str) -> RegimeThresholds:
    """The ``REGIME_*`` settings (meant for 1h candles) scaled to ``interval``."""
    return RegimeThresholds.from_mapping(
        {
            "adx_trend": settings.REGIME_ADX_TREND,
            "adx_range": settings.REGIME_ADX_RANGE,
            "atr_pct_high": settings.REGIME_ATR_PCT_HIGH,
            "ema_slope_min_pct": settings.REGIME_EMA_SLOPE_MIN_PCT,
        }
    ).scaled_to_interval(INTERVAL_MS[interval])


def window_problem(
    open_times_ms: Sequence[int], *, interval_ms: int, candle_ms: int, now_ms: int
) -> str | None:
    """Why a window of candle open times (oldest first) must not be evaluated, or None.

    The last candle must be the one that closed (``candle_ms``), consecutive candles exactly
    one interval apart, and the candle must have closed at most ``INGEST_STALE_INTERVALS``
    intervals ago."""
    if not open_times_ms or open_times_ms[-1] != candle_ms:
        return f"candle {_iso(candle_ms)} is not stored"
    for before, after in pairwise(open_times_ms):
        if after - before != interval_ms:
            missing = (after - before) // interval_ms - 1
            return f"gap: {missing} candle(s) missing after {_iso(before)}"
    age_ms = now_ms - (candle_ms + interval_ms)
    limit_ms = int(interval_ms * float(settings.INGEST_STALE_INTERVALS))
    if age_ms > limit_ms:
        return (
            f"stale: the candle closed {age_ms / 1000:.0f}s ago "
            f"(limit {limit_ms / 1000:.0f}s = {settings.INGEST_STALE_INTERVALS} intervals)"
        )
    return None


def candle_evaluate(*, symbol: str, interval: str, open_ms: int) -> list[Evaluation]:
    """Evaluate the strategies of ``symbol``/``interval`` on the candle opening at ``open_ms``.

    Returns the evaluations this call recorded (empty when every one was already done)."""
    subs = subscriptions(symbol=symbol, interval=interval)
    if not subs:
        return []
    interval_ms = INTERVAL_MS[interval]
    candle_time = to_dt(open_ms)
    need = max(get_strategy(s.strategy).warmup_for(s.params) for s in subs) + WINDOW_MARGIN
    rows = list(
        Kline.objects.filter(symbol=symbol, interval=interval, open_time__lte=candle_time)
        .order_by("-open_time")
        .only("open_time", "open", "high", "low", "close", "volume")[:need]
    )
    rows.reverse()
    open_times = [to_ms(r.open_time) for r in rows]
    now = market_now()
    problem = window_problem(
        open_times, interval_ms=interval_ms, candle_ms=open_ms, now_ms=to_ms(now)
    )
    # A gap far back in the window only shortens it: strategies whose warm-up fits in the
    # stretch after the gap are evaluated on it; the others are refused with the gap's reason.
    gap = None
    if problem and problem.startswith("gap"):
        gap = problem
        rows, open_times = _after_last_gap(rows, open_times, interval_ms)
        problem = window_problem(
            open_times, interval_ms=interval_ms, candle_ms=open_ms, now_ms=to_ms(now)
        )
    candles = Candles.from_rows(rows, open_times) if rows and not problem else None
    previous_regime = (
        Evaluation.objects.filter(symbol=symbol, interval=interval, candle_time__lt=candle_time)
        .exclude(regime="")
        .order_by("-candle_time")
        .values_list("regime", flat=True)
        .first()
    )
    reading = (
        classify(candles, regime_thresholds(interval), previous=previous_regime)
        if candles is not None
        else None
    )
    done: list[Evaluation] = []
    for sub in subs:
        evaluation = _evaluate_one(
            sub,
            symbol=symbol,
            interval=interval,
            candle_time=candle_time,
            candles=candles,
            reading=reading,
            problem=problem,
            gap=gap,
            now=now,
        )
        if evaluation is not None:
            done.append(evaluation)
    return done


def _evaluate_one(
    sub: Subscription,
    *,
    symbol: str,
    interval: str,
    candle_time: datetime,
    candles: Candles | None,
    reading: RegimeReading | None,
    problem: str | None,
    gap: str | None,
    now: datetime,
) -> Evaluation | None:
    started = time.perf_counter()
    previous = (
        Evaluation.objects.filter(
            strategy=sub.strategy,
            params_hash=sub.params_hash,
            symbol=symbol,
            interval=interval,
            candle_time__lt=candle_time,
        )
        .order_by("-candle_time")
        .first()
    )
    armed = _armed_side(previous, now)
    regime = reading.regime.value if reading is not None and reading.regime is not None else ""
    detail = _reading_detail(reading)
    strategy = get_strategy(sub.strategy)
    warmup = strategy.warmup_for(sub.params)
    decisions: list[Decision] = []
    if problem:
        status, reason = EvaluationStatus.REFUSED, problem
    elif gap and (candles is None or len(candles) < warmup):
        status, reason = EvaluationStatus.REFUSED, f"{gap} (too few candles after it)"
    elif candles is None or len(candles) < warmup:
        have = 0 if candles is None else len(candles)
        status, reason = EvaluationStatus.WARMING_UP, f"{have} of {warmup} candles"
    else:
        state = StrategyState(
            regime=regime or None,
            previous_regime=(previous.regime or None) if previous else None,
            armed_side=armed,
            extra={"interval_ms": INTERVAL_MS[interval], "symbol": symbol},
        )
        decisions = strategy().evaluate(candles=candles, state=state, params=sub.params, now=now)
        status = EvaluationStatus.EVALUATED
        reason = "; ".join(d.reason for d in decisions)[:300] or "no decision"
    armed_side, armed_until = _armed_after(previous, armed, decisions, now)
    try:
        with transaction.atomic():
            evaluation = Evaluation.objects.create(
                symbol=symbol,
                interval=interval,
                candle_time=candle_time,
                strategy=sub.strategy,
                params_hash=sub.params_hash,
                params=dict(sub.params),
                status=status,
                reason=reason[:300],
                regime=regime,
                regime_detail=detail,
                decisions=[_decision_json(d) for d in decisions],
                armed_side=armed_side or "",
                armed_until=armed_until,
                candles=0 if candles is None else len(candles),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
            for decision in decisions:
                signal = _signal_for(decision, sub, symbol, interval, candle_time, now)
                signal_fan_out(signal=signal)
    except IntegrityError:
        log.info("%s %s %s %s: already evaluated", sub.strategy, symbol, interval, candle_time)
        return None
    if status == EvaluationStatus.REFUSED:
        log.warning("%s %s %s refused: %s", sub.strategy, symbol, interval, reason)
    elif decisions:
        log.info(
            "%s %s %s %s [%s]: %s",
            sub.strategy,
            symbol,
            interval,
            candle_time.isoformat(),
            regime,
            reason,
        )
    return evaluation


def _signal_for(
    decision: Decision,
    sub: Subscription,
    symbol: str,
    interval: str,
    candle_time: datetime,
    now: datetime,
) -> Signal:
    expires_at = market_to_wall(decision.expires_at) if decision.expires_at else None
    if decision.action == Action.DISARM:
        signal, _ = signal_create(
            source=SignalSource.STRATEGY,
            source_key=f"{sub.strategy}:{sub.params_hash[:16]}",
            symbol=symbol,
            interval=interval,
            kind=SignalKind.DISARM,
            candle_time=candle_time,
            strategy=sub.strategy,
            params=sub.params,
            reason=decision.reason,
            expires_at=expires_at,
        )
        return signal
    signal, _ = signal_create(
        source=SignalSource.STRATEGY,
        source_key=f"{sub.strategy}:{sub.params_hash[:16]}",
        symbol=symbol,
        interval=interval,
        kind=SignalKind.ARM,
        candle_time=candle_time,
        strategy=sub.strategy,
        params=sub.params,
        side=decision.side,
        entry_type=decision.entry_type,
        entry_price=decision.entry_price,
        stop_price=decision.stop_price,
        take_profit_price=decision.take_profit_price,
        reference_price=decision.reference_price,
        reason=decision.reason,
        expires_at=expires_at,
    )
    return signal


def _armed_side(previous: Evaluation | None, now: datetime) -> str | None:
    if previous is None or not previous.armed_side:
        return None
    if previous.armed_until is not None and previous.armed_until <= now:
        return None  # the ARM expired: the strategy may arm again
    return previous.armed_side


def _armed_after(
    previous: Evaluation | None,
    armed: str | None,
    decisions: Sequence[Decision],
    now: datetime,
) -> tuple[str | None, datetime | None]:
    side, until = armed, previous.armed_until if (previous and armed) else None
    for decision in decisions:
        if decision.action == Action.ARM:
            side, until = decision.side, decision.expires_at
        else:
            side, until = None, None
    return side, until


def _after_last_gap(
    rows: list[Kline], open_times: list[int], interval_ms: int
) -> tuple[list[Kline], list[int]]:
    start = 0
    for index in range(1, len(open_times)):
        if open_times[index] - open_times[index - 1] != interval_ms:
            start = index
    return rows[start:], open_times[start:]


def _reading_detail(reading: RegimeReading | None) -> dict[str, Any]:
    if reading is None:
        return {}
    return {
        "adx": _num(reading.adx),
        "atr_pct": _num(reading.atr_pct),
        "ema_slope_pct": _num(reading.ema_slope_pct),
        "why": reading.why,
    }


def _num(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action.value,
        "reason": decision.reason,
        "side": decision.side,
        "entry_type": decision.entry_type,
        "entry_price": _str(decision.entry_price),
        "stop_price": _str(decision.stop_price),
        "take_profit_price": _str(decision.take_profit_price),
        "reference_price": _str(decision.reference_price),
        "expires_at": decision.expires_at.isoformat() if decision.expires_at else None,
    }


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _iso(ms: int) -> str:
    return to_dt(ms).isoformat()
