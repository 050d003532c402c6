"""The ingest path: one inbound message becomes one event, or is set aside.

SMTP, LMTP, IMAP and ``mailgate ingest`` all hand raw octets to
``Ingestor.ingest``. The raw message is written to disk first; then it is
recorded (``gateway.ingest.record``) in a transaction it may share with
messages arriving at the same time, each in its own savepoint, so that
they share one fsync. A message that cannot be understood is kept raw in
the quarantine. Only StoreUnavailable escapes: then nothing is kept and
the sender must retry.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace

import structlog

from gateway.crm.events import AttachmentInfo
from gateway.errors import MailgateError
from gateway.ingest import quarantine
from gateway.ingest.delivery import (
    ACCEPTED,
    BOUNCE,
    DUPLICATE,
    QUARANTINED,
    Delivery,
    Outcome,
)
from gateway.ingest.parse import UnparsableMessage, parse_message
from gateway.ingest.parsed import ParsedMessage
from gateway.ingest.record import NotUnderstood, record_message
from gateway.store import Store, StoreUnavailable
from gateway.store.blobs import sha256_of

__all__ = [
    "ACCEPTED",
    "BOUNCE",
    "DUPLICATE",
    "QUARANTINED",
    "Delivery",
    "Ingestor",
    "Outcome",
    "Turn",
    "may_acknowledge",
]

logger = structlog.get_logger(__name__)


# Parsing is pure Python: in a thread it holds the GIL against the
# store's thread, whose every query then waits. Small messages parse
# faster than that wait on the loop itself; large ones go to a thread.
PARSE_INLINE_BYTES = 64 * 1024


async def _parse(delivery: Delivery) -> ParsedMessage:
    """Parse a message, on the loop if small, else in a thread."""
    if len(delivery.raw) <= PARSE_INLINE_BYTES:
        return parse_message(delivery.raw, trace=delivery.trace)

    return await asyncio.to_thread(
        parse_message, delivery.raw, trace=delivery.trace
    )


class Turn:
    """One message's place in an ordered group of concurrent ingests.

    Messages ingested together (an IMAP batch) reach the store's shared
    transaction in the order of their turns, so that a reply recorded in
    the same group as the message it answers finds it.
    """

    def __init__(self, previous: Turn | None) -> None:
        self._previous = previous
        self._taken = asyncio.Event()

    async def take(self) -> None:
        """Wait for the turns before this one; then let the next go.

        The caller must queue its work before it next yields.
        """
        if self._previous is not None:
            await self._previous._taken.wait()
        self._taken.set()

    def give_up(self) -> None:
        """Let the next turn go without queueing anything."""
        self._taken.set()


class _DryRun(Exception):
    """Raised to roll back a dry run once its outcome is known."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("dry run")
        self.outcome = outcome


