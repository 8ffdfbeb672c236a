"""The strategy registry and params validation (pure)."""

from __future__ import annotations

import pytest

from signals.strategies import (
    StrategyParamsError,
    UnknownStrategyError,
    get_strategy,
    strategy_keys,
    validate_strategy_params,
)


def test_manual_strategy_is_registered_with_no_params():
    assert "manual" in strategy_keys()
    assert get_strategy("manual").key == "manual"
    assert validate_strategy_params("manual", {}) == {}


def test_manual_strategy_refuses_any_param_naming_it():
    with pytest.raises(StrategyParamsError) as excinfo:
        validate_strategy_params("manual", {"fast": 9})
    assert "'fast' was unexpected" in str(excinfo.value)


def test_params_must_be_an_object():
    with pytest.raises(StrategyParamsError):
        validate_strategy_params("manual", [1, 2])


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(UnknownStrategyError) as excinfo:
        get_strategy("martingale")
    assert "'martingale'" in str(excinfo.value)
    assert "manual" in str(excinfo.value)
