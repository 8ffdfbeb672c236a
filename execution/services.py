"""Building venues from configuration and credentials; exchangeInfo kept fresh for them.

This is the one place where a credential is decrypted (``trader.crypto.credential_key_pair``),
because it is where a venue client is built. Nothing here holds the keys beyond the client.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache

from execution.governor import RateGovernor
from execution.rules import SymbolRules, parse_exchange_info
from execution.venues.binance import LIVE_URL, TESTNET_URL, BinanceFuturesVenue, VenueSettings
from trader.crypto import credential_key_pair
from trader.models import ApiCredential, Environment

log = logging.getLogger(__name__)

EXCHANGE_INFO_CACHE_KEY = "execution:exchange_info:{base_url}"


class TradingNotAllowed(Exception):
    """The safety ladder (DRY_RUN -> TESTNET -> LIVE) forbids this venue now."""


def base_url_for(environment: str) -> str:
    """The futures root for an environment; ``BINANCE_BASE_URL`` (the emulator) wins."""
    if settings.BINANCE_BASE_URL:
        return str(settings.BINANCE_BASE_URL).rstrip("/")
    return LIVE_URL if environment == Environment.LIVE else TESTNET_URL


def venue_settings(*, environment: str) -> VenueSettings:
    return VenueSettings(
        base_url=base_url_for(environment),
        timeout_ms=settings.BINANCE_TIMEOUT_MS,
        recv_window_ms=settings.RECV_WINDOW_MS,
        clock_resync_s=settings.CLOCK_RESYNC_S,
        max_clock_skew_ms=settings.CLOCK_SKEW_MAX_MS,
        rules_ttl_s=settings.EXCHANGE_INFO_REFRESH_S or 600.0,
    )


def ensure_environment_allowed(environment: str) -> None:
    """Real money only on the top rung: LIVE needs TRADING_MODE=LIVE and the confirmation."""
    if environment == Environment.LIVE and not (
        settings.TRADING_MODE == "LIVE" and settings.LIVE_TRADING_CONFIRM
    ):
        raise TradingNotAllowed(
            f"refusing a LIVE venue: TRADING_MODE={settings.TRADING_MODE}; LIVE trading needs "
            "TRADING_MODE=LIVE and LIVE_TRADING_CONFIRM=yes (DRY_RUN -> TESTNET -> LIVE)"
        )


@functools.cache
def _governor_for(url: str) -> RateGovernor:
    return RateGovernor(redis.Redis.from_url(url), ip_key="binance")


def rate_governor() -> RateGovernor | None:
    """The process-wide governor on Redis, or None without Redis (a single-process demo)."""
    url = settings.RATE_GOVERNOR_REDIS_URL
    return _governor_for(url) if url else None


def venue_for_keys(
    *, api_key: str, api_secret: str, environment: str, account_key: str
) -> BinanceFuturesVenue:
    ensure_environment_allowed(environment)
    venue = BinanceFuturesVenue(
        api_key=api_key,
        api_secret=api_secret,
        settings=venue_settings(environment=environment),
        governor=rate_governor(),
        account_key=account_key,
    )
    cached = cache.get(EXCHANGE_INFO_CACHE_KEY.format(base_url=venue.settings.base_url))
    if cached:
        venue.seed_rules(cached)
    return venue


def venue_for_credential(*, credential: ApiCredential) -> BinanceFuturesVenue:
    """A venue trading with ``credential``'s keys on its environment."""
    if not credential.is_active:
        raise TradingNotAllowed(f"credential {credential.pk} is inactive")
    ensure_environment_allowed(credential.environment)
    pair = credential_key_pair(credential=credential)
    return venue_for_keys(
        api_key=pair.api_key,
        api_secret=pair.api_secret,
        environment=credential.environment,
        account_key=f"credential-{credential.pk}",
    )


def exchange_info_refresh(*, environment: str = Environment.TESTNET) -> dict[str, SymbolRules]:
    """Fetch exchangeInfo (unsigned, no keys) and share it with every process through the cache."""
    base = base_url_for(environment)
    venue = BinanceFuturesVenue(
        api_key="",
        api_secret="",
        settings=venue_settings(environment=environment),
        governor=rate_governor(),
        account_key="public",
    )
    payload: dict[str, Any] = venue.client.futures_exchange_info()
    rules = parse_exchange_info(payload)  # validate before sharing: bad data never replaces good
    ttl = int(settings.EXCHANGE_INFO_REFRESH_S * 3) or 1800
    cache.set(EXCHANGE_INFO_CACHE_KEY.format(base_url=base), payload, ttl)
    not_trading = sorted(s for s, r in rules.items() if not r.tradable)
    log.info(
        "exchangeInfo from %s: %d symbols, %d not TRADING%s",
        base,
        len(rules),
        len(not_trading),
        f" ({', '.join(not_trading[:10])})" if not_trading else "",
    )
    return rules
