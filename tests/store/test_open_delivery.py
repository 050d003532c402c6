"""open_delivery: received events with no assignee, per recipient contact.

The store's triggers keep the table; each test moves events along the
workflow through mailgate's own code (ingest, steps, assignment) or by
hand in SQL, and checks the table against what it must hold, computed
from the events themselves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.crm.contacts import Contact, add_organisation, add_person
from gateway.crm.events import NewEvent, create_event, set_assignees
from gateway.crm.steps import acknowledge, assign, follow_up, transition
from gateway.crm.tickets import create_ticket
from gateway.ingest.pipeline import DUPLICATE, Delivery, Ingestor
from gateway.settings import Settings
from gateway.store import Store, schema
from gateway.store.database import DATABASE_NAME

# What open_delivery must hold, read from the events, recipients and
# assignees.
EXPECTED = """
    SELECT DISTINCT r.contact_id, r.event_id
    FROM event e JOIN event_recipient r ON r.event_id = e.id
    WHERE e.state = 'received'
    AND NOT EXISTS (SELECT 1 FROM event_assignee a WHERE a.event_id = e.id)
"""


@dataclass(frozen=True)
class Office:
    """Example (internal) with Support and Sales, and Ann, a customer."""

    support: Contact
    sales: Contact
    sven: Contact
    sara: Contact
    sally: Contact
    manager: Contact
    ann: Contact


async def _set_up(store: Store) -> Office:
    """Create the office of the tests in the store."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        support = await add_organisation(
            db, "Support", parent="Example", addresses=["support@example.com"]
        )
        sales = await add_organisation(
            db, "Sales", parent="Example", addresses=["sales@example.com"]
        )
        people = [
            await add_person(
                db,
                address,
                name=address.split("@")[0].title(),
                organisation=organisation,
                roles=[role],
            )
            for address, organisation, role in (
                ("sven@example.com", "Support", "staff"),
                ("sara@example.com", "Support", "staff"),
                ("sally@example.com", "Sales", "staff"),
                ("chef@example.com", "Example", "manager"),
            )
        ]
        await add_organisation(db, "Customer", domains=["customer.example"])
        ann = await add_person(
            db, "ann@customer.example", name="Ann", organisation="Customer"
        )

    sven, sara, sally, manager = people

    return Office(support, sales, sven, sara, sally, manager, ann)


@pytest.fixture
async def office(store: Store) -> Office:
    """The office of the tests, in the test's store."""
    return await _set_up(store)


def _mail(number: int, to: str, cc: str = "") -> bytes:
    """Return a message from Ann, with its own Message-ID."""
    lines = [
        "From: Ann <ann@customer.example>",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        f"Subject: Contract question {number}",
        f"Message-ID: <question-{number}@customer.example>",
        "Date: Thu, 03 Dec 2026 10:00:00 +0000",
        "",
        "Hello, a question about our contract.",
        "",
    ]

    return "\r\n".join(lines).encode()


async def _receive(
    store: Store, number: int, to: str, cc: str = "", mailbox: str = ""
) -> int:
    """Ingest Ann's message number; return its event."""
    delivery = Delivery(
        raw=_mail(number, to, cc), mailboxes=(mailbox or to.split(",")[0],)
    )
    outcome = await Ingestor(store).ingest(delivery)
    assert outcome.event_id is not None

    return outcome.event_id


async def _open(store: Store) -> set[tuple[int, int]]:
    """Return open_delivery as (contact, event), checked against the events."""
    async with store.reading() as db:
        kept = [
            (int(row[0]), int(row[1]))
            for row in await db.execute_fetchall(
                "SELECT contact_id, event_id FROM open_delivery"
            )
        ]
        expected = {
            (int(row[0]), int(row[1]))
            for row in await db.execute_fetchall(EXPECTED)
        }

    assert len(kept) == len(set(kept))
    assert set(kept) == expected

    return expected


async def _sql(store: Store, statement: str, *parameters: int) -> None:
    """Run one statement by hand, in its own transaction."""
    async with store.transaction() as db:
        await db.execute(statement, parameters)


async def test_received_mail_is_open_for_each_of_its_recipients(
    store: Store, office: Office
) -> None:
    """One row per recipient contact, though it is named in To and Cc."""
    event = await _receive(
        store,
        1,
        "support@example.com, sven@example.com",
        cc="sven@example.com",
    )

    assert await _open(store) == {
        (office.support.id, event),
        (office.sven.id, event),
    }


