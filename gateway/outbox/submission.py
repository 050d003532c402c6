"""SMTP submission: our staff send mail through the gateway (RFC 6409).

Staff log in with SMTP AUTH PLAIN or LOGIN (RFC 4954) as one of their
addresses, only over TLS unless the settings let a loopback peer in
without it. The envelope sender and the From field must be addresses of
the person logged in. Each message becomes an outgoing Mail Message of
that person, ``planned`` for a manager to confirm (or ``confirmed`` for
those the settings exempt from review), threaded like inbound mail; the
answer 250 comes only once the event is committed.

Protocol work is aiosmtpd's. Its authenticator is called synchronously,
so it only hands the decoded credentials on; the session class checks
them against the store without blocking the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.addresses import InvalidAddress, normalize_address
from gateway.crm.contacts import find_by_address
from gateway.crm.events import AttachmentInfo
from gateway.crm.passwords import check_password
from gateway.errors import InvalidInput
from gateway.ingest import replies
from gateway.ingest.parse import UnparsableMessage, parse_message
from gateway.outbox.submitted import record_submission
from gateway.settings import SubmissionSettings
from gateway.store import Store, StoreUnavailable

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Login:
    """Who a session logged in as."""

    contact_id: int
    login: str


class SubmissionHandler:
    """aiosmtpd handler: record each message of a logged-in person."""

    def __init__(self, store: Store, settings: SubmissionSettings) -> None:
        self.store = store
        self.settings = settings
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def authenticate(
        self, login: bytes, password: bytes
    ) -> Login | None:
        """Return the person these credentials are of, None if no one's.

        Raises StoreUnavailable when the store cannot be read.
        """
        try:
            name, secret = login.decode(), password.decode()
        except UnicodeDecodeError:
            return None

        async with self.store.reading() as db:
            person = await check_password(db, name, secret)

        return Login(person.id, name) if person is not None else None

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Accept only an envelope sender that is the person's own."""
        login = _login_of(session)
        if login is None:
            return replies.AUTH_REQUIRED

        try:
            owned = await self._owns(login, address)
        except Exception as error:
            logger.error("submission.sender_check_failed", error=repr(error))
            return replies.LOCAL_ERROR
        if not owned:
            logger.warning(
                "submission.sender_refused",
                peer=_peer(session),
                login=login.login,
                mail_from=address,
            )
            return replies.SENDER_NOT_YOURS

        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)

        return replies.SENDER_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept any well-formed recipient: the sender is one of ours."""
        try:
            recipient = normalize_address(address)
        except InvalidAddress:
            return replies.BAD_RECIPIENT

        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)

        return replies.RECIPIENT_OK

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Record the message as an event; answer 250 once committed."""
        login = _login_of(session)
        if login is None:
            return replies.AUTH_REQUIRED

        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._submit(login, session, envelope)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no message is being recorded; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False

        return True

    async def _owns(self, login: Login, address: str) -> bool:
        """Return whether an address is one of the logged-in person's."""
        try:
            normalized = normalize_address(address)
        except InvalidAddress:
            return False

        async with self.store.reading() as db:
            try:
                found = await find_by_address(db, normalized)
            except InvalidInput:
                return False

        return found is not None and found.id == login.contact_id

    async def _submit(
        self, login: Login, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        log = logger.bind(
            peer=_peer(session), login=login.login, size=len(raw)
        )
        try:
            parsed = await asyncio.to_thread(parse_message, raw)
        except UnparsableMessage as error:
            log.warning("submission.unreadable", reason=str(error))
            return replies.UNREADABLE
        except Exception as error:  # our fault: the client keeps it
            log.error("submission.parser_failed", error=repr(error))
            return replies.LOCAL_ERROR

        # A Message-ID the parser made up is not the one the event gets.
        log = log.bind(
            message_id=None
            if parsed.message_id_synthetic
            else parsed.message_id
        )
        try:
            owned = parsed.sender is not None and await self._owns(
                login, parsed.sender.email
            )
        except Exception as error:
            log.error("submission.sender_check_failed", error=repr(error))
            return replies.LOCAL_ERROR
        if not owned:
            log.warning(
                "submission.from_refused",
                from_address=parsed.sender.email if parsed.sender else None,
            )
            return replies.FROM_NOT_YOURS

        try:
            raw_sha256 = await self.store.blobs.put(raw)
            attachments = [
                AttachmentInfo(
                    filename=item.filename,
                    content_type=item.content_type,
                    size=item.size,
                    sha256=await self.store.blobs.put(item.data),
                    content_id=item.content_id,
                    inline=item.inline,
                )
                for item in parsed.attachments
            ]
            async with self.store.transaction() as db:
                event = await record_submission(
                    db,
                    login.contact_id,
                    parsed,
                    envelope.mail_from,
                    envelope.rcpt_tos,
                    raw_sha256,
                    attachments,
                    self.settings.confirm_without_review,
                )
        except (StoreUnavailable, OSError) as error:
            log.warning("submission.store_unavailable", error=str(error))
            return replies.STORE_UNAVAILABLE
        except Exception as error:  # our fault: the client keeps it
            log.error("submission.record_failed", error=repr(error))
            return replies.LOCAL_ERROR

        log.info(
            "submission.accepted",
            event_id=event.id,
            message_id=event.message_id,
            state=event.state,
            causality=event.causality_id,
        )

        return replies.SUBMITTED


def _login_of(session: Session) -> Login | None:
    data = session.auth_data
    if session.authenticated and isinstance(data, Login):
        return data

    return None


def _peer(session: Session) -> str | None:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])

    return None


