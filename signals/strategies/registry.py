"""The strategy registry: key -> strategy class, with params validation by JSON Schema."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar

from jsonschema import Draft202012Validator

if TYPE_CHECKING:
    from signals.strategies.base import Strategy

S = TypeVar("S", bound="type[Strategy]")

_REGISTRY: dict[str, type[Strategy]] = {}
_BUILTIN_MODULES = ("signals.strategies.manual",)


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
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def strategy_keys(*, enabled_only: bool = True) -> list[str]:
    _load_builtins()
    return sorted(key for key, cls in _REGISTRY.items() if cls.enabled or not enabled_only)


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
    return params