async def test_a_copy_to_another_mailbox_opens_the_event_there_too(
    store: Store, office: Office
) -> None:
    """The Bcc copy adds its mailbox as a recipient, and a row with it."""
    event = await _receive(store, 1, "support@example.com")

    again = await Ingestor(store).ingest(
        Delivery(
            raw=_mail(1, "support@example.com"),
            mailboxes=("sales@example.com",),
        )
    )

    assert again.result == DUPLICATE
    assert await _open(store) == {
        (office.support.id, event),
        (office.sales.id, event),
    }


async def test_changing_a_recipient_moves_its_row(
    store: Store, office: Office
) -> None:
    """Rows follow recipients moved or removed by hand, To and Cc apart."""
    event = await _receive(store, 1, "sven@example.com", cc="sven@example.com")
    other = await _receive(store, 2, "support@example.com")

    await _sql(
        store,
        "UPDATE event_recipient SET contact_id = ? "
        "WHERE event_id = ? AND kind = 'to'",
        office.sales.id,
        event,
    )
    moved = await _open(store)
    await _sql(
        store,
        "DELETE FROM event_recipient WHERE event_id = ? AND kind = 'cc'",
        event,
    )
    removed = await _open(store)
    await _sql(
        store,
        "UPDATE event_recipient SET event_id = ?, position = 9 "
        "WHERE event_id = ?",
        other,
        event,
    )

    assert moved == {
        (office.sales.id, event),
        (office.sven.id, event),
        (office.support.id, other),
    }
    assert removed == {(office.sales.id, event), (office.support.id, other)}
    assert await _open(store) == {
        (office.sales.id, other),
        (office.support.id, other),
    }


async def test_assigning_closes_an_event_and_unassigning_reopens_it(
    store: Store, office: Office
) -> None:
    """An event is open while it has no assignee at all."""
    event = await _receive(store, 1, "support@example.com")

    async with store.transaction() as db:
        await assign(db, event, office.sven, office.manager)
    assigned = await _open(store)
    async with store.transaction() as db:
        await set_assignees(db, event, [office.sven.id, office.sara.id])
    await _sql(
        store,
        "DELETE FROM event_assignee WHERE event_id = ? AND contact_id = ?",
        event,
        office.sven.id,
    )
    one_left = await _open(store)
    async with store.transaction() as db:
        await set_assignees(db, event, [])

    assert assigned == set()
    assert one_left == set()
    assert await _open(store) == {(office.support.id, event)}


async def test_moving_an_assignment_to_another_event_moves_the_closing(
    store: Store, office: Office
) -> None:
    """An assignee row moved by hand reopens one event and closes the other."""
    first = await _receive(store, 1, "support@example.com")
    second = await _receive(store, 2, "sales@example.com")
    async with store.transaction() as db:
        await assign(db, first, office.sven, office.manager)

    await _sql(
        store,
        "UPDATE event_assignee SET event_id = ? WHERE event_id = ?",
        second,
        first,
    )

    assert await _open(store) == {(office.support.id, first)}


async def test_delivering_closes_an_event(
    store: Store, office: Office
) -> None:
    """A delivered event has no rows; the others keep theirs."""
    delivered = await _receive(store, 1, "support@example.com")
    waiting = await _receive(store, 2, "support@example.com")

    async with store.transaction() as db:
        await transition(db, delivered, "deliver", office.sara)

    assert await _open(store) == {(office.support.id, waiting)}


async def test_following_up_a_new_ticket_delivers_and_closes_an_event(
    store: Store, office: Office
) -> None:
    """A received event attached to a new ticket is delivered, so closed."""
    event = await _receive(store, 1, "sven@example.com")

    async with store.transaction() as db:
        ticket = await create_ticket(
            db, "support-request", "Ann's contract", office.sven
        )
        followed = await follow_up(db, event, ticket.id, office.sven)

    assert followed.state == "delivered"
    assert await _open(store) == set()


async def test_an_acknowledged_event_is_not_open_but_assigned(
    store: Store, office: Office
) -> None:
    """Acknowledging makes a received event assigned to who acknowledged."""
    async with store.transaction() as db:
        note = await create_event(
            db,
            NewEvent(
                type="note",
                sender="sally@example.com",
                to=["support@example.com"],
                title="Ann wants a support contract",
            ),
            office.sally,
        )
        await transition(db, note.id, "send", office.manager)
        acknowledged = await acknowledge(db, note.id, office.sara)

    assert acknowledged.state == "received"
    assert acknowledged.assignee_ids == (office.sara.id,)
    assert await _open(store) == set()


