"""The SMTP listener, driven by smtplib over loopback, on a real store."""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
import threading

import pytest
from structlog.testing import capture_logs

from gateway.crm.events import get_event
from gateway.crm.worklists import worklists_for
from gateway.ingest import replies
from gateway.ingest.smtp import Listener
from gateway.store import Store
from gateway.store.database import DATABASE_NAME

from .conftest import (
    MAX_MESSAGE_BYTES,
    Organisation,
    SendMail,
    mail,
    staff,
)

MESSAGE_ID = "<order-4711.1@mail.example.org>"

MESSAGE = mail(
    "From: Laura Beispiel <laura@example.org>",
    "To: Example Support <support@example.com>",
    "Subject: Delivery delay for order 4711",
    "Date: Tue, 01 Dec 2026 09:12:40 +0100",
    f"Message-ID: {MESSAGE_ID}",
)


async def _events_with(store: Store, message_id: str) -> list[int]:
    async with (
        store.reading() as db,
        db.execute(
            "SELECT id FROM event WHERE message_id = ? ORDER BY id",
            (message_id,),
        ) as cursor,
    ):
        return [int(row[0]) for row in await cursor.fetchall()]


async def _counts(store: Store) -> dict[str, int]:
    """Return the number of rows of every table a message may write."""
    counts = {}
    async with store.reading() as db:
        for table in (
            "contact",
            "event",
            "event_recipient",
            "message_key",
            "receipt",
            "quarantine",
            "history",
        ):
            async with db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
                row = await cursor.fetchone()
            counts[table] = int(row[0]) if row else 0

    return counts


def _refuse(store: Store, table: str, text: str) -> None:
    """Make every insert into a table fail inside SQLite, with text."""
    connection = sqlite3.connect(store.data_dir / DATABASE_NAME)
    try:
        connection.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{text}'); END"
        )
        connection.commit()
    finally:
        connection.close()


async def test_ehlo_advertises_8bitmime_smtputf8_and_the_size_limit(
    smtp_listener: Listener,
) -> None:
    """EHLO lists 8BITMIME and SMTPUTF8 (RFC 6531 3.1) and SIZE."""

    def session() -> tuple[int, dict[str, str]]:
        with smtplib.SMTP("127.0.0.1", smtp_listener.port) as client:
            code, _ = client.ehlo("client.example.org")
            return code, dict(client.esmtp_features)

    code, features = await asyncio.to_thread(session)

    assert code == 250
    assert "8bitmime" in features
    assert "smtputf8" in features
    assert features["size"] == str(MAX_MESSAGE_BYTES)


@pytest.mark.parametrize(
    "recipient",
    [
        "someone@example.net",
        "support@example.com.example.net",
        "support@sub.example.com",
    ],
)
async def test_relay_to_a_foreign_domain_is_refused_with_550_5_7_1(
    store: Store, send_mail: SendMail, recipient: str
) -> None:
    """A recipient not at a mailbox or domain of ours: never an open relay."""
    with (
        capture_logs() as logs,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        await send_mail(MESSAGE, [recipient])

    code, text = refused.value.recipients[recipient]
    assert code == 550
    assert text.startswith(b"5.7.1 ")
    assert await _events_with(store, MESSAGE_ID) == []
    assert [e["recipient"] for e in logs if e["event"] == "smtp.relay_denied"]


async def test_unknown_address_at_our_domain_is_accepted(
    store: Store, send_mail: SendMail
) -> None:
    """Any address at a domain of ours is ours, even one nobody has yet."""
    reply = await send_mail(MESSAGE, ["nobody.yet@example.com"])

    assert reply.code == 250
    [event_id] = await _events_with(store, MESSAGE_ID)
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert "nobody.yet@example.com" in [p.address for p in event.recipients]


async def test_oversized_message_is_refused_with_552_5_3_4_at_mail_from(
    smtp_listener: Listener,
) -> None:
    """A declared SIZE over the limit is refused before any data is sent."""

    def session() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_listener.port) as client:
            client.ehlo("client.example.org")
            return client.mail(
                "laura@example.org", [f"SIZE={MAX_MESSAGE_BYTES + 1}"]
            )

    code, text = await asyncio.to_thread(session)

    assert code == 552
    assert text.startswith(b"5.3.4 ")


