"""The kill switch: the API (BOT, USER, GLOBAL), what it blocks, the sweep of open entries at
the emulator (with and without flatten), release, idempotence, and the management command."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from execution import tasks
from execution.models import (
    DeliveryStatus,
    KillScope,
    KillSwitch,
    Order,
    OrderLeg,
    SignalDelivery,
)
from execution.services import delivery_execute, kill_switch_engage, kill_switch_sweep
from execution.states import OrderState
from tests.conftest import jwt_client
from tests.execution import placement_fixtures as pf
from tests.factories import BotFactory, UserFactory
from trader.models import Alert

pytestmark = pytest.mark.django_db

URL = "/api/kill-switch/"


@pytest.fixture
def paper(settings: Any, tmp_path: Any) -> None:
    """DRY_RUN: every bot trades on its paper account."""
    settings.TRADING_MODE = "DRY_RUN"
    settings.KILL_SWITCH = False
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL")


@pytest.fixture
def env(emu: Any, settings: Any, tmp_path: Any) -> Any:
    emu.reset()
    pf.use_emulator(emu, settings, tmp_path)
    return emu


@pytest.fixture
def sweeps(monkeypatch: Any) -> list[int]:
    """The switch ids handed to the sweep task (recorded, not run)."""
    sent: list[int] = []
    monkeypatch.setattr(tasks.kill_switch_sweep, "delay", sent.append)
    return sent


def paper_delivery(bot: Any, key: str = "k") -> SignalDelivery:
    signal = pf.arm(
        bot,
        key=f"{key}:{bot.pk}",
        stop_price=Decimal(49000),
        take_profit_price=Decimal(52000),
        reference_price=Decimal(50000),
    )
    return pf.deliver(signal, bot)


def run(delivery: SignalDelivery) -> SignalDelivery:
    return delivery_execute(delivery_id=delivery.pk)


def engaged() -> list[KillSwitch]:
    return list(KillSwitch.objects.filter(released_at__isnull=True))


# --- the API -----------------------------------------------------------------------------------


def test_bot_switch_engages_and_blocks_only_that_bot(
    api, user, paper, sweeps, django_capture_on_commit_callbacks
):
    covered, uncovered = BotFactory.create(owner=user), BotFactory.create(owner=user)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            URL,
            {"scope": "BOT", "engaged": True, "bot_id": covered.pk, "reason": "test"},
            format="json",
        )

    assert response.status_code == 200, response.data
    [switch] = engaged()
    assert (switch.scope, switch.bot, switch.user, switch.engaged_by) == (
        KillScope.BOT,
        covered,
        None,
        user,
    )
    assert (response.data["id"], response.data["reason"]) == (switch.pk, "test")
    assert sweeps == [switch.pk]
    [raised] = Alert.objects.filter(key=f"kill_switch:BOT:{covered.pk}")
    assert (raised.severity, raised.owner_id) == ("CRITICAL", user.pk)
    blocked, allowed = run(paper_delivery(covered)), run(paper_delivery(uncovered))
    assert (blocked.status, blocked.reason_code, blocked.reason) == (
        DeliveryStatus.SKIPPED,
        "KILL_SWITCH",
        "kill switch on: bot",
    )
    assert not Order.objects.filter(delivery=blocked).exists()
    assert (allowed.status, allowed.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")


def test_user_switch_blocks_all_the_users_bots_and_no_one_elses(api, user, paper, sweeps):
    mine = [BotFactory.create(owner=user), BotFactory.create(owner=user)]
    someone_elses = BotFactory.create()

    response = api.post(URL, {"scope": "USER", "engaged": True}, format="json")

    assert response.status_code == 200
    [switch] = engaged()
    assert (switch.scope, switch.user, switch.bot) == (KillScope.USER, user, None)
    for bot in mine:
        delivery = run(paper_delivery(bot))
        assert (delivery.status, delivery.reason) == (
            DeliveryStatus.SKIPPED,
            "kill switch on: user",
        )
    assert run(paper_delivery(someone_elses)).status == DeliveryStatus.EXECUTED


def test_global_switch_by_a_non_staff_user_is_403_and_engages_nothing(api, sweeps):
    response = api.post(URL, {"scope": "GLOBAL", "engaged": True}, format="json")

    assert response.status_code == 403
    assert not KillSwitch.objects.exists()
    assert not Alert.objects.filter(key__startswith="kill_switch").exists()


def test_global_switch_by_staff_blocks_every_bot(paper, sweeps):
    staff = UserFactory.create(is_staff=True)
    anyone = BotFactory.create()

    response = jwt_client(staff).post(URL, {"scope": "GLOBAL", "engaged": True}, format="json")

    assert response.status_code == 200
    [switch] = engaged()
    assert (switch.scope, switch.user, switch.bot, switch.engaged_by) == (
        KillScope.GLOBAL,
        None,
        None,
        staff,
    )
    delivery = run(paper_delivery(anyone))
    assert (delivery.status, delivery.reason) == (DeliveryStatus.SKIPPED, "kill switch on: global")
    release = jwt_client(staff).post(URL, {"scope": "GLOBAL", "engaged": False}, format="json")
    assert release.status_code == 204
    assert engaged() == []


def test_bot_switch_on_another_users_bot_is_404_and_engages_nothing(api, sweeps):
    theirs = BotFactory.create()

    response = api.post(URL, {"scope": "BOT", "engaged": True, "bot_id": theirs.pk}, format="json")

    assert response.status_code == 404
    assert not KillSwitch.objects.exists()
    assert sweeps == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "BOT", "engaged": True}, "bot_id"),
        ({"scope": "PLANET", "engaged": True}, "scope"),
        ({"scope": "USER"}, "engaged"),
        ({"scope": "USER", "engaged": True, "colour": "red"}, "colour"),
    ],
)
def test_invalid_kill_switch_request_is_400_naming_the_field(api, user, body, field):
    BotFactory.create(owner=user)

    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert list(response.data) == [field]
    assert not KillSwitch.objects.exists()


def test_engaging_twice_keeps_one_engaged_switch_and_adds_flatten(api, user, sweeps):
    bot = BotFactory.create(owner=user)
    first = api.post(URL, {"scope": "BOT", "engaged": True, "bot_id": bot.pk}, format="json")

    second = api.post(
        URL, {"scope": "BOT", "engaged": True, "bot_id": bot.pk, "flatten": True}, format="json"
    )

    assert (first.status_code, second.status_code) == (200, 200)
    [switch] = engaged()
    assert first.data["id"] == second.data["id"] == switch.pk
    assert switch.flatten is True
    assert KillSwitch.objects.count() == 1


def test_engaging_twice_through_the_service_is_idempotent(user):
    first = kill_switch_engage(scope=KillScope.USER, user=user)
    second = kill_switch_engage(scope=KillScope.USER, user=user)

    assert first.pk == second.pk
    assert KillSwitch.objects.count() == 1


def test_releasing_allows_trading_again(api, user, paper, sweeps):
    bot = BotFactory.create(owner=user)
    api.post(URL, {"scope": "BOT", "engaged": True, "bot_id": bot.pk}, format="json")
    assert run(paper_delivery(bot, "before")).reason_code == "KILL_SWITCH"

    response = api.post(URL, {"scope": "BOT", "engaged": False, "bot_id": bot.pk}, format="json")

    assert response.status_code == 204
    [switch] = KillSwitch.objects.all()
    assert switch.released_at is not None
    assert engaged() == []
    [released] = Alert.objects.filter(key=f"kill_switch_released:BOT:{bot.pk}")
    assert (released.severity, released.owner_id) == ("INFO", user.pk)
    alerts = api.get("/api/alerts/").data["results"]
    assert [a["key"] for a in alerts] == [
        f"kill_switch_released:BOT:{bot.pk}",
        f"kill_switch:BOT:{bot.pk}",
    ]
    after = run(paper_delivery(bot, "after"))
    assert (after.status, after.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    # Engaging again makes a new row; the released one is kept as history.
    api.post(URL, {"scope": "BOT", "engaged": True, "bot_id": bot.pk}, format="json")
    assert KillSwitch.objects.count() == 2
    assert len(engaged()) == 1


def test_listing_shows_own_and_global_switches_only(api, user, other_user, sweeps):
    mine = kill_switch_engage(scope=KillScope.BOT, bot=BotFactory.create(owner=user))
    own_user = kill_switch_engage(scope=KillScope.USER, user=user)
    kill_switch_engage(scope=KillScope.USER, user=other_user)
    kill_switch_engage(scope=KillScope.BOT, bot=BotFactory.create(owner=other_user))
    everyone = kill_switch_engage(scope=KillScope.GLOBAL)

    response = api.get(URL)

    assert response.status_code == 200
    assert sorted(row["id"] for row in response.data) == sorted([mine.pk, own_user.pk, everyone.pk])


def test_switch_engaged_between_the_risk_check_and_the_send_stops_the_entry(
    user, paper, monkeypatch
):
    bot = BotFactory.create(owner=user)
    delivery = paper_delivery(bot)
    real = __import__("execution.services", fromlist=["_ensure_leverage"])._ensure_leverage

    def engage_meanwhile(venue: Any, account: str, b: Any) -> None:
        KillSwitch.objects.create(scope=KillScope.BOT, bot=b)
        real(venue, account, b)

    monkeypatch.setattr("execution.services._ensure_leverage", engage_meanwhile)

    delivery = run(delivery)

    assert (delivery.status, delivery.reason_code, delivery.reason) == (
        DeliveryStatus.SKIPPED,
        "KILL_SWITCH",
        "kill switch engaged before the entry was sent",
    )
    orders = Order.objects.filter(delivery=delivery)
    assert {(o.leg, o.state, o.sent_at) for o in orders} == {
        ("ENTRY", OrderState.CANCELED, None),
        ("STOP_LOSS", OrderState.CANCELED, None),
        ("TAKE_PROFIT", OrderState.CANCELED, None),
    }
    from execution.venues.paper_store import PersistentPaperVenue

    venue = PersistentPaperVenue(bot_id=bot.pk)
    assert venue.open_orders(symbol=pf.SYMBOL) == []
    assert [p for p in venue.positions(symbol=pf.SYMBOL) if p.amount] == []


# --- the sweep, against the emulator ------------------------------------------------------------


@pytest.fixture
def two_trades(env: Any) -> dict[str, Any]:
    """One user, two bots on two emulator accounts: a resting LIMIT trio and a filled MARKET
    trio (a long protected by its stop-loss and take-profit)."""
    owner = UserFactory.create()
    resting_spec, filled_spec = env.fresh_account(), env.fresh_account()
    resting_bot = pf.emulator_bot(resting_spec, owner=owner)
    filled_bot = pf.emulator_bot(filled_spec, owner=owner)
    resting = run(pf.arm_trio(env, resting_bot, entry_type="LIMIT", key=f"r:{owner.pk}"))
    filled = run(pf.arm_trio(env, filled_bot, key=f"f:{owner.pk}"))
    assert (resting.status, filled.status) == (DeliveryStatus.EXECUTED, DeliveryStatus.EXECUTED)
    return {
        "owner": owner,
        "resting": (resting_spec, resting_bot, resting),
        "filled": (filled_spec, filled_bot, filled),
    }


def leg_states(delivery: SignalDelivery) -> dict[str, str]:
    return {o.leg: o.state for o in Order.objects.filter(delivery=delivery)}


def test_sweep_cancels_resting_entries_with_their_protection_and_keeps_filled_ones_protected(
    env, two_trades, sweeps
):
    resting_spec, _, resting = two_trades["resting"]
    filled_spec, filled_bot, filled = two_trades["filled"]
    switch = kill_switch_engage(scope=KillScope.USER, user=two_trades["owner"], reason="test")

    actions = kill_switch_sweep(switch_id=switch.pk)

    assert actions == [{"cancelled": pf.client_id(resting, "E"), "state": "CANCELED"}]
    switch.refresh_from_db()
    assert switch.actions == actions
    assert leg_states(resting) == {
        "ENTRY": OrderState.CANCELED,
        "STOP_LOSS": OrderState.CANCELED,
        "TAKE_PROFIT": OrderState.CANCELED,
    }
    assert pf.open_orders(env, resting_spec) == []
    assert pf.open_algos(env, resting_spec) == []
    assert leg_states(filled) == {
        "ENTRY": OrderState.FILLED,
        "STOP_LOSS": OrderState.NEW,
        "TAKE_PROFIT": OrderState.NEW,
    }
    assert {a.client_algo_id for a in pf.open_algos(env, filled_spec)} == {
        pf.client_id(filled, "SL"),
        pf.client_id(filled, "TP"),
    }
    assert (
        pf.position_amount(env, filled_spec)
        == Order.objects.get(delivery=filled, leg=OrderLeg.ENTRY).quantity
    )
    assert not Order.objects.filter(bot=filled_bot, leg=OrderLeg.CLOSE).exists()
    [report] = Alert.objects.filter(key=f"kill_switch_sweep:{switch.pk}")
    assert (report.severity, report.message, report.owner) == (
        "WARNING",
        f"kill switch {switch.pk}: 1 actions, 0 errors",
        two_trades["owner"],
    )


def test_sweep_with_flatten_closes_positions_reduce_only_and_cancels_their_protection(
    env, two_trades, sweeps
):
    resting_spec, _, resting = two_trades["resting"]
    filled_spec, filled_bot, filled = two_trades["filled"]
    qty = Order.objects.get(delivery=filled, leg=OrderLeg.ENTRY).quantity
    switch = kill_switch_engage(scope=KillScope.USER, user=two_trades["owner"], flatten=True)

    actions = kill_switch_sweep(switch_id=switch.pk)

    switch.refresh_from_db()
    assert switch.actions == [
        {"cancelled": pf.client_id(resting, "E"), "state": "CANCELED"},
        {"closed": str(qty), "entry": pf.client_id(filled, "E"), "state": "FILLED"},
    ]
    assert len(actions) == 2
    assert leg_states(resting) == {
        "ENTRY": OrderState.CANCELED,
        "STOP_LOSS": OrderState.CANCELED,
        "TAKE_PROFIT": OrderState.CANCELED,
    }
    [close] = Order.objects.filter(bot=filled_bot, leg=OrderLeg.CLOSE)
    assert (close.client_order_id, close.type, close.side, close.reduce_only) == (
        pf.client_id(filled, "X1"),
        "MARKET",
        "SELL",
        True,
    )
    assert (close.state, close.filled_qty) == (OrderState.FILLED, qty)
    assert leg_states(filled) == {
        "ENTRY": OrderState.FILLED,
        "STOP_LOSS": OrderState.CANCELED,
        "TAKE_PROFIT": OrderState.CANCELED,
        "CLOSE": OrderState.FILLED,
    }
    assert pf.position_amount(env, filled_spec) == 0
    assert pf.open_algos(env, filled_spec) == []
    assert pf.open_orders(env, resting_spec) == []
    assert pf.open_algos(env, resting_spec) == []
    closing = [o for o in pf.all_orders(env, filled_spec) if o.client_id == close.client_order_id]
    assert [(o.reduce_only, o.status) for o in closing] == [(True, "FILLED")]


def test_sweep_of_a_bot_switch_leaves_the_users_other_bots_alone(env, two_trades, sweeps):
    _, resting_bot, resting = two_trades["resting"]
    _, _, filled = two_trades["filled"]
    switch = kill_switch_engage(scope=KillScope.BOT, bot=resting_bot, flatten=True)

    actions = kill_switch_sweep(switch_id=switch.pk)

    assert actions == [{"cancelled": pf.client_id(resting, "E"), "state": "CANCELED"}]
    assert leg_states(filled) == {
        "ENTRY": OrderState.FILLED,
        "STOP_LOSS": OrderState.NEW,
        "TAKE_PROFIT": OrderState.NEW,
    }


def test_new_entries_are_refused_after_the_sweep(env, two_trades, sweeps):
    _, resting_bot, _ = two_trades["resting"]
    switch = kill_switch_engage(scope=KillScope.USER, user=two_trades["owner"])
    kill_switch_sweep(switch_id=switch.pk)

    delivery = run(pf.arm_trio(env, resting_bot, entry_type="LIMIT", key="after"))

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.SKIPPED, "KILL_SWITCH")
    assert not Order.objects.filter(delivery=delivery).exists()


# --- manage.py kill_switch -----------------------------------------------------------------------


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("kill_switch", *args, stdout=out)
    return out.getvalue()


def test_command_engages_a_bot_switch_with_flatten_and_releases_it(
    sweeps, django_capture_on_commit_callbacks
):
    bot = BotFactory.create()

    with django_capture_on_commit_callbacks(execute=True):
        out = command("on", "--bot", str(bot.pk), "--flatten", "--reason", "ops")

    [switch] = engaged()
    assert (switch.scope, switch.bot, switch.flatten, switch.reason, switch.engaged_by) == (
        KillScope.BOT,
        bot,
        True,
        "ops",
        None,
    )
    assert out == (
        f"kill switch {switch.pk} BOT ENGAGED with flatten: no new entries; "
        "open entries are being cancelled\n"
    )
    assert sweeps == [switch.pk]

    out = command("off", "--bot", str(bot.pk))

    assert out == "kill switch BOT released (1 switch(es))\n"
    assert engaged() == []


def test_command_without_a_target_is_global_and_idempotent(sweeps):
    command("on")
    command("on")

    [switch] = engaged()
    assert (switch.scope, switch.flatten) == (KillScope.GLOBAL, False)
    assert command("off") == "kill switch GLOBAL released (1 switch(es))\n"
    assert command("off") == "kill switch GLOBAL released (0 switch(es))\n"


def test_command_for_a_user(sweeps):
    user = UserFactory.create()

    command("on", "--user", str(user.pk))

    [switch] = engaged()
    assert (switch.scope, switch.user) == (KillScope.USER, user)


def test_command_for_a_missing_bot_fails_and_engages_nothing(sweeps):
    with pytest.raises(CommandError, match="no bot with id 999999"):
        command("on", "--bot", "999999")

    assert not KillSwitch.objects.exists()
    assert sweeps == []
