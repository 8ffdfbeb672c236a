"""/api/strategies/ (what each strategy is: schema, defaults, warm-up, enabled) and
/api/evaluations/ (only those of the requesting user's bots' strategy, params, symbol and
interval; filters; pagination)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from signals.strategies import get_strategy
from tests.factories import BotFactory, EvaluationFactory

EVALUATION_FIELDS = {
    "id",
    "symbol",
    "interval",
    "candle_time",
    "strategy",
    "params",
    "status",
    "reason",
    "regime",
    "regime_detail",
    "decisions",
    "armed_side",
    "armed_until",
    "candles",
    "duration_ms",
    "created_at",
}


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.data
    return [row["id"] for row in response.data["results"]]


# --- /api/strategies/ -------------------------------------------------------------------------


def test_strategies_list_shows_each_registered_strategy_with_schema_and_defaults(api):
    response = api.get("/api/strategies/")

    assert response.status_code == 200
    by_key = {row["key"]: row for row in response.data}
    assert {"manual", "trend_breakout", "range_reversion"} <= set(by_key)
    for key in ("trend_breakout", "range_reversion"):
        cls = get_strategy(key)
        row = by_key[key]
        assert row["params_schema"] == cls.params_schema
        assert row["defaults"] == cls.defaults()
        assert row["warmup"] == cls.warmup_for(cls.defaults()) > 0
        assert (row["enabled"], row["evaluated"]) == (True, True)
        assert row["description"].startswith(f"``{key}``:")
        assert "\n" not in row["description"]  # the first paragraph, on one line
    assert by_key["trend_breakout"]["defaults"]["ema_fast"] == 20
    assert by_key["range_reversion"]["defaults"]["bb_period"] == 20
    manual = by_key["manual"]
    assert (manual["evaluated"], manual["defaults"], manual["warmup"]) == (False, {}, 0)


def test_strategy_detail_returns_one_strategy_and_unknown_key_is_404(api):
    response = api.get("/api/strategies/trend_breakout/")
    assert response.status_code == 200
    assert response.data["key"] == "trend_breakout"
    assert "ema_slow" in response.data["params_schema"]["properties"]

    assert api.get("/api/strategies/martingale/").status_code == 404


def test_disabled_strategy_is_listed_with_enabled_false(api, settings):
    settings.STRATEGIES_DISABLED = ("range_reversion",)

    rows = {row["key"]: row for row in api.get("/api/strategies/").data}

    assert rows["range_reversion"]["enabled"] is False
    assert rows["trend_breakout"]["enabled"] is True
    assert api.get("/api/strategies/range_reversion/").data["enabled"] is False


@pytest.mark.parametrize(
    "url", ["/api/strategies/", "/api/strategies/manual/", "/api/evaluations/"]
)
def test_unauthenticated_request_is_401(db, url):
    assert APIClient().get(url).status_code == 401


def test_strategies_are_read_only(api):
    assert api.post("/api/strategies/", {}, format="json").status_code == 405
    assert api.put("/api/strategies/manual/", {}, format="json").status_code == 405


# --- /api/evaluations/ ------------------------------------------------------------------------


def test_evaluations_show_only_those_of_the_users_bots_newest_first(api, user, other_user):
    params = {"ema_fast": 10}
    BotFactory.create(owner=user, strategy="trend_breakout", strategy_params=params)
    BotFactory.create(owner=other_user, strategy="trend_breakout", strategy_params={})
    BotFactory.create(owner=other_user, strategy="range_reversion", symbol="ETHUSDT")
    older = EvaluationFactory.create(params=params)
    newer = EvaluationFactory.create(params=params, armed_side="BUY", decisions=[{"a": 1}])
    EvaluationFactory.create(params={})  # their params
    EvaluationFactory.create(strategy="range_reversion", symbol="ETHUSDT")  # their bot
    EvaluationFactory.create(params=params, interval="4h")  # no bot of the user runs 4h
    EvaluationFactory.create(params=params, symbol="ETHUSDT")  # nor ETHUSDT
    EvaluationFactory.create(strategy="range_reversion", params=params)  # nor this strategy

    response = api.get("/api/evaluations/")

    assert ids(response) == [newer.pk, older.pk]
    assert response.data["count"] == 2
    row = response.data["results"][0]
    assert set(row) == EVALUATION_FIELDS
    assert (row["strategy"], row["params"], row["armed_side"]) == ("trend_breakout", params, "BUY")
    assert row["decisions"] == [{"a": 1}]


def test_another_users_evaluation_is_404_in_detail(api, other_user):
    BotFactory.create(owner=other_user, strategy="trend_breakout")
    theirs = EvaluationFactory.create()

    assert api.get(f"/api/evaluations/{theirs.pk}/").status_code == 404


def test_user_without_bots_sees_no_evaluations(api):
    EvaluationFactory.create()
    assert ids(api.get("/api/evaluations/")) == []


def test_evaluation_detail_of_own_bot(api, user):
    BotFactory.create(owner=user, strategy="trend_breakout")
    mine = EvaluationFactory.create(reason="2 of 70 candles", status="WARMING_UP")

    response = api.get(f"/api/evaluations/{mine.pk}/")

    assert response.status_code == 200
    assert (response.data["status"], response.data["reason"]) == ("WARMING_UP", "2 of 70 candles")


@pytest.fixture
def two_bots(user: Any, other_user: Any) -> dict[str, Any]:
    """A trend bot on BTCUSDT 1h and a range bot on ETHUSDT 4h; evaluations of each."""
    trend = BotFactory.create(owner=user, strategy="trend_breakout")
    ranging = BotFactory.create(
        owner=user, strategy="range_reversion", symbol="ETHUSDT", interval="4h"
    )
    return {
        "trend": trend,
        "range": ranging,
        "theirs": BotFactory.create(owner=other_user, strategy="trend_breakout"),
        "evaluated": EvaluationFactory.create(status="EVALUATED"),
        "warming": EvaluationFactory.create(status="WARMING_UP"),
        "refused": EvaluationFactory.create(
            strategy="range_reversion", symbol="ETHUSDT", interval="4h", status="REFUSED"
        ),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"bot": "range"}, ["refused"]),
        ({"bot": "trend"}, ["warming", "evaluated"]),
        ({"symbol": "ethusdt"}, ["refused"]),
        ({"interval": "1h"}, ["warming", "evaluated"]),
        ({"strategy": "range_reversion"}, ["refused"]),
        ({"status": "warming_up"}, ["warming"]),
        ({"bot": "trend", "status": "EVALUATED"}, ["evaluated"]),
        ({"bot": "trend", "symbol": "ETHUSDT"}, []),
        ({"bot": "theirs"}, []),
        ({}, ["refused", "warming", "evaluated"]),
    ],
)
def test_evaluation_filters_narrow_the_list(api, two_bots, query, expected):
    params = {k: two_bots[v].pk if k == "bot" else v for k, v in query.items()}

    response = api.get("/api/evaluations/", params)

    assert ids(response) == [two_bots[name].pk for name in expected]


def test_bad_bot_filter_is_400(api, two_bots):
    response = api.get("/api/evaluations/", {"bot": "abc"})
    assert response.status_code == 400
    assert "bot" in response.data


def test_evaluations_are_paginated_with_limit_and_offset(api, two_bots):
    response = api.get("/api/evaluations/", {"limit": 1, "offset": 1})

    assert response.data["count"] == 3
    assert ids(response) == [two_bots["warming"].pk]
    assert response.data["next"]
    assert response.data["previous"]


def test_evaluation_list_queries_do_not_grow_with_bots_or_evaluations(
    api, user, django_assert_max_num_queries
):
    for n in range(5):
        params = {"ema_fast": 10 + n}
        BotFactory.create(owner=user, strategy="trend_breakout", strategy_params=params)
        EvaluationFactory.create_batch(3, params=params)
    EvaluationFactory.create_batch(20, params={"ema_fast": 99})  # nobody's

    # the user (JWT), the bots' tuples, the count, the page
    with django_assert_max_num_queries(4):
        response = api.get("/api/evaluations/")

    assert response.data["count"] == 15
