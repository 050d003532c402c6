"""Tickets: the subjects (campaign, meeting, ...) that events follow up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.clock import now_text
from gateway.crm import history
from gateway.crm.contacts import Contact
from gateway.crm.text import one_line
from gateway.crm.vocabulary import TICKET_TYPES, parse_word
from gateway.errors import InvalidInput, NotFound
from workflow import Role
from workflow import ticket as ticket_workflow


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket and the events that follow it up."""

    id: int
    type: str
    title: str
    state: str
    author_id: int | None
    created_at: str
    event_ids: tuple[int, ...] = ()

    @property
    def tag(self) -> str:
        """Return the tag put in subjects of mail about this ticket."""
        return f"[#TKT-{self.id}]"

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "state": self.state,
            "tag": self.tag,
            "created_at": self.created_at,
            "events": list(self.event_ids),
        }


async def create_ticket(
    db: aiosqlite.Connection, ticket_type: str, title: str, actor: Contact
) -> Ticket:
    """Create a draft ticket, with its first history row.

    Raises InvalidInput for an unknown type or a title that is empty or
    not one line.
    """
    ticket_type = parse_word(ticket_type, TICKET_TYPES, "ticket type")
    title = one_line(title, "title")
    if not title:
        raise InvalidInput("a ticket needs a title")

    cursor = await db.execute(
        "INSERT INTO ticket (type, title, state, author_id, created_at) "
        "VALUES (?, ?, 'draft', ?, ?)",
        (ticket_type, title, actor.id, now_text()),
    )
    ticket_id = cursor.lastrowid
    assert ticket_id is not None
    await history.record(
        db, "ticket", ticket_id, "create", None, "draft", actor.id
    )

    return await get_ticket(db, ticket_id)


async def get_ticket(db: aiosqlite.Connection, ticket_id: int) -> Ticket:
    """Return one ticket with its events; NotFound if there is none."""
    async with db.execute(
        "SELECT id, type, title, state, author_id, created_at FROM ticket "
        "WHERE id = ?",
        (ticket_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no ticket {ticket_id}")
    async with db.execute(
        "SELECT id FROM event WHERE ticket_id = ? ORDER BY id", (ticket_id,)
    ) as cursor:
        event_ids = tuple(int(r[0]) for r in await cursor.fetchall())

    return Ticket(
        id=row[0],
        type=row[1],
        title=row[2],
        state=row[3],
        author_id=row[4],
        created_at=row[5],
        event_ids=event_ids,
    )


async def list_tickets(
    db: aiosqlite.Connection, state: str | None = None
) -> list[Ticket]:
    """Return tickets, newest first, optionally in one state."""
    query = "SELECT id FROM ticket"
    parameters: tuple[str, ...] = ()
    if state is not None:
        query += " WHERE state = ?"
        parameters = (state,)
    async with db.execute(query + " ORDER BY id DESC", parameters) as cursor:
        ids = [int(row[0]) for row in await cursor.fetchall()]

    return [await get_ticket(db, ticket_id) for ticket_id in ids]


async def transition_ticket(
    db: aiosqlite.Connection,
    ticket_id: int,
    transition: str,
    actor: Contact,
    comment: str = "",
) -> Ticket:
    """Move a ticket along its workflow; TransitionRefused if not allowed."""
    ticket = await get_ticket(db, ticket_id)
    roles = {Role.STAFF} if actor.internal else set()
    if actor.is_manager:
        roles.add(Role.MANAGER)
    if ticket.author_id == actor.id:
        roles.add(Role.AUTHOR)
    state = ticket_workflow.next_state(
        ticket.state, transition, frozenset(roles)
    )

    await db.execute(
        "UPDATE ticket SET state = ? WHERE id = ?", (state, ticket_id)
    )
    await history.record(
        db,
        "ticket",
        ticket_id,
        transition,
        ticket.state,
        state,
        actor.id,
        comment,
    )

    return await get_ticket(db, ticket_id)


async def history_of(
    db: aiosqlite.Connection, ticket_id: int
) -> list[history.Step]:
    """Return a ticket's history, oldest first."""
    return await history.steps_of(db, "ticket", ticket_id)
