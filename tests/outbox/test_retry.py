"""Retrying a failed delivery: queued again, sent only to whom it failed."""

from __future__ import annotations

import socket

from gateway.crm.events import get_event, history_of
from gateway.outbox.queue import entry_of
from gateway.outbox.worker import Outbox
from gateway.settings import Settings
from gateway.store import Store

from .conftest import (
    Cli,
    SmartHost,
    Staff,
    confirmed_mail,
    until_given_up,
)


async def _statuses(store: Store, event_id: int) -> list[tuple[str, str]]:
    async with store.reading() as db:
        event = await get_event(db, event_id)

    return [(p.address, str(p.delivery_status)) for p in event.recipients]


async def test_mail_given_up_on_is_sent_once_retried_by_its_sender(
    store: Store,
    staff: Staff,
    outbound: Settings,
    smart_host: SmartHost,
    cli: Cli,
) -> None:
    """No smart host until max_attempts; retried, it goes out once.

    A colleague may not retry it; its sender may, with a comment kept in
    the history; the attempts start anew.
    """
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = Outbox(
        store, outbound.outbox.model_copy(update={"port": port})
    )
    event_id = await confirmed_mail(store, staff)

    await until_given_up(unreachable, store, event_id)
    assert await _statuses(store, event_id) == [(staff.customer, "failed")]

    refused = await cli(
        "event", "retry", str(event_id), actor=staff.sam, ok=False
    )
    assert refused.exit_code != 0
    assert "only manager or sender may" in refused.error

    retried = await cli(
        "event",
        "retry",
        str(event_id),
        "--comment",
        "relay is back",
        actor=staff.maria,
    )
    assert retried.stdout.strip() == (
        f"event {event_id} (confirmed): queued again for {staff.customer}"
    )
    async with store.reading() as db:
        entry = await entry_of(db, event_id)
    assert entry is not None
    assert (entry.attempts, entry.failure, entry.failed_at) == (0, None, None)

    outbox = Outbox(store, outbound.outbox)
    report = await outbox.run_batch()

    assert report.sent == 1
    (copy,) = smart_host.handler.received
    assert copy.rcpt_tos == [staff.customer]
    async with store.reading() as db:
        steps = await history_of(db, event_id)
        entry = await entry_of(db, event_id)
    assert entry is not None and entry.attempts == 1
    assert [(s.transition, s.state_after, s.actor) for s in steps[-2:]] == [
        ("retry", "confirmed", staff.maria),
        ("send", "sent", "mailgate"),
    ]
    assert steps[-2].comment == (
        f"queued again for {staff.customer}: relay is back"
    )
    assert await _statuses(store, event_id) == [(staff.customer, "sent")]


async def test_a_retry_sends_only_to_the_recipient_that_bounced(
    store: Store,
    staff: Staff,
    outbox: Outbox,
    smart_host: SmartHost,
    cli: Cli,
) -> None:
    """Sent to one, refused for the other: a manager's retry sends to the
    refused one alone; the first gets no second copy."""
    event_id = await confirmed_mail(store, staff, cc=["gone@example.net"])
    smart_host.handler.rcpt_replies = {
        "gone@example.net": "550 5.1.1 No such user"
    }
    await outbox.run_batch()
    assert await _statuses(store, event_id) == [
        (staff.customer, "sent"),
        ("gone@example.net", "bounced"),
    ]

    smart_host.handler.rcpt_replies = {}
    shown = await cli(
        "event", "retry", str(event_id), "--json", actor=staff.manager
    )
    assert shown.json()["state"] == "confirmed"
    worklists = await cli("worklist", "--json", actor=staff.manager)
    lists = {w["name"]: w for w in worklists.json()}
    assert [e["id"] for e in lists["to-send"]["events"]] == [event_id]
    assert lists["failed-deliveries"]["events"] == []

    report = await outbox.run_batch()

    assert report.sent == 1
    first, second = smart_host.handler.received
    assert first.rcpt_tos == [staff.customer]
    assert second.rcpt_tos == ["gone@example.net"]
    assert await _statuses(store, event_id) == [
        (staff.customer, "sent"),
        ("gone@example.net", "sent"),
    ]

    again = await cli(
        "event", "retry", str(event_id), actor=staff.manager, ok=False
    )
    assert again.error == (
        f"Error: cannot retry event {event_id}: it is not a delivery that "
        "failed (see the failed-deliveries worklist)"
    )


async def test_a_retry_refused_while_the_outbox_still_tries(
    store: Store, staff: Staff, outbox: Outbox, smart_host: SmartHost, cli: Cli
) -> None:
    """One recipient bounced, the other deferred: nothing to retry yet."""
    event_id = await confirmed_mail(store, staff, cc=["gone@example.net"])
    smart_host.handler.rcpt_replies = {
        "gone@example.net": "550 5.1.1 No such user",
        staff.customer: "451 4.3.0 Busy",
    }
    await outbox.run_batch()

    refused = await cli(
        "event", "retry", str(event_id), actor=staff.manager, ok=False
    )

    assert refused.error == (
        f"Error: cannot retry event {event_id}: its delivery to "
        f"{staff.customer} is still under way"
    )
    assert await _statuses(store, event_id) == [
        (staff.customer, "deferred"),
        ("gone@example.net", "bounced"),
    ]
