"""The signals API: POST /api/signals/ (idempotent), webhook tokens and the webhook, per-user
scoping and filters of the read-only lists, and which bots a strategy signal reaches."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from execution.models import DeliveryStatus, Order, OrderLeg, SignalDelivery
from execution.tasks import execute_delivery
from signals.models import Signal, SignalSource, WebhookToken
from signals.services import params_hash, signal_create, signal_fan_out
from tests.factories import BotFactory
from trader.alerts import alert
from trader.models import Alert, BotStatus

CANDLE = "2026-11-20T10:00:00Z"  # explicit: a default candle (now) could change between POSTs


def arm_body(**overrides: Any) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "kind": "ARM",
        "side": "BUY",
        "entry_type": "MARKET",
        "stop_price": "49000",
        "take_profit_price": "53000",
        "reference_price": "50000",
        "candle_time": CANDLE,
        **overrides,
    }


@pytest.fixture
def bots(user: Any, other_user: Any) -> dict[str, Any]:
    """The user's two active BTCUSDT bots, a paused one and an ETHUSDT one; another user's."""
    return {
        "a": BotFactory.create(owner=user),
        "b": BotFactory.create(owner=user),
        "paused": BotFactory.create(owner=user, status=BotStatus.PAUSED),
        "eth": BotFactory.create(owner=user, symbol="ETHUSDT"),
        "theirs": BotFactory.create(owner=other_user),
    }


# --- POST /api/signals/ ------------------------------------------------------------------------


def test_post_signal_creates_it_with_one_delivery_per_active_bot_on_the_symbol(
    api, user, bots, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post("/api/signals/", arm_body(), format="json")

    assert response.status_code == 201, response.data
    signal = Signal.objects.get()
    assert response.data["id"] == signal.pk
    assert (signal.source, signal.owner, signal.source_key, signal.kind) == (
        SignalSource.MANUAL,
        user,
        f"manual:{user.pk}",
        "ARM",
    )
    assert (signal.stop_price, signal.take_profit_price) == (Decimal(49000), Decimal(53000))
    deliveries = SignalDelivery.objects.filter(signal=signal)
    assert sorted(d.bot_id for d in deliveries) == sorted([bots["a"].pk, bots["b"].pk])
    assert {d.status for d in deliveries} == {DeliveryStatus.PENDING}
    assert sorted(response.data["deliveries"]) == sorted(d.pk for d in deliveries)
    assert len(callbacks) == 1  # one group of execute_delivery tasks, after the commit


def test_post_signal_enqueues_one_execute_delivery_per_delivery(
    api, bots, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[Any] = []
    monkeypatch.setattr(
        "celery.canvas.group.apply_async", lambda self, **kw: sent.append((self, kw))
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/signals/", arm_body(), format="json")

    [(group, options)] = sent
    assert options == {"queue": "execution"}
    assert sorted(s.args[0] for s in group.tasks) == sorted(response.data["deliveries"])
    assert {s.task for s in group.tasks} == {execute_delivery.name}


def test_repeating_the_same_post_returns_the_same_signal_and_creates_no_delivery(api, bots):
    first = api.post("/api/signals/", arm_body(), format="json")
    deliveries = list(SignalDelivery.objects.values_list("pk", flat=True).order_by("pk"))

    again = api.post("/api/signals/", arm_body(), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.data["id"] == first.data["id"]
    assert Signal.objects.count() == 1
    assert list(SignalDelivery.objects.values_list("pk", flat=True).order_by("pk")) == deliveries


def test_post_signal_for_named_bots_reaches_only_those(api, bots):
    response = api.post("/api/signals/", arm_body(bot_ids=[bots["b"].pk]), format="json")

    assert response.status_code == 201
    signal = Signal.objects.get()
    assert signal.target_bot_ids == [bots["b"].pk]
    assert [d.bot_id for d in SignalDelivery.objects.all()] == [bots["b"].pk]


def test_post_signal_naming_another_users_bot_is_400_and_creates_nothing(api, bots):
    response = api.post(
        "/api/signals/", arm_body(bot_ids=[bots["a"].pk, bots["theirs"].pk]), format="json"
    )

    assert response.status_code == 400
    assert response.data == {"bot_ids": [f"no such bot(s): [{bots['theirs'].pk}]"]}
    assert not Signal.objects.exists()
    assert not SignalDelivery.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"stop_price": None}, "stop_price"),  # ARM without a stop
        ({"stop_price": "51000"}, "stop_price"),  # a BUY stop above the reference price
        ({"side": "SELL", "stop_price": "48000", "take_profit_price": None}, "stop_price"),
        ({"entry_type": "LIMIT", "entry_price": "50000", "stop_price": "50500"}, "stop_price"),
        ({"entry_type": "LIMIT"}, "entry_price"),  # LIMIT without entry_price
        ({"take_profit_price": "48000"}, "take_profit_price"),  # a BUY target below the entry
        ({"side": None}, "side"),
        ({"stop_price": "-1"}, "stop_price"),
        ({"symbol": "BTC/USDT"}, "symbol"),
        ({"interval": "7m"}, "interval"),
        ({"kind": "HOLD"}, "kind"),
        ({"bot_ids": ["x"]}, "bot_ids"),
        ({"leverage": 5}, "leverage"),  # unknown field
    ],
)
def test_invalid_signal_is_400_naming_the_field_and_creates_nothing(api, bots, overrides, field):
    body = {k: v for k, v in arm_body(**overrides).items() if v is not None}

    response = api.post("/api/signals/", body, format="json")

    assert response.status_code == 400, response.data
    assert list(response.data) == [field]
    assert not Signal.objects.exists()
    assert not SignalDelivery.objects.exists()


def test_unknown_field_error_says_so(api, bots):
    response = api.post("/api/signals/", arm_body(colour="red"), format="json")

    assert (response.status_code, response.data) == (400, {"colour": ["Unknown field."]})


def test_post_signal_needs_authentication(bots):
    response = APIClient().post("/api/signals/", arm_body(), format="json")

    assert response.status_code == 401
    assert not Signal.objects.exists()


def test_disarm_needs_no_side_or_stop(api, bots):
    response = api.post(
        "/api/signals/",
        {"symbol": "BTCUSDT", "interval": "1h", "kind": "DISARM", "candle_time": CANDLE},
        format="json",
    )

    assert response.status_code == 201, response.data
    assert (response.data["kind"], response.data["side"], response.data["stop_price"]) == (
        "DISARM",
        "",
        None,
    )
    assert SignalDelivery.objects.count() == 2


# --- webhook -----------------------------------------------------------------------------------


def test_webhook_token_is_shown_once_and_only_its_digest_is_stored(api, user):
    response = api.post("/api/webhook-token/")

    assert response.status_code == 201
    token = response.data["token"]
    assert response.data["url"] == f"/api/webhooks/signals/{token}/"
    row = WebhookToken.objects.get(owner=user)
    assert row.digest != token
    assert token not in row.digest
    assert api.get("/api/webhook-token/").status_code == 405  # it cannot be read back


def test_rotating_the_webhook_token_retires_the_old_one(api, user, bots):
    old = api.post("/api/webhook-token/").data["token"]
    new = api.post("/api/webhook-token/").data["token"]

    assert new != old
    assert WebhookToken.objects.filter(owner=user).count() == 1
    anonymous = APIClient()
    assert (
        anonymous.post(f"/api/webhooks/signals/{old}/", arm_body(), format="json").status_code
        == 404
    )
    assert not Signal.objects.exists()
    assert (
        anonymous.post(f"/api/webhooks/signals/{new}/", arm_body(), format="json").status_code
        == 201
    )


def test_webhook_without_auth_creates_a_webhook_signal_for_the_tokens_owner(api, user, bots):
    token = api.post("/api/webhook-token/").data["token"]

    response = APIClient().post(f"/api/webhooks/signals/{token}/", arm_body(), format="json")

    assert response.status_code == 201, response.data
    signal = Signal.objects.get()
    assert (signal.source, signal.owner, signal.source_key) == (
        SignalSource.WEBHOOK,
        user,
        f"webhook:{user.pk}",
    )
    assert sorted(SignalDelivery.objects.values_list("bot_id", flat=True)) == sorted(
        [bots["a"].pk, bots["b"].pk]
    )
    again = APIClient().post(f"/api/webhooks/signals/{token}/", arm_body(), format="json")
    assert (again.status_code, again.data["id"]) == (200, signal.pk)
    assert SignalDelivery.objects.count() == 2


def test_webhook_with_a_wrong_token_is_404_and_creates_nothing(api, bots):
    api.post("/api/webhook-token/")

    response = APIClient().post("/api/webhooks/signals/not-a-token/", arm_body(), format="json")

    assert response.status_code == 404
    assert not Signal.objects.exists()
    assert not SignalDelivery.objects.exists()


def test_webhook_validates_like_the_api(api, bots):
    token = api.post("/api/webhook-token/").data["token"]

    response = APIClient().post(
        f"/api/webhooks/signals/{token}/", arm_body(stop_price="51000"), format="json"
    )

    assert response.status_code == 400
    assert list(response.data) == ["stop_price"]
    assert not Signal.objects.exists()


# --- lists: scoped per user, filtered ----------------------------------------------------------


def _trading_history(owner: Any, bot: Any, *, symbol: str = "BTCUSDT") -> dict[str, Any]:
    """A signal, its delivery to ``bot``, an entry order and an alert, all ``owner``'s."""
    signal, _ = signal_create(
        source=SignalSource.MANUAL,
        source_key=f"manual:{owner.pk}:{bot.pk}",
        owner=owner,
        symbol=symbol,
        interval="1h",
        kind="ARM",
        side="BUY",
        entry_type="MARKET",
        stop_price=Decimal(1),
        target_bot_ids=[bot.pk],
    )
    delivery = SignalDelivery.objects.create(signal=signal, bot=bot)
    order = Order.objects.create(
        bot=bot, delivery=delivery, leg=OrderLeg.ENTRY, client_order_id=f"t-{delivery.pk}-E",
        venue="paper", symbol=symbol, side="BUY", type="MARKET", quantity=Decimal("0.01"),
    )  # fmt: skip
    row = alert("WARNING", f"test:{bot.pk}", "something happened", owner_id=owner.pk)
    return {"signal": signal, "delivery": delivery, "order": order, "alert": row}


