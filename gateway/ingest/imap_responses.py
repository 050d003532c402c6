"""IMAP responses as aioimaplib hands them over, read into plain values.

aioimaplib gives a response as its result (OK, NO, BAD) and its lines:
untagged lines without their ``* ``, message literals as bytearrays, and
last the text of the tagged completion. These functions read UIDs,
literals and response codes from those lines, and write UID sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_FETCH_UID = re.compile(rb"[( ]UID (\d+)")
_UID_VALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
# RFC 3501 7.3.1: EXISTS tells of new messages.
_NEW_MAIL = re.compile(rb"^\d+ EXISTS\b")
# Untagged NO, BAD or BYE, or a new UIDVALIDITY (RFC 3501 7.1): the view
# of the folder a session has can no longer be trusted.
_TROUBLE = re.compile(rb"^(NO|BAD|BYE)\b|.*\[UIDVALIDITY ")

Lines = Sequence[bytes | bytearray]


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message's octets (or a part of them) as the server gave them."""

    uid: int
    raw: bytes


def uid_set(uids: Iterable[int]) -> str:
    """Return a UID set (RFC 3501 9, sequence-set), ranges joined."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid != previous + 1:
            parts.append(_range(start, previous))
            start = uid
        previous = uid
    parts.append(_range(start, previous))

    return ",".join(parts)


def fetched(lines: Lines) -> list[Fetched]:
    """Return the UID and literal of each FETCH response in lines.

    A response without a literal (a flag update the server slipped in)
    is left out.
    """
    found: list[Fetched] = []
    uid: int | None = None
    literal: bytes | None = None
    for line in lines[:-1]:
        if isinstance(line, bytearray):
            literal = bytes(line)
            continue
        if _FETCH_START.match(line):
            if uid is not None and literal is not None:
                found.append(Fetched(uid, literal))
            uid, literal = None, None
        match = _FETCH_UID.search(line)
        if match:
            uid = int(match.group(1))
    if uid is not None and literal is not None:
        found.append(Fetched(uid, literal))

    return found


def search_results(lines: Lines) -> list[int]:
    """Return the numbers of a SEARCH response."""
    return [
        int(word)
        for line in lines[:-1]
        for word in bytes(line).split()
        if word.isdigit()
    ]


def uid_validity(lines: Lines) -> int | None:
    """Return the UIDVALIDITY response code of SELECT, None if absent."""
    for line in lines:
        match = _UID_VALIDITY.search(bytes(line))
        if match:
            return int(match.group(1))

    return None


def tells_of_new_mail(lines: Lines) -> bool:
    """Return whether untagged lines report new messages (EXISTS)."""
    return any(_NEW_MAIL.match(bytes(line)) for line in lines)


def trouble(lines: Lines) -> str | None:
    """Return an untagged line that puts the folder in doubt, if any.

    Dovecot, for one, answers "NO Internal error" to a session whose
    folder was deleted and made again, and goes on showing the old one.
    """
    for line in lines:
        text = bytes(line)
        if _TROUBLE.match(text):
            return text.decode("utf-8", "replace")[:200]

    return None


def response_text(response: Any) -> str:
    """Return the server's text of a response, for a log or an error."""
    if not response.lines:
        return ""

    return bytes(response.lines[-1]).decode("utf-8", "replace")[:200]


def _range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}:{last}"
