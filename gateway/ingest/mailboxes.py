"""Mailboxes named in address fields (From, Sender, Reply-To, To, Cc).

``email.utils.getaddresses`` splits the address lists (groups, comments,
quoted names); display names are then decoded here, and addresses are
normalised with the gateway's own rules.
"""

from __future__ import annotations

from email.utils import getaddresses

from gateway.addresses import normalize_address
from gateway.ingest.headers import decode_encoded_words, one_line
from gateway.ingest.parsed import Address


def parse_mailboxes(
    values: list[str], field: str, problems: list[str]
) -> tuple[Address, ...]:
    """Return the valid mailboxes of an address field, in header order.

    Group names are dropped and their members kept (RFC 5322 3.4). An
    entry that is no valid address is skipped and noted in ``problems``.
    """
    if not values:
        return ()

    try:
        pairs = getaddresses(values)
    except Exception:  # the stdlib address parser fails on odd input
        problems.append(f"{field}: address list could not be read")
        return ()

    mailboxes: list[Address] = []
    for name, address in pairs:
        if not address:
            if name:
                problems.append(f"{field}: {name!r} has no address, skipped")
            continue

        email = _normalized(address)
        if email is None:
            problems.append(f"{field}: invalid address {address!r} skipped")
            continue

        # RFC 2047 5 forbids encoded-words in quoted strings, yet clients
        # quote them; getaddresses has removed the quotes by now.
        display_name = one_line(decode_encoded_words(name, problems))
        mailboxes.append(Address(email=email, name=display_name))

    return tuple(mailboxes)


def normalize_mailbox(
    value: str, field: str, problems: list[str]
) -> str | None:
    """Return one bare or bracketed address normalised, None if invalid."""
    address = value.strip().strip("<>").strip()
    if not address:
        return None

    email = _normalized(address)
    if email is None:
        problems.append(f"{field}: invalid address {address!r} skipped")

    return email


def _normalized(address: str) -> str | None:
    try:
        return normalize_address(address)
    except (ValueError, UnicodeError):  # InvalidAddress, IDNA failures
        return None
