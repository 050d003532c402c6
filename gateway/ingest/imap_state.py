"""The IMAP poller's place in each mailbox, kept in the store.

A place is the folder's UIDVALIDITY and the highest UID whose message is
stored (and acted upon). UIDs only grow while UIDVALIDITY stays the same
(RFC 3501 2.3.1.1), so the poller asks the server only for UIDs above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite
import structlog

from gateway.clock import now_text
from gateway.store import Store

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Place:
    """How far the poller got in one folder."""

    uid_validity: int
    last_uid: int = 0


async def read_place(db: aiosqlite.Connection, mailbox: str) -> Place | None:
    """Return the saved place of a configured mailbox, None if none is."""
    async with db.execute(
        "SELECT uid_validity, last_uid FROM imap_mailbox_state "
        "WHERE mailbox = ?",
        (mailbox,),
    ) as cursor:
        row = await cursor.fetchone()

    return None if row is None else Place(int(row[0]), int(row[1]))


async def resume_place(
    store: Store, mailbox: str, server: str, uid_validity: int
) -> Place:
    """Return where to go on in a folder just selected.

    A new folder, another server or account, or a changed UIDVALIDITY
    starts again from the first message: the ingest path's dedup makes
    messages already stored harmless. That fresh start is saved at once.
    """
    async with (
        store.reading() as db,
        db.execute(
            "SELECT server, uid_validity, last_uid FROM imap_mailbox_state "
            "WHERE mailbox = ?",
            (mailbox,),
        ) as cursor,
    ):
        row = await cursor.fetchone()

    if row is not None and row[0] == server and row[1] == uid_validity:
        return Place(uid_validity, int(row[2]))

    if row is not None:
        logger.warning(
            "imap.uid_validity_changed"
            if row[0] == server
            else "imap.server_changed",
            before=int(row[1]),
            after=uid_validity,
            last_uid=int(row[2]),
        )
    place = Place(uid_validity)
    await save_place(store, mailbox, server, place)

    return place


async def save_place(
    store: Store, mailbox: str, server: str, place: Place
) -> None:
    """Record how far the poller got; StoreUnavailable if it cannot."""
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO imap_mailbox_state (mailbox, server, uid_validity, "
            "last_uid, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (mailbox) DO UPDATE SET server = excluded.server, "
            "uid_validity = excluded.uid_validity, "
            "last_uid = excluded.last_uid, updated_at = excluded.updated_at",
            (mailbox, server, place.uid_validity, place.last_uid, now_text()),
        )
