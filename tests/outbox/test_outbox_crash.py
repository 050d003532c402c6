"""A worker killed mid-send: the mail goes out once, or at worst twice.

The worker runs as a task and is cancelled at a precise moment, as a
crash would stop it: nothing of the interrupted send is recorded. A
second worker takes over once the first one's lease has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy

import structlog.testing

from gateway.crm.events import get_event
from gateway.outbox.worker import Outbox
from gateway.settings import Settings
from gateway.store import Store

from .conftest import SmartHost, Staff, confirmed_mail, wait_for

LEASE_SECONDS = 0.3


def _stop_at(
    moment: str, reached: asyncio.Event
) -> Callable[..., Awaitable[None]]:
    """Return a checkpoint that halts the worker for good at moment."""

    async def checkpoint(name: str, event_id: int) -> None:
        if name == moment:
            reached.set()
            await asyncio.Event().wait()

    return checkpoint


async def _kill(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _take_over(
    store: Store, settings: Settings, event_id: int
) -> list[dict[str, object]]:
    """Run a fresh worker until the event is sent; return its warnings."""
    worker = Outbox(store, settings.outbox, owner="worker-2")

    async def sent() -> bool:
        await worker.run_batch()
        async with store.reading() as db:
            return (await get_event(db, event_id)).state == "sent"

    with structlog.testing.capture_logs() as logs:
        await wait_for(sent)

    return [entry for entry in logs if entry["log_level"] == "warning"]


def _settings(outbound: Settings) -> Settings:
    outbox = outbound.outbox.model_copy(
        update={"lease_seconds": LEASE_SECONDS}
    )

    return outbound.model_copy(update={"outbox": outbox})


async def test_killed_before_the_smart_host_answered_sends_once(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """The smart host had the data but no reply went out: one copy."""
    settings = _settings(outbound)
    event_id = await confirmed_mail(store, staff)
    smart_host.handler.hold = True
    first = Outbox(store, settings.outbox, owner="worker-1")

    task = asyncio.create_task(first.run_batch())
    await smart_host.handler.holding.wait()
    await _kill(task)
    smart_host.handler.hold = False
    warnings = await _take_over(store, settings, event_id)

    assert len(smart_host.handler.received) == 1
    assert [w["event"] for w in warnings] == ["outbox.possible_duplicate"]
    assert warnings[0]["previous_owner"] == "worker-1"


async def test_killed_between_acceptance_and_commit_resends_same_id(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """The known window: a second copy, with the same Message-ID, logged."""
    settings = _settings(outbound)
    event_id = await confirmed_mail(store, staff)
    reached = asyncio.Event()
    first = Outbox(
        store,
        settings.outbox,
        owner="worker-1",
        checkpoint=_stop_at("answered", reached),
    )

    task = asyncio.create_task(first.run_batch())
    await reached.wait()
    await _kill(task)
    warnings = await _take_over(store, settings, event_id)

    copies = [
        message_from_bytes(copy.content, policy=policy.default)
        for copy in smart_host.handler.received
    ]
    assert len(copies) == 2
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]
    assert [w["event"] for w in warnings] == ["outbox.possible_duplicate"]


async def test_killed_mid_batch_keeps_what_was_answered_before(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Answers not yet committed are committed on the way out."""
    settings = _settings(outbound)
    first_id = await confirmed_mail(store, staff, title="First")
    second_id = await confirmed_mail(store, staff, title="Second")
    reached = asyncio.Event()

    async def checkpoint(name: str, event_id: int) -> None:
        if (name, event_id) == ("answered", second_id):
            reached.set()
            await asyncio.Event().wait()

    first = Outbox(
        store, settings.outbox, owner="worker-1", checkpoint=checkpoint
    )

    task = asyncio.create_task(first.run_batch())
    await reached.wait()
    await _kill(task)
    async with store.reading() as db:
        assert (await get_event(db, first_id)).state == "sent"
    warnings = await _take_over(store, settings, second_id)

    subjects = [
        message_from_bytes(copy.content, policy=policy.default)["Subject"]
        for copy in smart_host.handler.received
    ]
    assert subjects == ["First", "Second", "Second"]
    assert [w["event_id"] for w in warnings] == [second_id]


async def test_killed_after_sent_was_committed_sends_nothing_again(
    store: Store, staff: Staff, outbound: Settings, smart_host: SmartHost
) -> None:
    """Once sent is committed, no restart sends it again."""
    settings = _settings(outbound)
    event_id = await confirmed_mail(store, staff)
    reached = asyncio.Event()
    first = Outbox(
        store,
        settings.outbox,
        owner="worker-1",
        checkpoint=_stop_at("committed", reached),
    )

    task = asyncio.create_task(first.run_batch())
    await reached.wait()
    await _kill(task)
    # Past the lease: had the event still been due, it would be taken now.
    await asyncio.sleep(LEASE_SECONDS)
    second = Outbox(store, settings.outbox, owner="worker-2")
    report = await second.run_batch()

    assert report.claimed == 0
    assert len(smart_host.handler.received) == 1
    async with store.reading() as db:
        assert (await get_event(db, event_id)).state == "sent"
