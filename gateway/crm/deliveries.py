"""Failed deliveries: outgoing mail queued again once the cause is fixed.

A Mail Message whose delivery failed for some recipient (refused:
bounced; given up on: failed) stays on the failed-deliveries worklist.
Its sender or a manager may hand it back to the outbox with the
``retry`` step: the event is ``confirmed`` again, those recipients are
queued with their attempts counted anew, and the recipients the smart
host took already are left out, so that no one gets a second copy.
"""

from __future__ import annotations

import aiosqlite

from gateway.crm.contacts import Contact
from gateway.crm.events import Event, get_event
from gateway.crm.steps import take_step
from gateway.outbox import queue
from gateway.outbox.render import rendered_by_us
from workflow import Role, TransitionRefused


async def retry_delivery(
    db: aiosqlite.Connection,
    event_id: int,
    actor: Contact | None,
    comment: str = "",
) -> Event:
    """Queue a failed delivery again for the recipients it failed for.

    Records a ``retry`` step in the history. Raises TransitionRefused,
    changing nothing, unless the gateway sends the event itself (not a
    copy of mail sent elsewhere), some recipient is bounced or failed and
    none is still on its way (queued or deferred: the outbox still
    sends to it), and the actor is its sender or a manager.
    """
    event = await get_event(db, event_id)
    statuses = await queue.delivery_statuses(db, event_id)
    failed = [
        address
        for address, status in statuses
        if status in (queue.BOUNCED, queue.FAILED)
    ]
    under_way = [
        address
        for address, status in statuses
        if status in (queue.QUEUED, queue.DEFERRED)
    ]
    if not rendered_by_us(event) or not failed:
        raise TransitionRefused(
            f"cannot retry event {event_id}: it is not a delivery that "
            "failed (see the failed-deliveries worklist)"
        )
    if under_way:
        raise TransitionRefused(
            f"cannot retry event {event_id}: its delivery to "
            f"{', '.join(under_way)} is still under way"
        )

    sender = actor is not None and actor.id == event.sender.contact_id
    also = frozenset({Role.SENDER}) if sender else frozenset()
    # The step first: a refused actor changes nothing.
    await take_step(
        db,
        event,
        "retry",
        actor,
        _note(failed, comment),
        also=also,
    )
    await queue.requeue(db, event_id)

    return await get_event(db, event_id)


def _note(addresses: list[str], comment: str) -> str:
    """Return the history's comment: who it is queued for, and why."""
    note = f"queued again for {', '.join(dict.fromkeys(addresses))}"

    return f"{note}: {comment}" if comment else note
