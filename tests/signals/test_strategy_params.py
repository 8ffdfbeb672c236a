"""Params schemas of the built-in strategies: {} is the defaults, bad values name the field."""

from __future__ import annotations

import pytest

from signals.strategies import (
    StrategyParamsError,
    get_strategy,
    strategy_keys,
    validate_strategy_params,
)

STRATEGIES = ["trend_breakout", "range_reversion"]


def test_both_strategies_are_registered_and_evaluated():
    for key in STRATEGIES:
        assert key in strategy_keys()
        cls = get_strategy(key)
        assert cls.key == key
        assert cls.enabled
        assert cls.evaluated


@pytest.mark.parametrize("key", STRATEGIES)
def test_empty_params_are_valid_and_mean_the_defaults(key):
    assert validate_strategy_params(key, {}) == {}
    cls = get_strategy(key)
    assert cls.resolved_params({}) == cls.defaults()
    assert cls.warmup_for({}) == cls.warmup_for(cls.defaults()) == cls.warmup


@pytest.mark.parametrize("key", STRATEGIES)
def test_every_param_is_typed_bounded_defaulted_and_documented(key):
    schema = get_strategy(key).params_schema
    assert schema["additionalProperties"] is False
    for name, spec in schema["properties"].items():
        assert spec["type"] in ("integer", "number"), name
        assert "minimum" in spec, name
        assert "maximum" in spec, name
        assert spec["minimum"] <= spec["default"] <= spec["maximum"], name
        assert spec["description"], name


@pytest.mark.parametrize("key", STRATEGIES)
def test_the_defaults_pass_their_own_schema(key):
    cls = get_strategy(key)
    assert validate_strategy_params(key, cls.defaults()) == cls.defaults()


@pytest.mark.parametrize(
    ("key", "params", "field", "message"),
    [
        ("trend_breakout", {"ema_fast": "20"}, "ema_fast", "is not of type 'integer'"),
        ("trend_breakout", {"ema_fast": 12.5}, "ema_fast", "is not of type 'integer'"),
        ("trend_breakout", {"donchian_period": 1}, "donchian_period", "less than the minimum"),
        ("trend_breakout", {"atr_stop_mult": 50}, "atr_stop_mult", "greater than the maximum"),
        ("trend_breakout", {"adx_min": True}, "adx_min", "is not of type 'number'"),
        ("trend_breakout", {"expiry_candles": 0}, "expiry_candles", "less than the minimum"),
        ("range_reversion", {"rsi_oversold": 60}, "rsi_oversold", "greater than the maximum"),
        ("range_reversion", {"rsi_overbought": 40}, "rsi_overbought", "less than the minimum"),
        ("range_reversion", {"bb_std": "2"}, "bb_std", "is not of type 'number'"),
        ("range_reversion", {"bb_period": None}, "bb_period", "is not of type 'integer'"),
    ],
)
def test_bad_params_are_refused_naming_the_field(key, params, field, message):
    with pytest.raises(StrategyParamsError) as excinfo:
        validate_strategy_params(key, params)
    assert any(e.startswith(f"{field}:") and message in e for e in excinfo.value.errors)


@pytest.mark.parametrize("key", STRATEGIES)
def test_unknown_params_are_refused(key):
    with pytest.raises(StrategyParamsError) as excinfo:
        validate_strategy_params(key, {"leverage": 10})
    assert "'leverage' was unexpected" in str(excinfo.value)


def test_trend_breakout_refuses_a_fast_ema_not_below_the_slow_one():
    with pytest.raises(StrategyParamsError) as excinfo:
        validate_strategy_params("trend_breakout", {"ema_fast": 60})  # slow defaults to 50
    assert excinfo.value.errors == ["ema_fast: must be below ema_slow (50), got 60"]
    with pytest.raises(StrategyParamsError):
        validate_strategy_params("trend_breakout", {"ema_fast": 30, "ema_slow": 30})
    assert validate_strategy_params("trend_breakout", {"ema_fast": 10, "ema_slow": 30})


def test_several_bad_params_are_all_named():
    with pytest.raises(StrategyParamsError) as excinfo:
        validate_strategy_params("range_reversion", {"bb_period": 1, "rsi_period": 500})
    fields = sorted(e.split(":")[0] for e in excinfo.value.errors)
    assert fields == ["bb_period", "rsi_period"]
