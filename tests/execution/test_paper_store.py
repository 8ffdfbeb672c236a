"""``PersistentPaperVenue``: a paper account's stored state stays bounded while it trades, and
queries neither lock nor rewrite it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from execution.models import PaperAccount
from execution.venues.base import OrderRequest, OrderType, Side
from execution.venues.paper_store import PersistentPaperVenue
from tests.factories import BotFactory

pytestmark = pytest.mark.django_db
BTC = "BTCUSDT"


def trade_back_and_forth(venue: PersistentPaperVenue, rounds: int) -> None:
    venue.feed_price(BTC, Decimal("50000"), time_ms=1_700_000_000_000)
    for n in range(rounds):
        side = Side.BUY if n % 2 == 0 else Side.SELL
        venue.place_order(
            OrderRequest(symbol=BTC, side=side, type=OrderType.MARKET, quantity=Decimal("0.01"))
        )


def stored_orders(bot_id: int) -> tuple[int, int]:
    (account,) = PaperAccount.objects.get(bot_id=bot_id).state["accounts"]
    return len(account["orders"]), len(account["trades"])


def test_paper_account_remembers_only_the_newest_closed_orders_and_loses_no_money() -> None:
    short, long = BotFactory.create(), BotFactory.create()
    with override_settings(PAPER_HISTORY_KEEP=3):
        trade_back_and_forth(PersistentPaperVenue(bot_id=short.pk), 12)
    with override_settings(PAPER_HISTORY_KEEP=100):
        trade_back_and_forth(PersistentPaperVenue(bot_id=long.pk), 12)

    assert stored_orders(short.pk) == (3, 3)
    assert stored_orders(long.pk) == (12, 12)
    # Forgetting history changes nothing else: the same wallet, fees and position.
    forgetful, full = PersistentPaperVenue(bot_id=short.pk), PersistentPaperVenue(bot_id=long.pk)
    assert forgetful.balances() == full.balances()
    assert forgetful.positions(symbol=BTC) == full.positions(symbol=BTC)
    assert [t.order_id for t in forgetful.user_trades(symbol=BTC)] == [
        t.order_id for t in full.user_trades(symbol=BTC)[-3:]
    ]


def test_queries_read_the_account_without_locking_or_rewriting_it() -> None:
    bot = BotFactory.create()
    venue = PersistentPaperVenue(bot_id=bot.pk)
    trade_back_and_forth(venue, 1)
    written = PaperAccount.objects.get(bot_id=bot.pk).updated_at

    with CaptureQueriesContext(connection) as queries:
        open_orders = venue.open_orders(symbol=BTC)
        trades = venue.user_trades(symbol=BTC)
        balances = venue.balances()
        positions = venue.positions(symbol=BTC)
        filled = venue.get_order(symbol=BTC, venue_id=trades[0].order_id)

    assert open_orders == []  # the MARKET order filled
    assert filled.status == "FILLED"
    assert [p.amount for p in positions] == [Decimal("0.01")]
    assert balances[0].wallet_balance < Decimal("10000")  # the fee was paid
    sql = " ".join(q["sql"] for q in queries).upper()
    assert "UPDATE" not in sql
    assert "INSERT" not in sql
    assert PaperAccount.objects.get(bot_id=bot.pk).updated_at == written


def test_a_query_on_an_account_never_used_sees_the_starting_balance_and_creates_nothing() -> None:
    bot = BotFactory.create()

    (balance,) = PersistentPaperVenue(bot_id=bot.pk).balances()

    assert balance.wallet_balance == Decimal("10000")
    assert not PaperAccount.objects.filter(bot_id=bot.pk).exists()
