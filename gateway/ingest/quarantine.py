"""The quarantine: messages that could not be understood, kept raw.

An operator lists them (``mailgate quarantine list``) and, once the cause
is fixed, re-ingests one (``mailgate quarantine retry ID``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.clock import now_text
from gateway.errors import NotFound


@dataclass(frozen=True, slots=True)
class Held:
    """One quarantined message."""

    id: int
    raw_sha256: str
    reason: str
    source: str
    mailboxes: tuple[str, ...]
    mail_from: str | None
    state: str
    event_id: int | None
    received_at: str

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "id": self.id,
            "raw_sha256": self.raw_sha256,
            "reason": self.reason,
            "source": self.source,
            "mailboxes": list(self.mailboxes),
            "mail_from": self.mail_from,
            "state": self.state,
            "event": self.event_id,
            "received_at": self.received_at,
        }


async def hold(
    db: aiosqlite.Connection,
    *,
    raw_sha256: str,
    reason: str,
    source: str,
    mailboxes: Sequence[str],
    mail_from: str | None,
) -> int:
    """Put a message in the quarantine; return its quarantine id.

    The same raw message held again (a sender retrying) keeps one entry.
    """
    async with db.execute(
        "SELECT id FROM quarantine WHERE raw_sha256 = ? AND state = 'held'",
        (raw_sha256,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None:
        await db.execute(
            "UPDATE quarantine SET reason = ? WHERE id = ?", (reason, row[0])
        )
        return int(row[0])

    cursor = await db.execute(
        "INSERT INTO quarantine (raw_sha256, reason, source, mailboxes, "
        "mail_from, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            raw_sha256,
            reason,
            source,
            json.dumps(list(mailboxes)),
            mail_from,
            now_text(),
        ),
    )
    assert cursor.lastrowid is not None

    return cursor.lastrowid


async def get_held(db: aiosqlite.Connection, held_id: int) -> Held:
    """Return one quarantine entry; NotFound if there is none."""
    async with db.execute(
        "SELECT * FROM quarantine WHERE id = ?", (held_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"no quarantined message {held_id}")

    return _held(row)


async def list_held(
    db: aiosqlite.Connection, *, include_released: bool = False
) -> list[Held]:
    """Return quarantined messages, oldest first."""
    query = "SELECT * FROM quarantine"
    if not include_released:
        query += " WHERE state = 'held'"
    async with db.execute(query + " ORDER BY id") as cursor:
        return [_held(row) for row in await cursor.fetchall()]


async def release(
    db: aiosqlite.Connection, held_id: int, event_id: int | None
) -> None:
    """Mark a quarantined message as taken in (as event_id)."""
    await db.execute(
        "UPDATE quarantine SET state = 'released', event_id = ? WHERE id = ?",
        (event_id, held_id),
    )


def _held(row: aiosqlite.Row) -> Held:
    return Held(
        id=row["id"],
        raw_sha256=row["raw_sha256"],
        reason=row["reason"],
        source=row["source"],
        mailboxes=tuple(json.loads(row["mailboxes"])),
        mail_from=row["mail_from"],
        state=row["state"],
        event_id=row["event_id"],
        received_at=row["received_at"],
    )
