"""Submission: staff log in, send, and their mail waits for a manager."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import sqlite3
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme
from click.testing import CliRunner
from structlog.testing import capture_logs

from gateway.cli.main import main
from gateway.crm.events import get_event, history_of, list_events
from gateway.outbox.render import render_event
from gateway.outbox.submission import (
    SubmissionListener,
    start_submission,
    stop_submission,
)
from gateway.settings import Settings
from gateway.store import Store, StoreUnavailable
from gateway.store.database import DATABASE_NAME

from .conftest import Staff, Submit, mail, submit_now

if TYPE_CHECKING:
    from conftest import Mailgate


def _message(staff: Staff, *extra: str) -> bytes:
    return mail(
        f"From: Maria Staff <{staff.maria}>",
        f"To: Jonas Beispiel <{staff.customer}>",
        "Cc: Anna <anna@example.net>",
        "Subject: Your warranty",
        "Message-ID: <submitted-1@laptop.example.com>",
        "Date: Thu, 03 Dec 2026 10:00:00 +0100",
        *extra,
        body="Dear Jonas,\r\nyour warranty is extended.\r\n",
    )


async def _only_event(store: Store) -> int:
    async with store.reading() as db:
        found = await list_events(db)
    assert len(found) == 1

    return found[0].id


async def test_logged_in_staff_mail_becomes_a_planned_event(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """AUTH PLAIN, then the message is an outgoing event, planned."""
    reply = await submit(
        _message(staff),
        [staff.customer, "anna@example.net", "boss@example.org"],
    )
    assert reply.code == 250

    event_id = await _only_event(store)
    async with store.reading() as db:
        event = await get_event(db, event_id)
        steps = await history_of(db, event_id)
    assert (event.type, event.direction, event.state) == (
        "mail-message",
        "outgoing",
        "planned",
    )
    assert event.sender.address == staff.maria
    assert event.message_id == "<submitted-1@laptop.example.com>"
    assert event.raw_sha256 is not None
    assert [(p.address, p.kind) for p in event.recipients] == [
        (staff.customer, "to"),
        ("anna@example.net", "cc"),
        ("boss@example.org", "bcc"),
    ]
    assert [(s.transition, s.state_after, s.actor) for s in steps] == [
        ("create", "draft", staff.maria),
        ("plan", "planned", staff.maria),
    ]


async def test_login_mechanism_works_too(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """AUTH LOGIN is accepted like PLAIN."""
    reply = await submit(_message(staff), mechanism="LOGIN")

    assert reply.code == 250
    assert await _only_event(store)


async def test_wrong_password_is_refused_with_535(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """A wrong password gets 535 5.7.8, and nothing is recorded."""
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        await submit(_message(staff), password="not the password")

    assert refused.value.smtp_code == 535
    assert refused.value.smtp_error.startswith(b"5.7.8")
    async with store.reading() as db:
        assert await list_events(db) == []


async def test_unknown_or_external_login_is_refused_with_535(
    staff: Staff, submit: Submit
) -> None:
    """No one of ours by that address: the same 535 as a bad password."""
    for login in ("nobody@example.com", staff.customer):
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            await submit(_message(staff), login=login)
        assert refused.value.smtp_code == 535


async def test_foreign_envelope_sender_is_refused_with_553(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """MAIL FROM someone else's address: 553 5.7.1."""
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await submit(_message(staff), mail_from=staff.sam)

    assert refused.value.smtp_code == 553
    assert refused.value.smtp_error.startswith(b"5.7.1")


