"""The daemon: starts the listeners from the settings, runs until a signal.

It also runs one IMAP poller per configured mailbox, the submission
listener for our staff and the outbox worker. SIGTERM or SIGINT
stops it gracefully: no new connection is accepted, messages being stored
are finished (up to the configured grace), then the store is closed.

Limitation: a client idle in an open session at shutdown sees the
connection drop instead of a 421 reply (nothing of its is lost: it had no
message under way); aiosmtpd offers no public way to greet each session
out, and doing it through its internals was not worth the coupling.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from gateway.ingest.imap import RunningPoller, start_pollers, stop_pollers
from gateway.ingest.smtp import Listener, start_listener, stop_listener
from gateway.outbox.submission import (
    SubmissionListener,
    start_submission,
    stop_submission,
)
from gateway.outbox.worker import Outbox
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.blobs import TEMPORARY_MAX_AGE_SECONDS

logger = structlog.get_logger(__name__)


class Daemon:
    """Everything ``mailgate serve`` runs, over one store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.listeners: list[Listener] = []
        self.pollers: list[RunningPoller] = []
        self.submission: SubmissionListener | None = None
        self.outbox: Outbox | None = None
        self._outbox_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start every configured listener and IMAP poller.

        First removes the temporary blob files a crash left behind.
        """
        await self._remove_temporary_files()

        smtp = self.settings.smtp
        if smtp.enabled:
            self.listeners.append(await start_listener(self.store, smtp))
        if smtp.lmtp_enabled:
            self.listeners.append(
                await start_listener(self.store, smtp, lmtp=True)
            )
        self.pollers = start_pollers(self.store, self.settings.imap)
        await self._start_outbound()
        logger.info(
            "server.started",
            data_dir=str(self.store.data_dir),
            listeners=self.listening(),
            imap=[item.name for item in self.settings.imap.mailboxes],
        )

    def listening(self) -> dict[str, int]:
        """Return the port of each running listener, by protocol."""
        ports = {item.protocol: item.port for item in self.listeners}
        if self.submission is not None:
            ports[self.submission.protocol] = self.submission.port

        return ports

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self._stopping.set()

    async def wait(self) -> None:
        """Wait until asked to stop, then stop everything gracefully."""
        await self._stopping.wait()
        logger.info("server.stopping")
        grace = self.settings.smtp.shutdown_grace_seconds
        await asyncio.gather(
            *(stop_listener(item, grace) for item in self.listeners),
            stop_pollers(self.pollers, grace),
            self._stop_outbound(),
        )
        logger.info("server.stopped")

    async def _remove_temporary_files(self) -> None:
        """Remove the blob files a killed writer left before their rename."""
        removed = await asyncio.to_thread(
            self.store.blobs.remove_temporary_files,
            TEMPORARY_MAX_AGE_SECONDS,
        )
        logger.info("store.temporary_files_removed", count=removed)

    async def _start_outbound(self) -> None:
        """Start the submission listener and the outbox, as configured."""
        if self.settings.submission.enabled:
            self.submission = await start_submission(
                self.store, self.settings.submission
            )

        outbox = self.settings.outbox
        if not outbox.enabled:
            logger.info("outbox.idle", reason="disabled in the settings")
        elif not outbox.smart_host:
            logger.info("outbox.idle", reason="no smart_host configured")
        else:
            self.outbox = Outbox(self.store, outbox)
            self._outbox_task = asyncio.create_task(self.outbox.run())

    async def _stop_outbound(self) -> None:
        """Stop taking submissions; let the outbox finish its message."""
        if self.submission is not None:
            await stop_submission(
                self.submission,
                self.settings.submission.shutdown_grace_seconds,
            )
        if self.outbox is None or self._outbox_task is None:
            return

        self.outbox.stop()
        grace = self.settings.outbox.shutdown_grace_seconds
        done, _ = await asyncio.wait({self._outbox_task}, timeout=grace)
        if not done:
            logger.warning("outbox.shutdown_incomplete")
            self._outbox_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outbox_task


async def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    store = await Store.open(settings.store)
    try:
        daemon = Daemon(settings, store)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, daemon.stop)
        await daemon.start()
        await daemon.wait()
    finally:
        await store.close()
