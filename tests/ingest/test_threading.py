"""Threading: which event a message answers, why, and when not to trust it."""

from __future__ import annotations

import base64

from structlog.testing import capture_logs

from gateway.crm.contacts import add_organisation
from gateway.crm.events import Event, NewEvent, create_event, get_event
from gateway.crm.tickets import create_ticket
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.crm.worklists import worklists_for
from gateway.ingest.pipeline import ACCEPTED, Delivery, Ingestor
from gateway.store import Store

from .conftest import Organisation, SendMail, mail, staff

ANNA = "anna.kunde@example.net"


async def _take(store: Store, raw: bytes) -> Event:
    """Ingest a message delivered to support@; return its new event."""
    outcome = await Ingestor(store).ingest(
        Delivery(raw=raw, mailboxes=("support@example.com",))
    )
    assert outcome.result == ACCEPTED, outcome.reason
    assert outcome.event_id is not None
    async with store.reading() as db:
        return await get_event(db, outcome.event_id)


async def _sent_in_ticket(
    store: Store, organisation: Organisation, message_id: str
) -> Event:
    """Record a mail Maria sent to Anna, following up a new ticket."""
    maria = await staff(store, organisation.staff)
    async with store.transaction() as db:
        ticket = await create_ticket(
            db, "support-request", "Pump HX-3 spare parts", maria
        )
        return await create_event(
            db,
            NewEvent(
                type=MAIL_MESSAGE,
                sender=organisation.staff,
                to=[ANNA],
                title=f"Spare parts for pump HX-3 {ticket.tag}",
                content="The kit costs 84.00 EUR.",
                direction="outgoing",
                ticket_id=ticket.id,
                state="sent",
                message_id=message_id,
            ),
            maria,
            transition="send",
        )


async def _worklist(store: Store, address: str, name: str) -> list[int]:
    person = await staff(store, address)
    async with store.reading() as db:
        lists = await worklists_for(db, person)

    return [event.id for w in lists if w.name == name for event in w.events]


async def test_a_reply_to_our_mail_is_received_on_its_ticket_and_worklist(
    store: Store, organisation: Organisation, send_mail: SendMail
) -> None:
    """In-Reply-To names our sent mail: causality, ticket, to-deliver list."""
    sent = await _sent_in_ticket(store, organisation, "<offer.1@example.com>")
    reply = mail(
        f"From: Anna Kunde <{ANNA}>",
        f"To: Maria Staff <{organisation.staff}>",
        "Subject: Re: Spare parts for pump HX-3",
        "Message-ID: <answer.1@mail.example.net>",
        "In-Reply-To: <offer.1@example.com>",
        body="Yes, please ship it.\r\n",
    )

    answered = await send_mail(reply, [organisation.staff], ANNA)

    assert answered.code == 250
    async with (
        store.reading() as db,
        db.execute(
            "SELECT id FROM event WHERE message_id = ?",
            ("<answer.1@mail.example.net>",),
        ) as cursor,
    ):
        row = await cursor.fetchone()
    assert row is not None
    async with store.reading() as db:
        event = await get_event(db, int(row[0]))
    assert (event.direction, event.state) == ("incoming", "received")
    assert event.causality_id == sent.id
    assert event.ticket_id == sent.ticket_id
    assert event.thread_reason == {
        "header": "In-Reply-To",
        "value": "<offer.1@example.com>",
        "event": sent.id,
    }
    assert event.id in await _worklist(store, organisation.staff, "to-deliver")


async def test_references_are_tried_newest_first(
    store: Store, organisation: Organisation
) -> None:
    """Without In-Reply-To, the last References entry that is ours wins."""
    older = await _take(
        store,
        mail(f"From: {ANNA}", "To: support@example.com", "Message-ID: <a@x>"),
    )
    newer = await _take(
        store,
        mail(f"From: {ANNA}", "To: support@example.com", "Message-ID: <b@x>"),
    )

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <c@x>",
            "References: <a@x> <b@x> <unknown@x>",
        ),
    )

    assert older.id < newer.id
    assert event.causality_id == newer.id
    assert event.thread_reason == {
        "header": "References",
        "value": "<b@x>",
        "event": newer.id,
    }


async def test_in_reply_to_comes_before_references(
    store: Store, organisation: Organisation
) -> None:
    """In-Reply-To names the parent even when References end elsewhere."""
    first = await _take(
        store,
        mail(f"From: {ANNA}", "To: support@example.com", "Message-ID: <a@x>"),
    )
    await _take(
        store,
        mail(f"From: {ANNA}", "To: support@example.com", "Message-ID: <b@x>"),
    )

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <c@x>",
            "In-Reply-To: <a@x>",
            "References: <b@x>",
        ),
    )

    assert event.causality_id == first.id
    assert event.thread_reason is not None
    assert event.thread_reason["header"] == "In-Reply-To"


async def test_an_ancestor_only_earlier_references_named_finds_the_thread(
    store: Store, organisation: Organisation
) -> None:
    """A Message-ID we never received, named by an event, leads to it."""
    known = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <second@x>",
            "References: <root@elsewhere>",
        ),
    )

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <third@x>",
            "References: <root@elsewhere>",
        ),
    )

    assert event.causality_id == known.id
    assert event.thread_reason == {
        "header": "References (ancestor)",
        "value": "<root@elsewhere>",
        "event": known.id,
    }