async def test_foreign_from_header_is_refused_with_553(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """A From field naming someone else: 553 5.7.1, no event."""
    raw = _message(staff).replace(
        f"From: Maria Staff <{staff.maria}>".encode(),
        f"From: Sam <{staff.sam}>".encode(),
    )

    reply = await submit(raw)

    assert (reply.code, reply.text[:5]) == (553, "5.7.1")
    async with store.reading() as db:
        assert await list_events(db) == []


async def test_mail_without_login_is_refused_with_530(
    staff: Staff, submission: SubmissionListener
) -> None:
    """No AUTH, no MAIL."""

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", submission.port, timeout=30) as c:
            c.ehlo("laptop.example.com")
            return c.mail(staff.maria)

    code, text = await asyncio.to_thread(send)

    assert (code, text[:5]) == (530, b"5.7.0")


async def test_no_plain_text_login_unless_loopback_is_allowed(
    store: Store, staff: Staff, outbound: Settings
) -> None:
    """Without TLS and without allow_plain_loopback, AUTH gets 538."""
    settings = outbound.submission.model_copy(
        update={"allow_plain_loopback": False}
    )
    listener = await start_submission(store, settings)
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            await asyncio.to_thread(
                submit_now,
                listener.port,
                _message(staff),
                [staff.customer],
                login=staff.maria,
                password=staff.password,
            )
    finally:
        await stop_submission(listener, 5)

    assert refused.value.smtp_code == 538


async def test_login_over_starttls(
    store: Store, staff: Staff, outbound: Settings, tmp_path: Path
) -> None:
    """With a certificate, STARTTLS protects the login; then it works."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(cert_file)
    certificate.private_key_pem.write_to_path(key_file)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    settings = outbound.submission.model_copy(
        update={
            "allow_plain_loopback": False,
            "tls_cert_file": cert_file,
            "tls_key_file": key_file,
        }
    )

    listener = await start_submission(store, settings)
    try:
        reply = await asyncio.to_thread(
            submit_now,
            listener.port,
            _message(staff),
            [staff.customer],
            login=staff.maria,
            password=staff.password,
            tls=client_context,
        )
    finally:
        await stop_submission(listener, 5)

    assert reply.code == 250
    assert await _only_event(store)


async def test_department_exempt_from_review_starts_confirmed(
    store: Store, staff: Staff, outbound: Settings
) -> None:
    """confirm_without_review naming a department: its mail is confirmed."""
    settings = outbound.submission.model_copy(
        update={"confirm_without_review": ("Sales",)}
    )
    listener = await start_submission(store, settings)
    try:
        for login in (staff.sam, staff.maria):
            raw = mail(
                f"From: {login}",
                f"To: {staff.customer}",
                f"Subject: from {login}",
            )
            await asyncio.to_thread(
                submit_now,
                listener.port,
                raw,
                [staff.customer],
                login=login,
                password=staff.password,
            )
    finally:
        await stop_submission(listener, 5)

    async with store.reading() as db:
        states = {e.sender.address: e.state for e in await list_events(db)}
        confirmed = next(
            e for e in await list_events(db) if e.state == "confirmed"
        )
        steps = await history_of(db, confirmed.id)
    assert states == {staff.sam: "confirmed", staff.maria: "planned"}
    assert [(s.transition, s.actor) for s in steps][-1] == (
        "confirm",
        "mailgate",
    )


async def test_store_failure_answers_451_and_records_nothing(
    store: Store,
    staff: Staff,
    submit: Submit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store cannot commit: 451 4.3.0, so the client tries later."""

    def unavailable() -> object:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(store, "transaction", unavailable)

    reply = await submit(_message(staff))

    assert (reply.code, reply.text[:5]) == (451, "4.3.0")
    monkeypatch.undo()
    async with store.reading() as db:
        assert await list_events(db) == []


async def test_the_same_message_submitted_twice_is_one_event(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """A client retrying after a lost reply does not make a second event."""
    assert (await submit(_message(staff))).code == 250
    assert (await submit(_message(staff))).code == 250

    assert await _only_event(store)


async def test_bcc_is_kept_but_never_shown(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """An envelope-only recipient is Bcc: in the envelope, not the header."""
    raw = _message(staff, "Bcc: hidden@example.net")
    await submit(raw, [staff.customer, "hidden@example.net"])

    event_id = await _only_event(store)
    async with store.reading() as db:
        event = await get_event(db, event_id)
        rendered = await render_event(db, store.blobs, event)
    head = rendered.message.partition(b"\r\n\r\n")[0]

    assert "hidden@example.net" in rendered.rcpt_tos
    assert b"hidden@example.net" not in head
    assert b"Bcc" not in head


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_a_login_logs_no_deprecation_warning(
    store: Store,
    staff: Staff,
    submit: Submit,
    caplog: pytest.LogCaptureFixture,
    mechanism: str,
) -> None:
    """aiosmtpd's deprecated Session.login_data is never used."""
    with caplog.at_level(logging.DEBUG, logger="mail.log"):
        reply = await submit(_message(staff), mechanism=mechanism)

    assert reply.code == 250
    assert [
        record.getMessage()
        for record in caplog.records
        if "deprecated" in record.getMessage()
    ] == []


async def test_accepted_logs_the_message_id_the_event_got(
    store: Store, staff: Staff, submit: Submit
) -> None:
    """A message without Message-ID: the log names the one made for it."""
    raw = mail(
        f"From: Maria Staff <{staff.maria}>",
        f"To: {staff.customer}",
        "Subject: No Message-ID",
        body="Hello\r\n",
    )

    with capture_logs() as logs:
        reply = await submit(raw)

    assert reply.code == 250
    event_id = await _only_event(store)
    async with store.reading() as db:
        event = await get_event(db, event_id)
    accepted = [e for e in logs if e["event"] == "submission.accepted"]
    assert [e["message_id"] for e in accepted] == [event.message_id]
    assert event.message_id is not None
    assert "mailgate.invalid" not in event.message_id


def test_password_is_set_from_the_cli_and_only_hashed(
    mailgate: Mailgate, data_dir: Path
) -> None:
    """contact password: prompted twice, or one line from stdin; hashed."""
    mailgate("org", "add", "Example", "--domain", "example.com", "--internal")
    mailgate("contact", "add", "maria@example.com", "--name", "Maria")
    runner = CliRunner()

    prompted = runner.invoke(
        main,
        ["contact", "password", "maria@example.com"],
        input="first secret 1\nfirst secret 1\n",
    )
    piped = runner.invoke(
        main,
        ["contact", "password", "maria@example.com", "--password-stdin"],
        input="second secret 2\n",
    )
    short = runner.invoke(
        main,
        ["contact", "password", "maria@example.com", "--password-stdin"],
        input="short\n",
    )
    as_json = runner.invoke(
        main,
        [
            "contact",
            "password",
            "maria@example.com",
            "--password-stdin",
            "--json",
        ],
        input="third secret 3\n",
    )

    assert prompted.exit_code == 0, prompted.output
    assert piped.exit_code == 0, piped.output
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.stdout)
    assert answer["email"] == "maria@example.com"
    assert answer["password_set"] is True
    assert isinstance(answer["id"], int)
    assert short.exit_code == 1
    connection = sqlite3.connect(data_dir / DATABASE_NAME)
    try:
        dump = "\n".join(connection.iterdump())
        (stored,) = connection.execute(
            "SELECT password_hash FROM contact WHERE password_hash IS NOT NULL"
        ).fetchone()
    finally:
        connection.close()
    assert stored.startswith("$argon2id$")
    assert "secret" not in dump
