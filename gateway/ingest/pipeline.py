"""The ingest path: one inbound message becomes one event, or is set aside.

SMTP, LMTP, IMAP and ``mailgate ingest`` all hand raw octets to
``Ingestor.ingest``. The raw message is written to disk first; then, in one
transaction, the message is recognised as a redelivery (no new event), a
delivery report about one of our events (recorded on it), or a new event,
threaded to the event it answers. A message that cannot be understood is
kept raw in the quarantine. Only StoreUnavailable escapes: then nothing is
kept and the sender must retry.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiosqlite
import structlog

from gateway.addresses import address_key
from gateway.clock import now, now_text
from gateway.crm import events as crm_events
from gateway.crm.contacts import Contact, ensure_contact, our_mailbox
from gateway.crm.events import AttachmentInfo, NewEvent
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.errors import MailgateError
from gateway.ingest import quarantine
from gateway.ingest.parse import UnparsableMessage, parse_message
from gateway.ingest.parsed import DeliveryReport, ParsedMessage
from gateway.ingest.reports import record_report
from gateway.ingest.threading import find_thread, index_thread
from gateway.store import Store, StoreUnavailable

logger = structlog.get_logger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
BOUNCE = "bounce"
QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One inbound message as it reached us, before it is understood."""

    raw: bytes
    # Our mailboxes it was delivered to (envelope recipients, IMAP box).
    mailboxes: tuple[str, ...] = ()
    source: str = "file"
    mail_from: str | None = None
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one delivery."""

    result: str
    message_id: str | None = None
    event_id: int | None = None
    quarantine_id: int | None = None
    direction: str | None = None
    state: str | None = None
    thread_reason: dict[str, Any] | None = None
    triage: dict[str, Any] | None = None
    automatic: bool = False
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "result": self.result,
            "message_id": self.message_id,
            "event": self.event_id,
            "quarantine": self.quarantine_id,
            "direction": self.direction,
            "state": self.state,
            "thread_reason": self.thread_reason,
            "triage": self.triage,
            "automatic": self.automatic,
            "reason": self.reason,
        }


class _DryRun(Exception):
    """Raised to roll back a dry run once its outcome is known."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("dry run")
        self.outcome = outcome


class _NotUnderstood(Exception):
    """A parsed message that still cannot become an event."""


