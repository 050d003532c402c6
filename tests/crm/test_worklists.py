"""Worklists and listings: who waits for what, counts, events read in bulk."""

from __future__ import annotations

from gateway.crm.contacts import Contact, add_organisation, add_person
from gateway.crm.events import NewEvent, create_event, get_event, list_events
from gateway.crm.listing import load_events
from gateway.crm.steps import transition
from gateway.crm.worklists import worklist_for, worklists_for
from gateway.store import Store


async def _drafts(store: Store, count: int) -> tuple[Contact, list[int]]:
    """Create Maria, a customer, and count drafts of hers; return them."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        maria = await add_person(
            db, "maria@example.com", name="Maria", roles=["manager"]
        )
        await add_person(db, "jonas@example.org", name="Jonas Beispiel")
        ids = []
        for number in range(count):
            event = await create_event(
                db,
                NewEvent(
                    type="mail-message",
                    sender="maria@example.com",
                    to=["jonas@example.org"],
                    cc=["anna@example.net"] if number % 2 else [],
                    title=f"Offer {number}",
                    content="Dear Jonas,\n",
                ),
                maria,
            )
            ids.append(event.id)

    return maria, ids


async def test_events_read_in_bulk_equal_those_read_one_by_one(
    store: Store,
) -> None:
    """load_events returns what get_event returns, in the order asked."""
    _, ids = await _drafts(store, 4)
    wanted = [ids[2], ids[0], ids[3], ids[1]]

    async with store.reading() as db:
        bulk = await load_events(db, [*wanted, 9999])
        single = [await get_event(db, event_id) for event_id in wanted]
        listed = await list_events(db, state="draft")

    assert bulk == single
    assert [event.id for event in listed] == sorted(ids, reverse=True)


async def test_a_worklist_counts_every_event_but_reads_only_the_first(
    store: Store,
) -> None:
    """The count covers the list; events holds the first ``limit`` by id."""
    maria, ids = await _drafts(store, 5)

    async with store.reading() as db:
        drafts = await worklist_for(db, maria, "draft", limit=2)
        every = await worklists_for(db, maria)

    assert drafts.count == 5
    assert [event.id for event in drafts.events] == ids[:2]
    assert drafts.to_json()["count"] == 5
    assert [w.count for w in every if w.name == "draft"] == [5]


async def _office(store: Store) -> dict[str, Contact]:
    """Create Example with Support and Sales, their staff and a customer."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        for department in ("Support", "Sales"):
            await add_organisation(
                db,
                department,
                parent="Example",
                addresses=[f"{department.lower()}@example.com"],
            )
        people = {
            name: await add_person(
                db,
                f"{name}@example.com",
                name=name.title(),
                organisation=organisation,
                roles=[role],
            )
            for name, organisation, role in (
                ("sven", "Support", "staff"),
                ("sara", "Support", "staff"),
                ("sally", "Sales", "staff"),
                ("chef", "Example", "manager"),
            )
        }

    return people


async def _received(
    store: Store,
    title: str,
    to: list[str],
    *,
    assignees: list[int] | None = None,
    triage: bool = False,
) -> int:
    """Record a received mail from a customer; return its id."""
    async with store.transaction() as db:
        event = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender="ann@customer.example",
                to=to,
                title=title,
                direction="incoming",
                state="received",
                assignee_ids=assignees or [],
                triage={"reason": "subject only"} if triage else None,
            ),
            None,
        )

    return event.id


async def _ids(store: Store, person: Contact, name: str) -> list[int]:
    """Return the ids of a person's worklist, checking its count."""
    async with store.reading() as db:
        found = await worklist_for(db, person, name)
    assert found.count == len(found.events)

    return [event.id for event in found.events]


async def test_to_deliver_holds_what_waits_for_the_person(
    store: Store,
) -> None:
    """Mail to them or their department unassigned, or assigned to them."""
    people = await _office(store)
    sven, sara = people["sven"], people["sara"]
    to_sven = await _received(store, "To Sven", ["sven@example.com"])
    to_support = await _received(store, "To Support", ["support@example.com"])
    to_both = await _received(
        store, "To both", ["sven@example.com", "support@example.com"]
    )
    await _received(store, "To Sales", ["sales@example.com"])
    taken = await _received(
        store, "Taken", ["support@example.com"], assignees=[sara.id]
    )
    handed = await _received(
        store, "Handed", ["sales@example.com"], assignees=[sven.id]
    )
    delivered = await _received(store, "Done", ["sven@example.com"])
    async with store.transaction() as db:
        await transition(db, delivered, "deliver", people["chef"])

    assert await _ids(store, sven, "to-deliver") == [
        to_sven,
        to_support,
        to_both,
        handed,
    ]
    assert await _ids(store, sara, "to-deliver") == [
        to_support,
        to_both,
        taken,
    ]
    assert await _ids(store, people["chef"], "to-deliver") == []


async def test_to_triage_holds_unlinked_mail_that_waits_for_the_person(
    store: Store,
) -> None:
    """Staff see the triage mail of theirs; managers see all of it."""
    people = await _office(store)
    mine = await _received(
        store, "Support", ["support@example.com"], triage=True
    )
    await _received(store, "No triage", ["support@example.com"])
    assigned = await _received(
        store,
        "Assigned",
        ["sales@example.com"],
        assignees=[people["sven"].id],
        triage=True,
    )
    other = await _received(store, "Sales", ["sales@example.com"], triage=True)

    assert await _ids(store, people["sven"], "to-triage") == [mine, assigned]
    assert await _ids(store, people["sally"], "to-triage") == [other]
    assert await _ids(store, people["chef"], "to-triage") == [
        mine,
        assigned,
        other,
    ]
