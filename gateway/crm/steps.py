"""Event steps: moving an event along its workflow, and who may.

Each step asks ``workflow.event`` whether the actor's roles allow it from
the event's state, records the new state and a history row, and changes
nothing when the step is refused.
"""

from __future__ import annotations

import functools

import aiosqlite

from gateway.crm import history
from gateway.crm.contacts import (
    ORGANISATION,
    Contact,
    department_of,
    get_contact,
    is_internal,
    members_of,
)
from gateway.crm.events import (
    Event,
    NewEvent,
    create_event,
    get_event,
    require_row,
    set_assignees,
)
from gateway.errors import InvalidInput
from workflow import Role, TransitionRefused
from workflow import event as event_workflow


async def roles_of(
    db: aiosqlite.Connection, event: Event, actor: Contact | None
) -> frozenset[Role]:
    """Return what the actor is to the event (author, assignee, ...).

    None stands for the gateway itself. When no one is assigned, the
    internal recipients of an incoming event (a person, or the members of
    a department) stand as its assignees.
    """
    if actor is None:
        return frozenset({Role.SYSTEM})

    roles: set[Role] = set()
    if actor.internal:
        roles.add(Role.STAFF)
    if actor.is_manager:
        roles.add(Role.MANAGER)
    if event.author_id == actor.id:
        roles.add(Role.AUTHOR)
    if actor.id in await handlers_of(db, event):
        roles.add(Role.ASSIGNEE)
    if await _in_recipient_department(db, event, actor):
        roles.add(Role.DEPARTMENT_MEMBER)

    return frozenset(roles)


async def handlers_of(db: aiosqlite.Connection, event: Event) -> set[int]:
    """Return who handles an event: its assignees, else its recipients.

    Recipients count only for incoming events, and a recipient department
    counts as all its members.
    """
    if event.assignee_ids:
        return set(event.assignee_ids)
    if event.direction != "incoming":
        return set()

    handlers: set[int] = set()
    for party in event.recipients:
        contact = await get_contact(db, party.contact_id)
        if not contact.internal:
            continue
        if contact.kind == ORGANISATION:
            handlers.update(await members_of(db, contact.id))
        else:
            handlers.add(contact.id)

    return handlers


async def transition(
    db: aiosqlite.Connection,
    event_id: int,
    name: str,
    actor: Contact | None,
    comment: str = "",
) -> Event:
    """Take one workflow step; TransitionRefused if not allowed.

    Nothing changes when it is refused.
    """
    event = await get_event(db, event_id)
    await take_step(db, event, name, actor, comment)

    return await get_event(db, event_id)


async def take_step(
    db: aiosqlite.Connection,
    event: Event,
    name: str,
    actor: Contact | None,
    comment: str = "",
    *,
    also: frozenset[Role] = frozenset(),
) -> str:
    """Take one workflow step on an event already read; return its state.

    For callers that hold the event and need not read it back; ``also``
    holds roles the caller knows the actor has besides (Role.SENDER).
    Raises TransitionRefused when the step is not allowed, or when the
    event's state is no longer the one it was read with; nothing changes
    then.
    """
    state = await _decide(db, event, name, actor, also)
    await _move(db, event, name, state, actor, comment)

    return state


async def assign(
    db: aiosqlite.Connection,
    event_id: int,
    assignee: Contact,
    actor: Contact | None,
    comment: str = "",
) -> Event:
    """Hand a received event to another person of ours to handle."""
    event = await get_event(db, event_id)
    state = await _decide(db, event, "assign", actor)
    if not assignee.internal or assignee.kind != "person":
        raise InvalidInput(
            f"{assignee.email or assignee.name} is not a person of our "
            "organisation"
        )

    await set_assignees(db, event_id, [assignee.id])
    note = f"assigned to {assignee.email}"
    await _move(
        db,
        event,
        "assign",
        state,
        actor,
        f"{note}: {comment}" if comment else note,
    )

    return await get_event(db, event_id)


