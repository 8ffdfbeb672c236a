"""Stored market data. Only closed candles live here (the importer stores files of history)."""

from __future__ import annotations

from django.db import models


class Kline(models.Model):
    """One closed candle of ``symbol`` at ``interval``, prices and volumes Decimal-exact.

    ``(symbol, interval, open_time)`` is unique: imports upsert on it, so a later correction of a
    candle replaces the earlier values and a re-import adds nothing."""

    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4)
    open_time = models.DateTimeField()
    open = models.DecimalField(max_digits=28, decimal_places=10)
    high = models.DecimalField(max_digits=28, decimal_places=10)
    low = models.DecimalField(max_digits=28, decimal_places=10)
    close = models.DecimalField(max_digits=28, decimal_places=10)
    volume = models.DecimalField(max_digits=28, decimal_places=10)
    close_time = models.DateTimeField()
    quote_volume = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    trades = models.BigIntegerField(default=0)
    taker_buy_base = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    taker_buy_quote = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    #: When this candle was handed to the next stage (``ingest.handoff.candle_closed``); null
    #: for history that never started the chain. Set once, whichever path saw the close first.
    chain_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "interval", "open_time"], name="ingest_kline_unique_open"
            ),
        ]
        indexes = [
            # "The last N candles of a symbol and interval": an index scan, newest first.
            models.Index(fields=["symbol", "interval", "-open_time"], name="ingest_kline_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval} {self.open_time:%Y-%m-%d %H:%M}"
