"""The outbox worker: confirmed mail reaches the smart host exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from structlog.testing import capture_logs

from gateway.crm.contacts import find_by_address
from gateway.crm.events import (
    NewEvent,
    create_event,
    get_event,
    history_of,
    list_events,
)
from gateway.crm.steps import transition
from gateway.crm.worklists import worklists_for
from gateway.ingest.smtp import Listener
from gateway.outbox.queue import entry_of
from gateway.outbox.submission import SubmissionListener
from gateway.outbox.worker import BatchReport, Outbox
from gateway.server import Daemon
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.database import DATABASE_NAME
from workflow import TransitionRefused

from .conftest import (
    Cli,
    SmartHost,
    Staff,
    Submit,
    confirmed_mail,
    deliver_now,
    mail,
    submit_now,
    until_given_up,
    wait_for,
)


def _parsed(content: bytes) -> EmailMessage:
    parsed = message_from_bytes(content, policy=policy.default)
    assert isinstance(parsed, EmailMessage)

    return parsed


async def _state(store: Store, event_id: int) -> str:
    async with store.reading() as db:
        return (await get_event(db, event_id)).state


async def _failed_deliveries(
    store: Store, address: str
) -> dict[int, str] | None:
    """Return the failed-deliveries worklist of a person: id -> reason."""
    async with store.reading() as db:
        person = await find_by_address(db, address)
        assert person is not None
        for worklist in await worklists_for(db, person):
            if worklist.name == "failed-deliveries":
                return {e.id: worklist.reasons[e.id] for e in worklist.events}

    return None


async def _deliver_all(outbox: Outbox, store: Store, event_id: int) -> None:
    """Run batches until the event is sent (retries wait their turn)."""

    async def sent() -> bool:
        await outbox.run_batch()
        return await _state(store, event_id) == "sent"

    await wait_for(sent)


async def test_submitted_mail_is_confirmed_then_sent_once_by_the_daemon(
    store: Store,
    staff: Staff,
    outbound: Settings,
    smart_host: SmartHost,
    cli: Cli,
) -> None:
    """Submit, confirm through the CLI; mailgate serve delivers one copy."""
    daemon = Daemon(outbound, store)
    await daemon.start()
    try:
        assert isinstance(daemon.submission, SubmissionListener)
        raw = mail(
            f"From: Maria Staff <{staff.maria}>",
            f"To: Jonas Beispiel <{staff.customer}>",
            "Cc: anna@example.net",
            "Subject: Your warranty",
            "Message-ID: <warranty-1@laptop.example.com>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            body="Grüße,\r\nMaria\r\n",
        )
        await asyncio.to_thread(
            submit_now,
            daemon.submission.port,
            raw,
            [staff.customer, "anna@example.net", "hidden@example.net"],
            login=staff.maria,
            password=staff.password,
        )
        async with store.reading() as db:
            (event,) = await list_events(db)
        assert event.state == "planned"

        shown = await cli("worklist", "--json", actor=staff.manager)
        to_confirm = next(w for w in shown.json() if w["name"] == "to-confirm")
        assert [e["id"] for e in to_confirm["events"]] == [event.id]
        await cli("event", "confirm", str(event.id), actor=staff.manager)

        async def sent() -> bool:
            return await _state(store, event.id) == "sent"

        await wait_for(sent)
    finally:
        daemon.stop()
        await daemon.wait()

    (copy,) = smart_host.handler.received
    assert copy.mail_from == f"bounces+evt-{event.id}@example.com"
    assert copy.rcpt_tos == [
        staff.customer,
        "anna@example.net",
        "hidden@example.net",
    ]
    message = _parsed(copy.content)
    assert message["From"] == f"Maria Staff <{staff.maria}>"
    assert message["To"] == f"Jonas Beispiel <{staff.customer}>"
    assert message["Cc"] == "anna@example.net"
    assert message["Bcc"] is None
    assert b"hidden@example.net" not in copy.content
    assert message["Message-ID"] == "<warranty-1@laptop.example.com>"
    assert message["Subject"] == "Your warranty"
    assert message["Date"] is not None
    assert message["Auto-Submitted"] is None
    # The body goes out as it was submitted, 8-bit and declared so.
    assert copy.content.endswith("\r\n\r\nGrüße,\r\nMaria\r\n".encode())
    assert "BODY=8BITMIME" in copy.mail_options

    async with store.reading() as db:
        event = await get_event(db, event.id)
        steps = await history_of(db, event.id)
    assert [(s.transition, s.state_after, s.actor) for s in steps] == [
        ("create", "draft", staff.maria),
        ("plan", "planned", staff.maria),
        ("confirm", "confirmed", staff.manager),
        ("send", "sent", "mailgate"),
    ]
    assert steps[-1].comment == (
        "accepted by the smart host: 250 2.0.0 Ok: queued as 1"
    )
    assert {p.delivery_status for p in event.recipients} == {"sent"}


async def test_a_reply_threads_both_ways(
    store: Store,
    staff: Staff,
    inbound: Listener,
    submit: Submit,
    outbox: Outbox,
    smart_host: SmartHost,
    cli: Cli,
) -> None:
    """Our reply names the customer's mail; their answer finds our reply."""
    question = mail(
        f"From: Jonas <{staff.customer}>",
        f"To: {staff.support}",
        "Subject: Question",
        "Message-ID: <question@mail.example.org>",
    )
    await asyncio.to_thread(
        deliver_now, inbound.port, question, [staff.support], staff.customer
    )
    reply = mail(
        f"From: {staff.maria}",
        f"To: {staff.customer}",
        "Subject: Re: Question",
        "In-Reply-To: <question@mail.example.org>",
        "References: <question@mail.example.org>",
    )
    await submit(reply)
    async with store.reading() as db:
        ours, theirs = await list_events(db)
    assert (ours.direction, ours.causality_id) == ("outgoing", theirs.id)

    await cli("event", "confirm", str(ours.id), actor=staff.manager)
    await outbox.run_batch()

    (copy,) = smart_host.handler.received
    sent = _parsed(copy.content)
    assert sent["In-Reply-To"] == "<question@mail.example.org>"
    assert sent["References"] == "<question@mail.example.org>"
    assert ours.message_id is not None
    assert sent["Message-ID"] == ours.message_id

    answer = mail(
        f"From: Jonas <{staff.customer}>",
        f"To: {staff.maria}",
        "Subject: Re: Question",
        f"In-Reply-To: {ours.message_id}",
        f"References: <question@mail.example.org> {ours.message_id}",
        "Message-ID: <answer@mail.example.org>",
    )
    await asyncio.to_thread(
        deliver_now, inbound.port, answer, [staff.maria], staff.customer
    )
    async with store.reading() as db:
        latest = (await list_events(db))[0]
    assert latest.message_id == "<answer@mail.example.org>"
    assert (latest.direction, latest.causality_id) == ("incoming", ours.id)


