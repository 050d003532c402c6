"""Events: one communication between a sender and its recipients.

Creating, reading and listing events; ``gateway.crm.steps`` moves them
along their workflow.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import aiosqlite

from gateway.addresses import domain_of
from gateway.clock import as_text, now_text
from gateway.crm import history
from gateway.crm.contacts import (
    Contact,
    department_of,
    ensure_contact,
    find_by_address,
    get_contact,
    normalize,
)
from gateway.crm.text import one_line
from gateway.crm.vocabulary import EVENT_TYPES, MAIL_MESSAGE, parse_word
from gateway.errors import InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class Party:
    """A sender or a recipient of an event, as addressed."""

    contact_id: int
    address: str
    name: str = ""
    kind: str = "to"
    delivery_status: str | None = None
    delivery_detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "contact": self.contact_id,
            "email": self.address,
            "name": self.name,
            "kind": self.kind,
            "delivery_status": self.delivery_status,
            "delivery_detail": self.delivery_detail,
        }


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment's metadata; the content is a blob named by sha256."""

    filename: str | None
    content_type: str
    size: int
    sha256: str
    content_id: str | None = None
    inline: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "content_id": self.content_id,
            "inline": self.inline,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored."""

    id: int
    type: str
    nature: str | None
    title: str
    content: str
    content_html: str | None
    sender: Party
    recipients: tuple[Party, ...]
    direction: str
    causality_id: int | None
    ticket_id: int | None
    department_id: int | None
    start_date: str
    author_id: int | None
    assignee_ids: tuple[int, ...]
    state: str
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    raw_sha256: str | None
    thread_reason: dict[str, Any] | None
    automatic: bool
    details: dict[str, Any]
    created_at: str
    attachments: tuple[AttachmentInfo, ...] = ()
    triage: dict[str, Any] | None = None

    @property
    def is_mail(self) -> bool:
        """Return whether the event is a Mail Message."""
        return self.type == MAIL_MESSAGE

    @property
    def tag(self) -> str:
        """Return the tag put in subjects of mail about this event."""
        return f"[#EVT-{self.id}]"

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "id": self.id,
            "type": self.type,
            "nature": self.nature,
            "title": self.title,
            "content": self.content,
            "content_html": self.content_html,
            "sender": self.sender.address,
            "sender_name": self.sender.name,
            "recipients": [party.to_json() for party in self.recipients],
            "direction": self.direction,
            "state": self.state,
            "causality": self.causality_id,
            "ticket": self.ticket_id,
            "department": self.department_id,
            "start_date": self.start_date,
            "author": self.author_id,
            "assignees": list(self.assignee_ids),
            "message_id": self.message_id,
            "in_reply_to": list(self.in_reply_to),
            "references": list(self.references),
            "raw_sha256": self.raw_sha256,
            "thread_reason": self.thread_reason,
            "triage": self.triage,
            "automatic": self.automatic,
            "details": self.details,
            "attachments": [item.to_json() for item in self.attachments],
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What is needed to create an event; addresses are created as needed."""

    type: str
    sender: str
    to: Sequence[str | tuple[str, str]]
    title: str
    cc: Sequence[str | tuple[str, str]] = ()
    bcc: Sequence[str | tuple[str, str]] = ()
    sender_name: str = ""
    nature: str | None = None
    content: str = ""
    content_html: str | None = None
    direction: str | None = None
    causality_id: int | None = None
    ticket_id: int | None = None
    department_id: int | None = None
    start_date: datetime | None = None
    state: str = "draft"
    message_id: str | None = None
    in_reply_to: Sequence[str] = ()
    references: Sequence[str] = ()
    raw_sha256: str | None = None
    thread_reason: dict[str, Any] | None = None
    automatic: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    attachments: Sequence[AttachmentInfo] = ()
    assignee_ids: Sequence[int] | None = None
    triage: dict[str, Any] | None = None


async def create_event(
    db: aiosqlite.Connection,
    new: NewEvent,
    actor: Contact | None,
    *,
    transition: str = "create",
    comment: str = "",
) -> Event:
    """Create an event and its first history row; return it.

    Unknown addresses become external contacts. The direction follows the
    sender (one of ours: outgoing) unless given. The author (``actor``; None
    for the gateway) is the assignee unless ``assignee_ids`` says otherwise.
    An outgoing Mail Message without a Message-ID gets a new one, kept for
    every attempt to send it. Raises InvalidInput for an unknown type, a
    title that is not one line, no recipient, a bad address or a missing
    causality or ticket.
    """
    event_id = await insert_event(
        db, new, actor, transition=transition, comment=comment
    )

    return await get_event(db, event_id)


