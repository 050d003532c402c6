"""The parsed message: what the gateway reads out of one inbound mail.

These are plain immutable values. Every string in them is valid Unicode
(no lone surrogates), so they can be stored and JSON-encoded as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: the normalised address and its decoded display name."""

    email: str
    name: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A non-body leaf part: a file, an inline image, an attached message."""

    filename: str | None
    content_type: str
    data: bytes
    content_id: str | None
    inline: bool

    @property
    def size(self) -> int:
        """Return the number of decoded octets."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One per-recipient block of a delivery status notification."""

    address: str
    action: str
    status: str
    diagnostic: str


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """An RFC 3464 delivery status notification about an earlier message."""

    original_message_id: str | None
    recipients: tuple[ReportedRecipient, ...]


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One inbound message, decoded and repaired as far as possible.

    ``defects`` lists, in human words, what was wrong with the message and
    how it was repaired. ``received_date`` is the time of the newest
    Received field, for callers that need a date when ``date`` is None.
    """

    message_id: str
    message_id_synthetic: bool
    sender: Address | None
    sender_header: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    delivered_to: tuple[str, ...]
    title: str
    date: datetime | None
    date_problem: str | None
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    thread_index: bytes | None
    thread_topic: str | None
    automatic: bool
    automatic_reason: str | None
    list_id: str | None
    delivery_report: DeliveryReport | None
    defects: tuple[str, ...]
    received_date: datetime | None = None
