"""The ticket workflow: draft -> submitted -> open -> suspended / closed.

Any member of our staff may submit, suspend, close or cancel a ticket; only a
manager opens one (or re-opens a suspended one); a draft is deleted by its
author or a manager.
"""

from __future__ import annotations

from workflow.rules import Role, Rule, decide

STATES = (
    "draft",
    "submitted",
    "open",
    "suspended",
    "closed",
    "cancelled",
    "deleted",
)

_STAFF = frozenset({Role.STAFF, Role.MANAGER, Role.SYSTEM})

RULES = (
    Rule("submit", ("draft",), "submitted", _STAFF),
    Rule(
        "open",
        ("submitted", "suspended"),
        "open",
        frozenset({Role.MANAGER, Role.SYSTEM}),
    ),
    Rule("suspend", ("open",), "suspended", _STAFF),
    Rule("close", ("open", "suspended"), "closed", _STAFF),
    Rule(
        "cancel",
        ("draft", "submitted", "open", "suspended"),
        "cancelled",
        _STAFF,
    ),
    Rule(
        "delete", ("draft",), "deleted", frozenset({Role.AUTHOR, Role.MANAGER})
    ),
)

TRANSITIONS = tuple(dict.fromkeys(rule.name for rule in RULES))


def next_state(state: str, transition: str, roles: frozenset[Role]) -> str:
    """Return the ticket's state after ``transition``.

    Raises TransitionRefused when the state or the actor does not allow it.
    """
    return decide("ticket", STATES, RULES, state, transition, roles)