async def insert_event(
    db: aiosqlite.Connection,
    new: NewEvent,
    actor: Contact | None,
    *,
    transition: str = "create",
    comment: str = "",
    sender: Contact | None = None,
    recipients: Mapping[str, Contact] | None = None,
    links_checked: bool = False,
) -> int:
    """Create an event as ``create_event`` does; return only its id.

    For callers that know what they asked for and need not read it back.
    ``sender``, when given, is the contact already found for ``new.sender``;
    ``recipients`` maps addresses of ``new`` (as written there) to the
    contacts already found for them. With ``links_checked`` the caller has
    just read the causality and ticket, which are not looked up again.
    """
    event_type = parse_word(new.type, EVENT_TYPES, "event type")
    title = one_line(new.title, "title")
    if not (new.to or new.cc or new.bcc):
        raise InvalidInput("an event needs at least one recipient")
    if new.causality_id is not None and not links_checked:
        await require_row(db, "event", new.causality_id)
    if new.ticket_id is not None and not links_checked:
        await require_row(db, "ticket", new.ticket_id)

    if sender is None:
        sender = await ensure_contact(db, new.sender, new.sender_name)
    direction = new.direction
    if direction is None:
        direction = "outgoing" if sender.internal else "incoming"
    department_id = new.department_id
    if department_id is None and direction == "outgoing":
        department_id = await department_of(db, sender.id)
    start_date = as_text(new.start_date) if new.start_date else now_text()
    message_id = new.message_id
    outgoing_mail = event_type == MAIL_MESSAGE and direction == "outgoing"
    if message_id is None and outgoing_mail:
        message_id = new_message_id(sender.email or new.sender)

    cursor = await db.execute(
        """
        INSERT INTO event (type, nature, title, content, content_html,
            sender_id, direction, causality_id, ticket_id, department_id,
            start_date, author_id, state, message_id, in_reply_to,
            "references", raw_sha256, thread_reason, automatic, details,
            created_at, triage)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
            ?)
        """,
        (
            event_type,
            new.nature,
            title,
            new.content,
            new.content_html,
            sender.id,
            direction,
            new.causality_id,
            new.ticket_id,
            department_id,
            start_date,
            actor.id if actor else None,
            new.state,
            message_id,
            json.dumps(list(new.in_reply_to)),
            json.dumps(list(new.references)),
            new.raw_sha256,
            json.dumps(new.thread_reason) if new.thread_reason else None,
            int(new.automatic),
            json.dumps(new.details, ensure_ascii=False),
            now_text(),
            json.dumps(new.triage) if new.triage else None,
        ),
    )
    event_id = cursor.lastrowid
    assert event_id is not None

    await _add_recipients(db, event_id, new, recipients or {})
    assignees = new.assignee_ids
    if assignees is None:
        assignees = [actor.id] if actor else []
    if assignees:
        await db.executemany(
            "INSERT INTO event_assignee (event_id, contact_id) VALUES (?, ?)",
            [(event_id, contact_id) for contact_id in sorted(set(assignees))],
        )
    if new.attachments:
        await db.executemany(
            "INSERT INTO attachment (event_id, position, filename, "
            "content_type, size, sha256, content_id, inline) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    event_id,
                    position,
                    item.filename,
                    item.content_type,
                    item.size,
                    item.sha256,
                    item.content_id,
                    int(item.inline),
                )
                for position, item in enumerate(new.attachments)
            ],
        )
    await history.record(
        db,
        "event",
        event_id,
        transition,
        None,
        new.state,
        actor.id if actor else None,
        comment,
    )

    return event_id


def new_message_id(address: str) -> str:
    """Return a new, unique Message-ID at the domain of an address."""
    domain = domain_of(address)
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "mailgate.invalid"

    return f"<{uuid.uuid4().hex}@{domain}>"


