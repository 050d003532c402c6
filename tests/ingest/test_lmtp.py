"""The listener over LMTP (RFC 2033): one reply per accepted recipient."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Sequence

from gateway.crm.events import get_event
from gateway.ingest.smtp import Listener
from gateway.store import Store

from .conftest import Organisation, mail

MESSAGE = mail(
    "From: Kai Beispiel <kai@example.net>",
    "To: sales@example.com",
    "Cc: support@example.com",
    "Subject: Quote request and open support case",
    "Message-ID: <quote.7@mail.example.net>",
)


def _lmtp_session(
    port: int, rcpt_tos: Sequence[str]
) -> tuple[
    list[tuple[int, bytes]], list[tuple[int, bytes]], tuple[int, bytes]
]:
    """Run LHLO, RCPT each, DATA; read one reply per accepted recipient.

    Returns the RCPT replies, the DATA replies, and the reply to a NOOP
    sent afterwards: had the server sent more replies than recipients, the
    NOOP would read a leftover one instead of its own.
    """
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        code, _ = client.ehlo("mx.example.com")
        assert code == 250
        client.mail("kai@example.net")
        rcpt_replies = [client.rcpt(address) for address in rcpt_tos]
        accepted = sum(1 for code, _ in rcpt_replies if code == 250)
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(MESSAGE + b".\r\n")
        data_replies = [client.getreply() for _ in range(accepted)]
        noop = client.noop()

    return rcpt_replies, data_replies, noop


async def _event_ids(store: Store) -> list[int]:
    async with (
        store.reading() as db,
        db.execute(
            "SELECT id FROM event WHERE message_id = ?",
            ("<quote.7@mail.example.net>",),
        ) as cursor,
    ):
        return [int(row[0]) for row in await cursor.fetchall()]


async def test_each_accepted_recipient_gets_its_own_reply_after_data(
    store: Store, organisation: Organisation, lmtp_listener: Listener
) -> None:
    """LHLO, two RCPT, DATA: two replies, then the session goes on."""
    rcpt, data, noop = await asyncio.to_thread(
        _lmtp_session,
        lmtp_listener.port,
        [organisation.sales, organisation.support],
    )

    assert [code for code, _ in rcpt] == [250, 250]
    assert [code for code, _ in data] == [250, 250]
    assert all(text.startswith(b"2.0.0 ") for _, text in data)
    assert noop == (250, b"OK")
    [event_id] = await _event_ids(store)
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert [p.address for p in event.recipients] == [
        organisation.sales,
        organisation.support,
    ]


async def test_a_mailbox_named_twice_gets_two_replies_and_one_entry(
    store: Store, organisation: Organisation, lmtp_listener: Listener
) -> None:
    """Each RCPT is answered after DATA; the event names the mailbox once."""
    rcpt, data, noop = await asyncio.to_thread(
        _lmtp_session,
        lmtp_listener.port,
        [organisation.support, organisation.support.upper()],
    )

    assert [code for code, _ in rcpt] == [250, 250]
    assert [code for code, _ in data] == [250, 250]
    assert noop == (250, b"OK")
    [event_id] = await _event_ids(store)
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert event.details["mailboxes"] == [organisation.support]


async def test_a_refused_recipient_among_accepted_ones_gets_no_data_reply(
    store: Store, organisation: Organisation, lmtp_listener: Listener
) -> None:
    """RCPT to a foreign address is refused; DATA answers the others only."""
    rcpt, data, noop = await asyncio.to_thread(
        _lmtp_session,
        lmtp_listener.port,
        [organisation.support, "someone@example.net", organisation.sales],
    )

    assert [code for code, _ in rcpt] == [250, 550, 250]
    assert rcpt[1][1].startswith(b"5.7.1 ")
    assert [code for code, _ in data] == [250, 250]
    assert noop == (250, b"OK")
    assert len(await _event_ids(store)) == 1


async def test_a_store_refusing_writes_gets_451_for_each_recipient(
    store: Store, organisation: Organisation, lmtp_listener: Listener
) -> None:
    """Every recipient is told to retry; nothing is stored."""
    await store.set_read_only(True)

    _, data, noop = await asyncio.to_thread(
        _lmtp_session,
        lmtp_listener.port,
        [organisation.sales, organisation.support],
    )

    assert [code for code, _ in data] == [451, 451]
    assert all(text.startswith(b"4.3.0 ") for _, text in data)
    assert noop == (250, b"OK")
    await store.set_read_only(False)
    assert await _event_ids(store) == []


async def test_helo_and_ehlo_are_not_lmtp(lmtp_listener: Listener) -> None:
    """An LMTP server greets only LHLO (RFC 2033 4.1)."""

    def session() -> tuple[int, int]:
        with smtplib.SMTP("127.0.0.1", lmtp_listener.port) as client:
            return client.ehlo()[0], client.helo()[0]

    assert await asyncio.to_thread(session) == (500, 500)