class Ingestor:
    """Turns deliveries into events in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ingest(
        self,
        delivery: Delivery,
        *,
        dry_run: bool = False,
        turn: Turn | None = None,
    ) -> Outcome:
        """Store one delivery; return what became of it.

        Raises StoreUnavailable when it could not be kept durably: nothing
        of it is then recorded, and the sender should try again. Given a
        turn, it is recorded after the deliveries of the turns before it.

        Limitation: the raw file, written before the transaction, stays
        on disk when the transaction then fails. It is named by its hash,
        so the retry reuses it; nothing removes the files no row names.
        """
        try:
            return await self._ingest(delivery, dry_run, turn)
        finally:
            if turn is not None:
                turn.give_up()

    async def _ingest(
        self, delivery: Delivery, dry_run: bool, turn: Turn | None
    ) -> Outcome:
        log = logger.bind(
            source=delivery.source, mailboxes=list(delivery.mailboxes)
        )
        raw_sha256 = await self._keep_raw(delivery, dry_run)

        try:
            parsed = await _parse(delivery)
        except UnparsableMessage as error:
            return await self._quarantine(
                delivery, raw_sha256, f"unparsable: {error}", dry_run, log
            )
        except Exception as error:  # a parser fault must not lose mail
            log.error("ingest.parser_failed", error=repr(error))
            return await self._quarantine(
                delivery,
                raw_sha256,
                f"parser failed: {type(error).__name__}",
                dry_run,
                log,
            )

        log = log.bind(message_id=parsed.message_id)
        try:
            attachments = await self._keep_attachments(parsed, dry_run)
            if dry_run:
                async with self.store.transaction() as db:
                    raise _DryRun(
                        await record_message(
                            db, delivery, parsed, raw_sha256, attachments
                        )
                    )
            if turn is not None:
                await turn.take()
            outcome = await self.store.group.run(
                lambda db: record_message(
                    db, delivery, parsed, raw_sha256, attachments
                )
            )
        except _DryRun as finished:
            # A new event's id was only lent by the rolled-back transaction.
            if finished.outcome.result == ACCEPTED:
                return replace(finished.outcome, event_id=None)
            return finished.outcome
        except NotUnderstood as error:
            return await self._quarantine(
                delivery, raw_sha256, str(error), dry_run, log
            )
        except (StoreUnavailable, OSError) as error:
            log.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error
        except MailgateError as error:
            return await self._quarantine(
                delivery, raw_sha256, str(error), dry_run, log
            )
        except Exception as error:  # a fault of ours must not lose mail
            log.error("ingest.record_failed", error=repr(error))
            return await self._quarantine(
                delivery,
                raw_sha256,
                f"recording failed: {type(error).__name__}",
                dry_run,
                log,
            )

        _log_outcome(log, outcome)

        return outcome

    async def _keep_raw(self, delivery: Delivery, dry_run: bool) -> str:
        """Write the raw message to disk (unless dry); return its hash."""
        if dry_run:
            return sha256_of(delivery.trace, delivery.raw)
        try:
            return await self.store.blobs.put(delivery.trace, delivery.raw)
        except OSError as error:
            logger.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error

    async def _keep_attachments(
        self, parsed: ParsedMessage, dry_run: bool
    ) -> list[AttachmentInfo]:
        contents = [attachment.data for attachment in parsed.attachments]
        if dry_run:
            digests = [hashlib.sha256(data).hexdigest() for data in contents]
        elif contents:
            digests = await self.store.blobs.put_many(contents)
        else:
            digests = []

        return [
            AttachmentInfo(
                filename=attachment.filename,
                content_type=attachment.content_type,
                size=attachment.size,
                sha256=digest,
                content_id=attachment.content_id,
                inline=attachment.inline,
            )
            for attachment, digest in zip(
                parsed.attachments, digests, strict=True
            )
        ]

    async def _quarantine(
        self,
        delivery: Delivery,
        raw_sha256: str,
        reason: str,
        dry_run: bool,
        log: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        """Keep a message we cannot understand, raw, for an operator."""
        if dry_run:
            return Outcome(QUARANTINED, reason=reason)
        try:
            held = await self.store.group.run(
                lambda db: quarantine.hold(
                    db,
                    raw_sha256=raw_sha256,
                    reason=reason,
                    source=delivery.source,
                    mailboxes=delivery.mailboxes,
                    mail_from=delivery.mail_from,
                )
            )
        except (StoreUnavailable, OSError) as error:
            log.warning("ingest.store_unavailable", error=str(error))
            raise StoreUnavailable(str(error)) from error

        log.error("ingest.quarantined", quarantine=held, reason=reason)

        return Outcome(QUARANTINED, quarantine_id=held, reason=reason)


def _log_outcome(
    log: structlog.typing.FilteringBoundLogger, outcome: Outcome
) -> None:
    """Log what became of a message: one event, facts only, no body."""
    facts = {
        "event_id": outcome.event_id,
        "direction": outcome.direction,
        "thread_reason": outcome.thread_reason,
        "automatic": outcome.automatic,
    }
    if outcome.result == ACCEPTED:
        log.info("ingest.accepted", **facts)
        if outcome.triage is not None:
            log.warning(
                "ingest.triage",
                event_id=outcome.event_id,
                triage=outcome.triage,
            )
    elif outcome.result == DUPLICATE:
        log.info("ingest.duplicate", **facts)
    elif outcome.result == BOUNCE:
        log.info(
            "ingest.bounce_recorded",
            **facts,
            reported_message_id=outcome.message_id,
            **outcome.details,
        )


def may_acknowledge(outcome: Outcome) -> bool:
    """Return whether an automatic acknowledgement may answer this message.

    Never for automatic mail (RFC 3834 5), delivery reports, redeliveries,
    our own staff's copies or anything not accepted as a new event.
    """
    return (
        outcome.result == ACCEPTED
        and outcome.direction == "incoming"
        and not outcome.automatic
    )
