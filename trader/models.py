"""Persistence for users' exchange credentials, bots and process heartbeats.

Models hold data and constraints only; decisions live in ``services`` (HackSoft style).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from trader import domain


class Environment(models.TextChoices):
    """Which Binance environment a credential belongs to and a bot trades on (one definition)."""

    TESTNET = "TESTNET", "Testnet"
    LIVE = "LIVE", "Live"


class BotStatus(models.TextChoices):
    ACTIVE = "ACTIVE", "Active"
    PAUSED = "PAUSED", "Paused"
    STOPPED = "STOPPED", "Stopped"


def _bound_validators(bound: domain.Bound) -> list[MinValueValidator | MaxValueValidator]:
    return [MinValueValidator(bound.low), MaxValueValidator(bound.high)]


def _bound_check(field: str, bound: domain.Bound) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=models.Q(**{f"{field}__gte": bound.low, f"{field}__lte": bound.high}),
        name=f"bot_{field}_in_range",
    )


class ApiCredential(models.Model):
    """A Binance API key pair, encrypted at rest (MultiFernet, ``trader.crypto``).

    The plaintext is never stored and never displayed: ``api_key_last4`` is kept to show the
    masked form without decrypting. Decryption happens only in
    ``trader.crypto.credential_key_pair``, where a venue client is built.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_credentials"
    )
    label = models.CharField(max_length=64)
    environment = models.CharField(
        max_length=8, choices=Environment.choices, default=Environment.TESTNET
    )
    api_key_encrypted = models.TextField(editable=False)
    api_secret_encrypted = models.TextField(editable=False)
    api_key_last4 = models.CharField(max_length=4, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    rotated_at = models.DateTimeField(
        default=timezone.now,
        editable=False,
        help_text="When the key pair was last replaced.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "label"], name="credential_label_per_owner")
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.environment}, {self.api_key_masked})"

    @property
    def api_key_masked(self) -> str:
        return domain.mask_api_key(self.api_key_last4)


class Bot(models.Model):
    """One trading bot: a strategy on a symbol and interval, with its own risk limits."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bots"
    )
    name = models.CharField(max_length=64)
    credential = models.ForeignKey(
        ApiCredential,
        on_delete=models.PROTECT,
        related_name="bots",
        null=True,
        blank=True,
        help_text="Needed for TESTNET/LIVE trading; a bot without one can only paper-trade.",
    )
    environment = models.CharField(
        max_length=8, choices=Environment.choices, default=Environment.TESTNET
    )
    symbol = models.CharField(
        max_length=32, validators=[RegexValidator(domain.SYMBOL_PATTERN, "Not a USD-M symbol.")]
    )
    interval = models.CharField(max_length=4, choices=[(i, i) for i in domain.INTERVALS])
    strategy = models.CharField(max_length=64, default="manual")
    strategy_params = models.JSONField(default=dict, blank=True)
    risk_per_trade_pct = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        default=1,
        validators=_bound_validators(domain.RISK_PER_TRADE_PCT),
        help_text="Equity percent lost if the stop is hit.",
    )
    leverage = models.PositiveSmallIntegerField(
        default=1, validators=_bound_validators(domain.LEVERAGE)
    )
    max_position_notional = models.DecimalField(
        max_digits=20,
        decimal_places=2,
        default=1000,
        validators=_bound_validators(domain.MAX_POSITION_NOTIONAL),
        help_text="USDT.",
    )
    max_open_positions = models.PositiveSmallIntegerField(
        default=1, validators=_bound_validators(domain.MAX_OPEN_POSITIONS)
    )
    daily_loss_limit_pct = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        default=5,
        validators=_bound_validators(domain.DAILY_LOSS_LIMIT_PCT),
    )
    status = models.CharField(max_length=8, choices=BotStatus.choices, default=BotStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="bot_name_per_owner"),
            _bound_check("risk_per_trade_pct", domain.RISK_PER_TRADE_PCT),
            _bound_check("leverage", domain.LEVERAGE),
            _bound_check("max_position_notional", domain.MAX_POSITION_NOTIONAL),
            _bound_check("max_open_positions", domain.MAX_OPEN_POSITIONS),
            _bound_check("daily_loss_limit_pct", domain.DAILY_LOSS_LIMIT_PCT),
        ]
        indexes = [models.Index(fields=["status", "symbol", "interval"])]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.symbol} {self.interval}, {self.strategy})"


class Heartbeat(models.Model):
    """The last tick of a process: ``beat``, or ``worker:<queue>`` from a worker on that queue."""

    name = models.CharField(max_length=64, unique=True)
    last_seen = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seen.isoformat()}"


class Severity(models.TextChoices):
    """How loud an alert is; the order of the members is the order of escalation."""

    INFO = "INFO", "Info"
    WARNING = "WARNING", "Warning"
    CRITICAL = "CRITICAL", "Critical"


class Alert(models.Model):
    """One alert, de-duplicated: repeats of a key within the window bump ``count`` and ``last_at``.

    Written only by ``trader.alerts.alert``, which scrubs secrets out of ``message`` and
    ``context`` before anything is stored. ``owner`` is empty for platform-wide alerts.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="alerts",
        null=True,
        blank=True,
        help_text="Empty: a platform-wide alert.",
    )
    severity = models.CharField(max_length=8, choices=Severity.choices)
    # Indexed as the leading column of alert_key_owner_last_at (the de-duplication lookup).
    key = models.CharField(max_length=128, help_text="What happened, e.g. order_unknown:42.")
    message = models.TextField()
    context = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(
        default=1, help_text="Times raised within the de-duplication window."
    )
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    escalated = models.BooleanField(default=False)
    delivered = models.BooleanField(
        default=False, help_text="The last webhook post of this alert succeeded."
    )
    delivery_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["key", "owner", "last_at"], name="alert_key_owner_last_at"),
        ]
        ordering = ["-last_at", "-id"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.key} x{self.count}"
