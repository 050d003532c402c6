"""Worklists: what waits for one person, computed from the store each time.

Each worklist is a query over the events' states and the person's part in
them, so a list is always current. The one kept summary, open_delivery
(received events without an assignee, per recipient), is written by the
store's triggers in the same transaction as the change it follows.

Limitation: mail that was sent but bounced or failed for some recipient
stays on failed-deliveries until it is retried: no workflow step
acknowledges a delivery failure yet (cancelling only ends mail that was
never sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from gateway.crm.contacts import Contact
from gateway.crm.events import Event
from gateway.crm.listing import load_events

# How many events of a list are read; the count covers them all.
LIMIT = 100


@dataclass(frozen=True, slots=True)
class Worklist:
    """One named list of events waiting for someone."""

    name: str
    title: str
    # The first events of the list, by id; count is the whole list's.
    events: tuple[Event, ...]
    count: int
    # Why each event is on the list, where the list says (event id: why).
    reasons: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form (events in short form)."""
        return {
            "name": self.name,
            "title": self.title,
            "count": self.count,
            "events": [
                {
                    "id": event.id,
                    "type": event.type,
                    "title": event.title,
                    "sender": event.sender.address,
                    "state": event.state,
                    "direction": event.direction,
                    "ticket": event.ticket_id,
                    **(
                        {"reason": self.reasons[event.id]}
                        if event.id in self.reasons
                        else {}
                    ),
                }
                for event in self.events
            ],
        }


# Each condition is written so that SQLite starts from a small set (a
# person's assignments, the failed deliveries, the triage index) or from
# the few events in one open state, never from the whole table.

_ASSIGNED = (
    "e.id IN (SELECT event_id FROM event_assignee WHERE contact_id = :me)"
)

_MINE = (
    "e.id IN (SELECT id FROM event WHERE author_id = :me AND state = 'draft' "
    "UNION ALL SELECT event_id FROM event_assignee WHERE contact_id = :me)"
)

# Received events with no assignee wait for their internal recipients: the
# person addressed, or every member of the department addressed. The
# store keeps them per recipient contact in open_delivery (its triggers
# follow every state, recipient and assignee change), so a list reads only
# the rows of the person and of the organisations above them.
_OPEN_TO_ME = """
    SELECT event_id FROM open_delivery WHERE contact_id IN (
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM contact WHERE id = :me
            UNION ALL
            SELECT c.id, c.parent_id FROM contact c
            JOIN up ON c.id = up.parent_id
        )
        SELECT id FROM up)
"""

_ADDRESSED = f"e.id IN ({_OPEN_TO_ME})"

# Received events assigned to the person, or open and addressed to them.
# The received ones are picked in the event_state index, so that the
# person's many older assignments are not each read from the event table.
_TO_DELIVER = f"""
    e.id IN (
        SELECT a.event_id FROM event_assignee a
        JOIN event received
            ON received.state = 'received' AND received.id = a.event_id
        WHERE a.contact_id = :me
        UNION {_OPEN_TO_ME})
"""

# Outgoing mail the outbox gave up on, or that some recipient did not
# get (refused: bounced; given up after retries: failed): seen by its
# sender and by managers until it is cancelled.
_FAILED = """
    e.id IN (SELECT event_id FROM outbox WHERE failed_at IS NOT NULL
             UNION SELECT event_id FROM event_recipient
             WHERE delivery_status IN ('bounced', 'failed'))
    AND e.type = 'mail-message' AND e.direction = 'outgoing'
    AND e.state NOT IN ('cancelled', 'deleted')
    AND (:manager OR e.sender_id = :me)
"""

# What a person or the outbox will really send: outgoing events only (an
# incoming one someone confirmed by hand goes nowhere), and no mail whose
# delivery failed for good (that is on failed-deliveries). The confirmed
# events are few (event_state); the failed ones are read by outbox_failed.
_TO_SEND = """
    e.state = 'confirmed' AND e.direction = 'outgoing'
    AND e.id NOT IN (SELECT event_id FROM outbox WHERE failed_at IS NOT NULL)
"""

