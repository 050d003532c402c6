"""History: one row for every workflow step, with who, when and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.clock import now_text


@dataclass(frozen=True, slots=True)
class Step:
    """One workflow step taken on an event or a ticket."""

    transition: str
    state_before: str | None
    state_after: str
    actor: str
    at: str
    comment: str

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "transition": self.transition,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "actor": self.actor,
            "at": self.at,
            "comment": self.comment,
        }


GATEWAY_ACTOR = "mailgate"


async def record(
    db: aiosqlite.Connection,
    object_type: str,
    object_id: int,
    transition: str,
    state_before: str | None,
    state_after: str,
    actor_id: int | None,
    comment: str = "",
) -> None:
    """Add a history row; actor None stands for the gateway itself."""
    await db.execute(
        "INSERT INTO history (object_type, object_id, transition, "
        "state_before, state_after, actor_id, at, comment) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            object_type,
            object_id,
            transition,
            state_before,
            state_after,
            actor_id,
            now_text(),
            comment,
        ),
    )


async def steps_of(
    db: aiosqlite.Connection, object_type: str, object_id: int
) -> list[Step]:
    """Return the history of one object, oldest first."""
    async with db.execute(
        """
        SELECT h.transition, h.state_before, h.state_after, h.at, h.comment,
            (SELECT address FROM contact_address a
             WHERE a.contact_id = h.actor_id ORDER BY position LIMIT 1)
        FROM history h
        WHERE h.object_type = ? AND h.object_id = ?
        ORDER BY h.id
        """,
        (object_type, object_id),
    ) as cursor:
        rows = await cursor.fetchall()

    return [
        Step(
            transition=row[0],
            state_before=row[1],
            state_after=row[2],
            at=row[3],
            comment=row[4],
            actor=row[5] or GATEWAY_ACTOR,
        )
        for row in rows
    ]