async def test_temporary_failures_are_retried_and_delivered_once(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost
) -> None:
    """421, then 451, then 250: one copy, three attempts, sent."""
    event_id = await confirmed_mail(store, staff)
    smart_host.handler.data_replies = [
        "421 4.3.2 Closing, try again",
        "451 4.3.0 Busy",
    ]

    await _deliver_all(outbox, store, event_id)

    assert len(smart_host.handler.received) == 1
    async with store.reading() as db:
        entry = await entry_of(db, event_id)
        event = await get_event(db, event_id)
    assert entry is not None
    assert entry.attempts == 3
    assert entry.failure is None
    assert event.recipients[0].delivery_status == "sent"


async def test_a_5xx_answer_ends_on_the_failed_deliveries_worklist(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost
) -> None:
    """550: no retry; the sender and managers see it with the reason."""
    event_id = await confirmed_mail(store, staff)
    smart_host.handler.data_replies = ["550 5.7.1 Message refused"]

    first = await outbox.run_batch()
    again = await outbox.run_batch()

    assert (first.failed, again.claimed) == (1, 0)
    assert smart_host.handler.received == []
    assert await _state(store, event_id) == "confirmed"
    reason = f"{staff.customer}: 550 5.7.1 Message refused"
    assert await _failed_deliveries(store, staff.maria) == {event_id: reason}
    assert await _failed_deliveries(store, staff.manager) == {event_id: reason}
    assert await _failed_deliveries(store, staff.sam) == {}


