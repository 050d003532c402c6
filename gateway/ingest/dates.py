"""Dates of an inbound message: the origination date and the arrival time.

``email.utils.parsedate_to_datetime`` reads RFC 5322 3.3 dates, including
the obsolete forms (two-digit years, zone names). Every date comes back
aware and in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class MessageDate:
    """A parsed date; ``problem`` says why it is None or how it was read."""

    value: datetime | None
    problem: str | None = None


def parse_date(value: str | None) -> MessageDate:
    """Read a Date field value; ``problem`` says why ``value`` is None."""
    if value is None or not value.strip():
        return MessageDate(None, "missing")

    note = None
    parsed = _rfc5322_date(value)
    if parsed is None:
        parsed = _iso_date(value)
        note = "not RFC 5322, read as ISO 8601"

    if parsed is None:
        return MessageDate(None, f"unparsable: {value.strip()}")

    # RFC 5322 3.3: "-0000" gives no zone; the time is then taken as UTC.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)

    try:
        return MessageDate(parsed.astimezone(UTC), note)
    except (OverflowError, ValueError):
        return MessageDate(None, f"unparsable: {value.strip()}")


def received_date(received_fields: list[str]) -> datetime | None:
    """Return the time stamp of the newest (topmost) Received field."""
    if not received_fields:
        return None

    # RFC 5321 4.4: the date-time follows the last semicolon.
    stamp = received_fields[0].rpartition(";")[2]

    return parse_date(stamp).value


def _rfc5322_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _iso_date(value: str) -> datetime | None:
    """Accept ISO 8601, which some scripts write into Date fields."""
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None
