"""VERP envelope senders: the bounce address names the event it is about.

Each outgoing Mail Message is sent with the envelope sender
``bounces+evt-42@domain`` (variable envelope return path), so that a
bounce, which goes to that address (RFC 5321 4.5.5), finds event 42 even
when it quotes nothing of the original message.

Limitation: only bounces that reach the inbound SMTP or LMTP listener
carry the VERP address as their envelope recipient; one fetched over IMAP
is known by the mailbox it was read from, and finds its event by the
Message-ID it quotes only.
"""

from __future__ import annotations

import re

LOCAL_PART = "bounces"

_VERP = re.compile(rf"^{LOCAL_PART}\+evt-(\d+)@", re.IGNORECASE)


def return_path(event_id: int, domain: str) -> str:
    """Return the envelope sender of an event's mail, at domain."""
    return f"{LOCAL_PART}+evt-{event_id}@{domain}"


def event_of(address: str) -> int | None:
    """Return the event a bounce address names, None if it names none."""
    match = _VERP.match(address.strip().strip("<>"))

    return int(match.group(1)) if match else None
