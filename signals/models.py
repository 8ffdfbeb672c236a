"""Signals: what a strategy, a webhook or a person asks the bots to do.

A signal is identified by (source key, symbol, interval, candle time, kind): the same signal
arriving twice (a redelivered task, a repeated webhook) is one row.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from trader import domain


class SignalSource(models.TextChoices):
    STRATEGY = "STRATEGY", "Strategy"
    WEBHOOK = "WEBHOOK", "Webhook"
    MANUAL = "MANUAL", "Manual (API)"


class SignalKind(models.TextChoices):
    ARM = "ARM", "Arm: enter, protected by stop and take-profit"
    DISARM = "DISARM", "Disarm: withdraw unfilled entries"


class EntryType(models.TextChoices):
    MARKET = "MARKET", "Market"
    LIMIT = "LIMIT", "Limit"


class Signal(models.Model):
    source = models.CharField(max_length=8, choices=SignalSource.choices)
    #: Who or what emitted it: ``strategy:<key>:<params hash>``, ``webhook:<user id>``,
    #: ``manual:<user id>``. Part of the signal's identity.
    source_key = models.CharField(max_length=128)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="signals",
        help_text="The user of a webhook or API signal; empty for strategy signals.",
    )
    strategy = models.CharField(max_length=64, default="manual")
    #: Hash of the strategy params, so a strategy signal reaches only bots with the same params.
    params_hash = models.CharField(max_length=64, blank=True)
    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4, choices=[(i, i) for i in domain.INTERVALS])
    candle_time = models.DateTimeField(help_text="Open time of the candle the signal is about.")
    kind = models.CharField(max_length=6, choices=SignalKind.choices)
    side = models.CharField(max_length=4, blank=True, choices=[("BUY", "Buy"), ("SELL", "Sell")])
    entry_type = models.CharField(max_length=6, choices=EntryType.choices, blank=True)
    entry_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    stop_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    take_profit_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    #: The market price when the signal was made (the candle's close); sizes MARKET entries
    #: and prices paper fills when no fresher price is known.
    reference_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    #: Explicit target bots (API/webhook); empty: every matching active bot.
    target_bot_ids = models.JSONField(default=list, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source_key", "symbol", "interval", "candle_time", "kind"],
                name="signal_identity",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="DISARM")
                | (
                    models.Q(side__in=["BUY", "SELL"])
                    & models.Q(entry_type__in=["MARKET", "LIMIT"])
                    & models.Q(stop_price__isnull=False)
                ),
                name="signal_arm_has_side_entry_and_stop",
            ),
        ]
        indexes = [models.Index(fields=["symbol", "created_at"])]
        ordering = ["-id"]

    def __str__(self) -> str:
        side = f" {self.side}" if self.side else ""
        return (
            f"{self.kind}{side} {self.symbol} {self.interval} @ {self.candle_time:%Y-%m-%d %H:%M}"
        )


class WebhookToken(models.Model):
    """A per-user secret for ``POST /api/webhooks/signals/<token>/`` (TradingView-style alerts).

    Only a SHA-256 digest is stored; the token is shown once, when created.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_token"
    )
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"webhook token of {self.owner_id}"


class EvaluationStatus(models.TextChoices):
    EVALUATED = "EVALUATED", "Evaluated"
    WARMING_UP = "WARMING_UP", "Warming up: not enough candles yet"
    REFUSED = "REFUSED", "Refused: stale or gapped candles"


class Evaluation(models.Model):
    """One evaluation of one strategy with one set of params on one closed candle.

    Unique per (symbol, interval, candle, strategy, params): however often the candle is handed
    off or its task redelivered, a strategy looks at it once. Keeps the regime and the
    decisions, so every strategy signal can be explained."""

    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4, choices=[(i, i) for i in domain.INTERVALS])
    candle_time = models.DateTimeField(help_text="Open time of the candle that just closed.")
    strategy = models.CharField(max_length=64)
    params_hash = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=EvaluationStatus.choices)
    reason = models.CharField(max_length=300, blank=True)
    regime = models.CharField(max_length=20, blank=True)
    #: The regime reading: ADX, ATR %, EMA slope and why it was classified so.
    regime_detail = models.JSONField(default=dict, blank=True)
    #: The strategy's decisions, as JSON (prices as strings).
    decisions = models.JSONField(default=list, blank=True)
    #: The side the strategy is armed on after this evaluation (until ``armed_until``).
    armed_side = models.CharField(max_length=4, blank=True)
    armed_until = models.DateTimeField(null=True, blank=True)
    candles = models.PositiveIntegerField(default=0, help_text="Candles in the window.")
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "interval", "candle_time", "strategy", "params_hash"],
                name="evaluation_once_per_candle",
            ),
        ]
        indexes = [
            models.Index(
                fields=["strategy", "params_hash", "symbol", "interval", "-candle_time"],
                name="evaluation_latest",
            )
        ]
        ordering = ["-candle_time", "-id"]

    def __str__(self) -> str:
        return f"{self.strategy} {self.symbol} {self.interval} {self.candle_time:%Y-%m-%d %H:%M}"
