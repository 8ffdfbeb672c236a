"""Pre-trade risk checks (pure: no DB, no clock)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from execution.risk import (
    Check,
    Exposure,
    KillState,
    RiskCode,
    RiskDecision,
    RiskInput,
    RiskLimits,
    evaluate,
)

D = Decimal
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

BASE_EXPOSURE = Exposure(
    open_positions=1,
    bot_notional=D("400"),
    symbol_notional=D("600"),
    user_notional=D("1500"),
    account_notional=D("3000"),
)
BASE_LIMITS = RiskLimits(
    max_open_positions=3,
    max_position_notional=D("1000"),
    max_symbol_notional=D("2000"),
    max_user_notional=D("5000"),
    max_account_notional=D("10000"),
    daily_loss_limit_pct=D("2"),
    weekly_loss_limit_pct=D("5"),
)
BASE = RiskInput(
    now=NOW,
    kill=KillState(),
    bot_status="ACTIVE",
    trading_mode="LIVE",
    bot_environment="LIVE",
    has_credential=True,
    symbol_tradable=True,
    candle_close_time=NOW - timedelta(seconds=30),
    max_data_age=timedelta(minutes=2),
    cooldown_until=None,
    exposure=BASE_EXPOSURE,
    new_notional=D("200"),
    limits=BASE_LIMITS,
    equity=D("10000"),
    realized_pnl_day=D("-100"),
    realized_pnl_week=D("-300"),
    circuit_open=False,
    symbol="BTCUSDT",
)


def build(overrides: dict[str, Any]) -> RiskInput:
    """BASE with ``overrides``; ``exposure`` and ``limits`` take a dict of their own fields."""
    top = dict(overrides)
    exposure = dataclasses.replace(BASE_EXPOSURE, **top.pop("exposure", {}))
    limits = dataclasses.replace(BASE_LIMITS, **top.pop("limits", {}))
    return dataclasses.replace(BASE, exposure=exposure, limits=limits, **top)


def merged(*overrides: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict):
                result[key] = {**result.get(key, {}), **value}
            else:
                result[key] = value
    return result


def failed_codes(decision: RiskDecision) -> list[RiskCode]:
    return [check.code for check in decision.checks if not check.passed]


# One failing input per rule, in RiskCode order; each names the values in its detail.
ONE_PER_RULE: list[tuple[RiskCode, dict[str, Any], str]] = [
    (RiskCode.KILL_SWITCH, {"kill": KillState(global_on=True)}, "kill switch on: global"),
    (RiskCode.BOT_NOT_ACTIVE, {"bot_status": "PAUSED"}, "bot status is PAUSED, not ACTIVE"),
    (
        RiskCode.TRADING_MODE,
        {"trading_mode": "TESTNET"},
        "a LIVE bot needs trading mode LIVE, platform is in TESTNET",
    ),
    (
        RiskCode.SYMBOL_NOT_TRADABLE,
        {"symbol_tradable": False},
        "BTCUSDT is not tradable on the exchange",
    ),
    (
        RiskCode.STALE_DATA,
        {"candle_close_time": NOW - timedelta(minutes=5)},
        "data age 0:05:00 > max 0:02:00 (candle closed 2024-03-01T11:55:00+00:00)",
    ),
    (
        RiskCode.COOLDOWN,
        {"cooldown_until": NOW + timedelta(minutes=10)},
        "cooldown until 2024-03-01T12:10:00+00:00 (0:10:00 left)",
    ),
    (
        RiskCode.MAX_OPEN_POSITIONS,
        {"exposure": {"open_positions": 3}},
        "open positions 3 >= max 3",
    ),
    (
        RiskCode.EXPOSURE_BOT,
        {"exposure": {"bot_notional": D("900")}},
        "bot exposure 900 + new 200 > cap 1000 USDT",
    ),
    (
        RiskCode.EXPOSURE_SYMBOL,
        {"exposure": {"symbol_notional": D("1900")}},
        "BTCUSDT symbol exposure 1900 + new 200 > cap 2000 USDT",
    ),
    (
        RiskCode.EXPOSURE_USER,
        {"exposure": {"user_notional": D("4800.5")}},
        "user exposure 4800.5 + new 200 > cap 5000 USDT",
    ),
    (
        RiskCode.EXPOSURE_ACCOUNT,
        {"exposure": {"account_notional": D("9900")}},
        "account exposure 9900 + new 200 > cap 10000 USDT",
    ),
    (
        RiskCode.DAILY_LOSS,
        {"realized_pnl_day": D("-200")},
        "daily loss 200 >= limit 2% of equity 10000 = 200 USDT",
    ),
    (
        RiskCode.WEEKLY_LOSS,
        {"realized_pnl_week": D("-650.25")},
        "weekly loss 650.25 >= limit 5% of equity 10000 = 500 USDT",
    ),
    (
        RiskCode.CIRCUIT_OPEN,
        {"circuit_open": True, "circuit_reason": "3 rejected orders in 5 min"},
        "circuit breaker open: 3 rejected orders in 5 min",
    ),
]


def test_base_input_passes_every_check_in_code_order() -> None:
    decision = evaluate(BASE)

    assert decision.allowed is True
    assert decision.code is None
    assert decision.reason == ""
    assert [check.code for check in decision.checks] == list(RiskCode)
    assert all(check.passed for check in decision.checks)


def test_one_failing_case_per_rule_covers_every_code_in_order() -> None:
    assert [code for code, _, _ in ONE_PER_RULE] == list(RiskCode)


@pytest.mark.parametrize(
    ("code", "overrides", "detail"),
    ONE_PER_RULE,
    ids=[code.value for code, _, _ in ONE_PER_RULE],
)
def test_each_rule_blocks_with_its_code_and_a_detail_naming_the_values(
    code: RiskCode, overrides: dict[str, Any], detail: str
) -> None:
    decision = evaluate(build(overrides))

    assert decision.allowed is False
    assert decision.code == code
    assert decision.reason == detail
    # Only that rule failed; every other check still ran and passed.
    assert failed_codes(decision) == [code]
    assert len(decision.checks) == len(RiskCode)


@pytest.mark.parametrize(
    ("first", "second"),
    list(pairwise(ONE_PER_RULE)),
    ids=[f"{a[0]}-before-{b[0]}" for a, b in pairwise(ONE_PER_RULE)],
)
def test_when_two_rules_fail_the_earlier_one_is_the_code(
    first: tuple[RiskCode, dict[str, Any], str], second: tuple[RiskCode, dict[str, Any], str]
) -> None:
    decision = evaluate(build(merged(first[1], second[1])))

    assert decision.code == first[0]
    assert decision.reason == first[2]
    assert failed_codes(decision) == [first[0], second[0]]
    assert decision.failed == (
        Check(code=first[0], passed=False, detail=first[2]),
        Check(code=second[0], passed=False, detail=second[2]),
    )


def test_kill_switch_blocks_before_any_other_rule() -> None:
    every_failure = merged(*(overrides for _, overrides, _ in ONE_PER_RULE))

    decision = evaluate(build(every_failure))

    assert decision.code == RiskCode.KILL_SWITCH
    assert decision.reason == "kill switch on: global"
    assert failed_codes(decision) == list(RiskCode)


@pytest.mark.parametrize(
    ("kill", "detail"),
    [
        (KillState(user_on=True), "kill switch on: user"),
        (KillState(bot_on=True), "kill switch on: bot"),
        (KillState(file_on=True), "kill switch on: file"),
        (
            KillState(global_on=True, user_on=True, bot_on=True, file_on=True),
            "kill switch on: global, user, bot, file",
        ),
    ],
)
def test_kill_switch_names_every_switch_that_is_on(kill: KillState, detail: str) -> None:
    decision = evaluate(build({"kill": kill}))

    assert (decision.code, decision.reason) == (RiskCode.KILL_SWITCH, detail)


def test_stopped_bot_is_not_active() -> None:
    decision = evaluate(build({"bot_status": "STOPPED"}))

    assert (decision.code, decision.reason) == (
        RiskCode.BOT_NOT_ACTIVE,
        "bot status is STOPPED, not ACTIVE",
    )


@pytest.mark.parametrize(
    ("mode", "environment", "credential", "detail"),
    [
        ("DRY_RUN", "LIVE", False, "trading mode DRY_RUN: paper venue, bot environment LIVE"),
        (
            "DRY_RUN",
            "TESTNET",
            False,
            "trading mode DRY_RUN: paper venue, bot environment TESTNET",
        ),
        (
            "TESTNET",
            "TESTNET",
            True,
            "trading mode TESTNET, bot environment TESTNET, credential present",
        ),
        ("LIVE", "LIVE", True, "trading mode LIVE, bot environment LIVE, credential present"),
        ("LIVE", "TESTNET", True, "trading mode LIVE, bot environment TESTNET, credential present"),
    ],
)
def test_trading_mode_allows_paper_matching_and_testnet_bot_under_live(
    mode: str, environment: str, credential: bool, detail: str
) -> None:
    decision = evaluate(
        build({"trading_mode": mode, "bot_environment": environment, "has_credential": credential})
    )

    assert decision.allowed is True
    trading = decision.checks[list(RiskCode).index(RiskCode.TRADING_MODE)]
    assert trading == Check(code=RiskCode.TRADING_MODE, passed=True, detail=detail)


@pytest.mark.parametrize(
    ("mode", "environment", "credential", "detail"),
    [
        (
            "TESTNET",
            "TESTNET",
            False,
            "trading mode TESTNET needs an exchange credential, bot has none",
        ),
        ("LIVE", "LIVE", False, "trading mode LIVE needs an exchange credential, bot has none"),
        (
            "TESTNET",
            "LIVE",
            False,
            "a LIVE bot needs trading mode LIVE, platform is in TESTNET; "
            "trading mode TESTNET needs an exchange credential, bot has none",
        ),
        (
            "PAPER",
            "LIVE",
            True,
            "unknown trading mode 'PAPER' (expected one of ('DRY_RUN', 'TESTNET', 'LIVE'))",
        ),
        (
            "LIVE",
            "MAINNET",
            True,
            "unknown bot environment 'MAINNET' (expected one of ('TESTNET', 'LIVE'))",
        ),
    ],
)
def test_trading_mode_refuses_missing_credential_live_bot_off_live_and_unknown_values(
    mode: str, environment: str, credential: bool, detail: str
) -> None:
    decision = evaluate(
        build({"trading_mode": mode, "bot_environment": environment, "has_credential": credential})
    )

    assert (decision.code, decision.reason) == (RiskCode.TRADING_MODE, detail)
    assert failed_codes(decision) == [RiskCode.TRADING_MODE]


def test_unknown_exchange_rules_refuse_the_symbol() -> None:
    decision = evaluate(build({"symbol_tradable": None}))

    assert (decision.code, decision.reason) == (
        RiskCode.SYMBOL_NOT_TRADABLE,
        "exchange rules unknown for BTCUSDT",
    )


def test_data_exactly_at_max_age_is_still_fresh() -> None:
    decision = evaluate(build({"candle_close_time": NOW - timedelta(minutes=2)}))

    assert decision.allowed is True
    stale = decision.checks[list(RiskCode).index(RiskCode.STALE_DATA)]
    assert stale.detail == "data age 0:02:00 <= max 0:02:00"


def test_data_one_microsecond_past_max_age_is_stale() -> None:
    close = NOW - timedelta(minutes=2, microseconds=1)

    decision = evaluate(build({"candle_close_time": close}))

    assert (decision.code, decision.reason) == (
        RiskCode.STALE_DATA,
        "data age 0:02:00.000001 > max 0:02:00 (candle closed 2024-03-01T11:57:59.999999+00:00)",
    )


def test_candle_that_has_not_closed_yet_is_refused_as_stale_data() -> None:
    decision = evaluate(build({"candle_close_time": NOW + timedelta(milliseconds=1)}))

    assert (decision.code, decision.reason) == (
        RiskCode.STALE_DATA,
        "candle closes at 2024-03-01T12:00:00.001000+00:00, after now "
        "2024-03-01T12:00:00+00:00: not closed yet",
    )


def test_manual_signal_without_candle_skips_the_freshness_check() -> None:
    decision = evaluate(build({"candle_close_time": None, "max_data_age": timedelta(0)}))

    assert decision.allowed is True
    stale = decision.checks[list(RiskCode).index(RiskCode.STALE_DATA)]
    assert stale == Check(
        code=RiskCode.STALE_DATA,
        passed=True,
        detail="no candle (manual signal): freshness not checked",
    )


@pytest.mark.parametrize("until", [NOW, NOW - timedelta(seconds=1)])
def test_cooldown_ending_now_or_earlier_does_not_block(until: datetime) -> None:
    decision = evaluate(build({"cooldown_until": until}))

    assert decision.allowed is True


def test_one_below_max_open_positions_passes() -> None:
    decision = evaluate(build({"exposure": {"open_positions": 2}}))

    assert decision.allowed is True


def test_pending_entry_counts_toward_bot_exposure() -> None:
    # Given an open position of 500 and a pending (unfilled) entry of 400 on this bot, which
    # the caller sums into bot_notional: a new 200 entry would take the bot to 1100.
    position, pending_entry = D("500"), D("400")

    decision = evaluate(build({"exposure": {"bot_notional": position + pending_entry}}))

    assert (decision.code, decision.reason) == (
        RiskCode.EXPOSURE_BOT,
        "bot exposure 900 + new 200 > cap 1000 USDT",
    )


@pytest.mark.parametrize(
    ("field", "code", "detail"),
    [
        ("bot_notional", RiskCode.EXPOSURE_BOT, "bot exposure 800 + new 200 <= cap 1000 USDT"),
        (
            "symbol_notional",
            RiskCode.EXPOSURE_SYMBOL,
            "BTCUSDT symbol exposure 1800 + new 200 <= cap 2000 USDT",
        ),
        ("user_notional", RiskCode.EXPOSURE_USER, "user exposure 4800 + new 200 <= cap 5000 USDT"),
        (
            "account_notional",
            RiskCode.EXPOSURE_ACCOUNT,
            "account exposure 9800 + new 200 <= cap 10000 USDT",
        ),
    ],
)
def test_exposure_reaching_the_cap_exactly_passes(field: str, code: RiskCode, detail: str) -> None:
    cap = {
        "bot_notional": D("1000"),
        "symbol_notional": D("2000"),
        "user_notional": D("5000"),
        "account_notional": D("10000"),
    }[field]

    decision = evaluate(build({"exposure": {field: cap - D("200")}}))

    assert decision.allowed is True
    assert decision.checks[list(RiskCode).index(code)] == Check(
        code=code, passed=True, detail=detail
    )


def test_unsized_order_with_new_notional_zero_passes_at_the_bot_cap() -> None:
    decision = evaluate(build({"new_notional": D("0"), "exposure": {"bot_notional": D("1000")}}))

    assert decision.allowed is True


def test_unsized_order_is_refused_once_the_bot_is_over_its_cap() -> None:
    decision = evaluate(build({"new_notional": D("0"), "exposure": {"bot_notional": D("1000.01")}}))

    assert (decision.code, decision.reason) == (
        RiskCode.EXPOSURE_BOT,
        "bot exposure 1000.01 + new 0 > cap 1000 USDT",
    )


@pytest.mark.parametrize(
    ("limit", "over", "code", "detail"),
    [
        (
            "max_symbol_notional",
            {"exposure": {"symbol_notional": D("1E+9")}},
            RiskCode.EXPOSURE_SYMBOL,
            "no BTCUSDT symbol exposure cap",
        ),
        (
            "max_user_notional",
            {"exposure": {"user_notional": D("1E+9")}},
            RiskCode.EXPOSURE_USER,
            "no user exposure cap",
        ),
        (
            "max_account_notional",
            {"exposure": {"account_notional": D("1E+9")}},
            RiskCode.EXPOSURE_ACCOUNT,
            "no account exposure cap",
        ),
        (
            "weekly_loss_limit_pct",
            {"realized_pnl_week": D("-9999")},
            RiskCode.WEEKLY_LOSS,
            "no weekly loss limit",
        ),
    ],
)
def test_cap_set_to_none_is_not_enforced(
    limit: str, over: dict[str, Any], code: RiskCode, detail: str
) -> None:
    # Given a value far past what the cap would have been, with the cap switched off.
    decision = evaluate(build({**over, "limits": {limit: None}}))

    assert decision.allowed is True
    check = decision.checks[list(RiskCode).index(code)]
    assert check == Check(code=code, passed=True, detail=detail)


def test_daily_loss_just_below_the_limit_passes() -> None:
    decision = evaluate(build({"realized_pnl_day": D("-199.99")}))

    assert decision.allowed is True
    daily = decision.checks[list(RiskCode).index(RiskCode.DAILY_LOSS)]
    assert daily.detail == "daily loss 199.99 < limit 2% of equity 10000 = 200 USDT"


def test_a_profitable_day_never_trips_the_daily_loss_limit() -> None:
    decision = evaluate(build({"realized_pnl_day": D("5000")}))

    assert decision.allowed is True


def test_fractional_loss_percentage_is_applied_exactly() -> None:
    decision = evaluate(
        build({"limits": {"daily_loss_limit_pct": D("1.5")}, "realized_pnl_day": D("-150")})
    )

    assert (decision.code, decision.reason) == (
        RiskCode.DAILY_LOSS,
        "daily loss 150 >= limit 1.5% of equity 10000 = 150 USDT",
    )


@pytest.mark.parametrize("equity", [D("0"), D("-25")])
def test_no_equity_fails_both_loss_limits_closed(equity: Decimal) -> None:
    decision = evaluate(build({"equity": equity, "realized_pnl_day": D("0")}))

    assert (decision.code, decision.reason) == (
        RiskCode.DAILY_LOSS,
        f"equity {equity} USDT <= 0: no daily loss budget",
    )
    assert failed_codes(decision) == [RiskCode.DAILY_LOSS, RiskCode.WEEKLY_LOSS]


def test_circuit_open_without_reason_still_says_so() -> None:
    decision = evaluate(build({"circuit_open": True}))

    assert (decision.code, decision.reason) == (
        RiskCode.CIRCUIT_OPEN,
        "circuit breaker open: no reason given",
    )


def test_evaluate_uses_the_given_now_not_the_wall_clock() -> None:
    # Given a backtest far in the past: a candle closed 30 s before that "now" is fresh, and a
    # cooldown ending after it still blocks, whatever the wall clock says.
    past = datetime(2001, 1, 1, tzinfo=UTC)
    inp = build(
        {
            "now": past,
            "candle_close_time": past - timedelta(seconds=30),
            "cooldown_until": past + timedelta(hours=1),
        }
    )

    decision = evaluate(inp)

    assert (decision.code, decision.reason) == (
        RiskCode.COOLDOWN,
        "cooldown until 2001-01-01T01:00:00+00:00 (1:00:00 left)",
    )
    assert failed_codes(decision) == [RiskCode.COOLDOWN]


@pytest.mark.parametrize("field", ["now", "candle_close_time", "cooldown_until"])
def test_naive_datetime_is_refused(field: str) -> None:
    naive = datetime(2024, 3, 1, 12, 0)  # noqa: DTZ001  (naive on purpose)

    with pytest.raises(ValueError, match=f"{field} must be timezone-aware"):
        evaluate(build({field: naive}))


def test_decision_as_dict_is_json_ready_and_exact() -> None:
    decision = evaluate(build({"circuit_open": True, "circuit_reason": "venue errors"}))

    data = decision.as_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["allowed"] is False
    assert data["code"] == "CIRCUIT_OPEN"
    assert data["reason"] == "circuit breaker open: venue errors"
    assert len(data["checks"]) == len(RiskCode)
    assert data["checks"][0] == {
        "code": "KILL_SWITCH",
        "passed": True,
        "detail": "no kill switch on",
    }
    assert data["checks"][-1] == {
        "code": "CIRCUIT_OPEN",
        "passed": False,
        "detail": "circuit breaker open: venue errors",
    }


def test_allowed_decision_as_dict_has_null_code() -> None:
    data = evaluate(BASE).as_dict()

    assert (data["allowed"], data["code"], data["reason"]) == (True, None, "")


def test_input_as_dict_stores_decimals_datetimes_and_durations_as_strings() -> None:
    data = BASE.as_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["now"] == "2024-03-01T12:00:00+00:00"
    assert data["candle_close_time"] == "2024-03-01T11:59:30+00:00"
    assert data["max_data_age"] == "120"
    assert data["cooldown_until"] is None
    assert data["new_notional"] == "200"
    assert data["exposure"] == {
        "open_positions": 1,
        "bot_notional": "400",
        "symbol_notional": "600",
        "user_notional": "1500",
        "account_notional": "3000",
    }
    assert data["limits"]["weekly_loss_limit_pct"] == "5"
    assert data["kill"] == {
        "global_on": False,
        "user_on": False,
        "bot_on": False,
        "file_on": False,
    }


# --- the data-staleness breaker (the bot's feed, from ingest.selectors.feed_freshness) ---------

STALE_FEED = {
    "feed": "BTCUSDT 1m",
    "feed_age": timedelta(minutes=3, seconds=1),
    "max_feed_age": timedelta(minutes=3),
}


@pytest.mark.parametrize(
    "signal",
    [{}, {"candle_close_time": None}],
    ids=["strategy signal with a fresh candle", "manual signal"],
)
def test_stale_feed_refuses_every_entry_naming_the_feed_and_its_age(signal: dict[str, Any]) -> None:
    decision = evaluate(build({**STALE_FEED, **signal}))

    assert (decision.code, decision.reason) == (
        RiskCode.STALE_DATA,
        "market data BTCUSDT 1m stale: newest candle closed 0:03:01 ago > max 0:03:00",
    )


def test_feed_exactly_at_its_max_age_is_fresh_and_the_detail_says_so() -> None:
    fresh = {**STALE_FEED, "feed_age": timedelta(minutes=3), "candle_close_time": None}

    decision = evaluate(build(fresh))

    assert decision.allowed is True
    stale = decision.checks[list(RiskCode).index(RiskCode.STALE_DATA)]
    assert (
        stale.detail
        == "market data BTCUSDT 1m age 0:03:00 <= max 0:03:00; no candle (manual signal)"
    )


def test_feed_without_candles_is_not_judged_by_the_breaker() -> None:
    decision = evaluate(build({**STALE_FEED, "feed_age": None, "candle_close_time": None}))

    assert decision.allowed is True