async def follow_up(
    db: aiosqlite.Connection,
    event_id: int,
    ticket_id: int,
    actor: Contact | None,
    comment: str = "",
) -> Event:
    """Attach an event to a ticket; a received event is delivered by it."""
    event = await get_event(db, event_id)
    await require_row(db, "ticket", ticket_id)
    state = await _decide(db, event, "follow-up", actor)

    await db.execute(
        "UPDATE event SET ticket_id = ? WHERE id = ?", (ticket_id, event_id)
    )
    note = f"follows up ticket {ticket_id}"
    await _move(
        db,
        event,
        "follow-up",
        state,
        actor,
        f"{note}: {comment}" if comment else note,
    )

    return await get_event(db, event_id)


async def acknowledge(
    db: aiosqlite.Connection, event_id: int, actor: Contact, comment: str = ""
) -> Event:
    """Record a sent event of another department as received in the actor's.

    Returns the new incoming event, in state received, whose causality is
    the original. Raises TransitionRefused unless the original is sent,
    comes from another department of ours, the actor belongs to one of its
    recipient departments, and that department has not acknowledged it yet.
    """
    original = await get_event(db, event_id)
    await _decide(db, original, "acknowledge", actor)
    department = await department_of(db, actor.id)
    if department is None or department == original.department_id:
        raise TransitionRefused(
            "cannot acknowledge this event: it must come from another "
            "department of ours than yours"
        )
    if not await is_internal(db, original.sender.contact_id):
        raise TransitionRefused(
            "cannot acknowledge this event: its sender is not of our "
            "organisation"
        )
    async with db.execute(
        "SELECT e.id FROM event e JOIN history h ON h.object_type = 'event' "
        "AND h.object_id = e.id AND h.transition = 'acknowledge' "
        "WHERE e.causality_id = ? AND e.department_id = ?",
        (original.id, department),
    ) as cursor:
        earlier = await cursor.fetchone()
    if earlier is not None:
        raise TransitionRefused(
            "cannot acknowledge this event: your department did already, "
            f"as event {earlier[0]}"
        )

    acknowledged = await create_event(
        db,
        NewEvent(
            type=original.type,
            sender=original.sender.address,
            sender_name=original.sender.name,
            to=_addressed(original, "to"),
            cc=_addressed(original, "cc"),
            title=original.title,
            nature=original.nature,
            content=original.content,
            content_html=original.content_html,
            direction="incoming",
            causality_id=original.id,
            ticket_id=original.ticket_id,
            department_id=department,
            state="received",
            message_id=original.message_id,
        ),
        actor,
        transition="acknowledge",
        comment=comment,
    )
    await history.record(
        db,
        "event",
        original.id,
        "acknowledge",
        original.state,
        original.state,
        actor.id,
        f"acknowledged as event {acknowledged.id}",
    )

    return acknowledged


async def _decide(
    db: aiosqlite.Connection,
    event: Event,
    name: str,
    actor: Contact | None,
    also: frozenset[Role] = frozenset(),
) -> str:
    roles = await roles_of(db, event, actor) | also

    return _next_state(event.state, name, roles, event.is_mail)


@functools.lru_cache(maxsize=512)
def _next_state(
    state: str, name: str, roles: frozenset[Role], mail: bool
) -> str:
    """Return the workflow's answer, which depends on its arguments only.

    Kept because the workflow builds a state machine for each answer, a
    cost the outbox paid for every message it sent. A refusal raises and
    is not kept.
    """
    return event_workflow.next_state(state, name, roles, mail=mail)


async def _move(
    db: aiosqlite.Connection,
    event: Event,
    name: str,
    state: str,
    actor: Contact | None,
    comment: str,
) -> None:
    cursor = await db.execute(
        "UPDATE event SET state = ? WHERE id = ? AND state = ?",
        (state, event.id, event.state),
    )
    if cursor.rowcount != 1:
        raise TransitionRefused(
            f"event {event.id} changed while this step was being taken"
        )
    await history.record(
        db,
        "event",
        event.id,
        name,
        event.state,
        state,
        actor.id if actor else None,
        comment,
    )


async def _in_recipient_department(
    db: aiosqlite.Connection, event: Event, actor: Contact
) -> bool:
    department = await department_of(db, actor.id)
    if department is None:
        return False
    for party in event.recipients:
        if party.contact_id == department:
            return True
        if await department_of(db, party.contact_id) == department:
            return True

    return False


def _addressed(event: Event, kind: str) -> list[tuple[str, str]]:
    return [(p.address, p.name) for p in event.recipients if p.kind == kind]
