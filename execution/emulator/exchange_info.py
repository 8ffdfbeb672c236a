"""The emulator's exchangeInfo: realistic USD-M rows (BTCUSDT is Binance's live row of
2026-09-15; ETHUSDT and XRPUSDT follow the reference's constructed values), plus a generic row
for any other replayed symbol, derived from its prices."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]
ORDER_TYPES = [
    "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]  # fmt: skip
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX", "GTD"]


def _row(
    symbol: str,
    base: str,
    *,
    price_precision: int,
    quantity_precision: int,
    min_price: str,
    max_price: str,
    tick: str,
    min_qty: str,
    max_qty: str,
    step: str,
    market_max_qty: str,
    min_notional: str,
    onboard: int,
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": onboard,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": price_precision,
        "quantityPrecision": quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": min_price,
                "maxPrice": max_price,
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": min_qty,
                "maxQty": market_max_qty,
                "stepSize": step,
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": min_notional},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
            {"filterType": "POSITION_RISK_CONTROL", "positionControlSide": "NONE"},
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
        "permissionSets": ["GRID", "COPY", "DCA", "PSB"],
    }


KNOWN_SYMBOLS: dict[str, dict[str, Any]] = {
    "BTCUSDT": _row(
        "BTCUSDT", "BTC", price_precision=2, quantity_precision=3, min_price="556.80",
        max_price="4529764", tick="0.10", min_qty="0.001", max_qty="1000", step="0.001",
        market_max_qty="120", min_notional="50", onboard=1567965300000,
    ),
    "ETHUSDT": _row(
        "ETHUSDT", "ETH", price_precision=2, quantity_precision=3, min_price="39.86",
        max_price="306177", tick="0.01", min_qty="0.001", max_qty="10000", step="0.001",
        market_max_qty="2000", min_notional="20", onboard=1569398400000,
    ),
    "XRPUSDT": _row(
        "XRPUSDT", "XRP", price_precision=4, quantity_precision=1, min_price="0.0143",
        max_price="100000", tick="0.0001", min_qty="0.1", max_qty="10000000", step="0.1",
        market_max_qty="2000000", min_notional="5", onboard=1569398400000,
    ),
}  # fmt: skip


def generic_row(symbol: str, sample_price: Decimal) -> dict[str, Any]:
    """A plausible row for a symbol we have data for but no real row: about five significant
    digits of price, and a notional of 5 USDT."""
    exponent = sample_price.adjusted()  # 46000 -> 4, 0.0285 -> -2
    price_precision = max(0, 4 - exponent)
    tick = Decimal(1).scaleb(-price_precision)
    quantity_precision = max(0, min(3, exponent + 1))
    step = Decimal(1).scaleb(-quantity_precision)
    base = symbol.removesuffix("USDT") or symbol
    return _row(
        symbol, base, price_precision=price_precision, quantity_precision=quantity_precision,
        min_price=f"{tick:f}", max_price=f"{sample_price * 1000:f}", tick=f"{tick:f}",
        min_qty=f"{step:f}", max_qty="100000000", step=f"{step:f}", market_max_qty="10000000",
        min_notional="5", onboard=1569398400000,
    )  # fmt: skip


def exchange_info(
    symbols: dict[str, Decimal], *, statuses: dict[str, str] | None = None, server_time: int
) -> dict[str, Any]:
    """The exchangeInfo payload for the replayed ``symbols`` (symbol -> a sample price)."""
    rows = []
    for symbol, sample in sorted(symbols.items()):
        row = copy.deepcopy(KNOWN_SYMBOLS.get(symbol) or generic_row(symbol, sample))
        if statuses and symbol in statuses:
            row["status"] = statuses[symbol]
        rows.append(row)
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "futuresType": "U_MARGINED",
        "rateLimits": copy.deepcopy(RATE_LIMITS),
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
        ],
        "symbols": rows,
    }
