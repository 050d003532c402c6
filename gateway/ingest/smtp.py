"""The SMTP and LMTP listener: mail servers hand us inbound mail.

Protocol work is aiosmtpd's; this module only decides which recipients are
ours, adds a Received field and hands the message to the ingest path. It
answers 250 only once the message and its event are committed, and 451 when
the store cannot take it.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.addresses import (
    InvalidAddress,
    address_key,
    normalize_address,
)
from gateway.crm.contacts import our_mailbox
from gateway.ingest import replies
from gateway.ingest.pipeline import Delivery, Ingestor
from gateway.settings import SmtpSettings
from gateway.store import Store, StoreUnavailable

logger = structlog.get_logger(__name__)


class InboundHandler:
    """aiosmtpd handler: accept our recipients, store each message once."""

    def __init__(self, store: Store, hostname: str, *, lmtp: bool) -> None:
        self.store = store
        self.ingestor = Ingestor(store)
        self.hostname = hostname
        self.lmtp = lmtp
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a recipient only at a mailbox or domain of ours."""
        try:
            mailbox = normalize_address(address)
        except InvalidAddress:
            return replies.BAD_RECIPIENT

        try:
            async with self.store.reading() as db:
                department = await our_mailbox(db, mailbox)
        except Exception as error:
            logger.error("smtp.recipient_check_failed", error=repr(error))
            return replies.LOCAL_ERROR
        if department is None:
            logger.warning(
                "smtp.relay_denied", peer=_peer(session), recipient=mailbox
            )
            return replies.RELAY_DENIED

        envelope.rcpt_tos.append(mailbox)
        envelope.rcpt_options.extend(rcpt_options)

        return replies.RECIPIENT_OK

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Store the message; answer 250 only once it is committed.

        Over LMTP (RFC 2033 4.2) one reply per accepted recipient follows,
        one line each.

        Limitation: aiosmtpd has collected the whole message before this
        is called, each DATA line a bytearray of its own, then joined
        them: for one 25 MB message of 78-octet lines that peaks at about
        4 times the message (tracemalloc: +112 MB for 28.3 MB), above
        what the gateway then adds (the parse: 3.6 times, the message
        included). aiosmtpd offers no hook to spool DATA as it comes,
        and speaking DATA ourselves is the library's work.
        """
        self._in_flight += 1
        self._idle.clear()
        try:
            reply = await self._store(session, envelope)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

        if self.lmtp:
            return "\r\n".join(reply for _ in envelope.rcpt_tos)

        return reply

    async def handle_exception(self, error: Exception) -> str:
        """Answer a fault of ours with 451; the peer never sees its text.

        aiosmtpd calls this for anything a command raised; its own answer
        would be 500 with the exception's text.
        """
        logger.error("smtp.session_failed", error=repr(error))

        return replies.LOCAL_ERROR

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no message is being stored; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False

        return True

    async def _store(self, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail_from = envelope.mail_from or None
        if mail_from == "<>":
            mail_from = None
        log = logger.bind(peer=_peer(session), size=len(content))
        try:
            outcome = await self.ingestor.ingest(
                Delivery(
                    # aiosmtpd holds the content until we answer: our
                    # Received field goes apart, not into a second copy.
                    raw=content,
                    trace=self._received(session, envelope),
                    mailboxes=distinct_mailboxes(envelope.rcpt_tos),
                    source="lmtp" if self.lmtp else "smtp",
                    mail_from=mail_from,
                    peer=_peer(session),
                )
            )
        except StoreUnavailable:
            log.warning("smtp.message_deferred", reason="store unavailable")
            return replies.STORE_UNAVAILABLE
        except Exception as error:
            log.error("smtp.message_deferred", error=repr(error))
            return replies.LOCAL_ERROR

        log.debug(
            "smtp.message_stored",
            result=outcome.result,
            event_id=outcome.event_id,
        )

        return replies.ACCEPTED

    def _received(self, session: Session, envelope: Envelope) -> bytes:
        """Return the Received trace field we add (RFC 5321 4.4)."""
        protocol = "LMTP" if self.lmtp else "ESMTP"
        if session.ssl is not None:
            protocol += "S"
        if "SMTPUTF8" in envelope.mail_options:
            protocol = "UTF8" + protocol.removeprefix("E")
        helo = session.host_name or "unknown"
        peer = _peer(session) or "unknown"
        field = (
            f"Received: from {helo} ([{peer}])\r\n"
            f"\tby {self.hostname} (mailgate) with {protocol}\r\n"
            f"\tid {uuid.uuid4().hex}; {formatdate(usegmt=True)}\r\n"
        )

        return field.encode("utf-8", errors="replace")


def distinct_mailboxes(rcpt_tos: Iterable[str]) -> tuple[str, ...]:
    """Return the envelope recipients once each, in the order first given.

    ``SUPPORT@example.com`` and ``support@example.com`` are one mailbox
    (the store finds a contact by either spelling): the first spelling
    is kept. The envelope itself keeps every RCPT, as LMTP answers each
    one (RFC 2033 4.2).
    """
    seen: dict[str, str] = {}
    for mailbox in rcpt_tos:
        seen.setdefault(address_key(mailbox).casefold(), mailbox)

    return tuple(seen.values())


def _peer(session: Session) -> str | None:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])

    return None


class _Replies:
    """Mixin: give aiosmtpd's own replies enhanced status codes."""

    async def push(self, status: str) -> None:
        await super().push(replies.enhanced(status))  # type: ignore[misc]


class InboundSMTP(_Replies, SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP server with our reply spellings and line limit."""


class InboundLMTP(_Replies, LMTP):  # type: ignore[misc]
    """aiosmtpd's LMTP server with our reply spellings and line limit."""


@dataclass
class Listener:
    """A running listener: its server socket and handler."""

    server: asyncio.Server
    handler: InboundHandler
    protocol: str

    @property
    def port(self) -> int:
        """Return the port the listener is bound to."""
        return int(self.server.sockets[0].getsockname()[1])


async def start_listener(
    store: Store, settings: SmtpSettings, *, lmtp: bool = False
) -> Listener:
    """Start the SMTP (or LMTP) listener from settings; return it.

    A port of 0 lets the system choose one (see Listener.port).
    """
    hostname = settings.hostname or socket.getfqdn()
    handler = InboundHandler(store, hostname, lmtp=lmtp)
    protocol_class = InboundLMTP if lmtp else InboundSMTP
    # The line limit is read by aiosmtpd from the class when a session
    # starts, so each listener gets its own subclass with our limit.
    session_class = type(
        protocol_class.__name__,
        (protocol_class,),
        {"line_length_limit": settings.max_line_bytes},
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: session_class(
            handler,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="mailgate",
            timeout=settings.timeout_seconds,
            loop=loop,
        ),
        host=settings.host,
        port=settings.lmtp_port if lmtp else settings.port,
    )
    listener = Listener(server, handler, "lmtp" if lmtp else "smtp")
    logger.info(
        "smtp.listening",
        protocol=listener.protocol,
        host=settings.host,
        port=listener.port,
    )

    return listener


async def stop_listener(listener: Listener, grace_seconds: float) -> None:
    """Stop accepting, then wait for messages being stored to finish."""
    listener.server.close()
    if not await listener.handler.wait_idle(grace_seconds):
        logger.warning("smtp.shutdown_incomplete", protocol=listener.protocol)
    logger.info("smtp.stopped", protocol=listener.protocol)
