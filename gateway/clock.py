"""Time as the store writes it: ISO 8601, UTC, microseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


def as_text(moment: datetime) -> str:
    """Return the store's spelling of a moment (sortable as text)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_text() -> str:
    """Return the current time in the store's spelling."""
    return as_text(now())
