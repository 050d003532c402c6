"""Delivery reports (RFC 3464) recorded on the outgoing event they name."""

from __future__ import annotations

from structlog.testing import capture_logs

from gateway.crm.events import Event, NewEvent, create_event, get_event
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.ingest.pipeline import (
    ACCEPTED,
    BOUNCE,
    DUPLICATE,
    Delivery,
    Ingestor,
    Outcome,
    may_acknowledge,
)
from gateway.store import Store

from .conftest import Organisation, staff

SENT_ID = "<offer.77@example.com>"


def _report(original: str, *blocks: tuple[str, str, str]) -> bytes:
    """Return a DSN about one message: (recipient, action, status) each."""
    status = "".join(
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {code}\r\n"
        f"Diagnostic-Code: smtp; 550 {code} no such user\r\n\r\n"
        for recipient, action, code in blocks
    )

    return (
        "Return-Path: <>\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn.1@mx.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        ' boundary="b"\r\n'
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "Your message could not be delivered.\r\n"
        "--b\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"{status}"
        "--b\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: support@example.com\r\n"
        f"Message-ID: {original}\r\n"
        "\r\n"
        "--b--\r\n"
    ).encode()


async def _sent(store: Store, organisation: Organisation) -> Event:
    maria = await staff(store, organisation.staff)
    async with store.transaction() as db:
        return await create_event(
            db,
            NewEvent(
                type=MAIL_MESSAGE,
                sender=organisation.staff,
                to=["max@example.net", "eva@example.net"],
                title="Your offer",
                direction="outgoing",
                state="sent",
                message_id=SENT_ID,
            ),
            maria,
            transition="send",
        )


async def _ingest(store: Store, raw: bytes) -> Outcome:
    return await Ingestor(store).ingest(
        Delivery(raw=raw, mailboxes=("support@example.com",), source="smtp")
    )


async def test_a_bounce_marks_our_recipient_bounced_and_adds_no_event(
    store: Store, organisation: Organisation
) -> None:
    """Action failed: the recipient is bounced, a report row kept."""
    sent = await _sent(store, organisation)

    with capture_logs() as logs:
        outcome = await _ingest(
            store, _report(SENT_ID, ("max@example.net", "failed", "5.1.1"))
        )

    assert (outcome.result, outcome.event_id) == (BOUNCE, sent.id)
    assert outcome.automatic
    assert not may_acknowledge(outcome)
    async with store.reading() as db:
        event = await get_event(db, sent.id)
        async with db.execute(
            "SELECT recipient, action, status FROM delivery_report"
        ) as cursor:
            rows = [tuple(row) for row in await cursor.fetchall()]
        async with db.execute("SELECT COUNT(*) FROM event") as cursor:
            count = await cursor.fetchone()
    assert [(p.address, p.delivery_status) for p in event.recipients] == [
        ("max@example.net", "bounced"),
        ("eva@example.net", None),
    ]
    assert rows == [("max@example.net", "failed", "5.1.1")]
    assert count is not None and count[0] == 1
    [logged] = [e for e in logs if e["event"] == "ingest.bounce_recorded"]
    assert logged["event_id"] == sent.id
    assert logged["message_id"] == "<dsn.1@mx.example.net>"
    assert logged["reported_message_id"] == SENT_ID
    assert logged["failed"] == ["max@example.net"]


async def test_a_delay_report_marks_the_recipient_delayed(
    store: Store, organisation: Organisation
) -> None:
    """Action delayed: the recipient is delayed, not bounced."""
    sent = await _sent(store, organisation)

    await _ingest(
        store, _report(SENT_ID, ("eva@example.net", "delayed", "4.4.1"))
    )

    async with store.reading() as db:
        event = await get_event(db, sent.id)
    assert [p.delivery_status for p in event.recipients] == [
        None,
        "delayed",
    ]


async def _set_statuses(store: Store, event_id: int, *statuses: str) -> None:
    """Give the event's recipients these statuses, in their order."""
    async with store.transaction() as db:
        for position, status in enumerate(statuses):
            await db.execute(
                "UPDATE event_recipient SET delivery_status = ? "
                "WHERE event_id = ? AND position = ?",
                (status, event_id, position),
            )


async def test_a_delay_report_never_puts_a_recipient_back_in_the_queue(
    store: Store, organisation: Organisation
) -> None:
    """Delayed marks only a recipient the smart host took, never one the
    outbox would send to; a refusal already known stays."""
    sent = await _sent(store, organisation)
    await _set_statuses(store, sent.id, "sent", "bounced")

    await _ingest(
        store,
        _report(
            SENT_ID,
            ("max@example.net", "delayed", "4.4.1"),
            ("eva@example.net", "delayed", "4.4.1"),
        ),
    )

    async with store.reading() as db:
        event = await get_event(db, sent.id)
    assert [p.delivery_status for p in event.recipients] == [
        "delayed",
        "bounced",
    ]


async def test_the_same_report_twice_is_recorded_once(
    store: Store, organisation: Organisation
) -> None:
    """A redelivered DSN is a duplicate: no second report row."""
    await _sent(store, organisation)
    report = _report(SENT_ID, ("max@example.net", "failed", "5.1.1"))

    first = await _ingest(store, report)
    second = await _ingest(store, report)

    assert (first.result, second.result) == (BOUNCE, DUPLICATE)
    async with (
        store.reading() as db,
        db.execute("SELECT COUNT(*) FROM delivery_report") as cursor,
    ):
        row = await cursor.fetchone()
    assert row is not None and row[0] == 1


async def test_a_report_about_mail_we_never_sent_is_an_event_of_its_own(
    store: Store, organisation: Organisation
) -> None:
    """Backscatter is kept as an automatic received event, nothing marked."""
    outcome = await _ingest(
        store,
        _report(
            "<forged@example.com>", ("max@example.net", "failed", "5.1.1")
        ),
    )

    assert outcome.result == ACCEPTED
    assert outcome.automatic
    assert not may_acknowledge(outcome)
