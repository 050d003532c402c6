"""Threading: which earlier event a message answers, and why.

Tried in order (RFC 5322 3.6.4 first, then what clients do instead):
In-Reply-To; References, newest first, then ancestors that only earlier
messages' References named; Outlook's Thread-Index; a tag of ours in the
subject (``[#EVT-42]``, ``[#TKT-7]``). A match is trusted only when it names
one event and the sender has a part in that event's ticket; otherwise the
new event is left unlinked and set aside for triage with the candidates.

Limitation: a match on an event that follows no ticket is trusted
whoever the sender is, as the rule above says: a stranger who writes
``[#EVT-42]`` in a subject (the numbers are guessable, unlike a
Message-ID) links their mail to event 42 as its causality. Nothing is
inherited then, since there is no ticket; asking for the sender's part
in the event itself would also set aside the colleague who answers a
forwarded mail, and is left for a rule of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.crm.contacts import Contact
from gateway.ingest.parsed import ParsedMessage

# MS-OXOMSG PidTagConversationIndex: a 22-byte header block, then one
# 5-byte block per reply.
THREAD_INDEX_ROOT = 22
THREAD_INDEX_CHILD = 5

# At most 18 digits: every such number is a valid SQLite row id.
_TAG = re.compile(r"\[#(EVT|TKT)-(\d{1,18})\]")


@dataclass(frozen=True, slots=True)
class Thread:
    """The outcome of threading one message."""

    causality_id: int | None = None
    ticket_id: int | None = None
    reason: dict[str, Any] | None = None
    triage: dict[str, Any] | None = None


async def find_thread(
    db: aiosqlite.Connection, parsed: ParsedMessage, sender: Contact
) -> Thread:
    """Return the thread a message belongs to (maybe none)."""
    for header, ids in (
        ("In-Reply-To", parsed.in_reply_to),
        ("References", tuple(reversed(parsed.references))),
    ):
        for message_id in ids:
            tickets = await _by_message_id(db, message_id)
            if tickets:
                return await _judge(
                    db, header, message_id, list(tickets), sender, tickets
                )

    for message_id in (*reversed(parsed.references), *parsed.in_reply_to):
        candidates = await _by_reference(db, message_id)
        if candidates:
            return await _judge(
                db, "References (ancestor)", message_id, candidates, sender
            )

    if parsed.thread_index is not None:
        found = await _by_thread_index(db, parsed.thread_index)
        if found:
            return await _judge(
                db, "Thread-Index", parsed.thread_index.hex(), found, sender
            )

    return await _by_subject_tag(db, parsed.title, sender)


async def _by_message_id(
    db: aiosqlite.Connection, message_id: str
) -> dict[int, int | None]:
    """Return events carrying this Message-ID, without acknowledged copies.

    Each event (in id order) maps to its ticket, if any.
    """
    rows = await db.execute_fetchall(
        "SELECT id, causality_id, ticket_id FROM event WHERE message_id = ? "
        "ORDER BY id",
        (message_id,),
    )
    ids = {int(row[0]) for row in rows}

    # An acknowledgement repeats its original's Message-ID; it is the same
    # message, seen by another department.
    return {int(row[0]): row[2] for row in rows if row[1] not in ids}


async def _by_reference(
    db: aiosqlite.Connection, message_id: str
) -> list[int]:
    """Return the newest event that also named this Message-ID."""
    rows = await db.execute_fetchall(
        "SELECT event_id FROM message_reference WHERE message_id = ? "
        "ORDER BY event_id DESC LIMIT 1",
        (message_id,),
    )

    return [int(row[0]) for row in rows]


async def _by_thread_index(
    db: aiosqlite.Connection, thread_index: bytes
) -> list[int]:
    """Return the parent by Thread-Index, else the newest of its thread."""
    if len(thread_index) < THREAD_INDEX_ROOT:
        return []
    if len(thread_index) > THREAD_INDEX_ROOT:
        parent = thread_index[:-THREAD_INDEX_CHILD].hex()
        async with db.execute(
            "SELECT event_id FROM thread_index WHERE value = ? "
            "ORDER BY event_id",
            (parent,),
        ) as cursor:
            found = [int(row[0]) for row in await cursor.fetchall()]
        if found:
            return found

    async with db.execute(
        "SELECT event_id FROM thread_index WHERE root = ? "
        "ORDER BY event_id DESC LIMIT 1",
        (thread_index[:THREAD_INDEX_ROOT].hex(),),
    ) as cursor:
        return [int(row[0]) for row in await cursor.fetchall()]


async def _by_subject_tag(
    db: aiosqlite.Connection, title: str, sender: Contact
) -> Thread:
    """Thread by a tag of ours in the subject, the weakest link."""
    match = _TAG.search(title)
    if match is None:
        return Thread()

    kind, number = match.group(1), int(match.group(2))
    if kind == "EVT":
        if not await _exists(db, "event", number):
            return Thread()
        return await _judge(db, "Subject", match.group(0), [number], sender)

    if not await _exists(db, "ticket", number):
        return Thread()
    reason = {"header": "Subject", "value": match.group(0), "ticket": number}
    if not await _has_part(db, number, sender):
        return Thread(
            triage={**reason, "why": "sender has no part in the ticket"}
        )

    return Thread(ticket_id=number, reason=reason)


async def _judge(
    db: aiosqlite.Connection,
    header: str,
    value: str,
    candidates: list[int],
    sender: Contact,
    tickets: Mapping[int, int | None] | None = None,
) -> Thread:
    """Trust a match, or set it aside for triage with the candidates.

    ``tickets``, when given, holds the ticket of each candidate.
    """
    reason: dict[str, Any] = {"header": header, "value": value}
    if len(candidates) > 1:
        return Thread(
            triage={
                **reason,
                "why": "names several events",
                "candidates": candidates,
            }
        )

    event_id = candidates[0]
    if tickets is not None and event_id in tickets:
        ticket_id = tickets[event_id]
    else:
        rows = await db.execute_fetchall(
            "SELECT ticket_id FROM event WHERE id = ?", (event_id,)
        )
        ticket_id = next((row[0] for row in rows), None)
    if ticket_id is not None and not await _has_part(db, ticket_id, sender):
        return Thread(
            triage={
                **reason,
                "why": "sender has no part in the ticket",
                "candidates": candidates,
                "ticket": ticket_id,
            }
        )

    return Thread(
        causality_id=event_id,
        ticket_id=ticket_id,
        reason={**reason, "event": event_id},
    )


async def _has_part(
    db: aiosqlite.Connection, ticket_id: int, sender: Contact
) -> bool:
    """Return whether the sender takes part in a ticket's events.

    Our own staff always do; anyone else must have sent or received one of
    its events, or belong to the same organisation as someone who did.
    """
    if sender.internal:
        return True

    people = [sender.id]
    if sender.parent_id is not None:
        people.append(sender.parent_id)
    marks = ",".join("?" for _ in people)
    async with db.execute(
        f"""
        SELECT 1 FROM event e
        LEFT JOIN contact s ON s.id = e.sender_id
        WHERE e.ticket_id = ? AND (
            e.sender_id IN ({marks}) OR s.parent_id IN ({marks})
            OR EXISTS (
                SELECT 1 FROM event_recipient r
                JOIN contact c ON c.id = r.contact_id
                WHERE r.event_id = e.id
                AND (r.contact_id IN ({marks}) OR c.parent_id IN ({marks}))
            )
        )
        LIMIT 1
        """,
        [ticket_id, *people, *people, *people, *people],
    ) as cursor:
        return await cursor.fetchone() is not None


async def _exists(db: aiosqlite.Connection, table: str, row_id: int) -> bool:
    async with db.execute(
        f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)
    ) as cursor:
        return await cursor.fetchone() is not None


async def index_thread(
    db: aiosqlite.Connection,
    event_id: int,
    parsed_references: Iterable[str],
    thread_index: bytes | None,
) -> None:
    """Remember what a new event names, for threading later messages."""
    named = set(parsed_references)
    if named:
        await db.executemany(
            "INSERT OR IGNORE INTO message_reference (message_id, event_id) "
            "VALUES (?, ?)",
            [(message_id, event_id) for message_id in named],
        )
    if thread_index is not None and len(thread_index) >= THREAD_INDEX_ROOT:
        await db.execute(
            "INSERT OR REPLACE INTO thread_index (event_id, value, root) "
            "VALUES (?, ?, ?)",
            (
                event_id,
                thread_index.hex(),
                thread_index[:THREAD_INDEX_ROOT].hex(),
            ),
        )
