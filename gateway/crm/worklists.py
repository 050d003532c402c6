"""Worklists: what waits for one person, computed from the store each time.

Each worklist is a query over the events' states and the person's part in
them; nothing is copied, so a list is always current.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        result.append(Worklist(name, title, events))

    return result
