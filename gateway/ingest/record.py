"""Recording one parsed message in the store, inside one transaction.

The message is recognised as a redelivery (no new event), a delivery
report about one of our events (recorded on it), or a new event, threaded
to the event it answers. A message that still cannot become an event
raises NotUnderstood, and its caller quarantines it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import aiosqlite

from gateway.addresses import address_key
from gateway.clock import now, now_text
from gateway.crm import events as crm_events
from gateway.crm.contacts import (
    Contact,
    ensure_contact,
    find_mailbox,
    our_mailbox,
)
from gateway.crm.events import AttachmentInfo, NewEvent
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.ingest.delivery import (
    ACCEPTED,
    BOUNCE,
    DUPLICATE,
    Delivery,
    Outcome,
)
from gateway.ingest.parsed import DeliveryReport, ParsedMessage
from gateway.ingest.reports import record_report
from gateway.ingest.threading import find_thread, index_thread


class NotUnderstood(Exception):
    """A parsed message that still cannot become an event."""


async def record_message(
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

    for row in await db.execute_fetchall(
        "SELECT event_id FROM message_key WHERE key = ?", (key,)
    ):
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
        raise NotUnderstood("no recipient in To, Cc or the envelope")

    mailbox_of: dict[str, int | None] = {}
    # Contacts found here are not looked up again to add the recipients.
    known: dict[str, Contact] = {}
    for address, _ in (*to, *cc, *bcc):
        if address not in mailbox_of:
            contact, mailbox_of[address] = await find_mailbox(db, address)
            if contact is not None:
                known[address] = contact
    departments = [
        department
        for address, _ in (*to, *cc, *bcc)
        if (department := mailbox_of[address]) is not None
    ]
    external = [
        address for address, _ in (*to, *cc) if mailbox_of[address] is None
    ]
    if not departments and not sender.internal:
        raise NotUnderstood("addressed to no mailbox of ours")

    # A copy of what our staff sent outside (we were in Cc or Bcc) is their
    # outgoing event, already sent; staff writing to us is incoming.
    outgoing = sender.internal and bool(external)
    thread = await find_thread(db, parsed, sender)

    details = _details(parsed, delivery)
    event_id = await crm_events.insert_event(
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
        sender=sender if sender.email else None,
        recipients=known,
        # Threading has just read the event and ticket it links to.
        links_checked=True,
    )
    await db.execute(
        "INSERT INTO message_key (key, event_id) VALUES (?, ?)",
        (key, event_id),
    )
    await index_thread(
        db,
        event_id,
        (*parsed.references, *parsed.in_reply_to),
        parsed.thread_index,
    )
    await _receipts(db, event_id, delivery, raw_sha256)

    return Outcome(
        ACCEPTED,
        message_id=parsed.message_id,
        event_id=event_id,
        direction="outgoing" if outgoing else "incoming",
        state="sent" if outgoing else "received",
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

    raise NotUnderstood("no sender: no From, no Sender, no MAIL FROM")


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
