"""Pure domain rules: symbols, bounds, masking."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader import domain


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000PEPEUSDT", "ETHUSDC", "BTCUSDT_251226"])
def test_usdm_symbols_are_accepted(symbol):
    assert domain.symbol_problem(symbol) is None


@pytest.mark.parametrize("symbol", ["btcusdt", "BTC-USDT", "BTCUSD_PERP", "BTC", "", "ETHBTC"])
def test_non_usdm_symbols_are_refused_with_the_symbol_named(symbol):
    problem = domain.symbol_problem(symbol)
    assert problem is not None
    assert repr(symbol) in problem


def test_bound_is_inclusive_and_names_its_range():
    assert domain.LEVERAGE.problem(1) is None
    assert domain.LEVERAGE.problem(125) is None
    assert domain.LEVERAGE.problem(126) == "must be between 1 and 125x"
    assert domain.RISK_PER_TRADE_PCT.problem(Decimal("0.001")) == "must be between 0.01 and 10 %"


def test_masked_key_shows_only_last_four():
    assert domain.mask_api_key("9f83") == "****9f83"
