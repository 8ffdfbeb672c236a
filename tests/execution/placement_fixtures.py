"""Helpers for the placement, kill-switch and signal-API tests: bots on an emulator account,
signals, deliveries, and reads of the emulator's state.

Plain functions (no fixtures), so that each test module declares the few fixtures it needs
and nothing is imported into a test's argument list.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from execution.emulator.server import AccountSpec
from execution.models import SignalDelivery
from signals.models import Signal, SignalSource
from signals.services import signal_create, signal_fan_out
from tests.execution.emulator_fixtures import Harness
from tests.factories import BotFactory, UserFactory, make_credential
from trader.models import Bot

SYMBOL = "BTCUSDT"
TICK = Decimal("0.10")


def on_tick(value: Decimal) -> Decimal:
    """``value`` rounded down to BTCUSDT's tick."""
    return (value / TICK).to_integral_value(rounding=ROUND_FLOOR) * TICK


def use_emulator(emu: Harness, settings_fixture: Any, tmp_path: Any) -> None:
    """TESTNET against the emulator; no Redis governor; a kill-switch file nobody created."""
    settings_fixture.TRADING_MODE = "TESTNET"
    settings_fixture.BINANCE_BASE_URL = emu.base_url + "/fapi"
    settings_fixture.RATE_GOVERNOR_REDIS_URL = ""
    settings_fixture.KILL_SWITCH = False
    settings_fixture.KILL_SWITCH_FILE = str(tmp_path / "KILL")


def emulator_bot(spec: AccountSpec, *, owner: Any = None, **fields: Any) -> Bot:
    """An ACTIVE TESTNET bot trading BTCUSDT with ``spec``'s keys (stored encrypted)."""
    owner = owner or UserFactory.create()
    credential = make_credential(owner=owner, api_key=spec.api_key, api_secret=spec.api_secret)
    return BotFactory.create(owner=owner, credential=credential, **fields)


def arm(
    bot: Bot,
    *,
    side: str = "BUY",
    entry_type: str = "MARKET",
    entry_price: Decimal | None = None,
    stop_price: Decimal,
    take_profit_price: Decimal | None = None,
    reference_price: Decimal | None = None,
    source: str = SignalSource.MANUAL,
    strategy: str = "manual",
    params: Any = None,
    candle_time: Any = None,
    key: str | None = None,
) -> Signal:
    """An ARM signal on the bot's symbol and interval, addressed to the bot's owner."""
    signal, _ = signal_create(
        source=source,
        source_key=key or f"{source.lower()}:{bot.owner_id}",
        owner=None if source == SignalSource.STRATEGY else bot.owner,
        symbol=bot.symbol,
        interval=bot.interval,
        kind="ARM",
        candle_time=candle_time,
        strategy=strategy,
        params=params,
        side=side,
        entry_type=entry_type,
        entry_price=entry_price,
        stop_price=stop_price,
        take_profit_price=take_profit_price,
        reference_price=reference_price,
        target_bot_ids=None if source == SignalSource.STRATEGY else [bot.pk],
    )
    return signal


def disarm(bot: Bot, *, key: str | None = None) -> Signal:
    signal, _ = signal_create(
        source=SignalSource.MANUAL,
        source_key=key or f"manual-disarm:{bot.owner_id}",
        owner=bot.owner,
        symbol=bot.symbol,
        interval=bot.interval,
        kind="DISARM",
        target_bot_ids=[bot.pk],
    )
    return signal


def deliver(signal: Signal, bot: Bot) -> SignalDelivery:
    """Fan the signal out and return the bot's delivery (its execution is the test's call)."""
    signal_fan_out(signal=signal)
    return SignalDelivery.objects.get(signal=signal, bot=bot)


def client_id(delivery: SignalDelivery, code: str) -> str:
    return f"{settings.CLIENT_ID_PREFIX}{delivery.pk}-{code}"


# --- the emulator's view ----------------------------------------------------------------------


def account_of(emu: Harness, spec: AccountSpec) -> str:
    return emu.account_id(spec)


def open_orders(emu: Harness, spec: AccountSpec) -> list[Any]:
    account = account_of(emu, spec)
    return emu.call(lambda: emu.emulator.engine.open_orders(account))


def open_algos(emu: Harness, spec: AccountSpec) -> list[Any]:
    account = account_of(emu, spec)
    return emu.call(lambda: emu.emulator.engine.open_algos(account))


def all_orders(emu: Harness, spec: AccountSpec) -> list[Any]:
    account = account_of(emu, spec)
    return emu.call(lambda: emu.emulator.engine.all_orders(account, SYMBOL))


def all_algos(emu: Harness, spec: AccountSpec) -> list[Any]:
    account = account_of(emu, spec)
    return emu.call(lambda: emu.emulator.engine.all_algos(account, SYMBOL))


def trades(emu: Harness, spec: AccountSpec) -> list[Any]:
    account = account_of(emu, spec)
    return emu.call(lambda: emu.emulator.engine.trades(account, SYMBOL))


def position_amount(emu: Harness, spec: AccountSpec) -> Decimal:
    account = account_of(emu, spec)
    positions = emu.call(lambda: emu.emulator.engine.positions(account))
    return sum((p.amount for p in positions if p.symbol == SYMBOL), Decimal(0))


def inject(emu: Harness, *faults: str) -> None:
    """Faults for the next order placements, in order ("ok", "5xx", "timeout", "drop")."""
    emu.call(emu.emulator.faults.next_faults.extend, list(faults))


def now() -> Any:
    return timezone.now()


def prices(emu: Harness, *, entry_type: str = "MARKET", side: str = "BUY") -> dict[str, Decimal]:
    """Prices around the emulator's (frozen) BTCUSDT price: a resting LIMIT 3 % away from the
    market, the stop 2 % beyond the entry, the take-profit 4 % beyond the market."""
    market = emu.price(SYMBOL)
    sign = Decimal(1) if side == "BUY" else Decimal(-1)
    entry = on_tick(market * (1 - sign * Decimal("0.03"))) if entry_type == "LIMIT" else market
    return {
        "market": market,
        "entry": entry,
        "stop": on_tick(entry * (1 - sign * Decimal("0.02"))),
        "take_profit": on_tick(market * (1 + sign * Decimal("0.04"))),
    }


def arm_trio(
    emu: Harness,
    bot: Bot,
    *,
    entry_type: str = "MARKET",
    side: str = "BUY",
    take_profit: bool = True,
    **kw: Any,
) -> SignalDelivery:
    """An ARM signal for ``bot`` at the emulator's prices, fanned out (not executed)."""
    p = prices(emu, entry_type=entry_type, side=side)
    signal = arm(
        bot,
        side=side,
        entry_type=entry_type,
        entry_price=p["entry"] if entry_type == "LIMIT" else None,
        stop_price=p["stop"],
        take_profit_price=p["take_profit"] if take_profit else None,
        reference_price=p["market"],
        **kw,
    )
    return deliver(signal, bot)
