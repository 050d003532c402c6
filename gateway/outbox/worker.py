"""The outbox worker: confirmed Mail Messages go to the smart host, once.

Each batch claims the due events with a lease in one transaction, then
sends them over one connection to the smart host, and commits each
outcome as soon as the smart host has answered: ``sent`` with its reply,
or the recipients deferred (4xx, no connection: retried later, waiting
longer each time) or bounced (5xx: final). Only ``confirmed`` events are
ever claimed, so a planned one is never sent.

Limitation: a worker that stops between the smart host's acceptance and
the commit of ``sent`` (a crash, or a reply lost to a timeout) leaves the
message to be sent again once its lease runs out, with the same
Message-ID; that retry is logged as ``outbox.possible_duplicate``. Closing
that window needs the smart host's cooperation, which SMTP does not give.
Limitation: a manager who cancels an event while it is being sent does
not stop that send; the event stays cancelled, and only its recipients'
statuses tell that it went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import aiosmtplib
import structlog
from tenacity import RetryCallState, Retrying, wait_exponential, wait_random

from gateway.crm.events import get_event
from gateway.outbox import queue
from gateway.outbox.queue import (
    BOUNCED,
    DEFERRED,
    SENT,
    Attempt,
    Claim,
    RecipientResult,
)
from gateway.outbox.render import OutgoingMail, render_event
from gateway.settings import OutboxSettings
from gateway.store import Store

logger = structlog.get_logger(__name__)

# Called at named moments of a send ("claimed", "answered", "committed")
# with the event's id; tests use it to stop a worker at a precise point.
Checkpoint = Callable[[str, int], Awaitable[None]]


@dataclass
class BatchReport:
    """How many events one batch claimed, and what became of them."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    released: int = 0

    def count(self, attempt: Attempt) -> None:
        """Add one attempt's outcome."""
        if attempt.result == SENT:
            self.sent += 1
        elif attempt.result == DEFERRED:
            self.deferred += 1
        elif attempt.result == queue.FAILED:
            self.failed += 1