def _decoded_only(
    server: SMTP,
    session: Session,
    envelope: Envelope,
    mechanism: str,
    auth_data: Any,
) -> AuthResult:
    """aiosmtpd's authenticator: pass the credentials on, unchecked.

    It refuses by itself; SubmissionSMTP turns the refusal into a check.
    """
    return AuthResult(success=False, handled=False, auth_data=auth_data)


class SubmissionSession(Session):
    """aiosmtpd's session, without its deprecated ``login_data`` property.

    aiosmtpd 1.4 itself sets ``login_data`` after each successful AUTH,
    and its property logs "Session.login_data is deprecated" every time;
    we read only ``auth_data``, so here it is a plain attribute.
    """

    login_data: Any = None


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP server that checks logins against the store."""

    allow_plain_loopback = False

    def _create_session(self) -> Session:
        """Give each connection a SubmissionSession.

        Limitation: ``_create_session`` is aiosmtpd's private factory
        (1.4); tests/outbox/test_submission.py checks that a login logs
        no deprecation warning.
        """
        return SubmissionSession(self.loop)

    async def push(self, status: AnyStr) -> None:
        """Send a reply, with our spelling of aiosmtpd's own."""
        text = status if isinstance(status, str) else status.decode()
        await super().push(replies.enhanced(text))

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616 PLAIN, only where a password may be sent."""
        if not await self._may_authenticate():
            return AuthResult(success=False, handled=True)

        return await self._checked(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """The LOGIN mechanism, only where a password may be sent."""
        if not await self._may_authenticate():
            return AuthResult(success=False, handled=True)

        return await self._checked(await super().auth_LOGIN(server, args))

    async def _may_authenticate(self) -> bool:
        """Refuse (538) a password over plain text, but from loopback if let.

        RFC 4954 4: plain-text mechanisms only once the session is
        protected.
        """
        transport = self.transport
        if transport is not None and transport.get_extra_info("ssl_object"):
            return True
        peer = self.session.peer if self.session else None
        if self.allow_plain_loopback and _is_loopback(peer):
            return True

        await self.push(replies.ENCRYPTION_REQUIRED)

        return False

    async def _checked(self, result: AuthResult) -> AuthResult:
        data = result.auth_data
        if result.success or not isinstance(data, LoginPassword):
            return result

        handler: SubmissionHandler = self.event_handler
        assert self.session is not None
        try:
            login = await handler.authenticate(data.login, data.password)
        except Exception as error:
            logger.error("submission.login_check_failed", error=repr(error))
            return AuthResult(
                success=False, handled=False, message=replies.AUTH_UNAVAILABLE
            )
        if login is None:
            logger.warning(
                "submission.login_refused",
                peer=_peer(self.session),
                login=data.login.decode("utf-8", "replace"),
            )
            return AuthResult(
                success=False, handled=False, message=replies.AUTH_FAILED
            )

        logger.info(
            "submission.logged_in", peer=_peer(self.session), login=login.login
        )

        return AuthResult(success=True, auth_data=login)


def _is_loopback(peer: Any) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False


@dataclass
class SubmissionListener:
    """A running submission listener: its server socket and handler."""

    server: asyncio.Server
    handler: SubmissionHandler
    protocol: str = "submission"

    @property
    def port(self) -> int:
        """Return the port the listener is bound to."""
        return int(self.server.sockets[0].getsockname()[1])


async def start_submission(
    store: Store, settings: SubmissionSettings
) -> SubmissionListener:
    """Start the submission listener from settings; return it.

    A port of 0 lets the system choose one. Raises OSError when the port
    or the TLS certificate cannot be had.
    """
    hostname = settings.hostname or socket.getfqdn()
    handler = SubmissionHandler(store, settings)
    context = _tls_context(settings)
    if context is None and not settings.allow_plain_loopback:
        logger.warning(
            "submission.login_impossible",
            reason="no TLS certificate and no plain loopback logins",
        )
    # aiosmtpd reads the line limit from the class when a session starts.
    session_class = type(
        SubmissionSMTP.__name__,
        (SubmissionSMTP,),
        {
            "line_length_limit": settings.max_line_bytes,
            "allow_plain_loopback": settings.allow_plain_loopback,
        },
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
            tls_context=None if settings.implicit_tls else context,
            auth_require_tls=False,
            authenticator=_decoded_only,
            loop=loop,
        ),
        host=settings.host,
        port=settings.port,
        ssl=context if settings.implicit_tls else None,
    )
    listener = SubmissionListener(server, handler)
    logger.info(
        "submission.listening",
        host=settings.host,
        port=listener.port,
        tls="implicit"
        if settings.implicit_tls
        else ("starttls" if context else "none"),
    )

    return listener


async def stop_submission(
    listener: SubmissionListener, grace_seconds: float
) -> None:
    """Stop accepting, then wait for messages being recorded to finish."""
    listener.server.close()
    if not await listener.handler.wait_idle(grace_seconds):
        logger.warning("submission.shutdown_incomplete")
    logger.info("submission.stopped")


def _tls_context(settings: SubmissionSettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)

    return context
