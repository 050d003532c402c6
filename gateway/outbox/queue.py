"""The outbox's bookkeeping in the store: due mail, leases and outcomes.

An outgoing Mail Message is due while it is ``confirmed``, has not failed
for good, is held by no worker (or the holder's lease ran out) and its
next attempt time has come. A worker claims due events with a lease,
records each attempt's outcome per recipient and releases the lease in
the same transaction. Every function runs inside the caller's
transaction.

A recipient is queued, then deferred (a 4xx or no connection: tried
again), sent (the smart host took it; delayed once a delivery report
says it is delayed further on), bounced (refused: a 5xx from the
smart host, or a delivery report from further on) or failed (given up
without anyone refusing it: retries used up, or a message that could not
be prepared or sent as it is).

A delivery that failed for good is tried again only when a person asks
(``gateway.crm.deliveries``): its bounced and failed recipients are
queued anew, with the attempts counted from zero.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import aiosqlite

from gateway.addresses import address_key
from gateway.clock import as_text, now
from gateway.crm.events import Event, get_event, new_message_id
from gateway.crm.listing import load_events
from gateway.crm.steps import take_step

QUEUED = "queued"
DEFERRED = "deferred"
SENT = "sent"
# Taken by the smart host, then reported delayed further on (a DSN): not
# ours to send again.
DELAYED = "delayed"
BOUNCED = "bounced"
# A recipient given up on; also an attempt that ended its event's
# delivery without any recipient taking it.
FAILED = "failed"

# What else became of one attempt at one event.
LOST = "lost"


@dataclass(frozen=True, slots=True)
class Claim:
    """An event a worker now holds, to send it."""

    event_id: int
    message_id: str
    # Whose lease ran out with no outcome recorded: that worker stopped
    # while sending, and the smart host may have taken the message.
    abandoned_by: str | None = None
    # The event as claimed, and the addresses still to send to: what
    # rendering needs, read in the claim's transaction.
    event: Event | None = field(default=None, compare=False)
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """How the smart host answered for one recipient."""

    address: str
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """What became of one attempt at sending an event."""

    result: str
    attempts: int
    next_attempt_at: str | None = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """Where an event stands in the outbox, for people."""

    attempts: int
    next_attempt_at: str | None
    lease_owner: str | None
    lease_expires_at: str | None
    last_reply: str | None
    failure: str | None
    failed_at: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "lease_owner": self.lease_owner,
            "lease_expires_at": self.lease_expires_at,
            "last_reply": self.last_reply,
            "failure": self.failure,
            "failed_at": self.failed_at,
        }


_DUE = """
    SELECT e.id, o.lease_owner FROM event e
    LEFT JOIN outbox o ON o.event_id = e.id
    WHERE e.type = 'mail-message' AND e.direction = 'outgoing'
    AND e.state = 'confirmed'
    AND (o.event_id IS NULL OR (
        o.failed_at IS NULL
        AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= :now)
        AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= :now)))
"""


async def claim(
    db: aiosqlite.Connection,
    owner: str,
    *,
    lease_seconds: float,
    limit: int,
    event_ids: Collection[int] | None = None,
) -> list[Claim]:
    """Hold up to ``limit`` due events for ``owner``; return them.

    ``event_ids`` narrows the choice; an event among them that is not due
    (planned, sent, held by another worker) is not claimed.
    """
    if event_ids is not None and not event_ids:
        return []

    moment = now()
    query = _DUE
    parameters: dict[str, Any] = {"now": as_text(moment), "limit": limit}
    if event_ids is not None:
        marks = ", ".join(f":id{n}" for n in range(len(event_ids)))
        query += f" AND e.id IN ({marks})"
        parameters.update({f"id{n}": i for n, i in enumerate(event_ids)})
    async with db.execute(
        query + " ORDER BY e.id LIMIT :limit", parameters
    ) as cursor:
        rows = [(int(r[0]), r[1]) for r in await cursor.fetchall()]
    if not rows:
        return []

    expires = as_text(moment + timedelta(seconds=lease_seconds))
    await db.executemany(
        "INSERT INTO outbox (event_id, lease_owner, lease_expires_at) "
        "VALUES (?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
        "lease_owner = excluded.lease_owner, "
        "lease_expires_at = excluded.lease_expires_at",
        [(event_id, owner, expires) for event_id, _ in rows],
    )
    # Each table read once for the whole batch, not once per event.
    events = await _with_message_ids(db, [event_id for event_id, _ in rows])
    marks = ", ".join("?" for _ in rows)
    await db.execute(
        "UPDATE event_recipient SET delivery_status = ? "
        f"WHERE event_id IN ({marks}) AND delivery_status IS NULL",
        [QUEUED, *events],
    )
    pending = await _pending_of(db, list(events))

    return [
        Claim(
            event_id,
            events[event_id].message_id or "",
            previous_owner,
            event=events[event_id],
            pending=tuple(pending[event_id]),
        )
        for event_id, previous_owner in rows
    ]


async def renew(
    db: aiosqlite.Connection, event_id: int, owner: str, lease_seconds: float
) -> bool:
    """Extend owner's lease on a still confirmed event; False if not held."""
    expires = as_text(now() + timedelta(seconds=lease_seconds))
    cursor = await db.execute(
        "UPDATE outbox SET lease_expires_at = ? "
        "WHERE event_id = ? AND lease_owner = ? AND EXISTS ("
        "SELECT 1 FROM event WHERE id = ? AND state = 'confirmed')",
        (expires, event_id, owner, event_id),
    )

    return cursor.rowcount == 1


