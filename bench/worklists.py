"""Worklists and listings on a store of one million events.

The store is built once (and kept for the next run) with bulk INSERTs
straight into SQLite, in the schema mailgate creates: states, senders,
tickets, assignees and recipients spread as a busy office's would be; the
schema's triggers fill open_delivery from those INSERTs as they do from
mailgate's own writes. Each worklist of a few persons and ``event list``
filtered by state, ticket and contact are then timed, many times each; p50
and p99 are reported. The target is absolute (p99 under 20 ms), as the
issue sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.crm.contacts import get_contact
from gateway.crm.events import list_events
from gateway.crm.worklists import WORKLISTS, worklist_for
from gateway.settings import StoreSettings
from gateway.store import Store

TARGET_P99_MS = 20.0
DEPARTMENTS = 6
STAFF = 240
MANAGERS = 12
ORGANISATIONS = 3000
CUSTOMERS = 30000
TICKETS = 60000
# State of an event, its share and direction. Most mail is long done.
STATES = (
    ("delivered", 0.46, "incoming"),
    ("sent", 0.34, "outgoing"),
    ("received", 0.02, "incoming"),
    ("draft", 0.01, "outgoing"),
    ("planned", 0.005, "outgoing"),
    ("confirmed", 0.002, "outgoing"),
    ("cancelled", 0.083, "outgoing"),
    ("deleted", 0.08, "incoming"),
)
NOW = "2026-12-01T00:00:00+00:00"


def build_store(data_dir: Path, events: int, seed: int) -> None:
    """Create the store in data_dir with ``events`` events, if not there."""
    marker = data_dir / f"built-{events}-{seed}"
    if marker.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("mailgate*"):
        stale.unlink()

    async def migrate() -> Path:
        store = await Store.open(StoreSettings(data_dir=data_dir))
        await store.close()
        return next(data_dir.glob("*.sqlite*"))

    path = asyncio.run(migrate())
    generator = random.Random(seed)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = DELETE")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("PRAGMA cache_size = -400000")
    # The store's triggers (open_delivery) make SQLite keep a statement
    # journal for each INSERT: in memory, not in a temporary file.
    connection.execute("PRAGMA temp_store = MEMORY")
    connection.execute("BEGIN")
    _insert_contacts(connection)
    connection.executemany(
        "INSERT INTO ticket VALUES (?, 'support-request', ?, 'open', ?, ?)",
        (
            (number, f"Ticket {number}", _staff(generator), NOW)
            for number in range(1, TICKETS + 1)
        ),
    )
    connection.execute("COMMIT")
    chunk = 100_000
    for start in range(1, events + 1, chunk):
        rows = list(_events(generator, start, min(chunk, events - start + 1)))
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO event (id, type, title, content, sender_id, "
            "direction, causality_id, ticket_id, department_id, start_date, "
            "author_id, state, message_id, automatic, created_at, triage) "
            "VALUES (?, 'mail-message', ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "0, ?, ?)",
            (row["event"] for row in rows),
        )
        connection.executemany(
            "INSERT INTO event_recipient (event_id, position, kind, "
            "contact_id, address, delivery_status) "
            "VALUES (?, ?, 'to', ?, ?, ?)",
            (item for row in rows for item in row["recipients"]),
        )
        connection.executemany(
            "INSERT INTO event_assignee VALUES (?, ?)",
            (item for row in rows for item in row["assignees"]),
        )
        connection.executemany(
            "INSERT INTO outbox (event_id, attempts, last_reply, failure, "
            "failed_at) VALUES (?, 1, ?, ?, ?)",
            (row["outbox"] for row in rows if row["outbox"]),
        )
        connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()
    marker.write_text("")


def _insert_contacts(connection: sqlite3.Connection) -> None:
    """Our organisation, its departments and staff; customers."""
    contacts: list[tuple[Any, ...]] = [
        (1, "organisation", "Example", None, 1, NOW)
    ]
    addresses: list[tuple[Any, ...]] = []
    for number in range(DEPARTMENTS):
        identifier = 2 + number
        contacts.append(
            (identifier, "organisation", f"Dept {number}", 1, 1, NOW)
        )
        address = f"dept{number}@example.com"
        addresses.append((address, address, identifier, 0))
    for number in range(STAFF):
        identifier = _staff_id(number)
        contacts.append(
            (
                identifier,
                "person",
                f"Staff {number}",
                2 + number % DEPARTMENTS,
                0,
                NOW,
            )
        )
        address = f"staff{number}@example.com"
        addresses.append((address, address, identifier, 0))
    for number in range(ORGANISATIONS):
        contacts.append(
            (
                _organisation_id(number),
                "organisation",
                f"Org {number}",
                None,
                0,
                NOW,
            )
        )
    for number in range(CUSTOMERS):
        identifier = _customer_id(number)
        contacts.append(
            (
                identifier,
                "person",
                f"Customer {number}",
                _organisation_id(number % ORGANISATIONS),
                0,
                NOW,
            )
        )
        address = f"customer{number}@org{number % ORGANISATIONS}.example"
        addresses.append((address, address, identifier, 0))
    connection.executemany(
        "INSERT INTO contact (id, kind, name, parent_id, internal, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        contacts,
    )
    connection.executemany(
        "INSERT INTO contact_address VALUES (?, ?, ?, ?)", addresses
    )
    connection.execute(
        "INSERT INTO organisation_domain VALUES ('example.com', 1)"
    )
    connection.executemany(
        "INSERT INTO contact_role VALUES (?, 'staff')",
        ((_staff_id(number),) for number in range(STAFF)),
    )
    connection.executemany(
        "INSERT INTO contact_role VALUES (?, 'manager')",
        ((_staff_id(number),) for number in range(MANAGERS)),
    )


def _events(
    generator: random.Random, start: int, count: int
) -> Iterator[dict[str, Any]]:
    states = [state for state, _, _ in STATES]
    weights = [share for _, share, _ in STATES]
    directions = {state: direction for state, _, direction in STATES}
    for identifier in range(start, start + count):
        state = generator.choices(states, weights)[0]
        direction = directions[state]
        staff = _staff(generator)
        customers = [
            _customer_id(generator.randrange(CUSTOMERS))
            for _ in range(generator.choice((1, 1, 1, 2, 3)))
        ]
        recipients: list[tuple[Any, ...]] = []
        assignees: list[tuple[int, int]] = []
        outbox: tuple[Any, ...] | None = None
        if direction == "incoming":
            sender = customers[0]
            # Half to a person, half to a department's address.
            if generator.random() < 0.5:
                recipient = staff
            else:
                recipient = 2 + generator.randrange(DEPARTMENTS)
            recipients.append(
                (identifier, 0, recipient, "x@example.com", None)
            )
            if generator.random() < 0.6:
                assignees.append((identifier, _staff(generator)))
            author = None
        else:
            sender = staff
            author = staff
            status = "sent" if state == "sent" else None
            for position, customer in enumerate(customers):
                if status and generator.random() < 0.002:
                    status = "bounced"
                recipients.append(
                    (identifier, position, customer, "y@org.example", status)
                )
            if state in {"draft", "confirmed"} and generator.random() < 0.5:
                assignees.append((identifier, staff))
            if state == "sent":
                failed = generator.random() < 0.001
                outbox = (
                    identifier,
                    "250 ok",
                    "550 no such user" if failed else None,
                    NOW if failed else None,
                )
        triage = (
            '{"reason": "subject only"}'
            if state == "received" and generator.random() < 0.05
            else None
        )
        yield {
            "event": (
                identifier,
                f"Question {identifier}",
                sender,
                direction,
                identifier - 1 if identifier > 1 and identifier % 2 else None,
                generator.randrange(1, TICKETS + 1)
                if generator.random() < 0.7
                else None,
                2 + staff % DEPARTMENTS,
                NOW,
                author,
                state,
                f"<{identifier}@bench.example>",
                NOW,
                triage,
            ),
            "recipients": recipients,
            "assignees": assignees,
            "outbox": outbox,
        }


def _staff_id(number: int) -> int:
    return 2 + DEPARTMENTS + number


def _organisation_id(number: int) -> int:
    return 2 + DEPARTMENTS + STAFF + number


def _customer_id(number: int) -> int:
    return 2 + DEPARTMENTS + STAFF + ORGANISATIONS + number


def _staff(generator: random.Random) -> int:
    return _staff_id(generator.randrange(STAFF))


async def measure(data_dir: Path, repeats: int) -> list[dict[str, Any]]:
    """Time each worklist and listing; return one row per query."""
    store = await Store.open(StoreSettings(data_dir=data_dir))
    rows = []
    try:
        async with store.reading() as db:
            people = {
                "manager": await get_contact(db, _staff_id(0)),
                "staff": await get_contact(db, _staff_id(MANAGERS + 7)),
                "staff-2": await get_contact(db, _staff_id(STAFF - 1)),
            }
            queries: list[tuple[str, Callable[[], Awaitable[int]]]] = []
            for label, person in people.items():
                for name, _, _, managers_only in WORKLISTS:
                    if managers_only and not person.is_manager:
                        continue
                    queries.append(
                        (
                            f"worklist {name} ({label})",
                            _worklist_query(db, person, name),
                        )
                    )
            filters: list[tuple[str, dict[str, Any]]] = [
                ("state=received", {"state": "received"}),
                ("state=sent", {"state": "sent"}),
                ("ticket", {"ticket_id": 1234}),
                ("contact=customer", {"contact": "customer77@org77.example"}),
                ("contact=staff", {"contact": "staff19@example.com"}),
                (
                    "state+contact",
                    {
                        "state": "delivered",
                        "contact": "customer5@org5.example",
                    },
                ),
            ]
            for label, arguments in filters:
                queries.append(
                    (f"event list {label}", _listing_query(db, arguments))
                )
            for label, query in queries:
                rows.append(await _time(label, query, repeats))
    finally:
        await store.close()

    return rows


def _worklist_query(
    db: Any, person: Any, name: str
) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        found = await worklist_for(db, person, name)
        return found.count

    return run


def _listing_query(
    db: Any, arguments: dict[str, Any]
) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return len(await list_events(db, **arguments))

    return run


async def _time(
    label: str, query: Callable[[], Awaitable[int]], repeats: int
) -> dict[str, Any]:
    count = await query()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        await query()
        timings.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(timings, n=100, method="inclusive")

    return {
        "query": label,
        "rows": count,
        "p50_ms": statistics.median(timings),
        "p99_ms": cuts[98],
        "met": cuts[98] < TARGET_P99_MS,
    }


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench worklists")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("/tmp/mailgate-bench-worklists"),
        help="Folder of the built store, kept for later runs.",
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)

    data_dir = options.store / f"data-{options.events}-{options.seed}"
    started = time.perf_counter()
    build_store(data_dir, options.events, options.seed)
    built_seconds = time.perf_counter() - started
    rows = asyncio.run(measure(data_dir, options.repeats))

    print(f"store: {options.events} events ({built_seconds:.0f} s to build)")
    print(
        f"{'query':<42} {'rows':>7} {'p50 ms':>8} {'p99 ms':>8} {'< 20 ms':>7}"
    )
    for row in rows:
        print(
            f"{row['query']:<42} {row['rows']:>7} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {'yes' if row['met'] else 'NO':>7}"
        )

    options.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "worklists",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "events": options.events,
        "target_p99_ms": TARGET_P99_MS,
        "rows": rows,
    }
    path = options.output / "worklists.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