async def test_only_the_received_state_is_open(
    store: Store, office: Office
) -> None:
    """Drafts, cancelled and deleted events never open; receiving does."""
    async with store.transaction() as db:
        events = [
            await create_event(
                db,
                NewEvent(
                    type="phone-call",
                    sender=sender,
                    to=["support@example.com"],
                    title=f"Call {number}",
                    direction=direction,
                    assignee_ids=[],
                ),
                office.manager,
            )
            for number, (sender, direction) in enumerate(
                (
                    ("sally@example.com", "outgoing"),
                    ("ann@customer.example", "incoming"),
                    ("ann@customer.example", "incoming"),
                )
            )
        ]
    drafts = await _open(store)
    cancelled, deleted, received = (event.id for event in events)
    async with store.transaction() as db:
        await transition(db, cancelled, "cancel", office.manager)
        await transition(db, deleted, "delete", office.manager)
        await transition(db, received, "receive", office.manager)

    assert drafts == set()
    assert await _open(store) == {(office.support.id, received)}


async def test_an_event_state_set_by_hand_is_followed(
    store: Store, office: Office
) -> None:
    """Leaving 'received' in SQL closes an event; coming back reopens it."""
    event = await _receive(store, 1, "support@example.com")

    await _sql(
        store, "UPDATE event SET state = 'delivered' WHERE id = ?", event
    )
    closed = await _open(store)
    await _sql(
        store, "UPDATE event SET state = 'received' WHERE id = ?", event
    )

    assert closed == set()
    assert await _open(store) == {(office.support.id, event)}


async def test_removing_an_event_removes_its_rows(
    store: Store, office: Office, data_dir: Path
) -> None:
    """Even an event deleted without its recipients leaves no row behind."""
    removed = await _receive(store, 1, "support@example.com")
    kept = await _receive(store, 2, "support@example.com")

    # Without the foreign keys mailgate turns on, as sqlite3 opens by
    # default: the recipients stay.
    connection = sqlite3.connect(data_dir / DATABASE_NAME)
    try:
        with connection:
            connection.execute("DELETE FROM event WHERE id = ?", (removed,))
    finally:
        connection.close()

    assert await _open(store) == {(office.support.id, kept)}


async def test_an_event_row_written_by_hand_gets_its_rows(
    store: Store, office: Office, data_dir: Path
) -> None:
    """An event inserted after its recipients, or replaced, is followed."""
    replaced = await _receive(store, 1, "support@example.com")

    connection = sqlite3.connect(data_dir / DATABASE_NAME)
    try:
        with connection:
            # As a bulk load without foreign keys may: recipients first.
            connection.execute(
                "INSERT INTO event_recipient (event_id, position, kind, "
                "contact_id, address) VALUES (999, 0, 'to', ?, "
                "'sales@example.com')",
                (office.sales.id,),
            )
            connection.execute(
                "INSERT INTO event (id, type, title, sender_id, direction, "
                "start_date, state, created_at) VALUES (999, 'visit', "
                "'Visit', ?, 'incoming', '2026-12-03', 'received', "
                "'2026-12-03')",
                (office.ann.id,),
            )
            # REPLACE deletes the old row without firing delete triggers.
            connection.execute(
                "CREATE TEMPORARY TABLE copy AS SELECT * FROM event "
                "WHERE id = ?",
                (replaced,),
            )
            connection.execute("UPDATE copy SET state = 'delivered'")
            connection.execute(
                "INSERT OR REPLACE INTO event SELECT * FROM copy"
            )
    finally:
        connection.close()

    assert await _open(store) == {(office.sales.id, 999)}


async def test_the_migration_fills_the_table_from_existing_events(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before open_delivery gets the rows of its events."""
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 5)
    store = await Store.open(settings.store)
    try:
        office = await _set_up(store)
        waiting = await _receive(
            store, 1, "support@example.com", cc="sven@example.com"
        )
        assigned = await _receive(store, 2, "sven@example.com")
        delivered = await _receive(store, 3, "sales@example.com")
        async with store.transaction() as db:
            await assign(db, assigned, office.sara, office.manager)
            await transition(db, delivered, "deliver", office.manager)
            tables = await db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE name = 'open_delivery'"
            )
    finally:
        await store.close()
    monkeypatch.undo()

    store = await Store.open(settings.store)
    try:
        rows = await _open(store)
    finally:
        await store.close()

    assert list(tables) == []
    assert rows == {
        (office.support.id, waiting),
        (office.sven.id, waiting),
    }
