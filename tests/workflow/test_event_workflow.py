"""The event workflow: every allowed step, and every refused one.

``ISSUE`` restates the table of the issue by hand, independently of
``workflow.event.RULES``; the tests check the machine against it for every
transition, every state, every role, Mail Message or not. The rule table
itself is walked too, so that no rule is shadowed by another.
"""

from __future__ import annotations

import itertools

import pytest

from workflow import Role, TransitionRefused
from workflow import event as event_workflow
from workflow.event import RULES, STATES, TRANSITIONS, next_state

AUTHOR = Role.AUTHOR
ASSIGNEE = Role.ASSIGNEE
MANAGER = Role.MANAGER
MEMBER = Role.DEPARTMENT_MEMBER
SENDER = Role.SENDER
SYSTEM = Role.SYSTEM

# transition -> mail? -> source state -> (state after, roles allowed).
Table = dict[str, dict[bool, dict[str, tuple[str, frozenset[Role]]]]]


def _same(
    sources: tuple[str, ...], dest: str | None, roles: set[Role]
) -> dict[bool, dict[str, tuple[str, frozenset[Role]]]]:
    """Return one row of the table, the same for mail and other types."""
    row = {source: (dest or source, frozenset(roles)) for source in sources}

    return {True: row, False: dict(row)}


ISSUE: Table = {
    "plan": _same(("draft",), "planned", {AUTHOR, ASSIGNEE, MANAGER, SYSTEM}),
    "confirm": _same(("planned",), "confirmed", {MANAGER, SYSTEM}),
    "send": {
        # A manager's send hands a Mail Message to the outbox; only the
        # gateway marks it sent, once the smart host has taken it.
        True: {
            "draft": ("confirmed", frozenset({MANAGER})),
            "planned": ("confirmed", frozenset({MANAGER})),
            "confirmed": ("sent", frozenset({SYSTEM})),
        },
        False: {
            "draft": ("sent", frozenset({MANAGER, SYSTEM})),
            "planned": ("sent", frozenset({MANAGER, SYSTEM})),
            "confirmed": ("sent", frozenset({ASSIGNEE, MANAGER, SYSTEM})),
        },
    },
    "receive": _same(
        ("draft",), "received", {AUTHOR, ASSIGNEE, MANAGER, SYSTEM}
    ),
    "assign": _same(("received",), None, {ASSIGNEE, MANAGER, SYSTEM}),
    "deliver": _same(("received",), "delivered", {ASSIGNEE, MANAGER, SYSTEM}),
    "follow-up": {
        mail: {
            "received": ("delivered", frozenset({ASSIGNEE, MANAGER, SYSTEM})),
            **{
                state: (state, frozenset({ASSIGNEE, MANAGER, SYSTEM}))
                for state in (
                    "draft",
                    "planned",
                    "confirmed",
                    "sent",
                    "delivered",
                    "cancelled",
                )
            },
        }
        for mail in (True, False)
    },
    "acknowledge": _same(("sent",), None, {MEMBER}),
    "cancel": _same(
        ("draft", "planned", "confirmed"),
        "cancelled",
        {AUTHOR, ASSIGNEE, MANAGER, SYSTEM},
    ),
    "delete": _same(("draft",), "deleted", {AUTHOR, MANAGER}),
    # Only a Mail Message's delivery fails; its sender or a manager may
    # queue it again.
    "retry": {
        True: {
            state: ("confirmed", frozenset({SENDER, MANAGER, SYSTEM}))
            for state in ("confirmed", "sent")
        },
        False: {},
    },
}


def _kind(mail: bool) -> str:
    return "mail" if mail else "other"


ALLOWED = [
    pytest.param(
        name,
        mail,
        state,
        role,
        dest,
        id=f"{name}-{_kind(mail)}-{state}-{role}",
    )
    for name, by_kind in ISSUE.items()
    for mail, rows in by_kind.items()
    for state, (dest, roles) in rows.items()
    for role in sorted(roles)
]

WRONG_STATE = [
    pytest.param(name, mail, state, id=f"{name}-{_kind(mail)}-{state}")
    for name, by_kind in ISSUE.items()
    for mail, rows in by_kind.items()
    for state in STATES
    if state not in rows
]