async def test_one_refused_recipient_bounces_the_others_get_it(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost
) -> None:
    """A 550 for one recipient: sent to the rest, that one bounced."""
    event_id = await confirmed_mail(store, staff, cc=["gone@example.net"])
    smart_host.handler.rcpt_replies = {
        "gone@example.net": "550 5.1.1 No such user"
    }

    await outbox.run_batch()

    (copy,) = smart_host.handler.received
    assert copy.rcpt_tos == [staff.customer]
    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert event.state == "sent"
    assert [(p.address, p.delivery_status) for p in event.recipients] == [
        (staff.customer, "sent"),
        ("gone@example.net", "bounced"),
    ]
    assert await _failed_deliveries(store, staff.maria) == {
        event_id: "gone@example.net: 550 5.1.1 No such user"
    }


async def test_an_unreachable_smart_host_is_retried_up_to_the_limit(
    store: Store, staff: Staff, outbound: Settings
) -> None:
    """No connection: deferred with backoff, then given up after 4 tries.

    The recipient is failed, not bounced (no one refused it), and the
    mail is on its sender's failed-deliveries worklist with the reason.
    """
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = outbound.outbox.model_copy(update={"port": port})
    outbox = Outbox(store, settings, owner="worker-1")
    event_id = await confirmed_mail(store, staff)
    delays = [outbox.retry_delay(n) for n in range(1, 6)]

    await until_given_up(outbox, store, event_id)

    async with store.reading() as db:
        entry = await entry_of(db, event_id)
        event = await get_event(db, event_id)
    assert entry is not None and entry.attempts == 4
    assert event.recipients[0].delivery_status == "failed"
    detail = event.recipients[0].delivery_detail
    assert detail is not None
    assert detail.startswith(
        "gave up after 4 attempts: cannot reach the smart host"
    )
    assert all(0 < delay <= 0.06 for delay in delays)
    assert await _failed_deliveries(store, staff.maria) == {
        event_id: f"{staff.customer}: {detail}"
    }


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        pytest.param(
            "UPDATE event SET title = 'Your\nwarranty' WHERE id = :id",
            "linefeed",
            id="title",
        ),
        pytest.param(
            "UPDATE event_recipient SET name = 'Jonas\r\nBcc: x@example.net' "
            "WHERE event_id = :id",
            "CR or LF",
            id="recipient-name",
        ),
    ],
)
async def test_a_message_that_cannot_be_rendered_fails_alone_for_good(
    store: Store,
    staff: Staff,
    outbox: Outbox,
    smart_host: SmartHost,
    data_dir: Path,
    cli: Cli,
    stored: str,
    error: str,
) -> None:
    """A line break the email package refuses fails that event only.

    It is on the failed-deliveries worklist with the reason, logged at
    error level, never claimed again; the mail beside it is sent.
    """
    bad = await confirmed_mail(store, staff, title="Broken")
    good = await confirmed_mail(store, staff, title="Fine")
    # Stored before the CLI refused such values: written past it.
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        db.execute(stored, {"id": bad})
        db.commit()

    with capture_logs() as logs:
        report = await outbox.run_batch()
        again = await outbox.run_batch()

    assert (report.sent, report.failed, again.claimed) == (1, 1, 0)
    (copy,) = smart_host.handler.received
    assert _parsed(copy.content)["Subject"] == "Fine"
    assert await _state(store, good) == "sent"
    assert await _state(store, bad) == "confirmed"
    (logged,) = [e for e in logs if e["event"] == "outbox.render_failed"]
    assert logged["log_level"] == "error"
    assert logged["event_id"] == bad
    assert error in logged["error"]
    assert not [e for e in logs if e["event"] == "outbox.batch_failed"]
    async with store.reading() as db:
        event = await get_event(db, bad)
        entry = await entry_of(db, bad)
    assert entry is not None and entry.failed_at is not None
    assert [p.delivery_status for p in event.recipients] == ["failed"]
    reasons = await _failed_deliveries(store, staff.maria)
    assert reasons is not None and list(reasons) == [bad]
    assert reasons[bad].startswith(
        f"{staff.customer}: cannot render the message: ValueError"
    )
    # event show shows the rest of the event, with the reason for the mail.
    shown = await cli("event", "show", str(bad), "--json", actor=staff.manager)
    assert error in shown.json()["outgoing_mail"]["error"]


