"""Event listings: many events read in a handful of queries.

``get_event`` reads one event in five queries; a listing of a hundred
events read that way makes five hundred round trips to SQLite. Here each
table is read once for the whole page, with the ids in one ``IN`` list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import aiosqlite

from gateway.crm.events import AttachmentInfo, Event, Party, event_from_row


async def load_events(
    db: aiosqlite.Connection, event_ids: Sequence[int]
) -> list[Event]:
    """Return the events of event_ids, in that order; missing ids skipped."""
    if not event_ids:
        return []
    marks = ", ".join("?" for _ in event_ids)
    ids = list(event_ids)

    async with db.execute(
        f"SELECT * FROM event WHERE id IN ({marks})", ids
    ) as cursor:
        rows = {int(row["id"]): row for row in await cursor.fetchall()}

    recipients: dict[int, list[Party]] = defaultdict(list)
    async with db.execute(
        "SELECT event_id, contact_id, address, name, kind, delivery_status, "
        f"delivery_detail FROM event_recipient WHERE event_id IN ({marks}) "
        "ORDER BY event_id, position",
        ids,
    ) as cursor:
        for r in await cursor.fetchall():
            recipients[r[0]].append(Party(r[1], r[2], r[3], r[4], r[5], r[6]))

    assignees: dict[int, list[int]] = defaultdict(list)
    async with db.execute(
        "SELECT event_id, contact_id FROM event_assignee "
        f"WHERE event_id IN ({marks}) ORDER BY event_id, contact_id",
        ids,
    ) as cursor:
        for r in await cursor.fetchall():
            assignees[r[0]].append(int(r[1]))

    attachments: dict[int, list[AttachmentInfo]] = defaultdict(list)
    async with db.execute(
        "SELECT event_id, filename, content_type, size, sha256, content_id, "
        f"inline FROM attachment WHERE event_id IN ({marks}) "
        "ORDER BY event_id, position",
        ids,
    ) as cursor:
        for r in await cursor.fetchall():
            attachments[r[0]].append(
                AttachmentInfo(r[1], r[2], r[3], r[4], r[5], bool(r[6]))
            )

    senders = await _senders(
        db, {int(row["sender_id"]) for row in rows.values()}
    )

    return [
        _event(
            rows[event_id],
            senders,
            tuple(recipients[event_id]),
            tuple(assignees[event_id]),
            tuple(attachments[event_id]),
        )
        for event_id in event_ids
        if event_id in rows
    ]


async def _senders(
    db: aiosqlite.Connection, contact_ids: set[int]
) -> dict[int, tuple[str, str]]:
    """Return each contact's name and main address (or "")."""
    marks = ", ".join("?" for _ in contact_ids)
    found: dict[int, tuple[str, str]] = {}
    async with db.execute(
        "SELECT c.id, c.name, (SELECT address FROM contact_address a "
        "WHERE a.contact_id = c.id ORDER BY position LIMIT 1) "
        f"FROM contact c WHERE c.id IN ({marks})",
        list(contact_ids),
    ) as cursor:
        for r in await cursor.fetchall():
            found[int(r[0])] = (str(r[1]), str(r[2] or ""))

    return found


def _event(
    row: aiosqlite.Row,
    senders: dict[int, tuple[str, str]],
    recipients: tuple[Party, ...],
    assignees: tuple[int, ...],
    attachments: tuple[AttachmentInfo, ...],
) -> Event:
    """Build an event from its row, as ``get_event`` does."""
    sender_id = int(row["sender_id"])
    name, address = senders[sender_id]

    return event_from_row(
        row,
        Party(sender_id, address, name, "from"),
        recipients,
        assignees,
        attachments,
    )