async def still_held(
    db: aiosqlite.Connection, event_id: int, owner: str, lease_seconds: float
) -> tuple[bool, bool]:
    """Return whether owner holds the still confirmed event, and whether
    its lease has at least half of ``lease_seconds`` left.

    Only reads: a lease with time to spare needs no renewal (a commit).
    """
    spare = as_text(now() + timedelta(seconds=lease_seconds / 2))
    async with db.execute(
        "SELECT o.lease_owner, COALESCE(o.lease_expires_at > ?, 0) "
        "FROM outbox o JOIN event e ON e.id = o.event_id "
        "WHERE o.event_id = ? AND e.state = 'confirmed'",
        (spare, event_id),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None or row[0] != owner:
        return False, False

    return True, bool(row[1])


async def release(
    db: aiosqlite.Connection, event_ids: Sequence[int], owner: str
) -> None:
    """Give back events owner holds but did not try to send."""
    await db.executemany(
        "UPDATE outbox SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE event_id = ? AND lease_owner = ?",
        [(event_id, owner) for event_id in event_ids],
    )


async def pending_recipients(
    db: aiosqlite.Connection, event_id: int
) -> list[str]:
    """Return the addresses still to send to (queued or deferred)."""
    async with db.execute(
        "SELECT address FROM event_recipient WHERE event_id = ? "
        "AND delivery_status IN (?, ?) ORDER BY position",
        (event_id, QUEUED, DEFERRED),
    ) as cursor:
        addresses = [str(row[0]) for row in await cursor.fetchall()]

    return list(dict.fromkeys(addresses))


async def _pending_of(
    db: aiosqlite.Connection, event_ids: list[int]
) -> dict[int, list[str]]:
    """Return the addresses still to send to of each event, in order."""
    marks = ", ".join("?" for _ in event_ids)
    found: dict[int, dict[str, None]] = {i: {} for i in event_ids}
    async with db.execute(
        "SELECT event_id, address FROM event_recipient "
        f"WHERE event_id IN ({marks}) AND delivery_status IN (?, ?) "
        "ORDER BY event_id, position",
        [*event_ids, QUEUED, DEFERRED],
    ) as cursor:
        for row in await cursor.fetchall():
            found[int(row[0])][str(row[1])] = None

    return {event_id: list(addresses) for event_id, addresses in found.items()}


async def record(
    db: aiosqlite.Connection,
    event_id: int,
    owner: str,
    results: Sequence[RecipientResult],
    reply: str,
    *,
    max_attempts: int,
    retry_delay: Callable[[int], float],
    event: Event | None = None,
) -> Attempt:
    """Record one attempt's outcome and release the lease.

    Once no recipient is left to try, the event is marked ``sent`` (by
    the gateway, with the smart host's reply in its history) if any
    recipient took it, else it fails for good. Recipients still deferred
    after ``max_attempts`` are failed (given up), not bounced: no one
    refused them. Returns LOST, recording
    nothing, when owner no longer holds the event. ``event`` is the event
    as claimed, spared a new read; TransitionRefused when its state has
    changed since (a manager cancelled it while it was being sent).
    """
    async with db.execute(
        "SELECT attempts, lease_owner FROM outbox WHERE event_id = ?",
        (event_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None or row[1] != owner:
        return Attempt(LOST, int(row[0]) if row else 0)
    attempts = int(row[0]) + 1

    for result in results:
        await db.execute(
            "UPDATE event_recipient SET delivery_status = ?, "
            "delivery_detail = ? WHERE event_id = ? AND address = ? "
            "COLLATE NOCASE AND delivery_status IN (?, ?)",
            (
                result.status,
                result.detail,
                event_id,
                result.address,
                QUEUED,
                DEFERRED,
            ),
        )
    if attempts >= max_attempts:
        await db.execute(
            "UPDATE event_recipient SET delivery_status = ?, "
            "delivery_detail = ? || COALESCE(delivery_detail, '') "
            "WHERE event_id = ? AND delivery_status IN (?, ?)",
            (
                FAILED,
                f"gave up after {attempts} attempts: ",
                event_id,
                QUEUED,
                DEFERRED,
            ),
        )

    statuses = await _statuses(db, event_id)
    accepted = any(result.status == SENT for result in results)
    outcome = await _outcome(
        db, event_id, statuses, reply, attempts, event, accepted
    )
    if outcome.result == DEFERRED:
        moment = now() + timedelta(seconds=retry_delay(attempts))
        outcome = Attempt(DEFERRED, attempts, next_attempt_at=as_text(moment))

    await db.execute(
        "UPDATE outbox SET attempts = ?, next_attempt_at = ?, "
        "last_reply = ?, failure = ?, failed_at = ?, lease_owner = NULL, "
        "lease_expires_at = NULL WHERE event_id = ?",
        (
            attempts,
            outcome.next_attempt_at,
            reply,
            outcome.failure,
            as_text(now()) if outcome.result == FAILED else None,
            event_id,
        ),
    )

    return outcome


async def delivery_statuses(
    db: aiosqlite.Connection, event_id: int
) -> list[tuple[str, str | None]]:
    """Return each recipient's address and delivery status, in order."""
    async with db.execute(
        "SELECT address, delivery_status FROM event_recipient "
        "WHERE event_id = ? ORDER BY position",
        (event_id,),
    ) as cursor:
        return [(str(r[0]), r[1]) for r in await cursor.fetchall()]


async def requeue(db: aiosqlite.Connection, event_id: int) -> list[str]:
    """Queue the bounced and failed recipients again; return them.

    Recipients already sent, or still on their way, are left as they
    are, so that no one gets a second copy; the event's attempts start
    anew. A lease is left alone: a failed event is held by no worker.
    """
    async with db.execute(
        "SELECT address FROM event_recipient WHERE event_id = ? "
        "AND delivery_status IN (?, ?) ORDER BY position",
        (event_id, BOUNCED, FAILED),
    ) as cursor:
        addresses = [str(row[0]) for row in await cursor.fetchall()]

    await db.execute(
        "UPDATE event_recipient SET delivery_status = ?, "
        "delivery_detail = NULL WHERE event_id = ? "
        "AND delivery_status IN (?, ?)",
        (QUEUED, event_id, BOUNCED, FAILED),
    )
    await db.execute(
        "UPDATE outbox SET attempts = 0, next_attempt_at = NULL, "
        "failure = NULL, failed_at = NULL WHERE event_id = ?",
        (event_id,),
    )

    return list(dict.fromkeys(addresses))


async def entry_of(
    db: aiosqlite.Connection, event_id: int
) -> OutboxEntry | None:
    """Return where an event stands in the outbox; None if never claimed."""
    async with db.execute(
        "SELECT attempts, next_attempt_at, lease_owner, lease_expires_at, "
        "last_reply, failure, failed_at FROM outbox WHERE event_id = ?",
        (event_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None

    return OutboxEntry(*row)


async def _outcome(
    db: aiosqlite.Connection,
    event_id: int,
    statuses: list[tuple[str, str, str]],
    reply: str,
    attempts: int,
    event: Event | None,
    accepted: bool,
) -> Attempt:
    """Decide the event's fate from its recipients' statuses.

    ``accepted`` says whether the smart host took the message this time;
    when not, the recipients sent were sent before a retry.
    """
    if any(status in (QUEUED, DEFERRED) for _, status, _ in statuses):
        return Attempt(DEFERRED, attempts)

    if any(status in (SENT, DELAYED) for _, status, _ in statuses):
        if event is None:
            event = await get_event(db, event_id)
        comment = (
            f"accepted by the smart host: {reply}"
            if accepted
            else f"sent to the others before; this time: {reply}"
        )
        await take_step(db, event, "send", None, comment)
        return Attempt(SENT, attempts)

    failure = "; ".join(
        f"{address}: {detail}" for address, _, detail in statuses
    )

    return Attempt(FAILED, attempts, failure=failure)


async def _statuses(
    db: aiosqlite.Connection, event_id: int
) -> list[tuple[str, str, str]]:
    async with db.execute(
        "SELECT address, delivery_status, COALESCE(delivery_detail, '') "
        "FROM event_recipient WHERE event_id = ? ORDER BY position",
        (event_id,),
    ) as cursor:
        return [(r[0], r[1], r[2]) for r in await cursor.fetchall()]


async def _with_message_ids(
    db: aiosqlite.Connection, event_ids: list[int]
) -> dict[int, Event]:
    """Return the events by id, giving those without one a Message-ID.

    The key that recognises each message when a copy of it comes back in
    (the gateway was among its recipients) is recorded too.
    """
    events = {}
    keys = []
    for event in await load_events(db, event_ids):
        message_id = event.message_id
        if message_id is None:
            message_id = new_message_id(event.sender.address)
            await db.execute(
                "UPDATE event SET message_id = ? WHERE id = ?",
                (message_id, event.id),
            )
            event = replace(event, message_id=message_id)
        keys.append(
            (f"{address_key(event.sender.address)} {message_id}", event.id)
        )
        events[event.id] = event
    await db.executemany(
        "INSERT OR IGNORE INTO message_key (key, event_id) VALUES (?, ?)",
        keys,
    )

    return events
