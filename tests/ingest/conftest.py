"""Fixtures of the inbound path: our organisation, and running listeners.

``organisation`` sets up the company of the shared cases (example.com,
internal, with the Support and Sales departments behind support@ and
sales@, staff Maria in Support, a manager). ``smtp_listener`` and
``lmtp_listener`` run the real listener on this test's event loop, on a
loopback port the system chose. ``send_mail`` talks to the SMTP one
with smtplib, in a thread so that the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
import structlog

from gateway.crm.contacts import (
    Contact,
    add_organisation,
    add_person,
    find_by_address,
)
from gateway.ingest.smtp import Listener, start_listener, stop_listener
from gateway.settings import SmtpSettings
from gateway.store import Store

# Small enough for a test to exceed, large enough for every shared case.
MAX_MESSAGE_BYTES = 64 * 1024


@pytest.fixture(autouse=True)
def _structlog_defaults() -> None:
    """Start from structlog's defaults, whatever an earlier test set.

    The CLI configures logging at the warning level; capture_logs keeps
    that filter, and would miss info events.
    """
    structlog.reset_defaults()


@dataclass(frozen=True)
class Organisation:
    """Our company, as the shared cases expect it."""

    domain: str = "example.com"
    support: str = "support@example.com"
    sales: str = "sales@example.com"
    staff: str = "maria.staff@example.com"
    manager: str = "erika.chef@example.com"


async def set_up_organisation(store: Store) -> Organisation:
    """Create example.com and its departments, mailboxes and people."""
    ours = Organisation()
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=[ours.domain], internal=True
        )
        await add_organisation(
            db, "Support", parent="Example", addresses=[ours.support]
        )
        await add_organisation(
            db, "Sales", parent="Example", addresses=[ours.sales]
        )
        await add_person(
            db,
            ours.staff,
            name="Maria Staff",
            organisation="Support",
            roles=["staff"],
        )
        await add_person(
            db,
            ours.manager,
            name="Erika Chef",
            organisation="Example",
            roles=["manager"],
        )

    return ours


@pytest.fixture
async def organisation(store: Store) -> Organisation:
    """Our organisation, set up in the test's store."""
    return await set_up_organisation(store)


@pytest.fixture
def smtp_settings() -> SmtpSettings:
    """Listener settings: loopback, ports chosen by the system."""
    return SmtpSettings(
        host="127.0.0.1",
        port=0,
        lmtp_port=0,
        hostname="gateway.example.com",
        max_message_bytes=MAX_MESSAGE_BYTES,
        timeout_seconds=30,
        shutdown_grace_seconds=5,
    )


@pytest.fixture
async def smtp_listener(
    store: Store, organisation: Organisation, smtp_settings: SmtpSettings
) -> AsyncIterator[Listener]:
    """The SMTP listener, running on this test's loop."""
    listener = await start_listener(store, smtp_settings)
    yield listener
    await stop_listener(listener, smtp_settings.shutdown_grace_seconds)


@pytest.fixture
async def lmtp_listener(
    store: Store, organisation: Organisation, smtp_settings: SmtpSettings
) -> AsyncIterator[Listener]:
    """The same listener over LMTP, running on this test's loop."""
    listener = await start_listener(store, smtp_settings, lmtp=True)
    yield listener
    await stop_listener(listener, smtp_settings.shutdown_grace_seconds)


@dataclass(frozen=True)
class Reply:
    """The reply a client read after the final dot of DATA."""

    code: int
    text: str


SendMail = Callable[..., Awaitable[Reply]]


def deliver(
    port: int,
    raw: bytes,
    rcpt_tos: Sequence[str],
    mail_from: str = "sender@example.org",
    mail_options: Sequence[str] = (),
) -> Reply:
    """Run one SMTP session (blocking); return the reply to DATA.

    A refused MAIL or RCPT raises smtplib's error, as a client sees it.
    The session ends with QUIT, which proves it was not left hanging.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        for option in mail_options:
            # RFC 6531 3.1: a parameter only if the server advertised it.
            name, _, value = option.partition("=")
            extension = value if name == "BODY" else name
            assert client.has_extn(extension), extension
        code, text = client.mail(mail_from, list(mail_options))
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, mail_from)
        for address in rcpt_tos:
            code, text = client.rcpt(address)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({address: (code, text)})
        # putcmd/getreply rather than data(): data() raises on 5xx, and
        # sends str through _fix_eols; the octets must go as they are.
        client.putcmd("data")
        code, text = client.getreply()
        assert code == 354, (code, text)
        client.send(_dot_stuffed(raw) + b".\r\n")
        code, text = client.getreply()
        client.noop()

    return Reply(code, text.decode("utf-8", "replace"))


def _dot_stuffed(raw: bytes) -> bytes:
    """Return DATA's octets: dots doubled (RFC 5321 4.5.2), CRLF at end."""
    lines = raw.split(b"\r\n")
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in lines
    )
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"

    return stuffed


@pytest.fixture
def send_mail(smtp_listener: Listener) -> SendMail:
    """Send a message to the SMTP listener; return the reply to DATA."""

    async def send(
        raw: bytes,
        rcpt_tos: Sequence[str] = ("support@example.com",),
        mail_from: str = "sender@example.org",
        mail_options: Sequence[str] = (),
    ) -> Reply:
        return await asyncio.to_thread(
            deliver,
            smtp_listener.port,
            raw,
            rcpt_tos,
            mail_from,
            mail_options,
        )

    return send


def mail(
    *fields: str, body: str = "Hello,\r\nplease call me back.\r\n"
) -> bytes:
    """Build a message from header fields and a body, CRLF throughout."""
    head = "".join(f"{field}\r\n" for field in fields)

    return (head + "\r\n" + body).encode("utf-8")


async def staff(store: Store, address: str) -> Contact:
    """Return one of our people by address."""
    async with store.reading() as db:
        found = await find_by_address(db, address)
    assert found is not None

    return found