@pytest.fixture
def histories(user: Any, other_user: Any) -> dict[str, Any]:
    mine = BotFactory.create(owner=user)
    mine_eth = BotFactory.create(owner=user, symbol="ETHUSDT")
    theirs = BotFactory.create(owner=other_user)
    return {
        "mine": _trading_history(user, mine),
        "mine_eth": _trading_history(user, mine_eth, symbol="ETHUSDT"),
        "theirs": _trading_history(other_user, theirs),
        "bots": {"mine": mine, "mine_eth": mine_eth, "theirs": theirs},
    }


LISTS = {
    "signals": "signal",
    "deliveries": "delivery",
    "orders": "order",
    "alerts": "alert",
}


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.data
    return sorted(row["id"] for row in response.data["results"])


@pytest.mark.parametrize(("path", "kind"), LISTS.items())
def test_list_shows_only_the_users_own_objects(api, other_api, histories, path, kind):
    mine = sorted(histories[h][kind].pk for h in ("mine", "mine_eth"))
    theirs = [histories["theirs"][kind].pk]

    assert ids(api.get(f"/api/{path}/")) == mine
    assert ids(other_api.get(f"/api/{path}/")) == theirs


@pytest.mark.parametrize(("path", "kind"), LISTS.items())
def test_another_users_object_is_404(other_api, histories, path, kind):
    pk = histories["mine"][kind].pk

    response = other_api.get(f"/api/{path}/{pk}/")

    assert response.status_code == 404


