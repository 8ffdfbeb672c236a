"""The order state machine, in one place (pure).

States follow Binance's, plus PENDING (persisted, not yet confirmed by the venue) and UNKNOWN
(the venue call's outcome is ambiguous: timeout, 5xx, -1007; resolved by client id before
anything else is tried). Algo statuses are mapped onto the same states.
"""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    PENDING = "PENDING"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(s.value, s.value.replace("_", " ").title()) for s in cls]


TERMINAL = frozenset(
    {OrderState.FILLED, OrderState.CANCELED, OrderState.EXPIRED, OrderState.REJECTED}
)
LIVE = frozenset({OrderState.NEW, OrderState.PARTIALLY_FILLED})
#: Not known to be dead: what a kill switch, DISARM or reconciliation must look at.
OPEN = frozenset({OrderState.PENDING, OrderState.UNKNOWN, *LIVE})

_LEGAL: dict[OrderState, frozenset[OrderState]] = {
    OrderState.PENDING: frozenset(
        {OrderState.NEW, OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.REJECTED,
         OrderState.UNKNOWN, OrderState.CANCELED, OrderState.EXPIRED}
    ),
    # UNKNOWN -> PENDING: looked up by client id and proven absent, so it was never placed.
    OrderState.UNKNOWN: frozenset(
        {OrderState.NEW, OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.REJECTED,
         OrderState.CANCELED, OrderState.EXPIRED, OrderState.PENDING}
    ),
    OrderState.NEW: frozenset(
        {OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELED, OrderState.EXPIRED,
         OrderState.UNKNOWN}
    ),
    OrderState.PARTIALLY_FILLED: frozenset(
        {OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELED, OrderState.EXPIRED}
    ),
}  # fmt: skip


class IllegalTransition(ValueError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"illegal order transition {current} -> {target}")
        self.current = current
        self.target = target


def is_legal(current: str, target: str) -> bool:
    """Whether ``current -> target`` may happen. Terminal states never change; staying in
    PARTIALLY_FILLED is legal (more fills)."""
    return OrderState(target) in _LEGAL.get(OrderState(current), frozenset())


def check_transition(current: str, target: str) -> None:
    if not is_legal(current, target):
        raise IllegalTransition(current, target)


def from_regular_status(status: str) -> OrderState:
    """Binance's regular order status -> ours (EXPIRED_IN_MATCH is an STP expiry)."""
    if status == "EXPIRED_IN_MATCH":
        return OrderState.EXPIRED
    return OrderState(status)


def from_algo_status(status: str, *, filled: bool) -> OrderState:
    """An algo order's status -> ours. NEW/TRIGGERING/TRIGGERED are live (a triggered order's
    child is being executed); FINISHED is FILLED if its child order filled, else CANCELED."""
    if status in ("NEW", "TRIGGERING", "TRIGGERED", "ACCEPTED"):
        return OrderState.NEW
    if status == "FINISHED":
        return OrderState.FILLED if filled else OrderState.CANCELED
    return OrderState(status)  # CANCELED, EXPIRED, REJECTED


#: Django-style choices of every state (models, API schema).
ORDER_STATE_CHOICES = OrderState.choices()
