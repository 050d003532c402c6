"""A poller that dies between commit and action: run by a test, killed.

``python imap_crash.py SETTINGS_JSON DATA_DIR`` runs one IMAP poller over
the store in DATA_DIR. Once the first message's event is committed, and
before the server is told anything, it prints ``committed UID`` and waits
for the test to kill it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.ingest.imap import Poller
from gateway.ingest.pipeline import Outcome
from gateway.logs import configure_logging
from gateway.settings import ImapMailboxSettings, LogSettings, StoreSettings
from gateway.store import Store


async def main(settings_json: str, data_dir: str) -> None:
    """Run the poller until killed."""
    configure_logging(LogSettings(level="warning"))
    settings = ImapMailboxSettings.model_validate_json(settings_json)
    store = await Store.open(StoreSettings(data_dir=Path(data_dir)))

    async def after_commit(uid: int, outcome: Outcome) -> None:
        sys.stdout.write(f"committed {uid} {outcome.result}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()

    await Poller(settings, store, after_commit=after_commit).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
