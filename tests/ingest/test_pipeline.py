"""The ingest path: Ingestor.ingest on a real store, one behaviour a test."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from gateway.crm.contacts import find_by_address
from gateway.crm.events import Event, get_event
from gateway.crm.worklists import worklists_for
from gateway.ingest.pipeline import (
    ACCEPTED,
    DUPLICATE,
    QUARANTINED,
    Delivery,
    Ingestor,
    Outcome,
    may_acknowledge,
)
from gateway.store import Store

from .conftest import Organisation, mail, staff

if TYPE_CHECKING:
    from conftest import Dump, Mailgate

BODY = "Our order 4711 has not arrived; the tracking number is ZX-99.\r\n"

MESSAGE = mail(
    "From: Laura Beispiel <laura@example.org>",
    "To: Example Support <support@example.com>",
    "Subject: Delivery delay for order 4711",
    "Date: Tue, 01 Dec 2026 09:12:40 +0100",
    "Message-ID: <order-4711.1@mail.example.org>",
    body=BODY,
)


async def _ingest(
    store: Store,
    raw: bytes,
    mailboxes: tuple[str, ...] = ("support@example.com",),
    **options: Any,
) -> Outcome:
    return await Ingestor(store).ingest(
        Delivery(raw=raw, mailboxes=mailboxes), **options
    )


async def _event(store: Store, outcome: Outcome) -> Event:
    assert outcome.event_id is not None
    async with store.reading() as db:
        return await get_event(db, outcome.event_id)


async def _count(store: Store, table: str) -> int:
    async with (
        store.reading() as db,
        db.execute(f"SELECT COUNT(*) FROM {table}") as cursor,
    ):
        row = await cursor.fetchone()

    return int(row[0]) if row else 0


def _blob_files(store: Store) -> set[Path]:
    return set((store.data_dir / "blobs").rglob("*"))


async def test_mail_from_outside_becomes_a_received_incoming_event(
    store: Store, organisation: Organisation
) -> None:
    """Sender, recipients, title, text, date and department are kept."""
    outcome = await _ingest(store, MESSAGE)

    assert outcome.result == ACCEPTED
    event = await _event(store, outcome)
    assert (event.direction, event.state) == ("incoming", "received")
    assert (event.sender.address, event.sender.name) == (
        "laura@example.org",
        "Laura Beispiel",
    )
    assert [(p.address, p.name, p.kind) for p in event.recipients] == [
        ("support@example.com", "Example Support", "to")
    ]
    assert event.title == "Delivery delay for order 4711"
    assert event.content == BODY.replace("\r\n", "\n")
    assert event.start_date == "2026-12-01T08:12:40.000000+00:00"
    async with store.reading() as db:
        support = await find_by_address(db, organisation.support)
    assert support is not None
    assert event.department_id == support.id


async def test_an_unknown_sender_becomes_an_external_contact(
    store: Store, organisation: Organisation
) -> None:
    """The first mail of someone creates their contact, not one of ours."""
    await _ingest(store, MESSAGE)

    async with store.reading() as db:
        laura = await find_by_address(db, "laura@example.org")
    assert laura is not None
    assert (laura.name, laura.internal) == ("Laura Beispiel", False)


async def test_a_missing_date_falls_back_to_the_arrival_time_and_says_so(
    store: Store, organisation: Organisation
) -> None:
    """No Date: the event starts when the message came, noted in details."""
    outcome = await _ingest(
        store,
        mail(
            "From: laura@example.org",
            "To: support@example.com",
            "Message-ID: <no-date@example.org>",
        ),
    )

    event = await _event(store, outcome)
    assert event.start_date[:4] >= "2026"
    assert event.details["date_fallback"] == "arrival time"
    assert event.details["date_problem"] == "missing"


async def test_the_same_message_again_adds_no_event(
    store: Store, organisation: Organisation
) -> None:
    """Same Message-ID from the same sender: a duplicate of the first."""
    first = await _ingest(store, MESSAGE)
    second = await _ingest(store, MESSAGE)

    assert (first.result, second.result) == (ACCEPTED, DUPLICATE)
    assert second.event_id == first.event_id
    assert await _count(store, "event") == 1
    assert await _count(store, "receipt") == 2


async def test_the_same_message_id_from_another_sender_is_another_event(
    store: Store, organisation: Organisation
) -> None:
    """A Message-ID is only unique with its sender: no false duplicate."""
    await _ingest(store, MESSAGE)
    other = MESSAGE.replace(b"laura@example.org", b"kai@example.net")

    outcome = await _ingest(store, other)

    assert outcome.result == ACCEPTED
    assert await _count(store, "event") == 2


async def test_a_copy_for_another_mailbox_joins_the_event_and_its_worklist(
    store: Store, organisation: Organisation
) -> None:
    """A Bcc copy to sales@ adds sales@ to the event; nothing else changes."""
    first = await _ingest(store, MESSAGE)
    maria = await staff(store, organisation.staff)
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO contact (kind, name, parent_id, created_at) "
            "SELECT 'person', 'Sam Sales', id, '2026-12-01' FROM contact "
            "WHERE name = 'Sales'"
        )
        await db.execute(
            "INSERT INTO contact_address (key, address, contact_id, position)"
            " SELECT 'sam@example.com', 'sam@example.com', MAX(id), 0 "
            "FROM contact"
        )
    sam = await staff(store, "sam@example.com")

    copy = await _ingest(store, MESSAGE, (organisation.sales,))

    assert copy.result == DUPLICATE
    event = await _event(store, copy)
    assert [(p.address, p.kind) for p in event.recipients] == [
        (organisation.support, "to"),
        (organisation.sales, "bcc"),
    ]
    for person in (maria, sam):
        async with store.reading() as db:
            lists = await worklists_for(db, person)
        [to_deliver] = [w for w in lists if w.name == "to-deliver"]
        assert [e.id for e in to_deliver.events] == [first.event_id]


async def test_a_copy_of_staff_mail_to_outside_is_their_sent_event(
    store: Store, organisation: Organisation
) -> None:
    """Maria wrote a customer, support@ in Bcc: her outgoing event, sent."""
    outcome = await _ingest(
        store,
        mail(
            f"From: Maria Staff <{organisation.staff}>",
            "To: kai@example.net",
            "Subject: Your quote",
            "Message-ID: <quote.9@example.com>",
        ),
    )

    event = await _event(store, outcome)
    assert (event.direction, event.state) == ("outgoing", "sent")
    maria = await staff(store, organisation.staff)
    assert event.assignee_ids == (maria.id,)
    assert [(p.address, p.kind) for p in event.recipients] == [
        ("kai@example.net", "to"),
        (organisation.support, "bcc"),
    ]
    assert not may_acknowledge(outcome)


async def test_staff_mail_to_one_of_our_mailboxes_is_incoming(
    store: Store, organisation: Organisation
) -> None:
    """Maria writing to sales@ is a received event of that department."""
    outcome = await _ingest(
        store,
        mail(
            f"From: {organisation.staff}",
            f"To: {organisation.sales}",
            "Subject: Lead for you",
            "Message-ID: <lead.1@example.com>",
        ),
        (organisation.sales,),
    )

    event = await _event(store, outcome)
    assert (event.direction, event.state) == ("incoming", "received")
    async with store.reading() as db:
        sales = await find_by_address(db, organisation.sales)
    assert sales is not None
    assert event.department_id == sales.id


async def test_without_envelope_delivered_to_names_our_mailbox(
    store: Store, organisation: Organisation
) -> None:
    """A file of list mail: our mailbox from Delivered-To becomes Bcc."""
    outcome = await _ingest(
        store,
        mail(
            "Delivered-To: sales@example.com",
            "From: news@lists.example.org",
            "To: members@lists.example.org",
            "List-Id: Members <members.lists.example.org>",
            "Message-ID: <news.1@lists.example.org>",
        ),
        (),
    )

    event = await _event(store, outcome)
    assert [(p.address, p.kind) for p in event.recipients] == [
        ("members@lists.example.org", "to"),
        (organisation.sales, "bcc"),
    ]
    assert event.details["list_id"] == "members.lists.example.org"


async def test_mail_for_no_mailbox_of_ours_is_quarantined(
    store: Store, organisation: Organisation
) -> None:
    """A file naming none of our addresses has no one to deliver it to."""
    outcome = await _ingest(
        store,
        mail(
            "From: laura@example.org",
            "To: someone@example.net",
            "Message-ID: <elsewhere@example.org>",
        ),
        (),
    )

    assert outcome.result == QUARANTINED
    assert outcome.reason == "addressed to no mailbox of ours"
    assert await _count(store, "event") == 0


async def test_without_from_the_envelope_sender_is_the_sender(
    store: Store, organisation: Organisation
) -> None:
    """No From, no Sender: MAIL FROM names who wrote it."""
    outcome = await Ingestor(store).ingest(
        Delivery(
            raw=mail("To: support@example.com", "Subject: Hello"),
            mailboxes=(organisation.support,),
            mail_from="scanner@office.example.org",
        )
    )

    event = await _event(store, outcome)
    assert event.sender.address == "scanner@office.example.org"


@pytest.mark.parametrize(
    "field",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "Precedence: list",
        "Precedence: junk",
        "X-Autoreply: yes",
    ],
)
async def test_automatic_mail_is_flagged_and_never_acknowledged(
    store: Store, organisation: Organisation, field: str
) -> None:
    """Auto-replies and bulk mail (RFC 3834) are kept, flagged, unanswered."""
    outcome = await _ingest(store, mail(field, *_fields_of(MESSAGE)))

    assert outcome.result == ACCEPTED
    assert outcome.automatic
    assert not may_acknowledge(outcome)
    event = await _event(store, outcome)
    assert event.automatic
    assert event.details["automatic_reason"]


async def test_mail_a_person_wrote_may_be_acknowledged(
    store: Store, organisation: Organisation
) -> None:
    """Auto-Submitted: no is a person's mail (RFC 3834 5)."""
    outcome = await _ingest(
        store, mail("Auto-Submitted: no", *_fields_of(MESSAGE))
    )

    assert not outcome.automatic
    assert may_acknowledge(outcome)


