"""The daemon: starts the listeners from the settings, runs until a signal.

SIGTERM or SIGINT stops it gracefully: no new connection is accepted,
messages being stored are finished (up to the configured grace), then the
store is closed.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from gateway.ingest.smtp import Listener, start_listener, stop_listener
from gateway.settings import Settings
from gateway.store import Store

logger = structlog.get_logger(__name__)


class Daemon:
    """Everything ``mailgate serve`` runs, over one store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.listeners: list[Listener] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start every configured listener."""
        smtp = self.settings.smtp
        if smtp.enabled:
            self.listeners.append(await start_listener(self.store, smtp))
        if smtp.lmtp_enabled:
            self.listeners.append(
                await start_listener(self.store, smtp, lmtp=True)
            )
        logger.info(
            "server.started",
            data_dir=str(self.store.data_dir),
            listeners={item.protocol: item.port for item in self.listeners},
        )

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler)."""
        self._stopping.set()

    async def wait(self) -> None:
        """Wait until asked to stop, then stop everything gracefully."""
        await self._stopping.wait()
        logger.info("server.stopping")
        grace = self.settings.smtp.shutdown_grace_seconds
        await asyncio.gather(
            *(stop_listener(item, grace) for item in self.listeners)
        )
        logger.info("server.stopped")


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