async def test_oversized_message_is_refused_with_552_5_3_4_after_data(
    store: Store, send_mail: SendMail
) -> None:
    """Data past the limit gets 552 5.3.4 at the final dot, nothing kept."""
    before = await _counts(store)
    body = "x" * 998 + "\r\n"
    big = MESSAGE + (body * (MAX_MESSAGE_BYTES // len(body) + 1)).encode()

    reply = await send_mail(big)

    assert reply.code == 552
    assert reply.text.startswith("5.3.4 ")
    assert await _counts(store) == before


async def test_store_made_read_only_during_data_answers_451_and_retry_stores_once(  # noqa: E501
    store: Store, smtp_listener: Listener, send_mail: SendMail
) -> None:
    """A store refusing writes gets 451 4.3.0; the retry is stored once."""
    loop = asyncio.get_running_loop()
    in_data = asyncio.Event()
    carry_on = threading.Event()

    def session() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_listener.port) as client:
            client.ehlo("client.example.org")
            client.mail("laura@example.org")
            client.rcpt("support@example.com")
            client.putcmd("data")
            assert client.getreply()[0] == 354
            loop.call_soon_threadsafe(in_data.set)
            assert carry_on.wait(timeout=30)
            client.send(MESSAGE + b".\r\n")
            return client.getreply()

    before = await _counts(store)
    sending = asyncio.ensure_future(asyncio.to_thread(session))
    await in_data.wait()
    await store.set_read_only(True)
    carry_on.set()
    code, text = await sending

    assert code == 451
    assert text.startswith(b"4.3.0 ")
    assert await _counts(store) == before

    await store.set_read_only(False)
    first = await send_mail(MESSAGE)
    second = await send_mail(MESSAGE)

    assert (first.code, second.code) == (250, 250)
    assert len(await _events_with(store, MESSAGE_ID)) == 1


async def test_250_comes_only_once_the_event_is_committed(
    store: Store, smtp_listener: Listener
) -> None:
    """When the client reads 250, another connection already sees the event."""
    path = store.data_dir / DATABASE_NAME

    def session() -> tuple[int, list[tuple[str, str]]]:
        with smtplib.SMTP("127.0.0.1", smtp_listener.port) as client:
            client.ehlo("client.example.org")
            client.mail("laura@example.org")
            client.rcpt("support@example.com")
            client.putcmd("data")
            client.getreply()
            client.send(MESSAGE + b".\r\n")
            code, _ = client.getreply()
            reader = sqlite3.connect(path)
            try:
                rows = reader.execute(
                    "SELECT direction, state FROM event WHERE message_id = ?",
                    (MESSAGE_ID,),
                ).fetchall()
            finally:
                reader.close()
            return code, rows

    code, rows = await asyncio.to_thread(session)

    assert code == 250
    assert rows == [("incoming", "received")]


async def test_a_received_field_is_added_to_the_stored_message(
    store: Store, send_mail: SendMail
) -> None:
    """The raw message kept starts with our Received field (RFC 5321 4.4)."""
    await send_mail(MESSAGE)

    [event_id] = await _events_with(store, MESSAGE_ID)
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert event.raw_sha256 is not None
    raw = store.blobs.read(event.raw_sha256)
    assert raw.startswith(
        b"Received: from client.example.org ([127.0.0.1])\r\n"
        b"\tby gateway.example.com (mailgate) with ESMTP\r\n\tid "
    )
    assert raw.endswith(MESSAGE)


async def test_received_field_says_utf8smtp_for_an_smtputf8_session(
    store: Store, send_mail: SendMail
) -> None:
    """With SMTPUTF8 in MAIL FROM the protocol is UTF8SMTP (RFC 6531)."""
    message = mail(
        "From: Zoë <zoë@bücher.example.org>",
        "To: support@example.com",
        "Subject: Grüße",
        "Message-ID: <grüße.1@bücher.example.org>",
    )

    reply = await send_mail(
        message,
        mail_from="zoë@bücher.example.org",
        mail_options=["SMTPUTF8", "BODY=8BITMIME"],
    )

    assert reply.code == 250
    [event_id] = await _events_with(store, "<grüße.1@bücher.example.org>")
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert event.raw_sha256 is not None
    assert b"(mailgate) with UTF8SMTP\r\n" in store.blobs.read(
        event.raw_sha256
    )


async def test_one_message_to_two_of_our_mailboxes_is_one_event(
    store: Store, organisation: Organisation, send_mail: SendMail
) -> None:
    """Both envelope recipients in one transaction: one event names both."""
    reply = await send_mail(
        MESSAGE, [organisation.support, organisation.sales]
    )

    assert reply.code == 250
    [event_id] = await _events_with(store, MESSAGE_ID)
    maria = await staff(store, organisation.staff)
    async with store.reading() as db:
        event = await get_event(db, event_id)
        lists = await worklists_for(db, maria)
    assert {p.address for p in event.recipients} == {
        organisation.support,
        organisation.sales,
    }
    [to_deliver] = [w for w in lists if w.name == "to-deliver"]
    assert [e.id for e in to_deliver.events] == [event_id]


async def test_a_mailbox_named_twice_in_other_case_is_kept_once(
    store: Store, organisation: Organisation, send_mail: SendMail
) -> None:
    """RCPT support@ then SUPPORT@: one mailbox, spelled as first given."""
    local_part, _, domain = organisation.support.partition("@")
    shouted = f"{local_part.upper()}@{domain.upper()}"

    reply = await send_mail(
        MESSAGE, [organisation.support, shouted, organisation.sales]
    )

    assert reply.code == 250
    [event_id] = await _events_with(store, MESSAGE_ID)
    async with store.reading() as db:
        event = await get_event(db, event_id)
        receipts = await db.execute_fetchall(
            "SELECT mailbox FROM receipt WHERE event_id = ? ORDER BY id",
            (event_id,),
        )
    assert event.details["mailboxes"] == [
        organisation.support,
        organisation.sales,
    ]
    assert [row[0] for row in receipts] == [
        organisation.support,
        organisation.sales,
    ]


async def test_the_same_message_in_two_sessions_is_one_event_both_250(
    store: Store, send_mail: SendMail
) -> None:
    """A sender retrying after a lost 250 gets 250 again, and no new event."""
    first = await send_mail(MESSAGE)
    with capture_logs() as logs:
        second = await send_mail(MESSAGE)

    assert (first.code, second.code) == (250, 250)
    [event_id] = await _events_with(store, MESSAGE_ID)
    [duplicate] = [e for e in logs if e["event"] == "ingest.duplicate"]
    assert duplicate["event_id"] == event_id
    async with (
        store.reading() as db,
        db.execute(
            "SELECT COUNT(*) FROM receipt WHERE event_id = ?", (event_id,)
        ) as cursor,
    ):
        row = await cursor.fetchone()
    assert row is not None and row[0] == 2


async def test_a_store_fault_at_rcpt_answers_451_without_its_text(
    store: Store, smtp_listener: Listener
) -> None:
    """A broken store answers 451 4.3.0 to RCPT; the peer learns no more."""
    connection = sqlite3.connect(store.data_dir / DATABASE_NAME)
    connection.execute("DROP TABLE contact_address")
    connection.commit()
    connection.close()

    def session() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_listener.port) as client:
            client.ehlo("client.example.org")
            client.mail("laura@example.org")
            return client.rcpt("support@example.com")

    code, text = await asyncio.to_thread(session)

    assert (code, text.decode()) == (
        451,
        replies.LOCAL_ERROR.removeprefix("451 "),
    )


