"""IMAP ingest: mailgate's poller against plain batched aioimaplib.

A real Dovecot (the test fixture's, ``tests/ingest/dovecot.py``; run as
root) holds N messages, APPENDed first. The baseline logs in and fetches
them all with aioimaplib in ``UID FETCH`` batches of 100 and keeps them
in memory. Mailgate's poller (batches of 100 too) takes the same messages
into a fresh store, each committed as an event, until the last one is
committed. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioimaplib
import structlog

from bench.messages import make_samples
from gateway.crm.contacts import add_organisation
from gateway.ingest.imap import Poller
from gateway.ingest.pipeline import Outcome
from gateway.settings import ImapMailboxSettings, StoreSettings
from gateway.store import Store
from tests.ingest.dovecot import (
    Account,
    Dovecot,
    imap_client,
    missing_reason,
    running_dovecot,
)

TARGET = 0.5
BATCH = 100
SIZES = {"2KB": 2 * 1024, "30KB": 30 * 1024}
SUPPORT = "support@example.com"


async def fill(server: Dovecot, account: Account, raws: list[bytes]) -> None:
    """APPEND every message to the account's INBOX."""
    async with imap_client(server, account) as client:
        for raw in raws:
            await client.append(raw)


async def baseline(server: Dovecot, account: Account, count: int) -> float:
    """Fetch every message with aioimaplib in batches; return seconds."""
    started = time.perf_counter()
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(account.user, account.password)
    await client.select("INBOX")
    response = await client.uid_search("ALL")
    uids = [int(word) for word in response.lines[0].split()]
    fetched = 0
    for start in range(0, len(uids), BATCH):
        batch = uids[start : start + BATCH]
        response = await client.uid(
            "fetch", f"{batch[0]}:{batch[-1]}", "(UID BODY.PEEK[])"
        )
        assert response.result == "OK", response
        fetched += sum(
            1 for line in response.lines if isinstance(line, bytearray)
        )
    seconds = time.perf_counter() - started
    await client.logout()
    assert fetched == count, (fetched, count)

    return seconds


async def mailgate(server: Dovecot, account: Account, count: int) -> float:
    """Take every message in with the poller; return seconds."""
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(StoreSettings(data_dir=Path(folder)))
        try:
            async with store.transaction() as db:
                await add_organisation(
                    db, "Example", domains=["example.com"], internal=True
                )
                await add_organisation(
                    db, "Support", parent="Example", addresses=[SUPPORT]
                )
            settings = ImapMailboxSettings(
                name="bench",
                host=server.host,
                port=server.port,
                tls="none",
                user=account.user,
                password=account.password,  # type: ignore[arg-type]
                address=SUPPORT,
                batch_size=BATCH,
            )
            stored = 0
            done = asyncio.Event()

            async def committed(uid: int, outcome: Outcome) -> None:
                nonlocal stored
                stored += 1
                if stored >= count:
                    done.set()

            poller = Poller(settings, store, after_commit=committed)
            started = time.perf_counter()
            task = asyncio.create_task(poller.run())
            await asyncio.wait_for(done.wait(), 3600)
            seconds = time.perf_counter() - started
            poller.stop()
            await task
        finally:
            await store.close()

    return seconds


def measure(size_name: str, count: int, rounds: int) -> dict[str, Any]:
    """Fill one mailbox, then time both readers on it; best of rounds."""
    raws = [sample.raw for sample in make_samples(count, SIZES[size_name])]
    with running_dovecot() as server:
        account = server.add_account()
        asyncio.run(fill(server, account, raws))
        base = []
        ours = []
        for _ in range(rounds):
            base.append(asyncio.run(baseline(server, account, count)))
            # A fresh store each round: the poller starts from UID 1, and
            # leaves the messages where they are (after_store = leave).
            ours.append(asyncio.run(mailgate(server, account, count)))

    base_rate = count / min(base)
    our_rate = count / min(ours)

    return {
        "size": size_name,
        "messages": count,
        "baseline_per_second": base_rate,
        "mailgate_per_second": our_rate,
        "ratio": our_rate / base_rate,
        "met": our_rate / base_rate >= TARGET,
    }


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench imap-ingest")
    parser.add_argument("--sizes", default="2KB,30KB")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)
    reason = missing_reason()
    if reason is not None:
        raise SystemExit(f"imap-ingest needs a real Dovecot: {reason}")
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )

    rows = [
        measure(size, options.messages, options.rounds)
        for size in options.sizes.split(",")
    ]

    print(
        f"{'size':>5} {'messages':>8} {'aioimaplib/s':>12} "
        f"{'mailgate/s':>10} {'ratio':>6} {'>= 0.5':>6}"
    )
    for row in rows:
        print(
            f"{row['size']:>5} {row['messages']:>8} "
            f"{row['baseline_per_second']:>12.1f} "
            f"{row['mailgate_per_second']:>10.1f} {row['ratio']:>6.2f} "
            f"{'yes' if row['met'] else 'NO':>6}"
        )

    options.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "imap-ingest",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "batch": BATCH,
        "target_ratio": TARGET,
        "rows": rows,
    }
    path = options.output / "imap_ingest.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