@pytest.mark.parametrize(("path", "kind"), LISTS.items())
def test_own_object_is_readable(api, histories, path, kind):
    pk = histories["mine"][kind].pk

    response = api.get(f"/api/{path}/{pk}/")

    assert (response.status_code, response.data["id"]) == (200, pk)


@pytest.mark.parametrize(("path", "kind"), LISTS.items())
def test_lists_are_read_only(api, histories, path, kind):
    pk = histories["mine"][kind].pk

    assert api.delete(f"/api/{path}/{pk}/").status_code == 405
    assert api.patch(f"/api/{path}/{pk}/", {}, format="json").status_code == 405


def test_strategy_signal_delivered_to_a_bot_is_listed_for_its_owner(api, other_api, user):
    bot = BotFactory.create(owner=user)
    signal, _ = signal_create(
        source=SignalSource.STRATEGY, source_key="strategy:manual:x", symbol="BTCUSDT",
        interval="1h", kind="ARM", side="BUY", entry_type="MARKET", stop_price=Decimal(1),
        params={},
    )  # fmt: skip
    signal_fan_out(signal=signal)

    assert ids(api.get("/api/signals/")) == [signal.pk]
    assert SignalDelivery.objects.get(signal=signal).bot == bot
    assert ids(other_api.get("/api/signals/")) == []


