"""The event workflow: outgoing and incoming communications.

Outgoing: draft -> planned -> confirmed -> sent, sent straight from draft or
planned by a manager, cancelled or deleted on the way. Incoming: draft ->
received -> delivered. A Mail Message is released by ``confirmed``: the
outbox delivers it and then records ``send``; a manager's ``send`` from draft
or planned queues it (state ``confirmed``) instead of marking it sent. A
Mail Message whose delivery failed for some recipient is queued again by
``retry``, back to ``confirmed`` (the caller checks that it failed).
"""

from __future__ import annotations

from workflow.rules import Role, Rule, decide

STATES = (
    "draft",
    "planned",
    "confirmed",
    "sent",
    "received",
    "delivered",
    "cancelled",
    "deleted",
)

# Facts the caller states about the event.
MAIL = "mail"

_AUTHOR = Role.AUTHOR
_ASSIGNEE = Role.ASSIGNEE
_MANAGER = Role.MANAGER
_SYSTEM = Role.SYSTEM

RULES = (
    Rule(
        "plan",
        ("draft",),
        "planned",
        frozenset({_AUTHOR, _ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule("confirm", ("planned",), "confirmed", frozenset({_MANAGER, _SYSTEM})),
    # A manager's shortcut; a Mail Message goes to the outbox instead.
    Rule(
        "send",
        ("draft", "planned"),
        "confirmed",
        frozenset({_MANAGER}),
        condition=MAIL,
    ),
    Rule(
        "send",
        ("draft", "planned"),
        "sent",
        frozenset({_MANAGER, _SYSTEM}),
        condition=f"not {MAIL}",
    ),
    # Only the outbox marks a Mail Message sent, once the smart host took it.
    Rule("send", ("confirmed",), "sent", frozenset({_SYSTEM}), condition=MAIL),
    Rule(
        "send",
        ("confirmed",),
        "sent",
        frozenset({_ASSIGNEE, _MANAGER, _SYSTEM}),
        condition=f"not {MAIL}",
    ),
    Rule(
        "receive",
        ("draft",),
        "received",
        frozenset({_AUTHOR, _ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule(
        "assign",
        ("received",),
        None,
        frozenset({_ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule(
        "deliver",
        ("received",),
        "delivered",
        frozenset({_ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    # Following up delivers a received event and leaves others as they are.
    Rule(
        "follow-up",
        ("received",),
        "delivered",
        frozenset({_ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule(
        "follow-up",
        ("draft", "planned", "confirmed", "sent", "delivered", "cancelled"),
        None,
        frozenset({_ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule(
        "acknowledge",
        ("sent",),
        None,
        frozenset({Role.DEPARTMENT_MEMBER}),
    ),
    Rule(
        "cancel",
        ("draft", "planned", "confirmed"),
        "cancelled",
        frozenset({_AUTHOR, _ASSIGNEE, _MANAGER, _SYSTEM}),
    ),
    Rule("delete", ("draft",), "deleted", frozenset({_AUTHOR, _MANAGER})),
    # Mail the outbox gave up on, or sent but not to everyone, goes back
    # to it once the cause is fixed.
    Rule(
        "retry",
        ("confirmed", "sent"),
        "confirmed",
        frozenset({Role.SENDER, _MANAGER, _SYSTEM}),
        condition=MAIL,
    ),
)

TRANSITIONS = tuple(dict.fromkeys(rule.name for rule in RULES))


def next_state(
    state: str,
    transition: str,
    roles: frozenset[Role],
    *,
    mail: bool,
) -> str:
    """Return the event's state after ``transition`` by an actor with roles.

    Raises TransitionRefused when the state or the actor does not allow it.
    """
    facts = frozenset({MAIL}) if mail else frozenset()

    return decide("event", STATES, RULES, state, transition, roles, facts)
