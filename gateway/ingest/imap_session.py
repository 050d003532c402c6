"""An IMAP session: one logged-in connection with one folder selected.

The protocol is aioimaplib's; this module opens the connection (implicit
TLS, STARTTLS or none), checks every answer, and turns answers into UIDs
and raw messages. A broken connection, a timeout or a server that refuses
a command raises an ImapError; the session is then of no further use.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import aioimaplib
import structlog

from gateway.ingest.imap_responses import (
    Fetched,
    Lines,
    fetched,
    response_text,
    search_results,
    tells_of_new_mail,
    trouble,
    uid_set,
    uid_validity,
)
from gateway.settings import ImapMailboxSettings, SettingsError

logger = structlog.get_logger(__name__)

T = TypeVar("T")

OK = "OK"


class ImapError(Exception):
    """The session cannot go on: connection lost, timeout or refusal."""


class ConnectionLost(ImapError):
    """The connection broke or the server stopped answering."""


class CommandRefused(ImapError):
    """The server answered NO or BAD to a command."""


class FolderInDoubt(ImapError):
    """The server warned about the selected folder (deleted, renewed...)."""


class _Stopped(Exception):
    """The wait was ended by the caller, not by the server."""


class ImapSession:
    """One connection to the server of a mailbox, its folder selected."""

    def __init__(self, settings: ImapMailboxSettings) -> None:
        self.settings = settings
        self.uid_validity = 0
        self._client: Any = None
        self._lost = asyncio.Event()
        self._idle: asyncio.Future[Any] | None = None

    @property
    def server(self) -> str:
        """Return the account and folder, for logs and the saved place."""
        settings = self.settings
        return (
            f"{settings.user}@{settings.host}:{settings.server_port}"
            f"/{settings.folder}"
        )

    @property
    def idle_supported(self) -> bool:
        """Return whether the server offers IDLE (RFC 2177)."""
        return self._capable("IDLE")

    async def open(self) -> None:
        """Connect, secure, log in and select the folder.

        Raises ImapError; SettingsError when the password cannot be read.

        Limitation: only LOGIN with a password is spoken. AUTHENTICATE
        (OAuth2 for hosted mail, where LOGIN is often disabled) is
        deferred: it needs a token refresh flow of its own.
        """
        settings = self.settings
        context = self._tls_context() if settings.tls != "none" else None
        self._client = aioimaplib.IMAP4(
            host=settings.host,
            port=settings.server_port,
            timeout=settings.timeout_seconds,
            conn_lost_cb=self._connection_lost,
            ssl_context=context if settings.tls == "implicit" else None,
        )
        await self._guard(self._client.wait_hello_from_server())
        _keep_alive(self._client.protocol.transport)

        if settings.tls == "starttls":
            assert context is not None
            await self._start_tls(context)

        password = settings.read_password()
        response = await self._guard(
            self._client.login(settings.user, password)
        )
        if response.result != OK:
            raise CommandRefused(
                f"login as {settings.user} refused: {response_text(response)}"
            )

        response = await self._guard(
            self._client.select(aioimaplib.quoted(settings.folder))
        )
        if response.result != OK:
            raise CommandRefused(
                f"cannot select {settings.folder}: {response_text(response)}"
            )
        validity = uid_validity(response.lines)
        if validity is None:
            raise CommandRefused("the server gave no UIDVALIDITY on SELECT")
        self.uid_validity = validity
        logger.debug(
            "imap.selected",
            server=self.server,
            uid_validity=self.uid_validity,
            capabilities=sorted(self._client.protocol.capabilities),
        )

    async def uids_after(self, uid: int) -> list[int]:
        """Return the UIDs above ``uid`` in the folder, ascending."""
        response = await self._command(
            self._client.uid_search("UID", f"{uid + 1}:*", charset=None),
            "UID SEARCH",
        )

        # RFC 3501 6.4.8: "n:*" always names the highest UID, even below n.
        found = search_results(response.lines)

        return sorted(number for number in found if number > uid)

    async def uids_among(self, uids: Sequence[int]) -> list[int]:
        """Return which of these UIDs are still in the folder."""
        response = await self._command(
            self._client.uid_search("UID", uid_set(uids), charset=None),
            "UID SEARCH",
        )

        return sorted(set(search_results(response.lines)) & set(uids))

    async def fetch(self, uids: Sequence[int]) -> list[Fetched]:
        """Return the whole messages of these UIDs, not marking them seen.

        A UID that is no longer in the folder is missing from the result.
        """
        return await self._fetch(uids, "BODY.PEEK[]")

    async def fetch_headers(
        self, uids: Sequence[int], names: Iterable[str]
    ) -> list[Fetched]:
        """Return some header fields of these messages, not marking them."""
        fields = " ".join(name.upper() for name in names)

        return await self._fetch(uids, f"BODY.PEEK[HEADER.FIELDS ({fields})]")

    async def flag_seen(self, uids: Sequence[int]) -> None:
        """Flag these messages \\Seen."""
        await self._command(
            self._client.uid(
                "store", uid_set(uids), "+FLAGS.SILENT", r"(\Seen)"
            ),
            "UID STORE",
        )

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """Move these messages to another folder, creating it if need be.

        Uses MOVE (RFC 6851) when offered, else COPY, \\Deleted and
        EXPUNGE.
        """
        try:
            await self._move(uids, folder)
        except CommandRefused as error:
            # RFC 3501 7.1: TRYCREATE says the target folder is missing.
            if "TRYCREATE" not in str(error):
                raise
            await self._command(
                self._client.create(aioimaplib.quoted(folder)), "CREATE"
            )
            logger.info("imap.folder_created", folder=folder)
            await self._move(uids, folder)

    async def delete(self, uids: Sequence[int]) -> None:
        """Delete these messages: flag them \\Deleted and expunge them.

        Limitation: without UIDPLUS (RFC 4315) there is no expunge of
        chosen UIDs, and a plain EXPUNGE would also remove messages that
        a person flagged \\Deleted; the messages are then only flagged,
        for the person's client to expunge.
        """
        await self._command(
            self._client.uid(
                "store", uid_set(uids), "+FLAGS.SILENT", r"(\Deleted)"
            ),
            "UID STORE",
        )
        if self._capable("UIDPLUS"):
            await self._command(
                self._client.uid("expunge", uid_set(uids)), "UID EXPUNGE"
            )
        else:
            logger.warning("imap.expunge_skipped", uids=len(uids))

    async def wait_for_mail(
        self, renew_seconds: float, stopping: asyncio.Event
    ) -> None:
        """IDLE until the server tells of new mail, for renew_seconds at most.

        Returns early once ``stopping`` is set. Keep-alive notes from the
        server ("OK Still here") do not end the wait.
        """
        client = self._client
        self._idle = await self._guard(client.idle_start(renew_seconds))
        logger.debug("imap.idling", renew_seconds=renew_seconds)

        while True:
            try:
                push = await self._guard(
                    client.wait_server_push(renew_seconds + 60),
                    until=stopping,
                )
            except _Stopped:
                break
            if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                break
            _raise_on_trouble(push)
            if tells_of_new_mail(push):
                break

        await self._end_idle()

    async def noop(self) -> None:
        """Send NOOP, which lets the server report changes.

        Raises FolderInDoubt when it reports trouble with the folder.
        """
        response = await self._command(self._client.noop(), "NOOP")
        _raise_on_trouble(response.lines[:-1])

    async def close(self) -> None:
        """Leave IDLE, log out and close the connection; never raises."""
        if self._client is None:
            return
        try:
            if not self._lost.is_set():
                await self._end_idle()
                await asyncio.wait_for(self._client.logout(), 2)
        except (
            ImapError,
            aioimaplib.AioImapException,
            OSError,
            TimeoutError,
        ):
            pass
        finally:
            transport = self._client.protocol.transport
            if transport is not None:
                transport.close()
            self._client = None

    def _tls_context(self) -> ssl.SSLContext:
        """Return the context that checks the server's certificate."""
        ca_file = self.settings.tls_ca_file
        try:
            return ssl.create_default_context(
                cafile=str(ca_file) if ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as error:
            raise SettingsError(
                f"imap mailbox {self.settings.name}: cannot read "
                f"tls_ca_file {ca_file}: {error}"
            ) from None

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrade the connection with STARTTLS (RFC 3501 6.2.1).

        Limitation: aioimaplib has no STARTTLS command (issue 1 of
        iroco-co/aioimaplib); its own command runner sends it and asyncio
        upgrades the transport under aioimaplib's protocol.
        """
        protocol = self._client.protocol
        if not self._capable("STARTTLS"):
            raise CommandRefused("the server does not offer STARTTLS")
        response = await self._guard(
            protocol.execute(
                aioimaplib.Command(
                    "STARTTLS", protocol.new_tag(), loop=protocol.loop
                )
            )
        )
        if response.result != OK:
            raise CommandRefused(
                f"STARTTLS refused: {response_text(response)}"
            )

        loop = asyncio.get_running_loop()
        protocol.transport = await self._guard(
            loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=self.settings.host,
            )
        )
        # RFC 3501 6.2.1: capabilities learnt before TLS are discarded.
        await self._guard(protocol.capability())

    async def _fetch(self, uids: Sequence[int], item: str) -> list[Fetched]:
        if not uids:
            return []
        # No overall limit: a batch of large messages may take long;
        # aioimaplib's own timeout restarts with every chunk received.
        response = await self._command(
            self._client.uid("fetch", uid_set(uids), f"(UID {item})"),
            "UID FETCH",
            partial=True,
            patient=True,
        )

        return fetched(response.lines)

    async def _move(self, uids: Sequence[int], folder: str) -> None:
        target = aioimaplib.quoted(folder)
        if self._capable("MOVE"):
            await self._command(
                self._client.uid("move", uid_set(uids), target), "UID MOVE"
            )
            return

        await self._command(
            self._client.uid("copy", uid_set(uids), target), "UID COPY"
        )
        await self.delete(uids)

    async def _end_idle(self) -> None:
        """Send DONE if IDLE is running and wait for its completion."""
        idle, self._idle = self._idle, None
        if idle is None:
            return
        if self._client.has_pending_idle():
            self._client.idle_done()
        response = await self._guard(idle)
        if response is not None and response.result != OK:
            raise CommandRefused(
                f"IDLE ended badly: {response_text(response)}"
            )

    async def _command(
        self,
        operation: Awaitable[Any],
        name: str,
        *,
        partial: bool = False,
        patient: bool = False,
    ) -> Any:
        """Run one command; CommandRefused unless the server says OK.

        With ``partial``, a NO still returns what the server sent (RFC
        3501 7.4.2: a FETCH may answer for some messages only). With
        ``patient``, only aioimaplib's inactivity timeout applies.
        """
        response = await self._guard(operation, patient=patient)
        if response.result == OK or (partial and response.result == "NO"):
            return response

        raise CommandRefused(
            f"{name}: {response.result} {response_text(response)}"
        )

    async def _guard(
        self,
        operation: Awaitable[T],
        *,
        until: asyncio.Event | None = None,
        patient: bool = False,
    ) -> T:
        """Await operation unless the connection is lost or it times out.

        With ``until``, there is no time limit, and _Stopped is raised
        when that event is set first; ``patient`` also lifts the limit.
        aioimaplib does not fail pending commands when the connection
        drops, hence the race.
        """
        task = asyncio.ensure_future(operation)
        lost = asyncio.ensure_future(self._lost.wait())
        waiters: set[asyncio.Future[Any]] = {task, lost}
        stop = asyncio.ensure_future(until.wait()) if until else None
        if stop is not None:
            waiters.add(stop)
        try:
            done, _ = await asyncio.wait(
                waiters,
                timeout=None
                if until or patient
                else self.settings.timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters - {task}:
                waiter.cancel()

        if task in done:
            try:
                return task.result()
            except (aioimaplib.AioImapException, OSError) as error:
                raise ConnectionLost(_describe(error)) from error
            except TimeoutError as error:
                raise ConnectionLost("the server stopped answering") from error

        task.cancel()
        if stop is not None and stop in done:
            raise _Stopped()
        if lost in done:
            raise ConnectionLost("the server closed the connection")

        raise ConnectionLost(
            f"no answer within {self.settings.timeout_seconds} seconds"
        )

    def _connection_lost(self, error: Exception | None) -> None:
        self._lost.set()

    def _capable(self, capability: str) -> bool:
        return self._client is not None and bool(
            self._client.has_capability(capability)
        )


def _keep_alive(transport: Any) -> None:
    """Have the system probe an idle connection, to notice a dead peer.

    An IDLE connection carries nothing for minutes: without probes, a
    peer that vanished (no FIN) is only noticed when IDLE is renewed.
    """
    connection = transport.get_extra_info("socket") if transport else None
    if connection is None:
        return
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux: first probe after 60 s of silence, then 5 probes 10 s apart.
    for option, value in (
        ("TCP_KEEPIDLE", 60),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 5),
    ):
        if hasattr(socket, option):
            connection.setsockopt(
                socket.IPPROTO_TCP, getattr(socket, option), value
            )


def _raise_on_trouble(lines: Lines) -> None:
    """Raise FolderInDoubt if an untagged line warns about the folder."""
    warning = trouble(lines)
    if warning is not None:
        raise FolderInDoubt(f"the server said: {warning}")


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
