"""Prometheus metrics of market-data ingestion (``prometheus_client``).

Labels carry symbols, intervals, ingestion paths and rule names only: never a key, an account
or a URL. They are counted where the work happens (the ingest worker for the beat path, the
stream process, the command for a backfill) and reach the web's ``/metrics`` through
``PROMETHEUS_MULTIPROC_DIR`` (``config.metrics``); gauges report the most recent value set by
any process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CANDLES_STORED = Counter(
    "trader_ingest_candles_stored_total",
    "New candles stored, by ingestion path (beat, stream, repair, backfill, derived).",
    ["path", "interval"],
)
CANDLES_UPDATED = Counter(
    "trader_ingest_candles_updated_total",
    "Stored candles whose values changed (a late correction), by ingestion path.",
    ["path", "interval"],
)
INGEST_LAG = Gauge(
    "trader_ingest_lag_seconds",
    "Market time now minus the close time of the newest stored candle.",
    ["symbol", "interval"],
    multiprocess_mode="mostrecent",
)
GAPS_FOUND = Counter(
    "trader_ingest_gaps_found_total",
    "Runs of missing candles found (in-line after an ingestion, or by kline_gaps).",
    ["symbol", "interval"],
)
GAPS_REPAIRED = Counter(
    "trader_ingest_gaps_repaired_total",
    "Runs of missing candles that a re-fetch filled completely.",
    ["symbol", "interval"],
)
GAP_CANDLES_REPAIRED = Counter(
    "trader_ingest_gap_candles_repaired_total",
    "Missing candles stored by a re-fetch.",
    ["symbol", "interval"],
)
BAD_TICKS = Counter(
    "trader_ingest_bad_ticks_total",
    "Candles rejected as bad ticks, by rule (ingest.normalize.BAD_TICK_RULES) and path.",
    ["path", "rule"],
)
REQUEST_WEIGHT = Counter(
    "trader_ingest_request_weight_total",
    "Request weight spent on GET /fapi/v1/klines (by the limit sent), by purpose.",
    ["purpose"],
)
WEIGHT_USED_1M = Gauge(
    "trader_ingest_weight_used_1m",
    "X-MBX-USED-WEIGHT-1M of the latest klines response: the IP's weight this minute, "
    "every client of the IP included.",
    multiprocess_mode="mostrecent",
)
