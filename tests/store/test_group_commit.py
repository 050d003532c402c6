"""Group commit: concurrent jobs share a transaction, each answered alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiosqlite
import pytest

from gateway.crm.contacts import add_organisation
from gateway.ingest.pipeline import ACCEPTED, Delivery, Ingestor
from gateway.store import Store, StoreUnavailable


async def _count(store: Store, table: str) -> int:
    async with store.reading() as db:
        rows = list(await db.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))

    return int(rows[0][0])


def _insert(label: str) -> Callable[[aiosqlite.Connection], Awaitable[str]]:
    async def work(db: aiosqlite.Connection) -> str:
        await db.execute(
            "INSERT INTO contact (kind, name, created_at) "
            "VALUES ('person', ?, '2026-12-01T00:00:00Z')",
            (label,),
        )
        return label

    return work


async def test_a_failing_job_rolls_back_alone(store: Store) -> None:
    """One job of a group raises: its rows go, the others' are committed."""

    async def failing(db: aiosqlite.Connection) -> str:
        await db.execute(
            "INSERT INTO contact (kind, name, created_at) "
            "VALUES ('person', 'doomed', '2026-12-01T00:00:00Z')"
        )
        raise ValueError("not this one")

    jobs = [
        store.group.run(_insert("first")),
        store.group.run(failing),
        store.group.run(_insert("last")),
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)

    assert results[0] == "first" and results[2] == "last"
    assert isinstance(results[1], ValueError)
    async with store.reading() as db:
        names = {
            row[0]
            for row in await db.execute_fetchall("SELECT name FROM contact")
        }
    assert names == {"first", "last"}


async def test_no_job_is_answered_before_its_commit(store: Store) -> None:
    """Each job's caller learns of success only once the rows are committed
    (the reader connection, which sees only committed data, has them)."""
    seen: list[int] = []

    async def job(label: str) -> None:
        await store.group.run(_insert(label))
        seen.append(await _count(store, "contact"))

    await asyncio.gather(*(job(f"person {n}") for n in range(20)))

    assert len(seen) == 20
    assert all(count >= 1 for count in seen)
    assert await _count(store, "contact") == 20


async def test_a_failed_commit_fails_every_job_of_the_group(
    store: Store,
) -> None:
    """When the shared transaction cannot commit, every caller is told the
    store is unavailable and nothing of the group is kept."""
    await store.set_read_only(True)

    results = await asyncio.gather(
        *(store.group.run(_insert(f"n{n}")) for n in range(3)),
        return_exceptions=True,
    )

    await store.set_read_only(False)
    assert all(isinstance(result, StoreUnavailable) for result in results)
    assert await _count(store, "contact") == 0


@pytest.mark.parametrize("concurrency", [16])
async def test_concurrent_deliveries_are_each_one_event(
    store: Store, concurrency: int
) -> None:
    """Many messages ingested at once (sharing commits) each become exactly
    one event, and a resent one is recognised, not doubled."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
    ingestor = Ingestor(store)

    def delivery(n: int) -> Delivery:
        raw = (
            f"From: c{n}@example.org\r\nTo: support@example.com\r\n"
            f"Subject: n{n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nhi\r\n"
        ).encode()
        return Delivery(raw=raw, mailboxes=("support@example.com",))

    outcomes = await asyncio.gather(
        *(ingestor.ingest(delivery(n)) for n in range(concurrency)),
        ingestor.ingest(delivery(0)),
    )

    assert [o.result for o in outcomes].count(ACCEPTED) == concurrency
    assert await _count(store, "event") == concurrency