def _fields_of(raw: bytes) -> list[str]:
    """Return the header fields of a message built by ``mail``."""
    return raw.partition(b"\r\n\r\n")[0].decode().split("\r\n")


async def test_log_events_carry_facts_and_never_the_body(
    store: Store, organisation: Organisation
) -> None:
    """ingest.accepted and ingest.duplicate: Message-ID, mailbox, event."""
    with capture_logs() as logs:
        first = await _ingest(store, MESSAGE)
        await _ingest(store, MESSAGE)

    found = {e["event"]: e for e in logs if e["event"].startswith("ingest.")}
    assert set(found) == {"ingest.accepted", "ingest.duplicate"}
    for entry in found.values():
        assert entry["message_id"] == "<order-4711.1@mail.example.org>"
        assert entry["mailboxes"] == ["support@example.com"]
        assert entry["event_id"] == first.event_id
        assert "thread_reason" in entry
    assert "ZX-99" not in json.dumps(logs, default=str)


async def test_a_dry_run_writes_nothing(
    store: Store, organisation: Organisation
) -> None:
    """The outcome is told; no row and no file is written."""
    blobs = _blob_files(store)
    counts = [await _count(store, t) for t in ("event", "contact", "receipt")]

    outcome = await _ingest(store, MESSAGE, dry_run=True)

    assert (outcome.result, outcome.event_id) == (ACCEPTED, None)
    assert outcome.direction == "incoming"
    assert [
        await _count(store, t) for t in ("event", "contact", "receipt")
    ] == counts
    assert _blob_files(store) == blobs


async def test_mailgate_ingest_dry_run_prints_and_writes_nothing(
    store: Store,
    organisation: Organisation,
    mailgate: Mailgate,
    dump: Dump,
    tmp_path: Path,
) -> None:
    """``mailgate ingest --dry-run`` says what would happen, stores nothing."""
    path = tmp_path / "order.eml"
    path.write_bytes(MESSAGE)
    before, blobs = dump(), _blob_files(store)

    printed = await asyncio.to_thread(
        mailgate, "ingest", "--dry-run", str(path)
    )
    as_json = await asyncio.to_thread(
        mailgate, "ingest", "--dry-run", "--json", str(path)
    )

    assert "would be accepted" in printed.stdout
    assert "dry run: nothing was stored" in printed.stdout
    [document] = as_json.json()
    assert (document["dry_run"], document["result"]) == (True, "accepted")
    assert dump() == before
    assert _blob_files(store) == blobs
