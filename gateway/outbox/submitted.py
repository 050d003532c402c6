"""A submitted message, recorded as its sender's outgoing Mail Message.

The envelope says who gets the message; the header says whom it shows.
The event is created in ``draft`` and planned by its sender (or also
confirmed, for those the settings exempt from review), threaded by
In-Reply-To and References like inbound mail.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from gateway.addresses import InvalidAddress, address_key, normalize_address
from gateway.clock import now
from gateway.crm import events as crm_events
from gateway.crm import steps as event_steps
from gateway.crm.contacts import Contact, get_contact
from gateway.crm.events import AttachmentInfo, Event, NewEvent
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.ingest.parsed import Address, ParsedMessage
from gateway.ingest.threading import find_thread, index_thread


async def record_submission(
    db: aiosqlite.Connection,
    person_id: int,
    parsed: ParsedMessage,
    mail_from: str | None,
    rcpt_tos: Sequence[str],
    raw_sha256: str,
    attachments: Sequence[AttachmentInfo],
    confirm_without_review: Sequence[str] = (),
) -> Event:
    """Create the planned (or confirmed) event of one submitted message.

    The sender (the From field) must already be known to be the person's.
    The same message submitted again (same sender and Message-ID, a
    client retrying) returns the event recorded the first time.
    """
    person = await get_contact(db, person_id)
    assert parsed.sender is not None
    sender = parsed.sender.email
    message_id = None if parsed.message_id_synthetic else parsed.message_id
    key = f"{address_key(sender)} {message_id}"
    if message_id is not None:
        async with db.execute(
            "SELECT event_id FROM message_key WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None:
            return await crm_events.get_event(db, int(row[0]))

    to, cc, bcc = _recipients(parsed, rcpt_tos)
    thread = await find_thread(db, parsed, person)
    event = await crm_events.create_event(
        db,
        NewEvent(
            type=MAIL_MESSAGE,
            sender=sender,
            sender_name=parsed.sender.name,
            to=to,
            cc=cc,
            bcc=bcc,
            title=parsed.title,
            content=parsed.text,
            content_html=parsed.html,
            direction="outgoing",
            causality_id=thread.causality_id,
            ticket_id=thread.ticket_id,
            start_date=parsed.date or now(),
            message_id=message_id,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            raw_sha256=raw_sha256,
            attachments=attachments,
            thread_reason=thread.reason,
            triage=thread.triage,
            details={
                "source": "submission",
                "mail_from": mail_from,
                "sender_address": sender,
                "sender_name": parsed.sender.name,
            },
        ),
        person,
    )
    event = await event_steps.transition(db, event.id, "plan", person)
    if await _needs_no_review(db, person, confirm_without_review):
        event = await event_steps.transition(
            db,
            event.id,
            "confirm",
            None,
            "no review needed (submission.confirm_without_review)",
        )

    assert event.message_id is not None
    await db.execute(
        "INSERT OR IGNORE INTO message_key (key, event_id) VALUES (?, ?)",
        (f"{address_key(sender)} {event.message_id}", event.id),
    )
    await index_thread(
        db,
        event.id,
        (*parsed.references, *parsed.in_reply_to),
        parsed.thread_index,
    )

    return event


def _recipients(
    parsed: ParsedMessage, rcpt_tos: Sequence[str]
) -> tuple[
    list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]
]:
    """Split the envelope recipients into To, Cc and Bcc.

    The envelope says who gets the message; To and Cc are those the
    header shows, in its order, and everyone else is Bcc (RFC 5322
    3.6.3).
    """
    envelope = {address_key(address): address for address in rcpt_tos}
    shown: set[str] = set()

    def kind(addresses: Sequence[Address]) -> list[tuple[str, str]]:
        found = []
        for address in addresses:
            key = address_key(address.email)
            if key in envelope and key not in shown:
                shown.add(key)
                found.append((envelope[key], address.name))
        return found

    to = kind(parsed.to)
    cc = kind(parsed.cc)
    bcc = [(a, "") for k, a in envelope.items() if k not in shown]

    return to, cc, bcc


async def _needs_no_review(
    db: aiosqlite.Connection, person: Contact, exempt: Sequence[str]
) -> bool:
    """Return whether the settings exempt the person or a department."""
    if not exempt:
        return False

    addresses = {address_key(address) for address in person.addresses}
    departments: set[str] = set()
    parent_id = person.parent_id
    while parent_id is not None and len(departments) < 32:
        organisation = await get_contact(db, parent_id)
        departments.add(organisation.name.casefold())
        parent_id = organisation.parent_id
    for entry in exempt:
        if "@" in entry:
            try:
                if address_key(normalize_address(entry)) in addresses:
                    return True
            except InvalidAddress:
                continue
        elif entry.strip().casefold() in departments:
            return True

    return False