async def test_outlook_thread_index_finds_the_parent(
    store: Store, organisation: Organisation
) -> None:
    """A Thread-Index one 5-octet block longer than ours names its parent."""
    root = bytes(range(22))
    child = root + b"\x00\x01\x02\x03\x04"
    parent = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <p@x>",
            f"Thread-Index: {base64.b64encode(root).decode()}",
        ),
    )

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <q@x>",
            f"Thread-Index: {base64.b64encode(child).decode()}",
        ),
    )

    assert event.causality_id == parent.id
    assert event.thread_reason is not None
    assert event.thread_reason["header"] == "Thread-Index"


async def test_an_event_tag_in_the_subject_gives_the_causality(
    store: Store, organisation: Organisation
) -> None:
    """``[#EVT-n]`` in the subject links to event n when nothing else does."""
    earlier = await _take(
        store,
        mail(f"From: {ANNA}", "To: support@example.com", "Message-ID: <e@x>"),
    )

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            f"Subject: Re: [#EVT-{earlier.id}] my question",
            "Message-ID: <f@x>",
        ),
    )

    assert event.causality_id == earlier.id
    assert event.thread_reason == {
        "header": "Subject",
        "value": f"[#EVT-{earlier.id}]",
        "event": earlier.id,
    }


async def test_a_ticket_tag_in_the_subject_gives_the_ticket(
    store: Store, organisation: Organisation
) -> None:
    """``[#TKT-n]`` follows up ticket n, with no causality."""
    sent = await _sent_in_ticket(store, organisation, "<offer.2@example.com>")

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            f"Subject: More about [#TKT-{sent.ticket_id}]",
            "Message-ID: <g@x>",
        ),
    )

    assert event.causality_id is None
    assert event.ticket_id == sent.ticket_id
    assert event.thread_reason == {
        "header": "Subject",
        "value": f"[#TKT-{sent.ticket_id}]",
        "ticket": sent.ticket_id,
    }


async def test_a_colleague_of_the_contact_is_trusted_on_the_ticket(
    store: Store, organisation: Organisation
) -> None:
    """Someone of the same organisation as the contact takes part too."""
    async with store.transaction() as db:
        await add_organisation(db, "Kunde GmbH", domains=["example.net"])
    sent = await _sent_in_ticket(store, organisation, "<offer.3@example.com>")

    event = await _take(
        store,
        mail(
            "From: bernd.kunde@example.net",
            "To: support@example.com",
            "Message-ID: <h@x>",
            "In-Reply-To: <offer.3@example.com>",
        ),
    )

    assert event.causality_id == sent.id
    assert event.ticket_id == sent.ticket_id
    assert event.triage is None


async def test_a_stranger_answering_a_ticket_mail_is_set_aside_for_triage(
    store: Store, organisation: Organisation
) -> None:
    """No part in the ticket: unlinked, on the to-triage worklist."""
    sent = await _sent_in_ticket(store, organisation, "<offer.4@example.com>")

    with capture_logs() as logs:
        event = await _take(
            store,
            mail(
                "From: mallory@example.org",
                "To: support@example.com",
                "Message-ID: <i@x>",
                "In-Reply-To: <offer.4@example.com>",
            ),
        )

    assert (event.causality_id, event.ticket_id) == (None, None)
    assert event.thread_reason is None
    assert event.triage == {
        "header": "In-Reply-To",
        "value": "<offer.4@example.com>",
        "why": "sender has no part in the ticket",
        "candidates": [sent.id],
        "ticket": sent.ticket_id,
    }
    [triage] = [e for e in logs if e["event"] == "ingest.triage"]
    assert triage["event_id"] == event.id
    for person in (organisation.manager, organisation.staff):
        assert await _worklist(store, person, "to-triage") == [event.id]


async def test_a_message_id_naming_several_events_is_set_aside_for_triage(
    store: Store, organisation: Organisation
) -> None:
    """Two senders used one Message-ID: the reply lists both, links none."""
    first = await _take(
        store,
        mail(
            f"From: {ANNA}", "To: support@example.com", "Message-ID: <same@x>"
        ),
    )
    second = await _take(
        store,
        mail(
            "From: bob@example.org",
            "To: support@example.com",
            "Message-ID: <same@x>",
        ),
    )

    event = await _take(
        store,
        mail(
            "From: carl@example.org",
            "To: support@example.com",
            "Message-ID: <j@x>",
            "In-Reply-To: <same@x>",
        ),
    )

    assert event.causality_id is None
    assert event.triage is not None
    assert event.triage["why"] == "names several events"
    assert event.triage["candidates"] == [first.id, second.id]


async def test_a_ticket_tag_from_a_stranger_is_set_aside_for_triage(
    store: Store, organisation: Organisation
) -> None:
    """``[#TKT-n]`` from someone with no part in ticket n is not trusted."""
    sent = await _sent_in_ticket(store, organisation, "<offer.5@example.com>")

    event = await _take(
        store,
        mail(
            "From: mallory@example.org",
            "To: support@example.com",
            f"Subject: [#TKT-{sent.ticket_id}] let me in",
            "Message-ID: <k@x>",
        ),
    )

    assert event.ticket_id is None
    assert event.triage is not None
    assert event.triage["why"] == "sender has no part in the ticket"


async def test_a_linked_event_is_not_on_the_to_triage_worklist(
    store: Store, organisation: Organisation
) -> None:
    """Only untrusted matches wait for triage."""
    sent = await _sent_in_ticket(store, organisation, "<offer.6@example.com>")

    event = await _take(
        store,
        mail(
            f"From: {ANNA}",
            "To: support@example.com",
            "Message-ID: <l@x>",
            "In-Reply-To: <offer.6@example.com>",
        ),
    )

    assert event.causality_id == sent.id
    assert await _worklist(store, organisation.manager, "to-triage") == []
