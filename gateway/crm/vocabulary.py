"""The CRM's fixed words: event and ticket types, directions, roles.

On the command line and in JSON a type is lower-case words joined by
hyphens (``mail-message``); people read it as ``Mail Message``.
"""

from __future__ import annotations

from gateway.errors import InvalidInput

EVENT_TYPES = (
    "mail-message",
    "phone-call",
    "visit",
    "note",
    "letter",
    "fax-message",
    "site-message",
    "web-message",
)
MAIL_MESSAGE = "mail-message"

TICKET_TYPES = ("campaign", "meeting", "sale-opportunity", "support-request")

DIRECTIONS = ("incoming", "outgoing")

ROLES = ("staff", "manager")
MANAGER = "manager"


def display(word: str) -> str:
    """Return the spelling for people: ``mail-message`` -> ``Mail Message``."""
    return " ".join(part.capitalize() for part in word.split("-"))


def parse_word(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return the canonical word for value, accepting ``Mail Message`` too.

    Raises InvalidInput naming the accepted words.
    """
    word = "-".join(value.strip().lower().replace("_", "-").split())
    if word not in allowed:
        raise InvalidInput(
            f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}"
        )

    return word