async def test_a_kept_file_that_cannot_be_read_fails_its_event_for_good(
    store: Store,
    staff: Staff,
    submit: Submit,
    outbox: Outbox,
    smart_host: SmartHost,
) -> None:
    """The submitted message's file is gone: that event fails, not retried."""
    await submit(mail(f"From: {staff.maria}", f"To: {staff.customer}"))
    async with store.reading() as db:
        (event,) = await list_events(db)
    assert event.raw_sha256 is not None
    async with store.transaction() as db:
        manager = await find_by_address(db, staff.manager)
        await transition(db, event.id, "confirm", manager)
    store.blobs.path_of(event.raw_sha256).unlink()

    with capture_logs() as logs:
        report = await outbox.run_batch()
        again = await outbox.run_batch()

    assert (report.failed, again.claimed) == (1, 0)
    assert smart_host.handler.received == []
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "outbox.render_failed",
        "outbox.failed",
    ]
    reasons = await _failed_deliveries(store, staff.manager)
    assert reasons is not None
    assert "FileNotFoundError" in reasons[event.id]


async def test_a_planned_event_is_never_sent(
    store: Store,
    staff: Staff,
    submit: Submit,
    outbox: Outbox,
    smart_host: SmartHost,
) -> None:
    """Asked by id or not, the outbox leaves a planned event alone."""
    await submit(mail(f"From: {staff.maria}", f"To: {staff.customer}"))
    async with store.reading() as db:
        (event,) = await list_events(db)

    by_id = await outbox.run_batch(event_ids=[event.id])
    any_due = await outbox.run_batch()

    assert (by_id.claimed, any_due.claimed) == (0, 0)
    assert smart_host.handler.received == []
    assert await _state(store, event.id) == "planned"


async def test_a_batch_uses_one_connection(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost
) -> None:
    """Three confirmed mails go over one connection to the smart host."""
    for number in range(3):
        await confirmed_mail(store, staff, title=f"Mail {number}")

    report = await outbox.run_batch()

    assert report.sent == 3
    assert len(smart_host.handler.received) == 3
    assert smart_host.handler.sessions == 1