class Ingestor:
    """Turns deliveries into events in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ingest(
        self, delivery: Delivery, *, dry_run: bool = False
    ) -> Outcome:
        """Store one delivery; return what became of it.

        Raises StoreUnavailable when it could not be kept durably: nothing
        of it is then recorded, and the sender should try again.

        Limitation: the raw file, written before the transaction, stays
        on disk when the transaction then fails. It is named by its hash,
        so the retry reuses it; nothing removes the files no row names.
        """
        log = logger.bind(
            source=delivery.source, mailboxes=list(delivery.mailboxes)
        )
        raw_sha256 = await self._keep_raw(delivery.raw, dry_run)

        try:
            parsed = await asyncio.to_thread(parse_message, delivery.raw)
        except UnparsableMessage as error:
            return await self._quarantine(
                delivery, raw_sha256, f"unparsable: {error}", dry_run, log
            )
        except Exception as error:  # a parser fault must not lose mail
            log.error("ingest.parser_failed", error=repr(error))
            return await self._quarantine(
                delivery,
                raw_sha256,
                f"parser failed: {type(error).__name__}",
                dry_run,
                log,
            )

        log = log.bind(message_id=parsed.message_id)
        try:
            attachments = await self._keep_attachments(parsed, dry_run)
            async with self.store.transaction() as db:
                outcome = await _record(
                    db, delivery, parsed, raw_sha256, attachments
                )
                if dry_run:
                    raise _DryRun(outcome)
        except _DryRun as finished:
            # A new event's id was only lent by the rolled-back transaction.
            if finished.outcome.result == ACCEPTED:
                return replace(finished.outcome, event_id=None)
            return finished.outcome
        except _NotUnderstood as error:
            return await self._quarantine(
                delivery, raw_sha256, str(error), dry_run, log
            )
        except (StoreUnavailable, OSError) as error:
            log.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error
        except MailgateError as error:
            return await self._quarantine(
                delivery, raw_sha256, str(error), dry_run, log
            )
        except Exception as error:  # a fault of ours must not lose mail
            log.error("ingest.record_failed", error=repr(error))
            return await self._quarantine(
                delivery,
                raw_sha256,
                f"recording failed: {type(error).__name__}",
                dry_run,
                log,
            )

        _log_outcome(log, outcome)

        return outcome

    async def _keep_raw(self, raw: bytes, dry_run: bool) -> str:
        """Write the raw message to disk (unless dry); return its hash."""
        if dry_run:
            return hashlib.sha256(raw).hexdigest()
        try:
            return await self.store.blobs.put(raw)
        except OSError as error:
            logger.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error

    async def _keep_attachments(
        self, parsed: ParsedMessage, dry_run: bool
    ) -> list[AttachmentInfo]:
        kept = []
        for attachment in parsed.attachments:
            if dry_run:
                digest = hashlib.sha256(attachment.data).hexdigest()
            else:
                digest = await self.store.blobs.put(attachment.data)
            kept.append(
                AttachmentInfo(
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                    size=attachment.size,
                    sha256=digest,
                    content_id=attachment.content_id,
                    inline=attachment.inline,
                )
            )

        return kept

    async def _quarantine(
        self,
        delivery: Delivery,
        raw_sha256: str,
        reason: str,
        dry_run: bool,
        log: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        """Keep a message we cannot understand, raw, for an operator."""
        if dry_run:
            return Outcome(QUARANTINED, reason=reason)
        try:
            async with self.store.transaction() as db:
                held = await quarantine.hold(
                    db,
                    raw_sha256=raw_sha256,
                    reason=reason,
                    source=delivery.source,
                    mailboxes=delivery.mailboxes,
                    mail_from=delivery.mail_from,
                )
        except (StoreUnavailable, OSError) as error:
            log.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error

        log.error("ingest.quarantined", quarantine=held, reason=reason)

        return Outcome(QUARANTINED, quarantine_id=held, reason=reason)


async def _record(
    db: aiosqlite.Connection,
    delivery: Delivery,
    parsed: ParsedMessage,
    raw_sha256: str,
    attachments: Sequence[AttachmentInfo],
) -> Outcome:
    """Decide what the message is and record it, inside one transaction."""
    if not delivery.mailboxes:
        delivery = replace(delivery, mailboxes=await _delivered_to(db, parsed))
    sender_address = _sender_address(parsed, delivery)
    sender = await ensure_contact(
        db, sender_address, parsed.sender.name if parsed.sender else ""
    )
    key = f"{address_key(sender_address)} {parsed.message_id}"

    async with db.execute(
        "SELECT event_id FROM message_key WHERE key = ?", (key,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None:
        return await _redelivered(
            db, int(row[0]), delivery, parsed, raw_sha256
        )

    report = parsed.delivery_report
    if report is not None:
        reported = await record_report(
            db, report, raw_sha256, delivery.mailboxes
        )
        if reported is not None:
            return await _reported(
                db, reported, report, key, delivery, raw_sha256
            )

    return await _new_event(
        db, delivery, parsed, raw_sha256, attachments, sender, key
    )


async def _redelivered(
    db: aiosqlite.Connection,
    event_id: int,
    delivery: Delivery,
    parsed: ParsedMessage,
    raw_sha256: str,
) -> Outcome:
    """Another copy of a message we have: note where it came, add nothing.

    A mailbox of ours that the event does not name yet (the copy came by
    Bcc) joins its recipients, so the event shows in that worklist too.
    """
    event = await crm_events.get_event(db, event_id)
    named = {address_key(party.address) for party in event.recipients}
    for mailbox in delivery.mailboxes:
        if address_key(mailbox) not in named:
            contact = await ensure_contact(db, mailbox)
            await db.execute(
                "INSERT INTO event_recipient (event_id, position, kind, "
                "contact_id, address) VALUES (?, "
                "(SELECT COALESCE(MAX(position), -1) + 1 FROM event_recipient"
                " WHERE event_id = ?), 'bcc', ?, ?)",
                (event_id, event_id, contact.id, mailbox),
            )
    await _receipts(db, event_id, delivery, raw_sha256)

    return Outcome(
        DUPLICATE,
        message_id=parsed.message_id,
        event_id=event_id,
        direction=event.direction,
        state=event.state,
        automatic=event.automatic,
    )


async def _reported(
    db: aiosqlite.Connection,
    event_id: int,
    report: DeliveryReport,
    key: str,
    delivery: Delivery,
    raw_sha256: str,
) -> Outcome:
    """Note a delivery report recorded on our event; it adds no event."""
    await db.execute(
        "INSERT INTO message_key (key, event_id) VALUES (?, ?)",
        (key, event_id),
    )
    await _receipts(db, event_id, delivery, raw_sha256)

    return Outcome(
        BOUNCE,
        message_id=report.original_message_id,
        event_id=event_id,
        automatic=True,
        details={
            "failed": [
                r.address for r in report.recipients if r.action == "failed"
            ]
        },
    )


async def _new_event(
    db: aiosqlite.Connection,
    delivery: Delivery,
    parsed: ParsedMessage,
    raw_sha256: str,
    attachments: Sequence[AttachmentInfo],
    sender: Contact,
    key: str,
) -> Outcome:
    """Create the event of a message seen for the first time."""
    to = [(a.email, a.name) for a in parsed.to]
    cc = [(a.email, a.name) for a in parsed.cc]
    named = {address_key(address) for address, _ in (*to, *cc)}
    # Our mailboxes that only the envelope names (Bcc) are kept as such.
    bcc = [
        (mailbox, "")
        for mailbox in delivery.mailboxes
        if address_key(mailbox) not in named
    ]
    if not (to or cc or bcc):
        raise _NotUnderstood("no recipient in To, Cc or the envelope")

    departments = [
        department
        for address, _ in (*to, *cc, *bcc)
        if (department := await our_mailbox(db, address)) is not None
    ]
    external = [
        address
        for address, _ in (*to, *cc)
        if await our_mailbox(db, address) is None
    ]
    if not departments and not sender.internal:
        raise _NotUnderstood("addressed to no mailbox of ours")

    # A copy of what our staff sent outside (we were in Cc or Bcc) is their
    # outgoing event, already sent; staff writing to us is incoming.
    outgoing = sender.internal and bool(external)
    thread = await find_thread(db, parsed, sender)

    details = _details(parsed, delivery)
    event = await crm_events.create_event(
        db,
        NewEvent(
            type=MAIL_MESSAGE,
            sender=sender.email or _sender_address(parsed, delivery),
            sender_name=parsed.sender.name if parsed.sender else "",
            to=to,
            cc=cc,
            bcc=bcc,
            title=parsed.title,
            content=parsed.text,
            content_html=parsed.html,
            direction="outgoing" if outgoing else "incoming",
            causality_id=thread.causality_id,
            ticket_id=thread.ticket_id,
            department_id=None
            if outgoing or not departments
            else departments[0],
            start_date=parsed.date or now(),
            state="sent" if outgoing else "received",
            message_id=parsed.message_id,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            raw_sha256=raw_sha256,
            attachments=attachments,
            thread_reason=thread.reason,
            automatic=parsed.automatic,
            details=details,
            assignee_ids=[sender.id] if outgoing else [],
            triage=thread.triage,
        ),
        sender if outgoing else None,
        transition="send" if outgoing else "receive",
    )
    await db.execute(
        "INSERT INTO message_key (key, event_id) VALUES (?, ?)",
        (key, event.id),
    )
    await index_thread(
        db,
        event.id,
        (*parsed.references, *parsed.in_reply_to),
        parsed.thread_index,
    )
    await _receipts(db, event.id, delivery, raw_sha256)

    return Outcome(
        ACCEPTED,
        message_id=parsed.message_id,
        event_id=event.id,
        direction=event.direction,
        state=event.state,
        thread_reason=thread.reason,
        triage=thread.triage,
        automatic=parsed.automatic,
    )


async def _receipts(
    db: aiosqlite.Connection,
    event_id: int,
    delivery: Delivery,
    raw_sha256: str,
) -> None:
    received_at = now_text()
    await db.executemany(
        "INSERT INTO receipt (event_id, mailbox, source, raw_sha256, "
        "received_at) VALUES (?, ?, ?, ?, ?)",
        [
            (event_id, mailbox, delivery.source, raw_sha256, received_at)
            for mailbox in delivery.mailboxes or ("",)
        ],
    )


async def _delivered_to(
    db: aiosqlite.Connection, parsed: ParsedMessage
) -> tuple[str, ...]:
    """Return our mailboxes in Delivered-To: a file's only envelope."""
    return tuple(
        [
            mailbox
            for mailbox in parsed.delivered_to
            if await our_mailbox(db, mailbox) is not None
        ]
    )


