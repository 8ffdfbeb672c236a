"""Admin: evaluations are read-only; the bot pages show the strategies' params schemas."""

from __future__ import annotations

from signals.models import Evaluation
from signals.selectors import StrategyInfo
from tests.factories import BotFactory, EvaluationFactory, UserFactory
from trader.admin import strategy_params_html

CHANGELIST = "/admin/signals/evaluation/"


def test_evaluation_changelist_renders_with_filters_and_search(admin_client):
    EvaluationFactory.create(symbol="ETHUSDT", status="REFUSED", reason="gap: 2 candle(s)")
    EvaluationFactory.create(symbol="BTCUSDT", regime="trending_up", reason="breakout up")

    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "ETHUSDT" in page
    assert "gap: 2 candle(s)" in page
    assert "trending_up" in page
    assert "breakout up" in page

    filtered = admin_client.get(CHANGELIST, {"status__exact": "REFUSED"}).content.decode()
    assert "ETHUSDT" in filtered
    assert "breakout up" not in filtered
    searched = admin_client.get(CHANGELIST, {"q": "btc"}).content.decode()
    assert "breakout up" in searched
    assert "gap: 2 candle(s)" not in searched


def test_evaluation_admin_refuses_add_change_and_delete(admin_client):
    evaluation = EvaluationFactory.create()

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    change = admin_client.get(f"{CHANGELIST}{evaluation.pk}/change/")
    assert change.status_code == 200  # shown read-only
    assert 'name="_save"' not in change.content.decode()
    response = admin_client.post(f"{CHANGELIST}{evaluation.pk}/change/", {"symbol": "XRPUSDT"})
    assert response.status_code == 403
    assert admin_client.post(f"{CHANGELIST}{evaluation.pk}/delete/").status_code == 403
    evaluation.refresh_from_db()
    assert evaluation.symbol == "BTCUSDT"
    assert Evaluation.objects.count() == 1


def test_bot_admin_change_page_shows_its_strategys_params_schema(admin_client):
    bot = BotFactory.create(owner=UserFactory.create(), strategy="trend_breakout")

    page = admin_client.get(f"/admin/trader/bot/{bot.pk}/change/").content.decode()

    assert "Strategy params schema" in page
    assert "Fast EMA period (must be below ema_slow). Default 20." in page
    assert "<code>ema_fast</code>" in page
    assert "donchian_period" in page
    assert "bb_period" not in page  # range_reversion's: not this bot's strategy


def test_bot_admin_add_page_lists_every_strategys_params(admin_client):
    page = admin_client.get("/admin/trader/bot/add/").content.decode()

    for text in ("trend_breakout", "range_reversion", "ema_fast", "bb_period", "No params"):
        assert text in page


def test_strategy_params_html_escapes_every_value():
    info = StrategyInfo(
        key="x<b>",
        description="<script>alert(1)</script>",
        enabled=False,
        evaluated=True,
        warmup=3,
        params_schema={
            "properties": {
                "<i>p": {"type": "integer", "minimum": 1, "default": 2, "description": "a & <b>"}
            }
        },
        defaults={"<i>p": 2},
    )

    html = strategy_params_html(info)

    assert "<script>" not in html
    assert "<i>" not in html
    assert "x<b>" not in html
    assert "&lt;script&gt;" in html
    assert "a &amp; &lt;b&gt;" in html
    assert "(disabled)" in html