class Outbox:
    """Delivers the store's confirmed outgoing mail to the smart host."""

    def __init__(
        self,
        store: Store,
        settings: OutboxSettings,
        *,
        owner: str | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._checkpoint = checkpoint
        self._wait = wait_exponential(
            multiplier=settings.retry_initial_seconds,
            max=settings.retry_max_seconds,
        ) + wait_random(0, settings.retry_jitter_seconds)
        self._stopping = asyncio.Event()

    def retry_delay(self, attempts: int) -> float:
        """Return the seconds to wait after ``attempts`` failed attempts."""
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = attempts

        return float(self._wait(state))

    def stop(self) -> None:
        """Ask the worker to stop after the message it is sending."""
        self._stopping.set()

    async def run(self) -> None:
        """Send due mail until stopped; a failed batch is logged only."""
        logger.info(
            "outbox.started",
            owner=self.owner,
            smart_host=self.settings.smart_host,
            port=self.settings.server_port,
        )
        while not self._stopping.is_set():
            try:
                report = await self.run_batch()
            except Exception as error:  # the worker outlives a bad batch
                logger.error("outbox.batch_failed", error=repr(error))
                report = BatchReport()
            if report.claimed >= self.settings.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self.settings.poll_interval_seconds
                )
        logger.info("outbox.stopped", owner=self.owner)

    async def run_batch(
        self, event_ids: Collection[int] | None = None
    ) -> BatchReport:
        """Claim the due events (some of event_ids if given) and send them.

        Raises StoreUnavailable when the store cannot be written.
        """
        async with self.store.transaction() as db:
            claims = await queue.claim(
                db,
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                limit=self.settings.batch_size,
                event_ids=event_ids,
            )
        report = BatchReport(claimed=len(claims))
        for item in claims:
            if item.abandoned_by is not None:
                logger.warning(
                    "outbox.possible_duplicate",
                    event_id=item.event_id,
                    message_id=item.message_id,
                    previous_owner=item.abandoned_by,
                )

        remaining = list(claims)
        client: aiosmtplib.SMTP | None = None
        try:
            while remaining and not self._stopping.is_set():
                if client is None or not client.is_connected:
                    client = await self._connect(remaining, report)
                    if client is None:
                        remaining = []
                        break
                report.count(await self._deliver(client, remaining.pop(0)))
        except BaseException:
            # Cancelled or failed mid-send: drop the connection at once (a
            # polite QUIT would wait for the answer still owed to us).
            if client is not None:
                client.close()
            raise
        finally:
            if remaining:
                await self._release(remaining)
                report.released = len(remaining)

        if client is not None and client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()

        return report

    async def _connect(
        self, claims: list[Claim], report: BatchReport
    ) -> aiosmtplib.SMTP | None:
        """Open the batch's connection; defer every claim if it fails."""
        client = self._client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            reason = f"cannot reach the smart host: {_describe(error)}"
            logger.warning(
                "outbox.smart_host_unreachable",
                smart_host=self.settings.smart_host,
                port=self.settings.server_port,
                error=_describe(error),
            )
            for item in claims:
                report.count(await self._defer(item, reason))
            return None

        return client

    def _client(self) -> aiosmtplib.SMTP:
        settings = self.settings
        context = None
        if settings.tls_ca_file is not None:
            context = ssl.create_default_context(
                cafile=str(settings.tls_ca_file)
            )

        return aiosmtplib.SMTP(
            hostname=settings.smart_host,
            port=settings.server_port,
            username=settings.username or None,
            password=(
                settings.password.get_secret_value()
                if settings.password is not None
                else None
            ),
            local_hostname=settings.hostname or None,
            timeout=settings.timeout_seconds,
            use_tls=settings.tls == "implicit",
            start_tls=settings.tls == "starttls",
            tls_context=context,
        )

    async def _deliver(self, client: aiosmtplib.SMTP, item: Claim) -> Attempt:
        """Send one claimed event and record what the smart host said."""
        log = logger.bind(event_id=item.event_id, message_id=item.message_id)
        lease = self.settings.lease_seconds
        try:
            async with self.store.reading() as db:
                held, spare = await queue.still_held(
                    db, item.event_id, self.owner, lease
                )
                if held and not spare:
                    held = await self._renew(item)
                if not held:
                    log.info("outbox.not_held")
                    return Attempt(queue.LOST, 0)
                event = item.event or await get_event(db, item.event_id)
                pending = list(item.pending)
                mail = await render_event(
                    db,
                    self.store.blobs,
                    event,
                    bounce_domain=self.settings.bounce_domain,
                    rcpt_tos=pending,
                )
        except OSError as error:
            log.error("outbox.render_failed", error=_describe(error))
            return await self._defer(
                item, f"cannot render the message: {_describe(error)}"
            )
        await self._reached("claimed", item.event_id)

        results, reply = await _send(client, mail, pending)
        await self._reached("answered", item.event_id)

        async with self.store.transaction() as db:
            attempt = await queue.record(
                db,
                item.event_id,
                self.owner,
                results,
                reply,
                max_attempts=self.settings.max_attempts,
                retry_delay=self.retry_delay,
            )
        _log_attempt(log, attempt, reply)
        await self._reached("committed", item.event_id)

        return attempt

    async def _renew(self, item: Claim) -> bool:
        """Extend the lease on a claimed event; False if no longer held."""
        async with self.store.transaction() as db:
            return await queue.renew(
                db, item.event_id, self.owner, self.settings.lease_seconds
            )

    async def _defer(self, item: Claim, reason: str) -> Attempt:
        """Record a failed attempt at every recipient still to send to."""
        async with self.store.transaction() as db:
            pending = await queue.pending_recipients(db, item.event_id)
            attempt = await queue.record(
                db,
                item.event_id,
                self.owner,
                [RecipientResult(a, DEFERRED, reason) for a in pending],
                reason,
                max_attempts=self.settings.max_attempts,
                retry_delay=self.retry_delay,
            )
        log = logger.bind(event_id=item.event_id, message_id=item.message_id)
        _log_attempt(log, attempt, reason)

        return attempt

    async def _release(self, claims: list[Claim]) -> None:
        async with self.store.transaction() as db:
            await queue.release(
                db, [item.event_id for item in claims], self.owner
            )

    async def _reached(self, moment: str, event_id: int) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(moment, event_id)


