"""Persistence of execution: deliveries of signals to bots, orders and their history, kill
switches, cooldowns, and paper accounts (dry-run venues shared by every worker process)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from execution.states import OrderState


class DeliveryStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    EXECUTED = "EXECUTED", "Executed"
    SKIPPED = "SKIPPED", "Skipped (risk or stale)"
    FAILED = "FAILED", "Failed"


class SignalDelivery(models.Model):
    """One signal for one bot. Nothing is silently dropped: every delivery ends with an
    outcome (executed, skipped with the risk reason, failed with the error)."""

    signal = models.ForeignKey(
        "signals.Signal", on_delete=models.CASCADE, related_name="deliveries"
    )
    bot = models.ForeignKey("trader.Bot", on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    reason_code = models.CharField(max_length=32, blank=True)
    reason = models.TextField(blank=True)
    #: The risk decision (every check with its detail) and sizing, for the admin and API.
    decision = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["signal", "bot"], name="delivery_once_per_bot")
        ]
        indexes = [models.Index(fields=["bot", "created_at"]), models.Index(fields=["status"])]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"delivery {self.pk}: signal {self.signal_id} -> bot {self.bot_id} ({self.status})"


class OrderLeg(models.TextChoices):
    ENTRY = "ENTRY", "Entry"
    STOP_LOSS = "STOP_LOSS", "Stop-loss"
    TAKE_PROFIT = "TAKE_PROFIT", "Take-profit"
    CLOSE = "CLOSE", "Close (reduce-only market)"


class Order(models.Model):
    """One order's life. Created PENDING with its deterministic client id *before* the venue
    is called; every state change goes through ``execution.services.order_transition``."""

    bot = models.ForeignKey("trader.Bot", on_delete=models.PROTECT, related_name="orders")
    delivery = models.ForeignKey(
        SignalDelivery, on_delete=models.PROTECT, related_name="orders", null=True, blank=True
    )
    leg = models.CharField(max_length=12, choices=OrderLeg.choices)
    #: Idempotency key at the venue (newClientOrderId / clientAlgoId), unique forever.
    client_order_id = models.CharField(max_length=36, unique=True)
    venue = models.CharField(max_length=16, help_text="paper, or binance (testnet/live/emulator)")
    credential = models.ForeignKey(
        "trader.ApiCredential", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    type = models.CharField(max_length=24)
    is_algo = models.BooleanField(default=False)
    reduce_only = models.BooleanField(default=False)
    quantity = models.DecimalField(max_digits=28, decimal_places=10)
    price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    trigger_price = models.DecimalField(max_digits=28, decimal_places=10, null=True, blank=True)
    state = models.CharField(
        max_length=16, choices=OrderState.choices(), default=OrderState.PENDING
    )
    venue_order_id = models.BigIntegerField(null=True, blank=True)
    venue_status = models.CharField(max_length=24, blank=True)
    filled_qty = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    avg_price = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    last_error = models.TextField(blank=True)
    #: Set (in its own transaction) just before the venue is called: a PENDING order with it is
    #: looked up by client id before any resend, one without it was never sent.
    sent_at = models.DateTimeField(null=True, blank=True)
    #: The venue's update time of the state recorded here: an older report never overwrites it.
    venue_update_ms = models.BigIntegerField(default=0)
    #: A protective order resized to a partial fill is replaced by the next generation (its
    #: own row and client id, e.g. tr-12-SL2); the latest generation is the live one.
    generation = models.PositiveSmallIntegerField(default=1)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # A redelivered task finds its earlier work instead of placing a second trio.
            models.UniqueConstraint(
                fields=["delivery", "leg", "generation"],
                condition=models.Q(delivery__isnull=False) & ~models.Q(leg="CLOSE"),
                name="order_leg_once_per_delivery",
            ),
        ]
        indexes = [
            models.Index(fields=["bot", "symbol", "state"]),
            models.Index(fields=["state", "updated_at"]),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return (
            f"{self.leg} {self.side} {self.quantity} {self.symbol} [{self.state}] "
            f"{self.client_order_id}"
        )


class OrderEvent(models.Model):
    """Every state transition of an order, with its time and cause."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, choices=OrderState.choices())
    to_state = models.CharField(max_length=16, choices=OrderState.choices())
    cause = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.from_state} -> {self.to_state} ({self.cause})"


class KillScope(models.TextChoices):
    GLOBAL = "GLOBAL", "Global"
    USER = "USER", "User"
    BOT = "BOT", "Bot"


