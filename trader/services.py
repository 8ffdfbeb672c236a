"""Write-side operations on credentials, bots and heartbeats (keyword-only, typed).

The API, the admin and the management commands call these; they never write models directly.
Validation errors are ``django.core.exceptions.ValidationError`` keyed by field name, so both
DRF and Django forms can show them against the right field.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from signals.strategies import StrategyParamsError, UnknownStrategyError, validate_strategy_params
from trader import crypto
from trader.models import ApiCredential, Bot, BotStatus, Environment, Heartbeat

# --- Credentials ---------------------------------------------------------------------------


def _key_pair_errors(api_key: str, api_secret: str) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for field, value in (("api_key", api_key), ("api_secret", api_secret)):
        # Never echo the value: it is secret material.
        if len(value.strip()) < 8 or len(value) > 256 or any(c.isspace() for c in value):
            errors[field] = ["must be 8 to 256 characters without spaces"]
    return errors


def credential_create(
    *,
    owner: Any,
    label: str,
    api_key: str,
    api_secret: str,
    environment: str = Environment.TESTNET,
    is_active: bool = True,
) -> ApiCredential:
    errors = _key_pair_errors(api_key, api_secret)
    if ApiCredential.objects.filter(owner=owner, label=label).exists():
        errors["label"] = [f"you already have a credential labelled {label!r}"]
    if errors:
        raise ValidationError(errors)
    credential = ApiCredential(
        owner=owner,
        label=label,
        environment=environment,
        api_key_encrypted=crypto.encrypt(api_key),
        api_secret_encrypted=crypto.encrypt(api_secret),
        api_key_last4=api_key[-4:],
        is_active=is_active,
    )
    try:
        credential.save()
    except IntegrityError:  # a concurrent create with the same label won the race
        raise ValidationError(
            {"label": [f"you already have a credential labelled {label!r}"]}
        ) from None
    return credential


def credential_update_errors(
    *,
    credential: ApiCredential,
    label: str | None = None,
    environment: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> dict[str, list[str]]:
    """What would be wrong with this update, by field (shared by the API and the admin form)."""
    errors: dict[str, list[str]] = {}
    if (api_key is None) != (api_secret is None):
        missing = "api_secret" if api_secret is None else "api_key"
        errors[missing] = ["api_key and api_secret are replaced together"]
    elif api_key is not None and api_secret is not None:
        errors.update(_key_pair_errors(api_key, api_secret))
    if (
        label is not None
        and label != credential.label
        and ApiCredential.objects.filter(owner_id=credential.owner_id, label=label).exists()
    ):
        errors["label"] = [f"you already have a credential labelled {label!r}"]
    if environment is not None and environment != credential.environment and credential.pk:
        attached = Bot.objects.filter(credential=credential).exclude(environment=environment)
        if attached.exists():
            errors["environment"] = [
                f"{attached.count()} bot(s) on {credential.environment} use this credential; "
                "move them first"
            ]
    return errors


def credential_update(
    *,
    credential: ApiCredential,
    label: str | None = None,
    environment: str | None = None,
    is_active: bool | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> ApiCredential:
    """Update a credential; a new key pair replaces both halves and stamps ``rotated_at``."""
    errors = credential_update_errors(
        credential=credential,
        label=label,
        environment=environment,
        api_key=api_key,
        api_secret=api_secret,
    )
    if errors:
        raise ValidationError(errors)
    if label is not None:
        credential.label = label
    if environment is not None:
        credential.environment = environment
    if is_active is not None:
        credential.is_active = is_active
    if api_key is not None and api_secret is not None:
        credential.api_key_encrypted = crypto.encrypt(api_key)
        credential.api_secret_encrypted = crypto.encrypt(api_secret)
        credential.api_key_last4 = api_key[-4:]
        credential.rotated_at = timezone.now()
    try:
        credential.save()
    except IntegrityError:
        raise ValidationError({"label": ["label already in use"]}) from None
    return credential


def credentials_reencrypt() -> int:
    """Re-encrypt every stored credential under the first master key; return the rows rotated.

    One short transaction per row, each row locked while it is rewritten, so a concurrent
    update of the same credential is never lost and a failure leaves earlier rows rotated.
    """
    rotated = 0
    for pk in ApiCredential.objects.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            credential = ApiCredential.objects.select_for_update().get(pk=pk)
            new_key = crypto.rotate(credential.api_key_encrypted)
            new_secret = crypto.rotate(credential.api_secret_encrypted)
            ApiCredential.objects.filter(pk=pk).update(
                api_key_encrypted=new_key, api_secret_encrypted=new_secret
            )
        rotated += 1
    return rotated


# --- Bots ----------------------------------------------------------------------------------


def bot_config_errors(
    *,
    owner_id: int,
    environment: str,
    credential: ApiCredential | None,
    strategy: str,
    strategy_params: Any,
    symbol: str = "",
    leverage: int = 1,
    bot_id: int | None = None,
) -> dict[str, list[str]]:
    """Cross-field rules of a bot, shared by the API and the admin."""
    errors: dict[str, list[str]] = {}
    if credential is not None:
        if credential.owner_id != owner_id:
            # Same words as a missing credential: do not reveal that another user's id exists.
            errors["credential"] = ["no such credential"]
        elif credential.environment != environment:
            errors["credential"] = [
                f"credential is for {credential.environment}, the bot trades on {environment}"
            ]
    if credential is not None and not errors and symbol:
        # On Binance a position (and its leverage) is per account and symbol: bots sharing
        # both share them, so they must agree on leverage or one would change the other's.
        clash = (
            Bot.objects.filter(credential=credential, symbol=symbol)
            .exclude(pk=bot_id or 0)
            .exclude(leverage=leverage)
            .first()
        )
        if clash is not None:
            errors["leverage"] = [
                f"bot {clash.name!r} trades {symbol} on the same credential at {clash.leverage}x; "
                "bots sharing an account and symbol share its leverage on Binance"
            ]
    try:
        validate_strategy_params(strategy, strategy_params)
    except UnknownStrategyError as exc:
        errors["strategy"] = [str(exc.args[0])]
    except StrategyParamsError as exc:
        errors["strategy_params"] = exc.errors
    return errors


_BOT_FIELDS = (
    "name",
    "credential",
    "environment",
    "symbol",
    "interval",
    "strategy",
    "strategy_params",
    "risk_per_trade_pct",
    "leverage",
    "max_position_notional",
    "max_open_positions",
    "daily_loss_limit_pct",
)


def bot_save(*, bot: Bot) -> Bot:
    """Validate a bot's fields and cross-field rules, then save it."""
    errors = bot_config_errors(
        owner_id=bot.owner_id,
        environment=bot.environment,
        credential=bot.credential,
        strategy=bot.strategy,
        strategy_params=bot.strategy_params,
        symbol=bot.symbol,
        leverage=bot.leverage,
        bot_id=bot.pk,
    )
    if Bot.objects.filter(owner_id=bot.owner_id, name=bot.name).exclude(pk=bot.pk).exists():
        errors["name"] = [f"you already have a bot named {bot.name!r}"]
    if errors:
        raise ValidationError(errors)
    bot.full_clean(exclude=["owner", "credential"], validate_unique=False)
    try:
        bot.save()
    except IntegrityError:
        raise ValidationError({"name": [f"you already have a bot named {bot.name!r}"]}) from None
    return bot


