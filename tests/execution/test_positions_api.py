"""/api/positions/, /api/fills/ and /api/bots/<id>/performance/: scoped per user, exact figures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from execution.models import Fill, Position, PositionStatus
from tests.factories import BotFactory


def make_position(bot, *, pnl: str, fees: str, status=PositionStatus.CLOSED, day: int = 1):
    closed_at = datetime(2026, 11, day, 12, tzinfo=UTC) if status == PositionStatus.CLOSED else None
    return Position.objects.create(
        bot=bot,
        symbol=bot.symbol,
        side="LONG",
        status=status,
        quantity=Decimal(0) if closed_at else Decimal("0.01"),
        entry_qty=Decimal("0.01"),
        entry_price=Decimal("40000"),
        realized_pnl=Decimal(pnl),
        fees=Decimal(fees),
        closed_at=closed_at,
    )


@pytest.fixture
def my_bot(user):
    return BotFactory.create(owner=user)


def test_performance_sums_closed_positions_by_day_with_win_rate(api, my_bot):
    make_position(my_bot, pnl="10", fees="1", day=1)
    make_position(my_bot, pnl="-4", fees="1", day=1)
    make_position(my_bot, pnl="6", fees="0.5", day=2)
    make_position(my_bot, pnl="0", fees="0", status=PositionStatus.OPEN)
    response = api.get(f"/api/bots/{my_bot.pk}/performance/")
    assert response.status_code == 200
    body = response.json()
    assert (body["trades"], body["open_positions"]) == (3, 1)
    assert Decimal(body["realized_pnl"]) == Decimal("12")
    assert Decimal(body["fees"]) == Decimal("2.5")
    assert Decimal(body["net_pnl"]) == Decimal("9.5")
    assert Decimal(body["win_rate"]) == Decimal("0.6667")  # 2 of 3 net winners
    assert Decimal(body["max_drawdown"]) == Decimal("5")  # net +9, then -5, then +5.5
    assert [(d["day"], d["trades"], Decimal(d["realized_pnl"])) for d in body["by_day"]] == [
        ("2026-11-01", 2, Decimal("6")),
        ("2026-11-02", 1, Decimal("6")),
    ]


def test_another_users_bot_performance_is_404(other_api, my_bot):
    assert other_api.get(f"/api/bots/{my_bot.pk}/performance/").status_code == 404


def test_positions_and_fills_are_scoped_and_filterable(api, other_api, my_bot):
    position = make_position(my_bot, pnl="1", fees="0", status=PositionStatus.OPEN)
    Fill.objects.create(
        account="credential-1",
        bot=my_bot,
        symbol=my_bot.symbol,
        venue_trade_id=7,
        venue_order_id=9,
        side="BUY",
        price=Decimal("40000"),
        qty=Decimal("0.01"),
        quote_qty=Decimal("400"),
        commission=Decimal("0.2"),
        commission_asset="USDT",
        realized_pnl=Decimal(0),
        maker=False,
        time=datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert [p["id"] for p in api.get("/api/positions/?status=open").json()["results"]] == [
        position.pk
    ]
    assert api.get("/api/positions/?status=closed").json()["count"] == 0
    assert api.get("/api/fills/").json()["results"][0]["venue_trade_id"] == 7
    assert api.get("/api/fills/?since=2026-11-02T00:00:00Z").json()["count"] == 0
    assert other_api.get("/api/positions/").json()["count"] == 0
    assert other_api.get("/api/fills/").json()["count"] == 0
    assert other_api.get(f"/api/positions/{position.pk}/").status_code == 404
    assert api.get("/api/fills/?since=yesterday").status_code == 400