@pytest.mark.parametrize("path", ["signals", "deliveries", "orders"])
def test_list_filters_by_bot(api, histories, path):
    kind = LISTS[path]
    bot = histories["bots"]["mine_eth"]

    assert ids(api.get(f"/api/{path}/", {"bot": bot.pk})) == [histories["mine_eth"][kind].pk]
    assert ids(api.get(f"/api/{path}/", {"bot": histories["bots"]["theirs"].pk})) == []


@pytest.mark.parametrize("path", ["signals", "deliveries", "orders"])
def test_list_filters_by_symbol(api, histories, path):
    kind = LISTS[path]

    response = api.get(f"/api/{path}/", {"symbol": "ethusdt"})

    assert ids(response) == [histories["mine_eth"][kind].pk]


def test_deliveries_filter_by_status(api, histories):
    SignalDelivery.objects.filter(pk=histories["mine"]["delivery"].pk).update(
        status=DeliveryStatus.SKIPPED
    )

    assert ids(api.get("/api/deliveries/", {"status": "skipped"})) == [
        histories["mine"]["delivery"].pk
    ]
    assert ids(api.get("/api/deliveries/", {"status": "PENDING"})) == [
        histories["mine_eth"]["delivery"].pk
    ]


def test_orders_filter_by_state(api, histories):
    Order.objects.filter(pk=histories["mine"]["order"].pk).update(state="FILLED")

    assert ids(api.get("/api/orders/", {"state": "FILLED"})) == [histories["mine"]["order"].pk]
    assert ids(api.get("/api/orders/", {"state": "CANCELED"})) == []


def test_alerts_filter_by_severity(api, user, histories):
    critical = alert("CRITICAL", "test:critical", "worse", owner_id=user.pk)
    assert critical is not None

    assert ids(api.get("/api/alerts/", {"severity": "critical"})) == [critical.pk]


@pytest.mark.parametrize("path", ["signals", "deliveries", "orders"])
def test_list_filters_by_since(api, histories, path):
    kind = LISTS[path]
    model = type(histories["mine"][kind])
    model.objects.filter(pk=histories["mine"][kind].pk).update(
        created_at=timezone.now() - timedelta(days=3)
    )
    since = (timezone.now() - timedelta(days=1)).isoformat()

    assert ids(api.get(f"/api/{path}/", {"since": since})) == [histories["mine_eth"][kind].pk]
    assert ids(api.get(f"/api/{path}/", {"until": since})) == [histories["mine"][kind].pk]


def test_alerts_filter_by_since_on_their_last_occurrence(api, user, histories):
    old = histories["mine"]["alert"]
    Alert.objects.filter(pk=old.pk).update(
        first_at=timezone.now() - timedelta(days=3),
        last_at=timezone.now() - timedelta(days=3),
    )
    since = (timezone.now() - timedelta(days=1)).isoformat()

    assert ids(api.get("/api/alerts/", {"since": since})) == [histories["mine_eth"]["alert"].pk]
    assert ids(api.get("/api/alerts/", {"until": since})) == [old.pk]


