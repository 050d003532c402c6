"""Outbox: confirmed events delivered per second, against plain aiosmtplib.

A fresh store holds N confirmed Mail Messages (a few with two or three
recipients). The smart host is the do-nothing aiosmtpd listener of
``bench.null_smtp``, in its own process. The baseline renders the same
events first, then sends the rendered messages with aiosmtplib over one
reused connection, without the gateway. Mailgate's outbox worker then
claims, renders, sends and records each of them (``sent``), batch after
batch, as the daemon does. Prints a table and writes JSON.
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

import aiosmtplib
import structlog

from bench.servers import null_listener
from gateway.crm.contacts import add_organisation, add_person
from gateway.crm.events import NewEvent, create_event, get_event
from gateway.crm.steps import transition
from gateway.outbox.render import OutgoingMail, render_event
from gateway.outbox.worker import Outbox
from gateway.settings import OutboxSettings, StoreSettings
from gateway.store import Store

TARGET = 0.7
SENDER = "maria.staff@example.com"
MANAGER = "erika.chef@example.com"


async def fill(store: Store, count: int) -> list[int]:
    """Create count confirmed Mail Messages; return their ids."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        maria = await add_person(
            db, SENDER, name="Maria Staff", roles=["staff"]
        )
        manager = await add_person(
            db, MANAGER, name="Erika Chef", roles=["manager"]
        )
    ids = []
    for number in range(count):
        to = [f"customer{number % 97}@example.org"]
        if number % 5 == 4:
            to.append(f"colleague{number % 13}@example.net")
        async with store.transaction() as db:
            event = await create_event(
                db,
                NewEvent(
                    type="mail-message",
                    sender=SENDER,
                    to=to,
                    title=f"Your order {number}",
                    content="Dear customer,\nyour order is on its way.\n" * 20,
                ),
                maria,
            )
            await transition(db, event.id, "plan", maria)
            await transition(db, event.id, "confirm", manager)
        ids.append(event.id)

    return ids


async def rendered(store: Store, ids: list[int]) -> list[OutgoingMail]:
    """Return the messages the outbox will send for these events."""
    mails = []
    async with store.reading() as db:
        for event_id in ids:
            event = await get_event(db, event_id)
            mails.append(
                await render_event(
                    db, store.blobs, event, bounce_domain="example.com"
                )
            )

    return mails


async def baseline(port: int, mails: list[OutgoingMail]) -> float:
    """Send the messages over one reused connection; return seconds."""
    started = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    for mail in mails:
        await client.sendmail(
            mail.mail_from, list(mail.rcpt_tos), mail.message
        )
    await client.quit()

    return time.perf_counter() - started


async def deliver(store: Store, port: int, batch: int) -> tuple[float, int]:
    """Run the outbox until nothing is due; return seconds and sent."""
    outbox = Outbox(
        store,
        OutboxSettings(
            smart_host="127.0.0.1",
            port=port,
            tls="none",
            bounce_domain="example.com",
            batch_size=batch,
        ),
    )
    sent = 0
    started = time.perf_counter()
    while True:
        report = await outbox.run_batch()
        sent += report.sent
        if report.claimed == 0:
            break

    return time.perf_counter() - started, sent


async def measure(count: int, batch: int, port: int) -> dict[str, Any]:
    """Time the baseline and the outbox on one fresh store."""
    with tempfile.TemporaryDirectory() as folder:
        store = await Store.open(StoreSettings(data_dir=Path(folder)))
        try:
            ids = await fill(store, count)
            mails = await rendered(store, ids)
            base_seconds = await baseline(port, mails)
            our_seconds, sent = await deliver(store, port, batch)
        finally:
            await store.close()
    assert sent == count, (sent, count)
    base_rate = count / base_seconds
    our_rate = count / our_seconds

    return {
        "messages": count,
        "batch": batch,
        "octets": sum(len(mail.message) for mail in mails) // count,
        "baseline_per_second": base_rate,
        "mailgate_per_second": our_rate,
        "ratio": our_rate / base_rate,
        "met": our_rate / base_rate >= TARGET,
    }


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench outbox")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )

    with null_listener() as port:
        row = asyncio.run(measure(options.messages, options.batch, port))

    print(
        f"{'messages':>8} {'octets':>7} {'aiosmtplib/s':>12} "
        f"{'mailgate/s':>10} {'ratio':>6} {'>= 0.7':>6}"
    )
    print(
        f"{row['messages']:>8} {row['octets']:>7} "
        f"{row['baseline_per_second']:>12.1f} "
        f"{row['mailgate_per_second']:>10.1f} {row['ratio']:>6.2f} "
        f"{'yes' if row['met'] else 'NO':>6}"
    )

    options.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "outbox",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "target_ratio": TARGET,
        "rows": [row],
    }
    path = options.output / "outbox.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
