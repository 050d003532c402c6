"""The IMAP poller: takes the mail of one IMAP mailbox into the store.

It asks the folder for the UIDs above its saved place, never for unseen
messages, fetches them in batches without marking them seen, and hands
each to the ingest path, as the SMTP listener does. Only once a message's
event is committed does it act on the server (leave, flag \\Seen, move,
delete), and only after that does its place move past the message. A
crash in between leaves the message where it was; the next run fetches it
again, the ingest path recognises it, and the action is done then.

The next batch is fetched, and starts on its way into the store, while
the one before it is being committed: batches are still acted upon and
passed one after another, in UID order, each only once it is committed.

Between rounds it waits in IDLE (RFC 2177) when the server offers it, else
for the configured poll interval. A lost connection is re-opened with a
doubling wait; the loss is logged once, each failed retry once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from gateway.crm.contacts import our_mailbox
from gateway.ingest.imap_responses import Fetched
from gateway.ingest.imap_session import (
    CommandRefused,
    ImapError,
    ImapSession,
)
from gateway.ingest.imap_state import Place, resume_place, save_place
from gateway.ingest.pipeline import (
    Delivery,
    Ingestor,
    Outcome,
    Turn,
)
from gateway.settings import (
    ImapMailboxSettings,
    ImapSettings,
    SettingsError,
)
from gateway.store import Store, StoreUnavailable

logger = structlog.get_logger(__name__)

SOURCE = "imap"

# Called with a message's UID and outcome once it is committed, before
# the server is told anything (a hook for tests of crashes).
AfterCommit = Callable[[int, Outcome], Awaitable[None]]


class Backoff:
    """Waits that double from one second up to a cap, until reset."""

    def __init__(self, cap_seconds: float) -> None:
        self.cap_seconds = cap_seconds
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; return how long to wait (seconds)."""
        delay = min(self.cap_seconds, 2.0**self.failures)
        self.failures += 1

        return delay

    def reset(self) -> None:
        """Forget the failures: the next wait is one second again."""
        self.failures = 0


class _Unfetchable(Exception):
    """A message still in the folder that the server would not give us."""


class _NotOurs(Exception):
    """The mailbox's address belongs to no organisation of ours."""


@dataclass(slots=True)
class _Batch:
    """A fetched batch on its way into the store."""

    # The UIDs it may pass: up to the first message it could not fetch.
    taken: list[int]
    # Those of them being stored (the others vanished meanwhile).
    fetched: set[int]
    # Why the batch stops before its end, if it does.
    failure: Exception | None
    # The outcome of each message stored, in UID order.
    storing: asyncio.Future[list[Outcome | BaseException]]
    # The turn that the next batch's first message waits for.
    last_turn: Turn | None


