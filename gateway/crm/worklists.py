"""Worklists: what waits for one person, computed from the store each time.

Each worklist is a query over the events' states and the person's part in
them; nothing is copied, so a list is always current.

Limitation: mail that was sent but bounced for some recipient stays on
failed-deliveries for good: no workflow step acknowledges a delivery
failure yet (cancelling only ends mail that was never sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from gateway.crm.contacts import Contact
from gateway.crm.events import Event, get_event


@dataclass(frozen=True, slots=True)
class Worklist:
    """One named list of events waiting for someone."""

    name: str
    title: str
    events: tuple[Event, ...]
    # Why each event is on the list, where the list says (event id: why).
    reasons: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form (events in short form)."""
        return {
            "name": self.name,
            "title": self.title,
            "count": len(self.events),
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


_MINE = (
    "(e.author_id = :me OR EXISTS (SELECT 1 FROM event_assignee a "
    "WHERE a.event_id = e.id AND a.contact_id = :me))"
)

_ASSIGNED = (
    "EXISTS (SELECT 1 FROM event_assignee a "
    "WHERE a.event_id = e.id AND a.contact_id = :me)"
)

# Received events with no assignee wait for their internal recipients: the
# person addressed, or every member of the department addressed.
_ADDRESSED = """
    (NOT EXISTS (SELECT 1 FROM event_assignee a WHERE a.event_id = e.id)
     AND EXISTS (
        SELECT 1 FROM event_recipient r
        WHERE r.event_id = e.id AND r.contact_id IN (
            WITH RECURSIVE up(id, parent_id) AS (
                SELECT id, parent_id FROM contact WHERE id = :me
                UNION ALL
                SELECT c.id, c.parent_id FROM contact c
                JOIN up ON c.id = up.parent_id
            )
            SELECT id FROM up)))
"""

# Outgoing mail the outbox gave up on, or that a recipient's server
# bounced: seen by its sender and by managers until it is cancelled.
_FAILED = """
    e.type = 'mail-message' AND e.direction = 'outgoing'
    AND e.state NOT IN ('cancelled', 'deleted')
    AND (:manager OR e.sender_id = :me)
    AND (EXISTS (SELECT 1 FROM outbox o
                 WHERE o.event_id = e.id AND o.failed_at IS NOT NULL)
         OR EXISTS (SELECT 1 FROM event_recipient r
                    WHERE r.event_id = e.id
                    AND r.delivery_status = 'bounced'))
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
        f"e.state = 'confirmed' AND (:manager OR {_ASSIGNED})",
        False,
    ),
    (
        "to-deliver",
        "Received events to deliver",
        f"e.state = 'received' AND ({_ASSIGNED} OR {_ADDRESSED})",
        False,
    ),
    (FAILED_DELIVERIES, "Mail that could not be delivered", _FAILED, False),
    # Threading found a link it could not trust (see gateway.ingest.threading).
    (
        "to-triage",
        "Received events to link by hand",
        "e.triage IS NOT NULL AND e.state = 'received' "
        f"AND (:manager OR {_ASSIGNED} OR {_ADDRESSED})",
        False,
    ),
)


async def worklists_for(
    db: aiosqlite.Connection, person: Contact
) -> list[Worklist]:
    """Return every worklist of a person, with the events in each."""
    parameters = {"me": person.id, "manager": int(person.is_manager)}
    result = []
    for name, title, condition, managers_only in WORKLISTS:
        if managers_only and not person.is_manager:
            continue
        async with db.execute(
            f"SELECT e.id FROM event e WHERE {condition} ORDER BY e.id",
            parameters,
        ) as cursor:
            ids = [int(row[0]) for row in await cursor.fetchall()]
        events = tuple([await get_event(db, event_id) for event_id in ids])
        reasons: dict[int, str] = {}
        if name == FAILED_DELIVERIES:
            reasons = await _failure_reasons(db, ids)
        result.append(Worklist(name, title, events, reasons))

    return result


async def _failure_reasons(
    db: aiosqlite.Connection, event_ids: list[int]
) -> dict[int, str]:
    """Return why each event's delivery failed, for people."""
    reasons: dict[int, str] = {}
    for event_id in event_ids:
        async with db.execute(
            "SELECT failure FROM outbox WHERE event_id = ?", (event_id,)
        ) as cursor:
            row = await cursor.fetchone()
        async with db.execute(
            "SELECT address, delivery_detail FROM event_recipient "
            "WHERE event_id = ? AND delivery_status = 'bounced' "
            "ORDER BY position",
            (event_id,),
        ) as cursor:
            bounced = [
                f"{r[0]}: {r[1] or 'bounced'}" for r in await cursor.fetchall()
            ]
        if row is not None and row[0]:
            reasons[event_id] = str(row[0])
        elif bounced:
            reasons[event_id] = "; ".join(bounced)

    return reasons
