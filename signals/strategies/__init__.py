"""Strategies (pure: no Django, no clock, no network) and the registry that names them."""

from signals.strategies.registry import (
    StrategyParamsError,
    UnknownStrategyError,
    get_strategy,
    register,
    strategy_keys,
    validate_strategy_params,
)

__all__ = [
    "StrategyParamsError",
    "UnknownStrategyError",
    "get_strategy",
    "register",
    "strategy_keys",
    "validate_strategy_params",
]