FAILED_DELIVERIES = "failed-deliveries"

WORKLISTS: tuple[tuple[str, str, str, bool], ...] = (
    # name, title, condition, managers only
    (
        "draft",
        "Draft events to process",
        f"e.state = 'draft' AND {_MINE}",
        False,
    ),
    ("to-confirm", "Planned events to confirm", "e.state = 'planned'", True),
    (
        "to-send",
        "Confirmed events to send",
        f"{_TO_SEND} AND (:manager OR {_ASSIGNED})",
        False,
    ),
    (
        "to-deliver",
        "Received events to deliver",
        _TO_DELIVER,
        False,
    ),
    (FAILED_DELIVERIES, "Mail that could not be delivered", _FAILED, False),
    # Threading found a link it could not trust (see gateway.ingest.threading).
    (
        "to-triage",
        "Received events to link by hand",
        # "+": start from the triage index, not from the received events.
        "e.triage IS NOT NULL AND +e.state = 'received' "
        f"AND (:manager OR {_ASSIGNED} OR {_ADDRESSED})",
        False,
    ),
)

_BY_NAME = {item[0]: item for item in WORKLISTS}


async def worklists_for(
    db: aiosqlite.Connection, person: Contact, *, limit: int = LIMIT
) -> list[Worklist]:
    """Return every worklist of a person, each with its first events."""
    return [
        await worklist_for(db, person, name, limit=limit)
        for name, _, _, managers_only in WORKLISTS
        if person.is_manager or not managers_only
    ]


async def worklist_for(
    db: aiosqlite.Connection, person: Contact, name: str, *, limit: int = LIMIT
) -> Worklist:
    """Return one worklist of a person: its count and first events.

    Raises KeyError for a name not in WORKLISTS.
    """
    _, title, condition, _ = _BY_NAME[name]
    parameters = {"me": person.id, "manager": int(person.is_manager)}

    # Counting apart is cheaper than reading every id of a long list.
    async with db.execute(
        f"SELECT count(*) FROM event e WHERE {condition}", parameters
    ) as cursor:
        row = await cursor.fetchone()
    count = int(row[0]) if row else 0
    async with db.execute(
        f"SELECT e.id FROM event e WHERE {condition} ORDER BY e.id "
        "LIMIT :limit",
        {**parameters, "limit": limit},
    ) as cursor:
        ids = [int(row[0]) for row in await cursor.fetchall()]

    events = tuple(await load_events(db, ids))
    reasons: dict[int, str] = {}
    if name == FAILED_DELIVERIES:
        reasons = await _failure_reasons(db, ids)

    return Worklist(name, title, events, count, reasons)


async def _failure_reasons(
    db: aiosqlite.Connection, event_ids: list[int]
) -> dict[int, str]:
    """Return why each event's delivery failed, for people."""
    if not event_ids:
        return {}
    marks = ", ".join("?" for _ in event_ids)
    async with db.execute(
        f"SELECT event_id, failure FROM outbox WHERE event_id IN ({marks}) "
        "AND failure IS NOT NULL AND failure != ''",
        event_ids,
    ) as cursor:
        failures = {int(r[0]): str(r[1]) for r in await cursor.fetchall()}
    bounced: dict[int, list[str]] = {}
    async with db.execute(
        "SELECT event_id, address, delivery_status, delivery_detail "
        f"FROM event_recipient WHERE event_id IN ({marks}) "
        "AND delivery_status IN ('bounced', 'failed') "
        "ORDER BY event_id, position",
        event_ids,
    ) as cursor:
        for r in await cursor.fetchall():
            bounced.setdefault(int(r[0]), []).append(f"{r[1]}: {r[3] or r[2]}")

    reasons: dict[int, str] = {}
    for event_id in event_ids:
        if event_id in failures:
            reasons[event_id] = failures[event_id]
        elif event_id in bounced:
            reasons[event_id] = "; ".join(bounced[event_id])

    return reasons