class Poller:
    """Follows one configured mailbox until stopped."""

    def __init__(
        self,
        settings: ImapMailboxSettings,
        store: Store,
        *,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ingestor = Ingestor(store)
        self.after_commit = after_commit
        self.log = logger.bind(imap_mailbox=settings.name)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the poller to stop once the message in hand is done."""
        self._stopping.set()

    async def run(self) -> None:
        """Take mail in until stopped, re-connecting whenever needed."""
        backoff = Backoff(self.settings.reconnect_max_seconds)
        lost_at: float | None = None
        connected_once = False

        while not self._stopping.is_set():
            session = ImapSession(self.settings)
            try:
                await session.open()
                if lost_at is not None:
                    self.log.info(
                        "imap.reconnected",
                        attempts=backoff.failures,
                        outage_seconds=round(time.monotonic() - lost_at, 1),
                    )
                else:
                    self.log.info(
                        "imap.connected",
                        server=session.server,
                        idle=session.idle_supported,
                    )
                lost_at = None
                connected_once = True
                backoff.reset()
                await self._follow(session)
            except Exception as error:
                delay = backoff.next_delay()
                if not isinstance(error, ImapError | SettingsError):
                    # A fault of ours: logged, and tried again later.
                    self.log.exception(
                        "imap.poller_failed", retry_in_seconds=delay
                    )
                elif lost_at is None:
                    self.log.warning(
                        "imap.connection_lost"
                        if connected_once
                        else "imap.connect_failed",
                        error=str(error),
                        retry_in_seconds=delay,
                    )
                else:
                    self.log.info(
                        "imap.reconnect_failed",
                        attempt=backoff.failures - 1,
                        error=str(error),
                        retry_in_seconds=delay,
                    )
                if lost_at is None:
                    lost_at = time.monotonic()
                await self._sleep(delay)
            finally:
                await session.close()

        self.log.info("imap.stopped")

    async def _follow(self, session: ImapSession) -> None:
        """Take in what is new, wait for more, again, until stopped."""
        place = await self._resume(session)
        store_backoff = Backoff(self.settings.reconnect_max_seconds)

        while place is not None and not self._stopping.is_set():
            try:
                if not await self._address_is_ours():
                    raise _NotOurs(
                        f"{self.settings.address} is no mailbox of ours"
                    )
                place = await self._catch_up(session, place)
                store_backoff.reset()
            except _NotOurs as error:
                # Taking mail in now would quarantine all of it: leave it
                # on the server until an organisation of ours owns it.
                delay = store_backoff.next_delay()
                self.log.error(
                    "imap.address_not_ours",
                    address=self.settings.address,
                    error=str(error),
                    retry_in_seconds=delay,
                )
                await self._sleep(delay)
                continue
            except StoreUnavailable as error:
                delay = store_backoff.next_delay()
                self.log.warning(
                    "imap.store_unavailable",
                    error=str(error),
                    retry_in_seconds=delay,
                )
                await self._sleep(delay)
                continue
            except _Unfetchable as error:
                delay = store_backoff.next_delay()
                self.log.error(
                    "imap.fetch_failed",
                    error=str(error),
                    retry_in_seconds=delay,
                )
                await self._sleep(delay)
                continue

            if self._stopping.is_set():
                break
            if session.idle_supported:
                await session.wait_for_mail(
                    self.settings.idle_renew_seconds, self._stopping
                )
            else:
                await self._sleep(self.settings.poll_interval_seconds)
                await session.noop()

    async def _address_is_ours(self) -> bool:
        """Return whether the mailbox's address leads to one of ours."""
        async with self.store.reading() as db:
            return await our_mailbox(db, self.settings.address) is not None

    async def _resume(self, session: ImapSession) -> Place | None:
        """Return the saved place, waiting while the store is unavailable.

        Returns None if asked to stop meanwhile.
        """
        store_backoff = Backoff(self.settings.reconnect_max_seconds)
        while not self._stopping.is_set():
            try:
                return await resume_place(
                    self.store,
                    self.settings.name,
                    session.server,
                    session.uid_validity,
                )
            except StoreUnavailable as error:
                delay = store_backoff.next_delay()
                self.log.warning(
                    "imap.store_unavailable",
                    error=str(error),
                    retry_in_seconds=delay,
                )
                await self._sleep(delay)

        return None

    async def _catch_up(self, session: ImapSession, place: Place) -> Place:
        """Take in every message above place, batch by batch.

        Ends when a search finds nothing new, so that mail that came
        during the work is seen before IDLE starts.
        """
        while not self._stopping.is_set():
            uids = await session.uids_after(place.last_uid)
            if not uids:
                break
            place = await self._take_all(session, place, uids)

        return place

    async def _take_all(
        self, session: ImapSession, place: Place, uids: Sequence[int]
    ) -> Place:
        """Store batches, fetching each while the one before it is stored.

        A batch is acted upon and passed only after the one before it,
        and only once its own messages are committed. When one fails,
        the batch after it (already being stored) is neither acted upon
        nor passed: whatever of it was committed is fetched again later
        and recognised. Raises what ``_finish`` raises.

        Limitation: two batches are held in memory at once, twice what
        fetching one at a time held; a batch is counted in messages, not
        octets, so a folder of large messages wants a small batch_size.
        """
        size = self.settings.batch_size
        in_flight: _Batch | None = None
        try:
            for start in range(0, len(uids), size):
                batch = await self._fetch_batch(
                    session,
                    uids[start : start + size],
                    after=None if in_flight is None else in_flight.last_turn,
                )
                done, in_flight = in_flight, batch
                if done is not None:
                    place = await self._finish(session, place, done)
                if self._stopping.is_set() or batch.failure is not None:
                    break
            done, in_flight = in_flight, None
            if done is not None:
                place = await self._finish(session, place, done)
        except BaseException:
            if in_flight is not None:
                in_flight.storing.cancel()
                await asyncio.gather(in_flight.storing, return_exceptions=True)
            raise

        return place

    async def _fetch_batch(
        self, session: ImapSession, uids: Sequence[int], after: Turn | None
    ) -> _Batch:
        """Fetch one batch and start storing it, after the turn given.

        Only the messages before the first one that the server lists but
        would not give us are stored; that failure is kept in the batch.
        """
        fetched = {item.uid: item for item in await session.fetch(uids)}
        missing = [uid for uid in uids if uid not in fetched]
        still_there = await session.uids_among(missing) if missing else []
        if missing and len(still_there) < len(missing):
            self.log.info(
                "imap.messages_vanished",
                uids=sorted(set(missing) - set(still_there)),
            )

        # Stored together, their commits share an fsync; in turns, so
        # that they are recorded in the order of their UIDs, after the
        # batch before them.
        taken: list[int] = []
        failure: Exception | None = None
        for uid in uids:
            if uid in still_there:
                failure = _Unfetchable(f"UID {uid} could not be fetched")
                break
            taken.append(uid)
        if self._stopping.is_set():
            taken, failure = [], None
        to_store = [uid for uid in taken if uid in fetched]
        turns: list[Turn] = []
        for _ in to_store:
            turns.append(Turn(turns[-1] if turns else after))
        storing = asyncio.ensure_future(
            asyncio.gather(
                *(
                    self._store(fetched[uid], turn)
                    for uid, turn in zip(to_store, turns, strict=True)
                ),
                return_exceptions=True,
            )
        )

        return _Batch(
            taken=taken,
            fetched=set(to_store),
            failure=failure,
            storing=storing,
            last_turn=turns[-1] if turns else after,
        )

    async def _finish(
        self, session: ImapSession, place: Place, batch: _Batch
    ) -> Place:
        """Wait for a batch to be stored, act on it, then move the place.

        Each message is acted upon, and passed, only if it and every
        message before it in the batch is committed. Raises
        StoreUnavailable or _Unfetchable once the messages before the one
        that failed are acted upon and passed.

        Limitation: a message that the server lists but will not return
        holds back the messages after it, retried with backoff and logged
        as ``imap.fetch_failed``; skipping it would lose it silently.
        """
        results = await batch.storing
        stored_uids = [uid for uid in batch.taken if uid in batch.fetched]
        outcomes = dict(zip(stored_uids, results, strict=True))

        failure = batch.failure
        stored: list[int] = []
        passed = place.last_uid
        for uid in batch.taken:
            result = outcomes.get(uid)
            if isinstance(result, StoreUnavailable):
                failure = result
                break
            if isinstance(result, BaseException):
                raise result
            if uid in batch.fetched:
                stored.append(uid)
            passed = uid

        if stored:
            await self._act(session, stored)
        if passed != place.last_uid:
            place = Place(place.uid_validity, passed)
            await save_place(
                self.store, self.settings.name, session.server, place
            )
            self.log.info(
                "imap.batch_stored", messages=len(stored), last_uid=passed
            )
        if failure is not None:
            raise failure

        return place

    async def _store(self, message: Fetched, turn: Turn) -> Outcome:
        """Hand a message to the ingest path; StoreUnavailable if it fails.

        The turn keeps the batch recorded in UID order.
        """
        outcome = await self.ingestor.ingest(
            Delivery(
                raw=message.raw,
                mailboxes=(self.settings.address,),
                source=SOURCE,
            ),
            turn=turn,
        )
        self.log.debug(
            "imap.message_stored",
            uid=message.uid,
            result=outcome.result,
            event_id=outcome.event_id,
            quarantine_id=outcome.quarantine_id,
        )
        if self.after_commit is not None:
            await self.after_commit(message.uid, outcome)

        return outcome

    async def _act(self, session: ImapSession, uids: Sequence[int]) -> None:
        """Do the configured after-store action on stored messages.

        A refusal is logged and the messages are passed all the same:
        they are stored, and taking them in again would not help.
        """
        action = self.settings.after_store
        try:
            if action == "seen":
                await session.flag_seen(uids)
            elif action == "move":
                assert self.settings.move_to is not None
                await session.move(uids, self.settings.move_to)
            elif action == "delete":
                await session.delete(uids)
        except CommandRefused as error:
            self.log.error(
                "imap.action_failed",
                action=action,
                uids=list(uids),
                error=str(error),
            )

    async def _sleep(self, seconds: float) -> None:
        """Wait for seconds, or less if the poller is asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


@dataclass(frozen=True, slots=True)
class RunningPoller:
    """A poller and the task it runs in."""

    poller: Poller
    task: asyncio.Task[None]


def start_pollers(store: Store, settings: ImapSettings) -> list[RunningPoller]:
    """Start one poller task per configured mailbox."""
    running = []
    for mailbox in settings.mailboxes:
        poller = Poller(mailbox, store)
        task = asyncio.create_task(poller.run(), name=f"imap {mailbox.name}")
        running.append(RunningPoller(poller, task))

    return running


async def stop_pollers(
    running: Sequence[RunningPoller], grace_seconds: float
) -> None:
    """Stop pollers after the messages in hand; cancel them after grace."""
    if not running:
        return
    for item in running:
        item.poller.stop()
    tasks = [item.task for item in running]
    _, late = await asyncio.wait(tasks, timeout=grace_seconds)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
