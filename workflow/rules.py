"""The vocabulary shared by workflows: actor roles and refusals."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from transitions import Machine, MachineError


class Role(StrEnum):
    """What the acting person is to the object being moved."""

    AUTHOR = "author"
    # The event's sender: stated by the caller where a step allows it.
    SENDER = "sender"
    ASSIGNEE = "assignee"
    MANAGER = "manager"
    STAFF = "staff"
    DEPARTMENT_MEMBER = "recipient-department-member"
    SYSTEM = "system"


class TransitionRefused(Exception):
    """A transition not allowed from this state or for this actor."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One transition: from which states, to which, and who may make it.

    ``dest`` None keeps the state as it is (a step that only records).
    """

    name: str
    sources: tuple[str, ...]
    dest: str | None
    allowed: frozenset[Role]
    condition: str | None = None


class Subject:
    """The model a state machine moves: a state and facts about the object."""

    def __init__(self, state: str, facts: frozenset[str]) -> None:
        self.state = state
        self.facts = facts

    def holds(self, fact: str) -> bool:
        """Return whether a named fact about the object is true."""
        return fact in self.facts


def decide(
    kind: str,
    states: Iterable[str],
    rules: Iterable[Rule],
    state: str,
    transition: str,
    roles: frozenset[Role],
    facts: frozenset[str] = frozenset(),
) -> str:
    """Return the state that ``transition`` leads to from ``state``.

    Raises TransitionRefused, naming the reason, when the transition does
    not exist, does not start from ``state``, or is not the actor's to make.
    """
    known = [rule for rule in rules if rule.name == transition]
    if not known:
        names = sorted({rule.name for rule in rules})
        raise TransitionRefused(
            f"{kind} has no transition {transition!r} "
            f"(known: {', '.join(names)})"
        )

    applicable = [
        rule
        for rule in known
        if rule.condition is None or _fact_holds(rule.condition, facts)
    ]
    from_here = [rule for rule in applicable if state in rule.sources]
    if not from_here:
        sources = sorted({s for rule in applicable for s in rule.sources})
        raise TransitionRefused(
            f"cannot {transition} this {kind}: it is {state}, and "
            f"{transition} starts from {' or '.join(sources) or 'no state'}"
        )

    permitted = [rule for rule in from_here if roles & rule.allowed]
    if not permitted:
        allowed = {r for rule in from_here for r in rule.allowed}
        people = sorted(r.value for r in allowed - {Role.SYSTEM})
        who = " or ".join(people) if people else "the gateway itself"
        held = ", ".join(sorted(r.value for r in roles)) or "none"
        raise TransitionRefused(
            f"cannot {transition} this {kind} ({state}): only {who} may "
            f"(your roles here: {held})"
        )

    return _run(states, permitted[0], state, facts)


def _fact_holds(condition: str, facts: frozenset[str]) -> bool:
    """Evaluate ``fact`` or ``not fact`` against the object's facts."""
    if condition.startswith("not "):
        return condition[4:] not in facts

    return condition in facts


def _run(
    states: Iterable[str], rule: Rule, state: str, facts: frozenset[str]
) -> str:
    """Move a Subject through the chosen rule with the transitions library."""
    subject = Subject(state, facts)
    machine = Machine(
        model=subject,
        states=list(states),
        initial=state,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )
    machine.add_transition(
        rule.name, list(rule.sources), rule.dest or "=", after=None
    )
    try:
        subject.trigger(rule.name)  # type: ignore[attr-defined]
    except MachineError as error:
        raise TransitionRefused(str(error.value)) from None

    return subject.state