async def test_an_internal_fault_sets_the_message_aside_without_its_text(
    store: Store, send_mail: SendMail
) -> None:
    """A fault of ours while recording: quarantined, 250, no detail shown."""
    _refuse(store, "event", "secret internal detail")

    with capture_logs() as logs:
        reply = await send_mail(MESSAGE)

    assert reply.code == 250
    assert "secret" not in reply.text
    [failed] = [e for e in logs if e["event"] == "ingest.record_failed"]
    assert "secret internal detail" in failed["error"]
    [held] = [e for e in logs if e["event"] == "ingest.quarantined"]
    assert held["reason"] == "recording failed: IntegrityError"


async def test_a_fault_that_keeps_the_message_nowhere_answers_451(
    store: Store, send_mail: SendMail
) -> None:
    """When even the quarantine fails, 451 4.3.0 asks to retry, no detail."""
    _refuse(store, "event", "secret internal detail")
    _refuse(store, "quarantine", "secret quarantine detail")

    reply = await send_mail(MESSAGE)

    assert (reply.code, reply.text) == (
        451,
        replies.LOCAL_ERROR.removeprefix("451 "),
    )


async def test_an_exception_escaping_a_command_is_answered_451(
    smtp_listener: Listener,
) -> None:
    """aiosmtpd would send the exception's text; our handler says 451."""
    with capture_logs() as logs:
        reply = await smtp_listener.handler.handle_exception(
            RuntimeError("secret internal detail")
        )

    assert reply == replies.LOCAL_ERROR
    assert [e["event"] for e in logs] == ["smtp.session_failed"]


async def test_bare_lf_message_is_accepted_whole(
    store: Store, send_mail: SendMail
) -> None:
    """Bare LF line ends and no final newline: stored whole, never cut."""
    long_line = ";".join(f"ROW{n:04}" for n in range(400))
    message = (
        b"From: erp@example.org\nTo: support@example.com\n"
        b"Subject: Export\nMessage-ID: <export.1@example.org>\n\n"
        + long_line.encode()
        + b"\nEND-OF-EXPORT"
    )

    reply = await send_mail(message)

    assert reply.code == 250
    [event_id] = await _events_with(store, "<export.1@example.org>")
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert long_line in event.content
    assert event.content.rstrip().endswith("END-OF-EXPORT")