async def _send(
    client: aiosmtplib.SMTP, mail: OutgoingMail, pending: list[str]
) -> tuple[list[RecipientResult], str]:
    """Run one mail transaction; return each recipient's result and reply.

    ``pending`` holds the recipients as stored, in the order of the
    envelope's (wire) addresses.
    """
    stored = dict(zip(mail.rcpt_tos, pending, strict=True))
    try:
        if not client.esmtp_extensions:
            # Learn the extensions; sendmail falls back to HELO by itself.
            with contextlib.suppress(aiosmtplib.SMTPHeloError):
                await client.ehlo()
        # RFC 6152: BODY=8BITMIME only to a server that offers it; one that
        # does not would refuse the parameter for good.
        options = [
            option
            for option in mail.mail_options
            if option != "BODY=8BITMIME"
            or client.supports_extension("8bitmime")
        ]
        refused, message = await client.sendmail(
            mail.mail_from,
            list(mail.rcpt_tos),
            mail.message,
            mail_options=options,
        )
    except aiosmtplib.SMTPRecipientsRefused as error:
        results = [
            RecipientResult(
                stored.get(each.recipient, each.recipient),
                _status(each.code),
                f"{each.code} {each.message}",
            )
            for each in error.recipients
        ]
        return results, "every recipient refused"
    except aiosmtplib.SMTPResponseException as error:
        reply = f"{error.code} {error.message}"
        status = _status(error.code)
        return [RecipientResult(a, status, reply) for a in pending], reply
    except (aiosmtplib.SMTPNotSupported, ValueError) as error:
        # No smart host will take it as it is (SMTPUTF8, a bad address).
        reply = f"not sendable: {_describe(error)}"
        return [RecipientResult(a, BOUNCED, reply) for a in pending], reply
    except (aiosmtplib.SMTPException, OSError) as error:
        reply = f"connection failed: {_describe(error)}"
        client.close()
        return [RecipientResult(a, DEFERRED, reply) for a in pending], reply

    reply = f"250 {message}"
    results = []
    for wire, address in stored.items():
        if wire in refused:
            answer = refused[wire]
            results.append(
                RecipientResult(
                    address,
                    _status(answer.code),
                    f"{answer.code} {answer.message}",
                )
            )
        else:
            results.append(RecipientResult(address, SENT, reply))

    return results, reply


def _status(code: int) -> str:
    """Return a recipient's status after a refusal (RFC 5321 4.2.1)."""
    return BOUNCED if code >= 500 else DEFERRED


def _describe(error: BaseException) -> str:
    text = str(error).strip()

    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _log_attempt(
    log: structlog.typing.FilteringBoundLogger, attempt: Attempt, reply: str
) -> None:
    if attempt.result == SENT:
        log.info("outbox.sent", attempts=attempt.attempts, reply=reply)
    elif attempt.result == DEFERRED:
        log.warning(
            "outbox.deferred",
            attempts=attempt.attempts,
            next_attempt_at=attempt.next_attempt_at,
            reply=reply,
        )
    elif attempt.result == queue.FAILED:
        log.error(
            "outbox.failed", attempts=attempt.attempts, failure=attempt.failure
        )
    else:
        log.warning("outbox.lease_lost", attempts=attempt.attempts)
