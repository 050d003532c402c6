"""``python -m bench NAME ...``: run one benchmark by name."""

from __future__ import annotations

import sys

from bench import (
    imap_ingest,
    memory,
    outbox,
    roundup_peer,
    smtp_ingest,
    worklists,
)

BENCHMARKS = {
    "smtp-ingest": smtp_ingest.main,
    "imap-ingest": imap_ingest.main,
    "outbox": outbox.main,
    "memory": memory.main,
    "roundup": roundup_peer.main,
    "worklists": worklists.main,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        sys.exit(
            f"usage: python -m bench NAME [options]; NAME is one of: {names}"
        )
    BENCHMARKS[sys.argv[1]](sys.argv[2:])


main()
