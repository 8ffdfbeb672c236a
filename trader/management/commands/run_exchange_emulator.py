"""Serve the Binance USD-M futures emulator: Binance's own paths, rules and error codes, so an
unmodified python-binance client trades against it offline.

    python manage.py run_exchange_emulator --port 9010 \\
        --data BTCUSDT=execution/emulator/data/BTCUSDT-1m-2022-01.csv --speed 10 --control

Without --data it replays the bundled real candles (BTCUSDT, ETHUSDT, XRPUSDT). Without
--accounts it creates one demo account and prints its key and secret.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.emulator.market import symbol_from_path
from execution.emulator.runner import serve_forever
from execution.emulator.server import DEFAULT_DATA, EmulatorConfig, load_accounts


def parse_data(specs: list[str]) -> tuple[tuple[str, Path, Decimal], ...]:
    """``[SYMBOL=]PATH[@SCALE]`` items -> (symbol, path, price scale)."""
    parsed = []
    for spec in specs:
        symbol, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path_text, _, scale_text = rest.partition("@")
        path = Path(path_text)
        if not path.exists():
            raise CommandError(f"--data {spec}: {path} does not exist")
        try:
            scale = Decimal(scale_text) if scale_text else Decimal(1)
        except InvalidOperation:
            raise CommandError(f"--data {spec}: scale {scale_text!r} is not a number") from None
        parsed.append(((symbol or symbol_from_path(path)).upper(), path, scale))
    return tuple(parsed)


class Command(BaseCommand):
    help = __doc__
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9010)
        parser.add_argument(
            "--data",
            action="append",
            default=[],
            metavar="[SYMBOL=]PATH[@SCALE]",
            help="candles to replay (CSV, Binance dump, .zip or folder); repeat per symbol",
        )
        parser.add_argument("--speed", default="1", help="market time per wall time (e.g. 60)")
        parser.add_argument("--history", type=int, default=500, help="candles already closed")
        parser.add_argument("--accounts", type=Path, help="JSON list of accounts")
        parser.add_argument("--control", action="store_true", help="serve /_emulator/...")
        parser.add_argument("--seed", type=int, default=0, help="seed of fault injection")
        parser.add_argument("--weight-per-minute", type=int, default=2400, help="per IP")
        parser.add_argument("--orders-per-10s", type=int, default=300, help="per account")
        parser.add_argument("--orders-per-minute", type=int, default=1200, help="per account")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            speed = Decimal(options["speed"])
        except InvalidOperation:
            raise CommandError(f"--speed {options['speed']!r} is not a number") from None
        if speed < 0:
            raise CommandError("--speed must be 0 (frozen) or more")
        try:
            accounts = load_accounts(options["accounts"]) if options["accounts"] else ()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        config = EmulatorConfig(
            data=parse_data(options["data"]) if options["data"] else DEFAULT_DATA,
            accounts=accounts,
            speed=speed,
            history=options["history"],
            control=options["control"],
            seed=options["seed"],
            weight_per_minute=options["weight_per_minute"],
            orders_per_10s=options["orders_per_10s"],
            orders_per_minute=options["orders_per_minute"],
        )
        if not accounts:
            # One demo account; its key pair is shown once so a client can be pointed at it.
            from execution.emulator.server import Emulator

            probe = Emulator(config)
            config = EmulatorConfig(**{**config.__dict__, "accounts": probe.accounts})
            spec = probe.accounts[0]
            self.stdout.write(
                "emulator: demo account "
                + json.dumps({"api_key": spec.api_key, "api_secret": spec.api_secret})
            )
        symbols = ", ".join(symbol for symbol, _, _ in config.data)
        self.stdout.write(
            f"emulator: serving {symbols} at http://{options['host']}:{options['port']}/fapi "
            f"(speed {speed}{', control API on' if options['control'] else ''})"
        )
        serve_forever(config, host=options["host"], port=options["port"])