class KillSwitch(models.Model):
    """An engaged kill switch stops new entries everywhere it covers. The history is kept:
    releasing sets ``released_at``; at most one engaged row per target."""

    scope = models.CharField(max_length=6, choices=KillScope.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    bot = models.ForeignKey(
        "trader.Bot", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True)
    flatten = models.BooleanField(default=False)
    engaged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    engaged_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)
    #: What the switch's task did: cancelled orders, closed positions, errors.
    actions = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "user", "bot"],
                condition=models.Q(released_at__isnull=True),
                nulls_distinct=False,
                name="one_engaged_kill_switch_per_target",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(scope="GLOBAL", user__isnull=True, bot__isnull=True)
                    | models.Q(scope="USER", user__isnull=False, bot__isnull=True)
                    | models.Q(scope="BOT", bot__isnull=False)
                ),
                name="kill_switch_target_matches_scope",
            ),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        target = {"GLOBAL": "all", "USER": f"user {self.user_id}", "BOT": f"bot {self.bot_id}"}
        state = "released" if self.released_at else "ENGAGED"
        return f"kill switch {target[self.scope]} {state}"


class Cooldown(models.Model):
    """No new entry for a bot on a symbol until ``until`` (set after a stop-out)."""

    bot = models.ForeignKey("trader.Bot", on_delete=models.CASCADE, related_name="cooldowns")
    symbol = models.CharField(max_length=32)
    until = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bot", "symbol"], name="cooldown_per_bot_symbol")
        ]

    def __str__(self) -> str:
        return f"cooldown bot {self.bot_id} {self.symbol} until {self.until:%Y-%m-%d %H:%M}"


class PaperAccount(models.Model):
    """The dry-run venue of one bot: the matching engine's state, shared by every process.

    Operations lock the row (select_for_update), load the engine, act, and save it back, so
    paper orders placed by one worker are seen by every other one.
    """

    bot = models.OneToOneField("trader.Bot", on_delete=models.CASCADE, related_name="paper_account")
    #: ``MatchingEngine.dump_state()``: plain JSON (no pickle), Decimals as strings.
    state = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"paper account of bot {self.bot_id}"


class PositionStatus(models.TextChoices):
    OPEN = "OPEN", "Open"
    CLOSED = "CLOSED", "Closed"


class Position(models.Model):
    """One trade's position: opened by an entry's fills, closed by its exits' fills. Realized
    PnL and fees come from the venue's user trades (``Fill``)."""

    bot = models.ForeignKey("trader.Bot", on_delete=models.PROTECT, related_name="positions")
    delivery = models.OneToOneField(
        SignalDelivery, on_delete=models.PROTECT, null=True, blank=True, related_name="position"
    )
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=5, choices=[("LONG", "Long"), ("SHORT", "Short")])
    status = models.CharField(
        max_length=6, choices=PositionStatus.choices, default=PositionStatus.OPEN
    )
    quantity = models.DecimalField(
        max_digits=28, decimal_places=10, default=0, help_text="Open now."
    )
    entry_qty = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    entry_price = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    exit_qty = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    exit_price = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    realized_pnl = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    fees = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["bot", "status"]), models.Index(fields=["closed_at"])]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol} ({self.status}) bot {self.bot_id}"


class Fill(models.Model):
    """A user trade reported by the venue. Unique per account, symbol and venue trade id (Binance
    numbers trades per symbol), so the same trade seen twice (stream and polling) is one row."""

    account = models.CharField(max_length=64, help_text="credential-<id> or paper-bot-<id>")
    order = models.ForeignKey(
        Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="fills"
    )
    bot = models.ForeignKey(
        "trader.Bot", on_delete=models.SET_NULL, null=True, blank=True, related_name="fills"
    )
    symbol = models.CharField(max_length=32)
    venue_trade_id = models.BigIntegerField()
    venue_order_id = models.BigIntegerField()
    side = models.CharField(max_length=4)
    price = models.DecimalField(max_digits=28, decimal_places=10)
    qty = models.DecimalField(max_digits=28, decimal_places=10)
    quote_qty = models.DecimalField(max_digits=28, decimal_places=10)
    commission = models.DecimalField(max_digits=28, decimal_places=10)
    commission_asset = models.CharField(max_length=10)
    realized_pnl = models.DecimalField(max_digits=28, decimal_places=10)
    maker = models.BooleanField()
    time = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "symbol", "venue_trade_id"], name="fill_once_per_venue_trade"
            )
        ]
        indexes = [models.Index(fields=["bot", "time"])]
        ordering = ["-time"]

    def __str__(self) -> str:
        return f"fill {self.venue_trade_id} {self.side} {self.qty} {self.symbol} @ {self.price}"