async def get_event(db: aiosqlite.Connection, event_id: int) -> Event:
    """Return one event; NotFound if there is none."""
    async with db.execute(
        "SELECT * FROM event WHERE id = ?", (event_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no event {event_id}")

    async with db.execute(
        "SELECT contact_id, address, name, kind, delivery_status, "
        "delivery_detail FROM event_recipient WHERE event_id = ? "
        "ORDER BY position",
        (event_id,),
    ) as cursor:
        recipients = tuple(
            Party(r[0], r[1], r[2], r[3], r[4], r[5])
            for r in await cursor.fetchall()
        )
    async with db.execute(
        "SELECT contact_id FROM event_assignee WHERE event_id = ? "
        "ORDER BY contact_id",
        (event_id,),
    ) as cursor:
        assignees = tuple(int(r[0]) for r in await cursor.fetchall())
    async with db.execute(
        "SELECT filename, content_type, size, sha256, content_id, inline "
        "FROM attachment WHERE event_id = ? ORDER BY position",
        (event_id,),
    ) as cursor:
        attachments = tuple(
            AttachmentInfo(r[0], r[1], r[2], r[3], r[4], bool(r[5]))
            for r in await cursor.fetchall()
        )
    sender = await get_contact(db, row["sender_id"])

    return event_from_row(
        row,
        Party(sender.id, sender.email or "", sender.name, "from"),
        recipients,
        assignees,
        attachments,
    )


def event_from_row(
    row: aiosqlite.Row,
    sender: Party,
    recipients: tuple[Party, ...],
    assignees: tuple[int, ...],
    attachments: tuple[AttachmentInfo, ...],
) -> Event:
    """Build an event from its row and the rows that belong to it.

    The sender is the contact; the address and name the message itself
    gave, kept in the details, are preferred.
    """
    details = json.loads(row["details"])

    return Event(
        id=row["id"],
        type=row["type"],
        nature=row["nature"],
        title=row["title"],
        content=row["content"],
        content_html=row["content_html"],
        sender=replace(
            sender,
            address=details.get("sender_address") or sender.address,
            name=details.get("sender_name") or sender.name,
        ),
        recipients=recipients,
        direction=row["direction"],
        causality_id=row["causality_id"],
        ticket_id=row["ticket_id"],
        department_id=row["department_id"],
        start_date=row["start_date"],
        author_id=row["author_id"],
        assignee_ids=assignees,
        state=row["state"],
        message_id=row["message_id"],
        in_reply_to=tuple(json.loads(row["in_reply_to"])),
        references=tuple(json.loads(row["references"])),
        raw_sha256=row["raw_sha256"],
        thread_reason=(
            json.loads(row["thread_reason"]) if row["thread_reason"] else None
        ),
        automatic=bool(row["automatic"]),
        details=details,
        created_at=row["created_at"],
        attachments=attachments,
        triage=json.loads(row["triage"]) if row["triage"] else None,
    )


async def list_events(
    db: aiosqlite.Connection,
    *,
    state: str | None = None,
    event_type: str | None = None,
    direction: str | None = None,
    ticket_id: int | None = None,
    contact: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """Return events matching every filter given, newest first."""
    clauses: list[str] = []
    parameters: list[Any] = []
    if state is not None:
        clauses.append("e.state = ?")
        parameters.append(state)
    if event_type is not None:
        clauses.append("e.type = ?")
        parameters.append(parse_word(event_type, EVENT_TYPES, "event type"))
    if direction is not None:
        clauses.append("e.direction = ?")
        parameters.append(direction)
    if ticket_id is not None:
        clauses.append("e.ticket_id = ?")
        parameters.append(ticket_id)
    if contact is not None:
        found = await find_by_address(db, contact)
        if found is None:
            return []
        clauses.append(
            "(e.sender_id = ? OR e.id IN (SELECT event_id FROM "
            "event_recipient WHERE contact_id = ?))"
        )
        parameters.extend([found.id, found.id])
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    async with db.execute(
        f"SELECT e.id FROM event e {where} ORDER BY e.id DESC LIMIT ?",
        [*parameters, limit],
    ) as cursor:
        ids = [int(row[0]) for row in await cursor.fetchall()]

    # Imported here: the listing module builds on this one's types.
    from gateway.crm.listing import load_events

    return await load_events(db, ids)


async def causality_chain(
    db: aiosqlite.Connection, event: Event
) -> list[Event]:
    """Return the events that caused this one, nearest first."""
    chain: list[Event] = []
    seen = {event.id}
    current = event
    while (
        current.causality_id is not None and current.causality_id not in seen
    ):
        current = await get_event(db, current.causality_id)
        seen.add(current.id)
        chain.append(current)

    return chain


async def history_of(
    db: aiosqlite.Connection, event_id: int
) -> list[history.Step]:
    """Return an event's history, oldest first."""
    return await history.steps_of(db, "event", event_id)


async def _add_recipients(
    db: aiosqlite.Connection,
    event_id: int,
    new: NewEvent,
    known: Mapping[str, Contact],
) -> None:
    rows: list[tuple[int, int, str, int, str, str]] = []
    seen: set[tuple[str, int]] = set()
    for kind, addressed in (("to", new.to), ("cc", new.cc), ("bcc", new.bcc)):
        for item in addressed:
            address, name = (item, "") if isinstance(item, str) else item
            contact = known.get(address) or await ensure_contact(
                db, address, name
            )
            if (kind, contact.id) in seen:
                continue
            seen.add((kind, contact.id))
            # The address as written to, in its canonical spelling.
            shown = normalize(address)
            rows.append((event_id, len(rows), kind, contact.id, shown, name))
    await db.executemany(
        "INSERT INTO event_recipient (event_id, position, kind, contact_id, "
        "address, name) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


async def set_assignees(
    db: aiosqlite.Connection, event_id: int, assignees: Sequence[int]
) -> None:
    await db.execute(
        "DELETE FROM event_assignee WHERE event_id = ?", (event_id,)
    )
    await db.executemany(
        "INSERT INTO event_assignee (event_id, contact_id) VALUES (?, ?)",
        [(event_id, contact_id) for contact_id in sorted(set(assignees))],
    )


async def require_row(
    db: aiosqlite.Connection, table: str, row_id: int
) -> None:
    if not await db.execute_fetchall(
        f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)
    ):
        raise InvalidInput(f"no {table} {row_id}")