async def test_a_full_batch_leaves_its_connection_to_the_next(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Batches back to back share a connection; the last one ends it."""
    for number in range(5):
        await confirmed_mail(store, staff, title=f"Mail {number}")
    settings = outbound.outbox.model_copy(update={"batch_size": 2})
    outbox = Outbox(store, settings)

    reports = [await outbox.run_batch() for _ in range(4)]

    assert [r.sent for r in reports] == [2, 2, 1, 0]
    assert len(smart_host.handler.received) == 5
    assert smart_host.handler.sessions == 1
    await wait_for(lambda: _ended(smart_host.handler.connections[0]))


async def test_a_kept_connection_the_smart_host_ended_is_opened_anew(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Mail after a connection lost between batches is sent, not deferred."""
    for number in range(3):
        await confirmed_mail(store, staff, title=f"Mail {number}")
    settings = outbound.outbox.model_copy(update={"batch_size": 2})
    outbox = Outbox(store, settings)
    first = await outbox.run_batch()
    (connection,) = smart_host.handler.connections
    assert connection.transport is not None
    connection.transport.close()
    # Once this side has seen the end (the kept connection is private).
    await wait_for(_kept_ended(outbox))

    second = await outbox.run_batch()

    assert (first.sent, second.sent, second.deferred) == (2, 1, 0)
    assert smart_host.handler.sessions == 2


async def test_an_answer_is_committed_while_the_next_message_is_sent(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Sent is committed at once, not held back for the batch's end.

    The second message's answer waits until the first event is sent in
    the store: were answers committed only together, later, it would
    wait for ever.
    """
    ids = [
        await confirmed_mail(store, staff, title=f"Mail {n}") for n in range(3)
    ]
    moments: list[tuple[str, int]] = []

    async def first_is_sent() -> bool:
        return await _state(store, ids[0]) == "sent"

    async def note(moment: str, event_id: int) -> None:
        moments.append((moment, event_id))
        if (moment, event_id) == ("answered", ids[1]):
            await wait_for(first_is_sent)

    outbox = Outbox(store, outbound.outbox, owner="worker-1", checkpoint=note)
    report = await outbox.run_batch()

    assert report.sent == 3
    assert moments.index(("committed", ids[0])) < moments.index(
        ("answered", ids[2])
    )
    for event_id in ids:
        assert await _state(store, event_id) == "sent"


async def test_an_event_cancelled_while_sent_leaves_the_others_recorded(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Its outcome is refused, the batch fails, the others end sent."""
    ids = [
        await confirmed_mail(store, staff, title=f"Mail {n}") for n in range(3)
    ]

    async def cancel_last(moment: str, event_id: int) -> None:
        if (moment, event_id) == ("answered", ids[-1]):
            async with store.transaction() as db:
                manager = await find_by_address(db, staff.manager)
                await transition(db, event_id, "cancel", manager)

    outbox = Outbox(
        store, outbound.outbox, owner="worker-1", checkpoint=cancel_last
    )
    with pytest.raises(TransitionRefused):
        await outbox.run_batch()

    assert len(smart_host.handler.received) == 3
    assert [await _state(store, event_id) for event_id in ids] == [
        "sent",
        "sent",
        "cancelled",
    ]
    assert await outbox.run_batch() == BatchReport()


async def test_two_workers_never_send_the_same_event(
    store: Store,
    staff: Staff,
    outbound: Settings,
    smart_host: SmartHost,
) -> None:
    """Claims are exclusive: each event reaches the smart host once."""
    ids = [
        await confirmed_mail(store, staff, title=f"Mail {n}") for n in range(6)
    ]
    settings = outbound.outbox.model_copy(update={"batch_size": 3})
    workers = [Outbox(store, settings, owner=f"worker-{n}") for n in range(2)]

    reports = await asyncio.gather(*(w.run_batch() for w in workers))

    assert [r.sent for r in reports] == [3, 3]
    subjects = sorted(
        str(_parsed(copy.content)["Subject"])
        for copy in smart_host.handler.received
    )
    assert subjects == [f"Mail {n}" for n in range(6)]
    for event_id in ids:
        assert await _state(store, event_id) == "sent"


async def test_a_delivery_report_marks_the_recipient_bounced(
    store: Store,
    staff: Staff,
    inbound: Listener,
    outbox: Outbox,
    smart_host: SmartHost,
) -> None:
    """A DSN to the event's VERP address: that recipient is bounced."""
    event_id = await confirmed_mail(store, staff, cc=["gone@example.net"])
    await outbox.run_batch()
    (copy,) = smart_host.handler.received
    message_id = _parsed(copy.content)["Message-ID"]

    await asyncio.to_thread(
        deliver_now,
        inbound.port,
        _bounce("gone@example.net", message_id),
        [copy.mail_from],
        "",
    )

    async with store.reading() as db:
        event = await get_event(db, event_id)
    assert event.state == "sent"
    assert [(p.address, p.delivery_status) for p in event.recipients] == [
        (staff.customer, "sent"),
        ("gone@example.net", "bounced"),
    ]
    assert event.recipients[1].delivery_detail == (
        "5.1.1 550 5.1.1 No such user"
    )
    assert event_id in (await _failed_deliveries(store, staff.maria) or {})


async def test_a_report_quoting_nothing_finds_its_event_by_verp(
    store: Store,
    staff: Staff,
    inbound: Listener,
    outbox: Outbox,
    smart_host: SmartHost,
) -> None:
    """No Message-ID in the DSN: the VERP address it came to names it."""
    event_id = await confirmed_mail(store, staff, cc=["gone@example.net"])
    await outbox.run_batch()
    (copy,) = smart_host.handler.received

    await asyncio.to_thread(
        deliver_now,
        inbound.port,
        _bounce("gone@example.net", None),
        [copy.mail_from],
        "",
    )

    async with store.reading() as db:
        event = await get_event(db, event_id)
        events = await list_events(db)
    assert event.recipients[1].delivery_status == "bounced"
    assert [e.id for e in events] == [event_id]


def _bounce(recipient: str, message_id: str | None) -> bytes:
    """Return a delivery status notification (RFC 3464) about a message."""
    returned = f"Message-ID: {message_id}\r\n" if message_id else ""

    return mail(
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>",
        "To: bounces@example.com",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        "Message-ID: <dsn-1@relay.example.net>",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;"
        ' boundary="report"',
        body=(
            "--report\r\n"
            "Content-Type: text/plain\r\n\r\n"
            "Your message could not be delivered.\r\n\r\n"
            "--report\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; relay.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\n"
            "Action: failed\r\n"
            "Status: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n\r\n"
            "--report\r\n"
            "Content-Type: text/rfc822-headers\r\n\r\n"
            f"{returned}"
            "Subject: Your warranty\r\n\r\n"
            "--report--\r\n"
        ),
    )


async def _ended(connection: SMTP) -> bool:
    return connection.transport is None or connection.transport.is_closing()


def _kept_ended(outbox: Outbox) -> Callable[[], Awaitable[bool]]:
    async def ended() -> bool:
        kept = outbox._kept
        return kept is None or not kept.is_connected

    return ended


async def test_to_send_holds_only_what_will_really_be_sent(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost
) -> None:
    """Outgoing confirmed events, not failed mail nor confirmed incoming."""
    refused = await confirmed_mail(store, staff, title="Refused")
    smart_host.handler.data_replies = ["550 5.7.1 Message refused"]
    await outbox.run_batch()
    waiting = await confirmed_mail(store, staff, title="Waiting")
    async with store.transaction() as db:
        maria = await find_by_address(db, staff.maria)
        manager = await find_by_address(db, staff.manager)
        ids = {}
        for name, event_type, sender, to, direction in (
            ("call", "phone-call", staff.maria, staff.customer, "outgoing"),
            ("letter", "letter", staff.customer, staff.maria, "incoming"),
        ):
            made = await create_event(
                db,
                NewEvent(
                    type=event_type,
                    sender=sender,
                    to=[to],
                    title=name,
                    direction=direction,
                ),
                maria,
            )
            await transition(db, made.id, "plan", maria)
            await transition(db, made.id, "confirm", manager)
            ids[name] = made.id

    async with store.reading() as db:
        assert manager is not None
        lists = {w.name: w for w in await worklists_for(db, manager)}
    to_send = lists["to-send"]

    assert [e.id for e in to_send.events] == [waiting, ids["call"]]
    assert to_send.count == 2
    assert [e.id for e in lists["failed-deliveries"].events] == [refused]
    assert await _state(store, ids["letter"]) == "confirmed"
