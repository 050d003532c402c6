"""The outbox worker: confirmed Mail Messages go to the smart host, once.

Each batch claims the due events with a lease in one transaction, then
sends them over one connection to the smart host, which the next batch
takes over when the batch was full (more mail is likely waiting). A
connection the smart host ended meanwhile is opened anew. What the smart host
answered (``sent`` with its reply, or the recipients deferred: 4xx, no
connection, retried later, waiting longer each time, failed once
``max_attempts`` are used up; or bounced: 5xx, final) is committed at
once, while the next message is already on its way: the commit runs
beside the send, and answers that come while a commit is under way go
in the next one, as soon as it is done. So each outcome is committed
well before its lease runs out, and no other worker takes the event
meanwhile. While the smart host handles one
message, the next event's lease is checked and its message rendered,
instead of waiting idle for the reply. Only ``confirmed`` events are
ever claimed, so a planned one is never sent.

Limitation: a worker that stops between the smart host's acceptance and
the commit of ``sent`` (a crash, a failed commit, or a reply lost to a
timeout) leaves the message to be sent again once its lease runs out,
with the same Message-ID; that retry is logged as
``outbox.possible_duplicate``. The window is the time of one commit
(milliseconds): the answers that came while the commit before theirs
ran, most often one message; a stop that lets the worker run its
cleanup (shutdown, cancellation) still commits them. Closing the window
needs the smart host's cooperation, which SMTP does not give.
Limitation: a manager who cancels an event while it is being sent (or
while the message before it is, once it is rendered) does not stop that
send; the event stays cancelled, its outcome is not recorded and the
batch ends as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import ssl
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import structlog
from tenacity import RetryCallState, Retrying, wait_exponential, wait_random

from gateway.crm.events import get_event
from gateway.outbox import queue
from gateway.outbox.exchange import describe, send_mail
from gateway.outbox.queue import (
    DEFERRED,
    SENT,
    Attempt,
    Claim,
    RecipientResult,
)
from gateway.outbox.render import OutgoingMail, render_event
from gateway.settings import OutboxSettings
from gateway.store import Store, StoreUnavailable
from workflow import TransitionRefused

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


@dataclass(frozen=True, slots=True)
class Answer:
    """What the smart host said to one claimed event, not yet committed."""

    claim: Claim
    results: list[RecipientResult]
    reply: str


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
        # The connection of a full batch, kept for the next one.
        self._kept: aiosmtplib.SMTP | None = None

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
        try:
            while not self._stopping.is_set():
                try:
                    report = await self.run_batch()
                except Exception as error:  # the worker outlives a bad batch
                    logger.error("outbox.batch_failed", error=repr(error))
                    report = BatchReport()
                if report.claimed >= self.settings.batch_size:
                    continue
                await self.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(),
                        self.settings.poll_interval_seconds,
                    )
        except BaseException:
            # Cancelled: no QUIT, which would wait for the smart host.
            if self._kept is not None:
                self._kept.close()
                self._kept = None
            raise
        await self.close()
        logger.info("outbox.stopped", owner=self.owner)

    async def close(self) -> None:
        """Close the connection kept from a full batch, if there is one."""
        client, self._kept = self._kept, None
        await _quit(client)

    async def run_batch(
        self, event_ids: Collection[int] | None = None
    ) -> BatchReport:
        """Claim the due events (some of event_ids if given) and send them.

        After a full batch, when more is likely due at once, the connection
        is kept for the next batch (``close`` ends it). Raises
        StoreUnavailable when the store cannot be written.
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
        client, self._kept = self._kept, None
        if not claims:
            await _quit(client)
            return report

        for item in claims:
            if item.abandoned_by is not None:
                logger.warning(
                    "outbox.possible_duplicate",
                    event_id=item.event_id,
                    message_id=item.message_id,
                    previous_owner=item.abandoned_by,
                )

        remaining = list(claims)
        answers: list[Answer] = []
        # The next event's lease check and rendering, run while the smart
        # host handles the one before (this process is idle meanwhile).
        ahead: asyncio.Task[Attempt | OutgoingMail] | None = None
        # The commit of the answers so far, run beside the next send.
        recording: asyncio.Task[None] | None = None
        try:
            while remaining and not self._stopping.is_set():
                recording = self._recording(recording, answers, report)
                if client is None or not client.is_connected:
                    # Prepared for a connection that is gone: done again.
                    await _cancelled(ahead)
                    ahead = None
                    client = await self._connect(remaining, report)
                    if client is None:
                        remaining = []
                        break
                item = remaining.pop(0)
                prepared = await (ahead or self._prepare(item))
                ahead = None
                if not isinstance(prepared, OutgoingMail):
                    report.count(prepared)
                    continue
                if remaining and not self._stopping.is_set():
                    ahead = asyncio.create_task(self._prepare(remaining[0]))
                answers.append(await self._transmit(client, item, prepared))
                recording = self._recording(recording, answers, report)
        except BaseException:
            # Cancelled or failed mid-send: drop the connection at once (a
            # polite QUIT would wait for the answer still owed to us).
            if client is not None:
                client.close()
            raise
        finally:
            try:
                # Prepared but not sent: its claim is released below.
                await _cancelled(ahead)
                # Even when cancelled: these were answered before the send
                # that was interrupted, and would otherwise go out again.
                try:
                    if recording is not None:
                        await asyncio.shield(recording)
                finally:
                    await self._record(answers, report)
            finally:
                if remaining:
                    await self._release(remaining)
                    report.released = len(remaining)

        if report.claimed >= self.settings.batch_size and (
            not self._stopping.is_set()
        ):
            self._kept = client
        else:
            await _quit(client)

        return report

    async def _connect(
        self, claims: list[Claim], report: BatchReport
    ) -> aiosmtplib.SMTP | None:
        """Open the batch's connection; defer every claim if it fails."""
        client = self._client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            reason = f"cannot reach the smart host: {describe(error)}"
            logger.warning(
                "outbox.smart_host_unreachable",
                smart_host=self.settings.smart_host,
                port=self.settings.server_port,
                error=describe(error),
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

    async def _prepare(self, item: Claim) -> Attempt | OutgoingMail:
        """Check that the event is still held, and render its message.

        An event no longer held, or that cannot be rendered, is not to be
        sent: that attempt is returned instead, recorded already. Whatever
        fails while one event's message is made (a field the email
        package refuses, such as a title holding a line break, a kept
        file that cannot be read, a bad address) is that event's own
        final failure, never the batch's: retrying would fail the same
        way. The store's own errors still end the batch.
        """
        lease = self.settings.lease_seconds
        async with self.store.reading() as db:
            held, spare = await queue.still_held(
                db, item.event_id, self.owner, lease
            )
            if held and not spare:
                held = await self._renew(item)
            if not held:
                logger.info(
                    "outbox.not_held",
                    event_id=item.event_id,
                    message_id=item.message_id,
                )
                return Attempt(queue.LOST, 0)
            # Run ahead of a send, this lets the smart host's reply be
            # handled between the check and the rendering, not after
            # both (the snapshot is kept meanwhile).
            await asyncio.sleep(0)
            try:
                event = item.event or await get_event(db, item.event_id)
                mail = await render_event(
                    db,
                    self.store.blobs,
                    event,
                    bounce_domain=self.settings.bounce_domain,
                    rcpt_tos=item.pending,
                )
            except (sqlite3.Error, StoreUnavailable):
                raise
            except Exception as error:  # this event's, not the batch's
                failure: Exception | None = error
            else:
                failure = None
        if failure is not None:
            logger.error(
                "outbox.render_failed",
                event_id=item.event_id,
                message_id=item.message_id,
                error=describe(failure),
            )
            return await self._give_up(
                item, f"cannot render the message: {describe(failure)}"
            )
        await self._reached("claimed", item.event_id)

        return mail

    async def _transmit(
        self, client: aiosmtplib.SMTP, item: Claim, mail: OutgoingMail
    ) -> Answer:
        """Send one rendered message; return what the smart host said.

        The answer is left for ``_record`` to commit.
        """
        results, reply = await send_mail(client, mail, item.pending)
        await self._reached("answered", item.event_id)

        return Answer(item, results, reply)

    def _recording(
        self,
        recording: asyncio.Task[None] | None,
        answers: list[Answer],
        report: BatchReport,
    ) -> asyncio.Task[None] | None:
        """Start committing the waiting answers unless a commit runs.

        Returns the commit under way, if any. A commit that failed
        raises its error here (StoreUnavailable, TransitionRefused),
        ending the batch as it would have inline.
        """
        if recording is not None:
            if not recording.done():
                return recording
            recording.result()
        if not answers:
            return None

        return asyncio.create_task(self._record(answers, report))

    async def _record(
        self, answers: list[Answer], report: BatchReport
    ) -> None:
        """Commit the outcomes of answered sends together; empty the list.

        Each outcome is kept apart in a savepoint: one that is refused
        (the event was cancelled while it was being sent) is not recorded,
        while the others are committed; its TransitionRefused is raised
        afterwards, as a failed batch. Raises StoreUnavailable, recording
        none of them, when the store cannot be written.
        """
        group = list(answers)
        answers.clear()
        if not group:
            return

        attempts: list[tuple[Answer, Attempt]] = []
        refused: TransitionRefused | None = None
        async with self.store.transaction() as db:
            for answer in group:
                await db.execute("SAVEPOINT outcome")
                try:
                    attempt = await queue.record(
                        db,
                        answer.claim.event_id,
                        self.owner,
                        answer.results,
                        answer.reply,
                        max_attempts=self.settings.max_attempts,
                        retry_delay=self.retry_delay,
                        event=answer.claim.event,
                    )
                except TransitionRefused as error:
                    await db.execute("ROLLBACK TO outcome")
                    refused = refused or error
                else:
                    attempts.append((answer, attempt))
                await db.execute("RELEASE outcome")

        for answer, attempt in attempts:
            item = answer.claim
            log = logger.bind(
                event_id=item.event_id, message_id=item.message_id
            )
            _log_attempt(log, attempt, answer.reply)
            report.count(attempt)
            await self._reached("committed", item.event_id)
        if refused is not None:
            raise refused

    async def _renew(self, item: Claim) -> bool:
        """Extend the lease on a claimed event; False if no longer held."""
        async with self.store.transaction() as db:
            return await queue.renew(
                db, item.event_id, self.owner, self.settings.lease_seconds
            )

    async def _defer(self, item: Claim, reason: str) -> Attempt:
        """Record a failed attempt at every recipient still to send to."""
        return await self._record_all(item, DEFERRED, reason)

    async def _give_up(self, item: Claim, reason: str) -> Attempt:
        """Record every recipient still to send to as failed, for good."""
        return await self._record_all(item, queue.FAILED, reason)

    async def _record_all(
        self, item: Claim, status: str, reason: str
    ) -> Attempt:
        """Record one status for every recipient still to send to."""
        async with self.store.transaction() as db:
            pending = await queue.pending_recipients(db, item.event_id)
            attempt = await queue.record(
                db,
                item.event_id,
                self.owner,
                [RecipientResult(a, status, reason) for a in pending],
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


async def _quit(client: aiosmtplib.SMTP | None) -> None:
    """End a connection to the smart host politely, if it is still up."""
    if client is not None and client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()


async def _cancelled(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task and wait for it to end, whatever its outcome."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