def _sender_address(parsed: ParsedMessage, delivery: Delivery) -> str:
    """Return who wrote the message: From, else Sender, else the envelope."""
    for candidate in (parsed.sender, parsed.sender_header):
        if candidate is not None:
            return candidate.email
    if delivery.mail_from:
        return delivery.mail_from

    raise _NotUnderstood("no sender: no From, no Sender, no MAIL FROM")


def _details(parsed: ParsedMessage, delivery: Delivery) -> dict[str, Any]:
    """Return the facts of the message kept beside the event."""
    details: dict[str, Any] = {
        "source": delivery.source,
        "mailboxes": list(delivery.mailboxes),
        "mail_from": delivery.mail_from,
    }
    if parsed.sender is not None:
        details["sender_address"] = parsed.sender.email
        details["sender_name"] = parsed.sender.name
    if parsed.sender_header is not None:
        details["sender_header"] = parsed.sender_header.email
    if parsed.reply_to:
        details["reply_to"] = [a.email for a in parsed.reply_to]
    if parsed.list_id:
        details["list_id"] = parsed.list_id
    if parsed.delivered_to:
        details["delivered_to"] = list(parsed.delivered_to)
    if parsed.automatic:
        details["automatic_reason"] = parsed.automatic_reason
    if parsed.date is None:
        details["date_problem"] = parsed.date_problem or "missing"
        details["date_fallback"] = "arrival time"
    if parsed.message_id_synthetic:
        details["message_id_synthetic"] = True
    if parsed.thread_topic:
        details["thread_topic"] = parsed.thread_topic
    if parsed.defects:
        details["defects"] = list(parsed.defects)

    return details


def _log_outcome(
    log: structlog.typing.FilteringBoundLogger, outcome: Outcome
) -> None:
    """Log what became of a message: one event, facts only, no body."""
    facts = {
        "event_id": outcome.event_id,
        "direction": outcome.direction,
        "thread_reason": outcome.thread_reason,
        "automatic": outcome.automatic,
    }
    if outcome.result == ACCEPTED:
        log.info("ingest.accepted", **facts)
        if outcome.triage is not None:
            log.warning(
                "ingest.triage",
                event_id=outcome.event_id,
                triage=outcome.triage,
            )
    elif outcome.result == DUPLICATE:
        log.info("ingest.duplicate", **facts)
    elif outcome.result == BOUNCE:
        log.info(
            "ingest.bounce_recorded",
            **facts,
            reported_message_id=outcome.message_id,
            **outcome.details,
        )


def may_acknowledge(outcome: Outcome) -> bool:
    """Return whether an automatic acknowledgement may answer this message.

    Never for automatic mail (RFC 3834 5), delivery reports, redeliveries,
    our own staff's copies or anything not accepted as a new event.
    """
    return (
        outcome.result == ACCEPTED
        and outcome.direction == "incoming"
        and not outcome.automatic
    )
