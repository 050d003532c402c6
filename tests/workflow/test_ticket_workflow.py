"""The ticket workflow: every allowed step, and every refused one.

``ISSUE`` restates the issue by hand (draft -> submitted -> open ->
suspended / closed, with cancel and delete; only a manager opens one) and
the machine is checked against it for every transition, state and role.
"""

from __future__ import annotations

import itertools

import pytest

from workflow import Role, TransitionRefused
from workflow.rules import Rule
from workflow.ticket import RULES, STATES, TRANSITIONS, next_state

STAFF = frozenset({Role.STAFF, Role.MANAGER, Role.SYSTEM})

# transition -> source state -> (state after, roles allowed).
ISSUE: dict[str, dict[str, tuple[str, frozenset[Role]]]] = {
    "submit": {"draft": ("submitted", STAFF)},
    "open": {
        "submitted": ("open", frozenset({Role.MANAGER, Role.SYSTEM})),
        "suspended": ("open", frozenset({Role.MANAGER, Role.SYSTEM})),
    },
    "suspend": {"open": ("suspended", STAFF)},
    "close": {"open": ("closed", STAFF), "suspended": ("closed", STAFF)},
    "cancel": {
        state: ("cancelled", STAFF)
        for state in ("draft", "submitted", "open", "suspended")
    },
    "delete": {"draft": ("deleted", frozenset({Role.AUTHOR, Role.MANAGER}))},
}

ALLOWED = [
    pytest.param(name, state, role, dest, id=f"{name}-{state}-{role}")
    for name, rows in ISSUE.items()
    for state, (dest, roles) in rows.items()
    for role in sorted(roles)
]

WRONG_STATE = [
    pytest.param(name, state, id=f"{name}-{state}")
    for name, rows in ISSUE.items()
    for state in STATES
    if state not in rows
]

WRONG_ROLE = [
    pytest.param(name, state, role, id=f"{name}-{state}-{role}")
    for name, rows in ISSUE.items()
    for state, (_, roles) in rows.items()
    for role in sorted(set(Role) - roles)
]


def test_the_machine_has_exactly_the_transitions_of_the_issue() -> None:
    """The rule table names the issue's transitions, no more, no fewer."""
    assert set(TRANSITIONS) == set(ISSUE)


@pytest.mark.parametrize(("name", "state", "role", "dest"), ALLOWED)
def test_an_allowed_step_leads_to_its_state(
    name: str, state: str, role: Role, dest: str
) -> None:
    """Each role the issue allows takes the step, to the issue's state."""
    assert next_state(state, name, frozenset({role})) == dest


@pytest.mark.parametrize(("name", "state"), WRONG_STATE)
def test_a_step_from_a_wrong_state_is_refused(name: str, state: str) -> None:
    """From a state it does not start from, even every role is refused."""
    with pytest.raises(TransitionRefused) as refusal:
        next_state(state, name, frozenset(Role))

    message = str(refusal.value)
    assert f"cannot {name} this ticket: it is {state}" in message
    for source in ISSUE[name]:
        assert source in message


@pytest.mark.parametrize(("name", "state", "role"), WRONG_ROLE)
def test_a_step_by_a_wrong_role_is_refused(
    name: str, state: str, role: Role
) -> None:
    """A role the issue does not allow is refused, with who may instead."""
    with pytest.raises(TransitionRefused) as refusal:
        next_state(state, name, frozenset({role}))

    message = str(refusal.value)
    assert f"cannot {name} this ticket ({state}): only" in message
    assert f"your roles here: {role.value}" in message


@pytest.mark.parametrize("rule", RULES, ids=[f"{rule.name}" for rule in RULES])
def test_every_rule_of_the_table_can_be_taken(rule: Rule) -> None:
    """No rule is shadowed: each source and role of it reaches its dest."""
    for source, role in itertools.product(rule.sources, rule.allowed):
        assert next_state(source, rule.name, frozenset({role})) == rule.dest


def test_only_a_manager_opens_a_ticket() -> None:
    """Staff who author a submitted ticket still cannot open it."""
    with pytest.raises(TransitionRefused, match="only manager may"):
        next_state("submitted", "open", frozenset({Role.STAFF, Role.AUTHOR}))

    assert next_state("submitted", "open", frozenset({Role.MANAGER})) == "open"
