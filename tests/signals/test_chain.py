"""The signals stage of the chain: one evaluation per candle and (strategy, params), refusals
with reasons, ARM/DISARM signals fanned out to the matching bots (real Postgres)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from freezegun import freeze_time

from execution.models import SignalDelivery
from execution.venues.base import Kline as Bar
from ingest.handoff import candle_closed
from ingest.models import Kline
from ingest.services import kline_upsert_batch
from signals.evaluation import candle_evaluate
from signals.models import Evaluation, EvaluationStatus, Signal
from signals.strategies.base import Candles, Decision, Strategy, StrategyState, to_price
from signals.strategies.registry import register
from tests.factories import BotFactory

pytestmark = pytest.mark.django_db

MINUTE = 60_000
START = datetime(2024, 3, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)


@register
class ScriptedStrategy(Strategy):
    """A test strategy: ARMs BUY when the last close ends in .5, DISARMs when it ends in .9."""

    key = "test_scripted"
    warmup = 5
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"tag": {"type": "string"}},
        "additionalProperties": False,
    }
    seen: ClassVar[list[StrategyState]] = []

    def evaluate(
        self, *, candles: Candles, state: StrategyState, params: Mapping[str, Any], now: datetime
    ) -> list[Decision]:
        ScriptedStrategy.seen.append(state)
        last = float(candles.close[-1])
        if round(last % 1, 1) == 0.5 and state.armed_side != "BUY":
            return [
                Decision.arm(
                    side="BUY",
                    entry_type="MARKET",
                    reference_price=to_price(last),
                    stop_price=to_price(last - 10),
                    take_profit_price=to_price(last + 20),
                    reason="scripted arm",
                    expires_at=now + timedelta(minutes=5),
                )
            ]
        if round(last % 1, 1) == 0.9 and state.armed_side:
            return [Decision.disarm("scripted disarm")]
        return []


def store(closes: list[str], *, start_ms: int = START_MS, skip: tuple[int, ...] = ()) -> None:
    bars = []
    for index, close in enumerate(closes):
        if index in skip:
            continue
        price = Decimal(close)
        bars.append(
            Bar(
                open_time_ms=start_ms + index * MINUTE,
                open=price,
                high=price + 1,
                low=price - 1,
                close=price,
                volume=Decimal(10),
                close_time_ms=start_ms + (index + 1) * MINUTE - 1,
            )
        )
    kline_upsert_batch(symbol="BTCUSDT", interval="1m", bars=bars)


def candle_ms(index: int) -> int:
    return START_MS + index * MINUTE


def just_after_close(index: int) -> datetime:
    return START + timedelta(minutes=index + 1, seconds=1)


def scripted_bot(**kwargs: Any) -> Any:
    defaults = {"symbol": "BTCUSDT", "interval": "1m", "strategy": "test_scripted"}
    return BotFactory.create(**{**defaults, **kwargs})


def test_candle_is_evaluated_once_per_distinct_params_however_often_it_is_handed_off():
    scripted_bot(strategy_params={})
    scripted_bot(strategy_params={})
    scripted_bot(strategy_params={"tag": "other"})
    store(["100"] * 10)
    with freeze_time(just_after_close(9)):
        first = candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9))
        again = candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9))
    assert len(first) == 2  # two distinct params among three bots
    assert again == []
    assert Evaluation.objects.count() == 2
    assert {e.status for e in Evaluation.objects.all()} == {EvaluationStatus.EVALUATED}


def test_arm_decision_becomes_one_signal_delivered_to_every_bot_with_those_params(
    django_capture_on_commit_callbacks,
):
    same_a = scripted_bot(strategy_params={"tag": "x"})
    same_b = scripted_bot(strategy_params={"tag": "x"})
    other = scripted_bot(strategy_params={"tag": "y"})
    paused = scripted_bot(strategy_params={"tag": "x"}, status="PAUSED")
    store(["100"] * 9 + ["100.5"])
    with freeze_time(just_after_close(9)), django_capture_on_commit_callbacks() as callbacks:
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9))
    signals = list(Signal.objects.order_by("id"))
    assert len(signals) == 2  # one per distinct params
    delivered = set(SignalDelivery.objects.values_list("bot_id", flat=True))
    assert delivered == {same_a.pk, same_b.pk, other.pk}
    assert paused.pk not in delivered
    signal = signals[0]
    assert (signal.kind, signal.side, signal.entry_type) == ("ARM", "BUY", "MARKET")
    assert signal.stop_price == Decimal("90.5")
    assert signal.take_profit_price == Decimal("120.5")
    assert signal.candle_time == START + timedelta(minutes=9)
    assert callbacks, "the fan-out enqueues execution after the commit"


def test_armed_side_is_remembered_and_a_disarm_clears_it():
    scripted_bot()
    store(["100"] * 9 + ["100.5", "100.5", "100.9", "100.5"])
    for index in (9, 10, 11, 12):
        with freeze_time(just_after_close(index)):
            candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(index))
    kinds = list(Signal.objects.order_by("candle_time").values_list("kind", flat=True))
    # 9 arms; 10 is armed already (no second ARM); 11 disarms; 12 arms again.
    assert kinds == ["ARM", "DISARM", "ARM"]
    sides = list(Evaluation.objects.order_by("candle_time").values_list("armed_side", flat=True))
    assert sides == ["BUY", "BUY", "", "BUY"]


def test_stale_candle_is_refused_with_its_age_recorded():
    scripted_bot()
    store(["100"] * 10)
    with freeze_time(just_after_close(9) + timedelta(minutes=10)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9))
    evaluation = Evaluation.objects.get()
    assert evaluation.status == EvaluationStatus.REFUSED
    assert evaluation.reason.startswith("stale: the candle closed")
    assert not Signal.objects.exists()


def test_gap_among_the_newest_candles_is_refused_and_names_the_gap():
    scripted_bot()
    store(["100"] * 9 + ["100.5"], skip=(7,))
    with freeze_time(just_after_close(9)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9))
    evaluation = Evaluation.objects.get()
    assert evaluation.status == EvaluationStatus.REFUSED
    assert "gap: 1 candle(s) missing" in evaluation.reason
    assert not Signal.objects.exists()


def test_gap_far_back_only_shortens_the_window():
    scripted_bot()
    store(["100"] * 19 + ["100.5"], skip=(2,))
    with freeze_time(just_after_close(19)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(19))
    evaluation = Evaluation.objects.get()
    assert evaluation.status == EvaluationStatus.EVALUATED
    assert evaluation.candles == 17  # the candles after the gap
    assert Signal.objects.filter(kind="ARM").count() == 1


def test_too_few_candles_is_recorded_as_warming_up_without_a_decision():
    scripted_bot()
    store(["100", "100", "100.5"])
    with freeze_time(just_after_close(2)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(2))
    evaluation = Evaluation.objects.get()
    assert (evaluation.status, evaluation.reason) == (EvaluationStatus.WARMING_UP, "3 of 5 candles")
    assert not Signal.objects.exists()


def test_candle_not_stored_is_refused():
    scripted_bot()
    store(["100"] * 5)
    with freeze_time(just_after_close(7)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(7))
    assert Evaluation.objects.get().reason.endswith("is not stored")


def test_no_active_bot_means_no_evaluation_at_all():
    scripted_bot(status="PAUSED")
    BotFactory.create(symbol="BTCUSDT", interval="1m", strategy="manual")
    store(["100"] * 10)
    with freeze_time(just_after_close(9)):
        assert candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(9)) == []
    assert not Evaluation.objects.exists()


def test_handoff_starts_the_chain_once_and_enqueues_the_evaluation(
    django_capture_on_commit_callbacks,
):
    store(["100"] * 3)
    open_time = START + timedelta(minutes=2)
    with django_capture_on_commit_callbacks() as callbacks:
        first = candle_closed(symbol="BTCUSDT", interval="1m", open_time=open_time, path="beat")
        second = candle_closed(symbol="BTCUSDT", interval="1m", open_time=open_time, path="stream")
    assert (first, second) == (True, False)
    assert len(callbacks) == 1
    assert Kline.objects.filter(chain_started_at__isnull=False).count() == 1


def test_regime_is_stored_with_each_evaluation_once_warm():
    scripted_bot()
    closes = [str(10000 + i * 5) for i in range(119)] + ["10595.5"]
    store(closes)
    with freeze_time(just_after_close(119)):
        candle_evaluate(symbol="BTCUSDT", interval="1m", open_ms=candle_ms(119))
    evaluation = Evaluation.objects.get()
    assert evaluation.regime == "trending_up"
    assert evaluation.regime_detail["adx"] > 25
    assert evaluation.regime_detail["why"]
