"""Fixtures of the outbound path: our staff, real servers, real clients.

``staff`` sets up the company of the shared cases (example.com with the
Support and Sales departments, Maria in Support, Sam in Sales, the
manager Erika) with submission passwords. ``submission``, ``inbound`` and
``smart_host`` run the submission listener, the inbound listener and a
test smart host on this test's loop, on loopback ports the system chose;
``submit`` and ``deliver`` talk to them with smtplib in a thread so that
the loop keeps serving. ``outbox`` is a worker towards the smart host.
"""

from __future__ import annotations

import asyncio
import functools
import smtplib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.crm.contacts import (
    add_organisation,
    add_person,
    find_by_address,
    set_password_hash,
)
from gateway.crm.events import NewEvent, create_event
from gateway.crm.passwords import hash_password
from gateway.crm.steps import transition
from gateway.ingest.smtp import Listener, start_listener, stop_listener
from gateway.outbox.queue import entry_of
from gateway.outbox.submission import (
    SubmissionListener,
    start_submission,
    stop_submission,
)
from gateway.outbox.worker import Outbox
from gateway.settings import (
    OutboxSettings,
    Settings,
    SmtpSettings,
    SubmissionSettings,
)
from gateway.store import Store

if TYPE_CHECKING:
    from conftest import Mailgate, Outcome

CASES_DIR = Path(__file__).parents[2].parent / "shared" / "cases"


@dataclass(frozen=True)
class Staff:
    """Our company and its people, with their submission passwords."""

    domain: str = "example.com"
    support: str = "support@example.com"
    maria: str = "maria.staff@example.com"
    sam: str = "sam.sales@example.com"
    manager: str = "erika.chef@example.com"
    customer: str = "jonas.beispiel@example.org"
    password: str = "correct horse battery"


@functools.cache
def _password_hash() -> str:
    """Return the hash of the staff's password, made once (it is slow)."""
    return hash_password(Staff.password)


@pytest.fixture
async def staff(store: Store) -> Staff:
    """Create example.com, its departments and people, with passwords."""
    ours = Staff()
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=[ours.domain], internal=True
        )
        await add_organisation(
            db, "Support", parent="Example", addresses=[ours.support]
        )
        await add_organisation(db, "Sales", parent="Example")
        for address, name, department, role in (
            (ours.maria, "Maria Staff", "Support", "staff"),
            (ours.sam, "Sam Sales", "Sales", "staff"),
            (ours.manager, "Erika Chef", "Example", "manager"),
        ):
            person = await add_person(
                db, address, name=name, organisation=department, roles=[role]
            )
            await set_password_hash(db, person.id, _password_hash())
        await add_person(db, ours.customer, name="Jonas Beispiel")

    return ours


