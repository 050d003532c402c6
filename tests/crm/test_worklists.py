"""Worklists and listings: counts cover the whole list, events read in bulk."""

from __future__ import annotations

from gateway.crm.contacts import Contact, add_organisation, add_person
from gateway.crm.events import NewEvent, create_event, get_event, list_events
from gateway.crm.listing import load_events
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