WRONG_ROLE = [
    pytest.param(
        name, mail, state, role, id=f"{name}-{_kind(mail)}-{state}-{role}"
    )
    for name, by_kind in ISSUE.items()
    for mail, rows in by_kind.items()
    for state, (_, roles) in rows.items()
    for role in sorted(set(Role) - roles)
]

EVERY_ROLE = frozenset(Role)


def test_the_machine_has_exactly_the_transitions_of_the_issue() -> None:
    """The rule table names the issue's transitions, no more, no fewer."""
    assert set(TRANSITIONS) == set(ISSUE)


@pytest.mark.parametrize(("name", "mail", "state", "role", "dest"), ALLOWED)
def test_an_allowed_step_leads_to_its_state(
    name: str, mail: bool, state: str, role: Role, dest: str
) -> None:
    """Each role the issue allows takes the step, to the issue's state."""
    assert next_state(state, name, frozenset({role}), mail=mail) == dest


@pytest.mark.parametrize(("name", "mail", "state"), WRONG_STATE)
def test_a_step_from_a_wrong_state_is_refused(
    name: str, mail: bool, state: str
) -> None:
    """From a state it does not start from, even every role is refused."""
    with pytest.raises(TransitionRefused) as refusal:
        next_state(state, name, EVERY_ROLE, mail=mail)

    message = str(refusal.value)
    assert f"cannot {name} this event" in message
    assert f"it is {state}" in message
    for source in ISSUE[name][mail]:
        assert source in message


@pytest.mark.parametrize(("name", "mail", "state", "role"), WRONG_ROLE)
def test_a_step_by_a_wrong_role_is_refused(
    name: str, mail: bool, state: str, role: Role
) -> None:
    """A role the issue does not allow is refused, with who may instead."""
    with pytest.raises(TransitionRefused) as refusal:
        next_state(state, name, frozenset({role}), mail=mail)

    message = str(refusal.value)
    assert f"cannot {name} this event ({state}): only" in message
    assert f"your roles here: {role.value}" in message


@pytest.mark.parametrize("mail", [True, False], ids=["mail", "other"])
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", TRANSITIONS)
def test_no_role_at_all_is_refused_everywhere(
    name: str, state: str, mail: bool
) -> None:
    """An actor who is nothing to the event can take no step."""
    with pytest.raises(TransitionRefused):
        next_state(state, name, frozenset(), mail=mail)


@pytest.mark.parametrize(
    "rule",
    RULES,
    ids=[f"{rule.name}-{rule.condition or 'any'}" for rule in RULES],
)
def test_every_rule_of_the_table_can_be_taken(
    rule: event_workflow.Rule,
) -> None:
    """No rule is shadowed: each source and role of it reaches its dest."""
    kinds = [True, False]
    if rule.condition == event_workflow.MAIL:
        kinds = [True]
    elif rule.condition == f"not {event_workflow.MAIL}":
        kinds = [False]

    for mail, source, role in itertools.product(
        kinds, rule.sources, rule.allowed
    ):
        reached = next_state(source, rule.name, frozenset({role}), mail=mail)
        assert reached == (rule.dest or source)


def test_a_manager_send_hands_a_mail_message_to_the_outbox() -> None:
    """A manager's send of a Mail Message from draft or planned confirms."""
    for state in ("draft", "planned"):
        reached = next_state(state, "send", frozenset({MANAGER}), mail=True)
        assert reached == "confirmed"


def test_a_manager_send_marks_a_phone_call_sent() -> None:
    """A phone call made is sent at once, from draft or planned."""
    for state in ("draft", "planned"):
        reached = next_state(state, "send", frozenset({MANAGER}), mail=False)
        assert reached == "sent"


def test_only_the_gateway_marks_a_confirmed_mail_message_sent() -> None:
    """Every person is refused; Role.SYSTEM alone takes confirmed to sent."""
    people = EVERY_ROLE - {SYSTEM}
    with pytest.raises(TransitionRefused, match="the gateway itself"):
        next_state("confirmed", "send", people, mail=True)

    assert (
        next_state("confirmed", "send", frozenset({SYSTEM}), mail=True)
        == "sent"
    )


def test_an_unknown_transition_is_refused_naming_the_known_ones() -> None:
    """A misspelt transition is refused with the list of real ones."""
    with pytest.raises(TransitionRefused, match="no transition 'sned'"):
        next_state("draft", "sned", EVERY_ROLE, mail=True)