@dataclass
class Received:
    """One message the smart host took."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str] = field(default_factory=list)


@dataclass
class SmartHostHandler:
    """A smart host that records what it takes and answers as told.

    ``data_replies`` are given, in turn, instead of accepting a message;
    ``rcpt_replies`` refuse some recipients; while ``hold`` is set, the
    answer to DATA waits until it is cleared (or the client leaves).
    """

    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    sessions: int = 0
    # The server side of each connection, in the order they came.
    connections: list[SMTP] = field(default_factory=list)
    hold: bool = False
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Refuse the recipients told; accept the others."""
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)

        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Answer as told, else record the message and accept it."""
        if self.hold:
            self.holding.set()
            await self.released.wait()
        if self.data_replies:
            return self.data_replies.pop(0)

        self.received.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or b""),
                list(envelope.mail_options),
            )
        )
        self.arrived.set()

        return f"250 2.0.0 Ok: queued as {len(self.received)}"


@dataclass
class SmartHost:
    """A running test smart host."""

    server: asyncio.Server
    handler: SmartHostHandler

    @property
    def port(self) -> int:
        """Return the port it listens on."""
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def smart_host() -> AsyncIterator[SmartHost]:
    """A smart host on loopback (aiosmtpd, on this test's loop)."""
    handler = SmartHostHandler()
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        handler.sessions += 1
        connection = SMTP(
            handler,
            hostname="relay.example.net",
            enable_SMTPUTF8=True,
            loop=loop,
        )
        handler.connections.append(connection)
        return connection

    server = await loop.create_server(session, host="127.0.0.1", port=0)
    yield SmartHost(server, handler)
    handler.released.set()
    server.close()
    await server.wait_closed()


@pytest.fixture
def outbound(settings: Settings, smart_host: SmartHost) -> Settings:
    """Settings for loopback servers and a fast, patient outbox."""
    return settings.model_copy(
        update={
            "smtp": SmtpSettings(
                host="127.0.0.1",
                port=0,
                hostname="gateway.example.com",
                timeout_seconds=30,
                shutdown_grace_seconds=5,
            ),
            "submission": SubmissionSettings(
                enabled=True,
                host="127.0.0.1",
                port=0,
                allow_plain_loopback=True,
                hostname="gateway.example.com",
                timeout_seconds=30,
                shutdown_grace_seconds=5,
            ),
            "outbox": OutboxSettings(
                smart_host="127.0.0.1",
                port=smart_host.port,
                tls="none",
                bounce_domain="example.com",
                poll_interval_seconds=0.05,
                lease_seconds=30,
                max_attempts=4,
                retry_initial_seconds=0.01,
                retry_max_seconds=0.05,
                retry_jitter_seconds=0.01,
                timeout_seconds=10,
                shutdown_grace_seconds=5,
            ),
        }
    )


@pytest.fixture
async def submission(
    store: Store, staff: Staff, outbound: Settings
) -> AsyncIterator[SubmissionListener]:
    """The submission listener, plain logins allowed from loopback."""
    listener = await start_submission(store, outbound.submission)
    yield listener
    await stop_submission(listener, 5)


@pytest.fixture
async def inbound(
    store: Store, staff: Staff, outbound: Settings
) -> AsyncIterator[Listener]:
    """The inbound SMTP listener, where customers' mail arrives."""
    listener = await start_listener(store, outbound.smtp)
    yield listener
    await stop_listener(listener, 5)


@pytest.fixture
def outbox(store: Store, outbound: Settings) -> Outbox:
    """An outbox worker towards the test smart host."""
    return Outbox(store, outbound.outbox, owner="worker-1")


@dataclass(frozen=True)
class Reply:
    """The reply a client read after the final dot of DATA."""

    code: int
    text: str


def submit_now(
    port: int,
    raw: bytes,
    rcpt_tos: Sequence[str],
    *,
    login: str,
    password: str,
    mail_from: str | None = None,
    mechanism: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """Log in and send one message (blocking); return the reply to DATA.

    A refused login, MAIL or RCPT raises smtplib's error, as a client
    sees it.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("laptop.example.com")
        if tls is not None:
            client.starttls(context=tls)
            client.ehlo("laptop.example.com")
        if mechanism is None:
            client.login(login, password)
        else:
            client.user, client.password = login, password
            method = getattr(client, f"auth_{mechanism.lower()}")
            client.auth(mechanism, method)
        try:
            client.sendmail(mail_from or login, list(rcpt_tos), raw)
        except smtplib.SMTPDataError as error:
            return Reply(error.smtp_code, error.smtp_error.decode())

    return Reply(250, "")


Submit = Callable[..., Awaitable[Reply]]


@pytest.fixture
def submit(submission: SubmissionListener, staff: Staff) -> Submit:
    """Send a message through the submission listener, logged in."""

    async def send(
        raw: bytes,
        rcpt_tos: Sequence[str] = (Staff.customer,),
        *,
        login: str = Staff.maria,
        password: str = Staff.password,
        **options: Any,
    ) -> Reply:
        return await asyncio.to_thread(
            submit_now,
            submission.port,
            raw,
            rcpt_tos,
            login=login,
            password=password,
            **options,
        )

    return send


def deliver_now(
    port: int, raw: bytes, rcpt_tos: Sequence[str], mail_from: str
) -> None:
    """Hand one message to the inbound listener, as a mail server would."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(mail_from, list(rcpt_tos), raw)


def mail(*fields: str, body: str = "Hello,\r\nsee below.\r\n") -> bytes:
    """Build a message from header fields and a body, CRLF throughout."""
    head = "".join(f"{field}\r\n" for field in fields)

    return (head + "\r\n" + body).encode("utf-8")


async def contact_id(store: Store, address: str) -> int:
    """Return the id of the contact owning an address."""
    async with store.reading() as db:
        found = await find_by_address(db, address)
    assert found is not None

    return found.id


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10
) -> None:
    """Poll a condition until it holds; fail the test after timeout."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def until_given_up(outbox: Outbox, store: Store, event_id: int) -> None:
    """Run batches until the event's delivery has failed for good."""

    async def given_up() -> bool:
        await outbox.run_batch()
        async with store.reading() as db:
            entry = await entry_of(db, event_id)
        return entry is not None and entry.failed_at is not None

    await wait_for(given_up)


Cli = Callable[..., Awaitable["Outcome"]]


@pytest.fixture
def cli(mailgate: Mailgate) -> Cli:
    """Run ``mailgate`` from an async test, in a thread.

    The CLI configures logging for its own run; the test's logging
    configuration is put back afterwards.
    """

    async def run(
        *arguments: str, actor: str | None = None, ok: bool = True
    ) -> Outcome:
        saved = structlog.get_config()
        try:
            return await asyncio.to_thread(
                mailgate, *arguments, actor=actor, ok=ok
            )
        finally:
            structlog.configure(**saved)

    return run


async def confirmed_mail(
    store: Store,
    staff: Staff,
    *,
    to: Sequence[str] = (Staff.customer,),
    cc: Sequence[str] = (),
    title: str = "Your warranty",
) -> int:
    """Create Maria's Mail Message, planned and confirmed; return its id."""
    async with store.transaction() as db:
        maria = await find_by_address(db, staff.maria)
        manager = await find_by_address(db, staff.manager)
        assert maria is not None and manager is not None
        event = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender=staff.maria,
                to=list(to),
                cc=list(cc),
                title=title,
                content="Dear Jonas,\nyour warranty is extended.\n",
            ),
            maria,
        )
        await transition(db, event.id, "plan", maria)
        await transition(db, event.id, "confirm", manager)

    return event.id
