"""Read-side queries of the signals app: what the strategies are, and the evaluations a user
may see (those of the (strategy, params, symbol, interval) their bots run)."""

from __future__ import annotations

import copy
import inspect
import sys
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from signals.models import Evaluation
from signals.services import params_hash
from signals.strategies.base import Strategy
from signals.strategies.registry import get_strategy, is_enabled, strategy_keys
from trader.models import Bot


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy as the API and the admin show it."""

    key: str
    description: str
    enabled: bool
    evaluated: bool
    #: Closed candles needed before the first decision, with the default params.
    warmup: int
    params_schema: dict[str, Any]
    defaults: dict[str, Any]


def _first_paragraph(text: str | None) -> str:
    if not text:
        return ""
    paragraph = inspect.cleandoc(text).split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def strategy_description(cls: type[Strategy]) -> str:
    """The first paragraph of the class docstring; of the module's when the class has none
    (``__doc__`` is not inherited, so a subclass never shows ``Strategy``'s docstring)."""
    own = cls.__dict__.get("__doc__")
    if own:
        return _first_paragraph(own)
    module = sys.modules.get(cls.__module__)
    return _first_paragraph(module.__doc__ if module else None)


def strategy_info(key: str) -> StrategyInfo:
    """``key``'s strategy; ``UnknownStrategyError`` (a LookupError) when it is not registered."""
    cls = get_strategy(key)
    defaults = cls.defaults()
    return StrategyInfo(
        key=cls.key,
        description=strategy_description(cls),
        enabled=is_enabled(key),
        evaluated=cls.evaluated,
        warmup=cls.warmup_for(defaults),
        params_schema=copy.deepcopy(cls.params_schema),
        defaults=copy.deepcopy(defaults),
    )


def strategies_info() -> list[StrategyInfo]:
    """Every registered strategy, enabled or not, by key."""
    return [strategy_info(key) for key in strategy_keys(enabled_only=False)]


def evaluations_for_user(*, user: Any, bot_id: int | None = None) -> QuerySet[Evaluation]:
    """Evaluations of the (strategy, params hash, symbol, interval) the user's bots run (only
    ``bot_id``'s when given; none when it is not the user's).

    One small query for the bots' distinct tuples, then one indexed query per page: a Q of
    those tuples (users have few bots), never a scan of everyone's evaluations."""
    bots = Bot.objects.filter(owner_id=user.pk)
    if bot_id is not None:
        bots = bots.filter(pk=bot_id)
    tuples = {
        (strategy, params_hash(params), symbol, interval)
        for strategy, params, symbol, interval in bots.values_list(
            "strategy", "strategy_params", "symbol", "interval"
        )
    }
    if not tuples:
        return Evaluation.objects.none()
    scope = Q()
    for strategy, digest, symbol, interval in sorted(tuples):
        scope |= Q(strategy=strategy, params_hash=digest, symbol=symbol, interval=interval)
    return Evaluation.objects.filter(scope)
