"""A delivery: one inbound message as it reached us, and its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
BOUNCE = "bounce"
QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One inbound message as it reached us, before it is understood.

    The message is ``trace`` then ``raw``: the trace fields we add (our
    Received field) are kept apart so that a large message is never
    copied only to put a line before it.
    """

    raw: bytes
    # Our mailboxes it was delivered to (envelope recipients, IMAP box).
    mailboxes: tuple[str, ...] = ()
    source: str = "file"
    mail_from: str | None = None
    peer: str | None = None
    trace: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one delivery."""

    result: str
    message_id: str | None = None
    event_id: int | None = None
    quarantine_id: int | None = None
    direction: str | None = None
    state: str | None = None
    thread_reason: dict[str, Any] | None = None
    triage: dict[str, Any] | None = None
    automatic: bool = False
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "result": self.result,
            "message_id": self.message_id,
            "event": self.event_id,
            "quarantine": self.quarantine_id,
            "direction": self.direction,
            "state": self.state,
            "thread_reason": self.thread_reason,
            "triage": self.triage,
            "automatic": self.automatic,
            "reason": self.reason,
        }
