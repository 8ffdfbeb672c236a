"""The strategy registry: key -> strategy class, with params validation by JSON Schema."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar

from jsonschema import Draft202012Validator

if TYPE_CHECKING:
    from signals.strategies.base import Strategy

S = TypeVar("S", bound="type[Strategy]")

_REGISTRY: dict[str, type[Strategy]] = {}
_BUILTIN_MODULES = (
    "signals.strategies.manual",
    "signals.strategies.trend_breakout",
    "signals.strategies.range_reversion",
)


class UnknownStrategyError(LookupError):
    pass


class StrategyParamsError(ValueError):
    """Params that do not fit the strategy's schema; ``errors`` names each bad field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def register(cls: S) -> S:
    Draft202012Validator.check_schema(cls.params_schema)
    _REGISTRY[cls.key] = cls
    return cls


def _load_builtins() -> None:
    """Import the built-in strategies and the extra modules named by ``STRATEGY_MODULES``
    (dotted paths: a deployment's own strategies register themselves when imported)."""
    from django.conf import settings

    extra = tuple(getattr(settings, "STRATEGY_MODULES", ()) if settings.configured else ())
    for module in (*_BUILTIN_MODULES, *extra):
        importlib.import_module(module)


def is_enabled(key: str) -> bool:
    """A strategy runs only if its class is enabled and ``STRATEGIES_DISABLED`` does not name
    it (the operator's switch: bots keep their settings, the chain stops evaluating it)."""
    from django.conf import settings

    disabled = set(getattr(settings, "STRATEGIES_DISABLED", ()) if settings.configured else ())
    return get_strategy(key).enabled and key not in disabled


def strategy_keys(*, enabled_only: bool = True) -> list[str]:
    _load_builtins()
    keys = sorted(_REGISTRY)
    return [key for key in keys if not enabled_only or is_enabled(key)]


def get_strategy(key: str) -> type[Strategy]:
    _load_builtins()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {key!r}; known: {', '.join(strategy_keys(enabled_only=False))}"
        ) from None


def validate_strategy_params(key: str, params: Any) -> dict[str, Any]:
    """Return ``params`` if they fit the strategy's schema; raise StrategyParamsError otherwise."""
    validator = Draft202012Validator(get_strategy(key).params_schema)
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(params)'}: {error.message}"
        for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    ]
    if errors:
        raise StrategyParamsError(errors)
    if not isinstance(params, dict):  # the schema says object; this keeps the type honest
        raise StrategyParamsError(["(params): must be an object"])
    errors = get_strategy(key).check_params(params)
    if errors:
        raise StrategyParamsError(errors)
    return params
