"""The order state machine (pure): every pair of states, legal or not, and how Binance's
regular and algo statuses map onto our states."""

from __future__ import annotations

import itertools

import pytest

from execution.states import (
    LIVE,
    OPEN,
    TERMINAL,
    IllegalTransition,
    OrderState,
    check_transition,
    from_algo_status,
    from_regular_status,
    is_legal,
)

S = OrderState

#: The whole table, written out: a change to the machine must change this on purpose.
LEGAL = {
    S.PENDING: {
        S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.UNKNOWN, S.CANCELED, S.EXPIRED,
    },
    # Looked up by client id and proven absent: back to PENDING (never placed).
    S.UNKNOWN: {
        S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELED, S.EXPIRED, S.PENDING,
    },
    S.NEW: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN},
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED},
    S.FILLED: set(),
    S.CANCELED: set(),
    S.EXPIRED: set(),
    S.REJECTED: set(),
}  # fmt: skip

ALL_PAIRS = list(itertools.product(OrderState, OrderState))
LEGAL_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in LEGAL[a]]
ILLEGAL_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in LEGAL[a]]


def test_the_table_covers_every_state_and_both_lists_every_pair():
    assert set(LEGAL) == set(OrderState)
    assert len(LEGAL_PAIRS) + len(ILLEGAL_PAIRS) == len(OrderState) ** 2 == 64
    assert len(LEGAL_PAIRS) == 23


@pytest.mark.parametrize(("current", "target"), LEGAL_PAIRS, ids=lambda s: s.value)
def test_legal_transition_is_allowed(current, target):
    assert is_legal(current, target) is True
    assert is_legal(current.value, target.value) is True  # plain strings, as stored
    check_transition(current, target)  # does not raise


@pytest.mark.parametrize(("current", "target"), ILLEGAL_PAIRS, ids=lambda s: s.value)
def test_illegal_transition_is_refused(current, target):
    assert is_legal(current, target) is False
    with pytest.raises(IllegalTransition) as excinfo:
        check_transition(current.value, target.value)
    assert (excinfo.value.current, excinfo.value.target) == (current.value, target.value)
    assert str(excinfo.value) == f"illegal order transition {current.value} -> {target.value}"


@pytest.mark.parametrize("state", sorted(TERMINAL), ids=str)
def test_terminal_state_never_changes(state):
    assert [t for t in OrderState if is_legal(state, t)] == []


def test_state_groups():
    assert set(TERMINAL) == {S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    assert set(LIVE) == {S.NEW, S.PARTIALLY_FILLED}
    assert set(OPEN) == {S.PENDING, S.UNKNOWN, S.NEW, S.PARTIALLY_FILLED}
    assert OPEN.isdisjoint(TERMINAL)
    assert set(OPEN | TERMINAL) == set(OrderState)


def test_staying_in_a_state_is_legal_only_for_partially_filled():
    assert [s for s in OrderState if is_legal(s, s)] == [S.PARTIALLY_FILLED]


def test_unknown_state_name_is_a_value_error():
    with pytest.raises(ValueError, match="'OPEN' is not a valid OrderState"):
        is_legal("OPEN", "NEW")
    with pytest.raises(ValueError, match="'DONE' is not a valid OrderState"):
        is_legal("NEW", "DONE")


# --- Binance statuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NEW", S.NEW),
        ("PARTIALLY_FILLED", S.PARTIALLY_FILLED),
        ("FILLED", S.FILLED),
        ("CANCELED", S.CANCELED),
        ("EXPIRED", S.EXPIRED),
        ("REJECTED", S.REJECTED),
        ("EXPIRED_IN_MATCH", S.EXPIRED),  # self-trade prevention expired it
    ],
)
def test_regular_order_status_maps_to_our_state(status, state):
    assert from_regular_status(status) is state


def test_unknown_regular_status_is_a_value_error():
    with pytest.raises(ValueError, match="'NEW_INSURANCE' is not a valid OrderState"):
        from_regular_status("NEW_INSURANCE")


@pytest.mark.parametrize("status", ["NEW", "TRIGGERING", "TRIGGERED", "ACCEPTED"])
@pytest.mark.parametrize("filled", [False, True])
def test_live_algo_status_is_new_whatever_the_fill_flag(status, filled):
    assert from_algo_status(status, filled=filled) is S.NEW


def test_finished_algo_order_whose_child_filled_is_filled():
    assert from_algo_status("FINISHED", filled=True) is S.FILLED


def test_finished_algo_order_whose_child_did_not_fill_is_canceled():
    assert from_algo_status("FINISHED", filled=False) is S.CANCELED


@pytest.mark.parametrize("status", ["CANCELED", "EXPIRED", "REJECTED"])
@pytest.mark.parametrize("filled", [False, True])
def test_dead_algo_status_maps_to_the_same_state(status, filled):
    assert from_algo_status(status, filled=filled) is S(status)


def test_unknown_algo_status_is_a_value_error():
    with pytest.raises(ValueError, match="'PAUSED' is not a valid OrderState"):
        from_algo_status("PAUSED", filled=False)


def test_algo_order_path_to_a_fill_is_legal_step_by_step():
    path = [
        S.PENDING,
        from_algo_status("NEW", filled=False),
        from_algo_status("TRIGGERED", filled=False),
        from_algo_status("FINISHED", filled=True),
    ]
    assert path == [S.PENDING, S.NEW, S.NEW, S.FILLED]
    assert is_legal(S.PENDING, S.NEW)
    assert is_legal(S.NEW, S.FILLED)


def test_choices_list_every_state_with_a_label():
    assert OrderState.choices() == [
        ("PENDING", "Pending"),
        ("NEW", "New"),
        ("PARTIALLY_FILLED", "Partially Filled"),
        ("FILLED", "Filled"),
        ("CANCELED", "Canceled"),
        ("EXPIRED", "Expired"),
        ("REJECTED", "Rejected"),
        ("UNKNOWN", "Unknown"),
    ]
