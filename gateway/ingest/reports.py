"""Delivery reports: a DSN recorded on the outgoing event it is about.

A delivery status notification (RFC 3464) names the message it reports on
by that message's Message-ID. Each per-recipient block becomes a
delivery_report row, and a failed or delayed recipient is marked on the
event (RFC 3464 2.3.3 Action: failed gives bounced, delayed delayed).

A report comes from further on, after our smart host took the message:
it never puts a recipient back into a status the outbox sends to
(queued or deferred), else the outbox would send that recipient a
second copy. A delay is its own status, ``delayed``, and never
overwrites a refusal already known.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from gateway.clock import now_text
from gateway.ingest.parsed import DeliveryReport
from gateway.outbox.verp import event_of

# RFC 3464 2.3.3: what an Action means for the recipient of our event.
_DELIVERY_STATUS = {"failed": "bounced", "delayed": "delayed"}

# Which recipients each marking may change: a refusal any, a delay only
# those the smart host took (or that the outbox never sent: copies of
# mail our staff sent from elsewhere).
_MARKABLE = {
    "bounced": "1",
    "delayed": "(delivery_status IS NULL OR delivery_status IN "
    "('sent', 'delayed'))",
}


async def record_report(
    db: aiosqlite.Connection,
    report: DeliveryReport,
    raw_sha256: str,
    mailboxes: Sequence[str] = (),
) -> int | None:
    """Record a DSN on the event it reports on; return that event's id.

    The event is the one carrying the reported Message-ID, else the one a
    mailbox it was delivered to names (the outbox's VERP address,
    ``bounces+evt-42@...``). Returns None, recording nothing, when there
    is none: the report is then a message of its own.
    """
    event_id = await _reported_event(db, report, mailboxes)
    if event_id is None:
        return None

    received_at = now_text()
    for recipient in report.recipients:
        await db.execute(
            "INSERT INTO delivery_report (event_id, recipient, action, "
            "status, diagnostic, raw_sha256, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                recipient.address,
                recipient.action,
                recipient.status,
                recipient.diagnostic,
                raw_sha256,
                received_at,
            ),
        )

        status = _DELIVERY_STATUS.get(recipient.action)
        if status is None:
            continue
        detail = f"{recipient.status} {recipient.diagnostic}".strip()
        await db.execute(
            "UPDATE event_recipient SET delivery_status = ?, "
            "delivery_detail = ? WHERE event_id = ? AND address = ? "
            f"COLLATE NOCASE AND {_MARKABLE[status]}",
            (status, detail, event_id, recipient.address),
        )

    return event_id


async def _reported_event(
    db: aiosqlite.Connection, report: DeliveryReport, mailboxes: Sequence[str]
) -> int | None:
    """Return the event a DSN is about, by Message-ID, else by VERP."""
    if report.original_message_id is not None:
        async with db.execute(
            "SELECT id FROM event WHERE message_id = ? "
            "ORDER BY direction = 'outgoing' DESC, id LIMIT 1",
            (report.original_message_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            return int(row[0])

    for mailbox in mailboxes:
        event_id = event_of(mailbox)
        if event_id is None:
            continue
        async with db.execute(
            "SELECT 1 FROM event WHERE id = ? AND direction = 'outgoing'",
            (event_id,),
        ) as cursor:
            if await cursor.fetchone() is not None:
                return event_id

    return None