@pytest.mark.parametrize("path", ["signals", "deliveries", "orders", "alerts"])
def test_list_with_a_bad_since_is_400(api, histories, path):
    response = api.get(f"/api/{path}/", {"since": "yesterday"})

    assert response.status_code == 400
    assert response.data == {"since": ["'yesterday' is not an ISO 8601 date-time"]}


@pytest.mark.parametrize("path", ["signals", "deliveries", "orders"])
def test_list_with_a_bad_bot_is_400(api, histories, path):
    response = api.get(f"/api/{path}/", {"bot": "abc"})

    assert response.status_code == 400
    assert list(response.data) == ["bot"]


def test_other_user_sees_no_deliveries_of_a_signal_fanned_out_to_my_bots(other_api, histories):
    response = other_api.get("/api/deliveries/", {"bot": histories["bots"]["mine"].pk})

    assert ids(response) == []


def test_lists_need_authentication(histories):
    for path in LISTS:
        assert APIClient().get(f"/api/{path}/").status_code == 401


# --- strategy signals reach the bots whose strategy settings match -----------------------------


def test_strategy_signal_reaches_only_active_bots_with_the_same_strategy_settings(user, other_user):
    match = BotFactory.create(owner=user, strategy_params={})
    match_other_owner = BotFactory.create(owner=other_user, strategy_params={})
    other_interval = BotFactory.create(owner=user, interval="4h")
    other_params = BotFactory.create(owner=user, strategy_params={"fast": 9})
    BotFactory.create(owner=user, status=BotStatus.PAUSED)
    BotFactory.create(owner=user, symbol="ETHUSDT")
    signal, created = signal_create(
        source=SignalSource.STRATEGY,
        source_key=f"strategy:manual:{params_hash({})}",
        strategy="manual",
        params={},
        symbol="BTCUSDT",
        interval="1h",
        kind="ARM",
        side="BUY",
        entry_type="MARKET",
        stop_price=Decimal(49000),
        reference_price=Decimal(50000),
    )

    fresh = signal_fan_out(signal=signal)

    assert created is True
    assert (signal.owner, signal.params_hash) == (None, params_hash({}))
    receivers = set(SignalDelivery.objects.filter(signal=signal).values_list("bot_id", flat=True))
    assert receivers == {match.pk, match_other_owner.pk}
    assert not SignalDelivery.objects.filter(bot__in=[other_interval, other_params]).exists()
    assert sorted(fresh) == sorted(SignalDelivery.objects.values_list("pk", flat=True))


def test_strategy_signal_with_other_params_reaches_the_bot_with_those_params(user):
    BotFactory.create(owner=user, strategy_params={})
    tuned = BotFactory.create(owner=user, strategy_params={"slow": 21, "fast": 9})
    signal, _ = signal_create(
        source=SignalSource.STRATEGY, source_key="strategy:manual:tuned", strategy="manual",
        params={"fast": 9, "slow": 21}, symbol="BTCUSDT", interval="1h", kind="ARM",
        side="BUY", entry_type="MARKET", stop_price=Decimal(49000),
    )  # fmt: skip

    signal_fan_out(signal=signal)

    assert list(SignalDelivery.objects.values_list("bot_id", flat=True)) == [tuned.pk]


def test_repeated_fan_out_creates_no_second_delivery(user):
    bot = BotFactory.create(owner=user)
    signal, _ = signal_create(
        source=SignalSource.MANUAL, source_key=f"manual:{user.pk}", owner=user,
        symbol="BTCUSDT", interval="1h", kind="ARM", side="BUY", entry_type="MARKET",
        stop_price=Decimal(49000),
    )  # fmt: skip
    [first] = signal_fan_out(signal=signal)
    SignalDelivery.objects.filter(pk=first).update(attempts=1)  # a worker has started it

    assert signal_fan_out(signal=signal) == []
    assert list(SignalDelivery.objects.values_list("pk", "bot_id")) == [(first, bot.pk)]