def bot_create(*, owner: Any, **fields: Any) -> Bot:
    unknown = set(fields) - set(_BOT_FIELDS)
    if unknown:
        raise ValidationError({name: ["unknown field"] for name in sorted(unknown)})
    return bot_save(bot=Bot(owner=owner, **fields))


def bot_update(*, bot: Bot, **fields: Any) -> Bot:
    unknown = set(fields) - set(_BOT_FIELDS)
    if unknown:
        raise ValidationError({name: ["unknown field"] for name in sorted(unknown)})
    for name, value in fields.items():
        setattr(bot, name, value)
    return bot_save(bot=bot)


def bot_set_status(*, bot: Bot, status: BotStatus) -> Bot:
    """Pause, resume or stop a bot; idempotent. Later issues hook the trading effects here."""
    Bot.objects.filter(pk=bot.pk).update(status=status, updated_at=timezone.now())
    bot.refresh_from_db(fields=["status", "updated_at"])
    return bot


# --- Heartbeats, users ---------------------------------------------------------------------


def heartbeat_record(*, name: str) -> None:
    """Upsert the last tick of a process (no check-then-act)."""
    Heartbeat.objects.bulk_create(
        [
            Heartbeat(
                name=name, last_seen=timezone.now(), hostname=socket.gethostname(), pid=os.getpid()
            )
        ],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["last_seen", "hostname", "pid"],
    )


def demo_superuser_ensure(*, username: str = "admin") -> str | None:
    """Create a superuser if none exists; return its one-time password, or None if one existed."""
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return password
