"""Place, query and cancel one order on a venue, printing each step (or validate it only with
--test). Proves keys, clock, filters and the Algo Order API end to end.

    python manage.py smoke_order --symbol BTCUSDT --side BUY --type LIMIT --price 10000 \\
        --qty 0.01 --timeInForce GTC [--credential ID] [--test]

Keys come from --credential (a stored, encrypted credential) or from the environment variables
BINANCE_TESTNET_API / BINANCE_TESTNET_SECRET (testnet). A LIVE credential is refused unless the
safety ladder allows it (TRADING_MODE=LIVE and LIVE_TRADING_CONFIRM=yes).
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.services import TradingNotAllowed, venue_for_credential, venue_for_keys
from execution.venues.base import OrderRequest, OrderType, Side, TimeInForce, VenueOrder
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.errors import PreflightError, VenueError
from trader.models import ApiCredential, Environment


def _decimal(name: str, raw: str | None) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise CommandError(f"--{name} {raw!r} is not a number") from None
    if not value.is_finite():
        raise CommandError(f"--{name} {raw!r} is not a finite number")
    return value


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--side", required=True, choices=[s.value for s in Side])
        parser.add_argument("--type", required=True, choices=[t.value for t in OrderType])
        parser.add_argument("--qty", help="quantity (base asset)")
        parser.add_argument("--price", help="limit price")
        parser.add_argument("--trigger-price", dest="trigger_price", help="for conditional types")
        parser.add_argument(
            "--timeInForce", dest="time_in_force", choices=[t.value for t in TimeInForce]
        )
        parser.add_argument("--reduce-only", dest="reduce_only", action="store_true")
        parser.add_argument("--credential", type=int, help="id of a stored credential")
        parser.add_argument(
            "--test", action="store_true", help="validate on /fapi/v1/order/test only"
        )

    def _say(self, step: str, text: str) -> None:
        self.stdout.write(f"[{step}] {text}")

    def _venue(self, credential_id: int | None) -> BinanceFuturesVenue:
        try:
            if credential_id is not None:
                try:
                    credential = ApiCredential.objects.get(pk=credential_id)
                except ApiCredential.DoesNotExist:
                    raise CommandError(f"no credential with id {credential_id}") from None
                self._say("keys", f"credential {credential.pk} {credential}")
                return venue_for_credential(credential=credential)
            api_key = os.environ.get("BINANCE_TESTNET_API", "")
            api_secret = os.environ.get("BINANCE_TESTNET_SECRET", "")
            if not api_key or not api_secret:
                raise CommandError(
                    "no keys: pass --credential ID, or set BINANCE_TESTNET_API and "
                    "BINANCE_TESTNET_SECRET"
                )
            self._say("keys", f"BINANCE_TESTNET_API ****{api_key[-4:]} (testnet)")
            return venue_for_keys(
                api_key=api_key,
                api_secret=api_secret,
                environment=Environment.TESTNET,
                account_key="smoke-env",
            )
        except TradingNotAllowed as exc:
            raise CommandError(str(exc)) from None

    def _show(self, step: str, order: VenueOrder) -> None:
        kind = f"algoId {order.venue_id}" if order.is_algo else f"orderId {order.venue_id}"
        self._say(
            step,
            f"{order.status} {kind} client id {order.client_id} {order.side} {order.type} "
            f"qty {order.quantity} price {order.price} trigger {order.trigger_price} "
            f"executed {order.executed_qty}",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        order_type = OrderType(options["type"])
        request = OrderRequest(
            symbol=options["symbol"].upper(),
            side=Side(options["side"]),
            type=order_type,
            quantity=_decimal("qty", options["qty"]),
            price=_decimal("price", options["price"]),
            trigger_price=_decimal("trigger-price", options["trigger_price"]),
            time_in_force=TimeInForce(options["time_in_force"])
            if options["time_in_force"]
            else None,
            reduce_only=options["reduce_only"],
            client_id=f"smoke-{uuid.uuid4().hex[:24]}",
        )
        venue = self._venue(options["credential"])
        self._say("venue", venue.settings.base_url)
        try:
            offset = venue.resync_clock()
            self._say("clock", f"offset to the venue {offset} ms")
            prepared = venue.prepare(request)
            self._say(
                "pre-flight",
                f"ok: qty {prepared.quantity} price {prepared.price} "
                f"trigger {prepared.trigger_price}",
            )
            if options["test"]:
                if request.is_conditional:
                    raise CommandError("--test covers regular orders only (/fapi/v1/order/test)")
                venue.test_order(request)
                self._say("test", "accepted by /fapi/v1/order/test (nothing placed)")
                return
            if request.is_conditional:
                placed = venue.place_algo_order(request)
                self._show("place", placed)
                self._show(
                    "query",
                    venue.get_algo_order(symbol=request.symbol, client_id=request.client_id),
                )
                if placed.status in ("NEW", "TRIGGERING"):
                    self._show(
                        "cancel",
                        venue.cancel_algo_order(symbol=request.symbol, client_id=request.client_id),
                    )
            else:
                placed = venue.place_order(request)
                self._show("place", placed)
                queried = venue.get_order(symbol=request.symbol, client_id=request.client_id)
                self._show("query", queried)
                if queried.status in ("NEW", "PARTIALLY_FILLED"):
                    self._show(
                        "cancel",
                        venue.cancel_order(symbol=request.symbol, client_id=request.client_id),
                    )
                else:
                    self._say("cancel", f"nothing to cancel: the order is {queried.status}")
        except PreflightError as exc:
            raise CommandError(f"pre-flight refused the order: {exc}") from None
        except VenueError as exc:
            raise CommandError(f"venue: {type(exc).__name__}: {exc}") from None
