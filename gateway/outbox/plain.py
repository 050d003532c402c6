"""Plain rendering: header fields and text bodies written out directly.

Most outgoing mail is plain: ASCII names and addresses, a subject of
printable ASCII, a text body in short ASCII lines. For these the
``email`` package's parsers and folders (most of the time the outbox
spent on a message) give the obvious result, and this module writes
that result itself, byte for byte the same (tests/outbox/test_plain.py
checks it against the package). Anything else (non-ASCII text,
characters that need quoting or encoding, a line long enough to be
folded, HTML or attachments) answers None: the caller renders it with
the ``email`` package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime

# A mailbox as written in a header: the display name ("" for none) and
# the address as it goes on the wire.
Mailbox = tuple[str, str]

FieldValue = str | datetime | list[Mailbox]

# RFC 5322 atext, without "=" and "?": the email package decodes what
# looks like an RFC 2047 encoded-word wherever one may start.
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"

# A display name of words that need no quotes, one space apart.
_PHRASE = re.compile(rf"{_ATOM}(?: {_ATOM})*")
_ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}")
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
# Unstructured text: printable ASCII words, one space apart.
_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")

# RFC 5322 A.1.3: a message with hidden recipients only.
UNDISCLOSED = "undisclosed-recipients:;"

_ADDRESS_FIELDS = frozenset({"from", "to", "cc"})

# Well below the 998 octets at which the email package folds a line.
_LONGEST_LINE = 900

_TEXT_FIELDS = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
)


def header_block(fields: Sequence[tuple[str, FieldValue]]) -> bytes | None:
    """Return the header fields, CRLF-ended; None if one is not plain."""
    lines = []
    for name, value in fields:
        text = _plain_value(name.lower(), value)
        if text is None:
            return None
        line = f"{name}: {text}\r\n"
        if len(line) > _LONGEST_LINE:
            return None
        lines.append(line)

    return "".join(lines).encode("ascii")


def text_entity(content: str) -> bytes | None:
    """Return a text/plain MIME entity (fields, blank line, body).

    None when the text is not ASCII or has a line too long to go as
    7bit: the email package then chooses an encoding.
    """
    if not content.isascii():
        return None
    lines = content.encode("ascii").splitlines()
    if any(len(line) > _LONGEST_LINE for line in lines):
        return None

    # Even no text at all ends with a line break, as the package writes.
    return _TEXT_FIELDS + b"\r\n" + b"\r\n".join(lines) + b"\r\n"


def _plain_value(name: str, value: FieldValue) -> str | None:
    """Return a field's value as written, or None if it is not plain."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, list):
        shown = [_mailbox(mailbox) for mailbox in value]
        if not shown or None in shown:
            return None
        return ", ".join(text for text in shown if text is not None)
    if name in _ADDRESS_FIELDS:
        return value if value == UNDISCLOSED else None
    if name == "message-id":
        return value if _MESSAGE_ID.fullmatch(value) else None
    if "=?" in value or not _TEXT.fullmatch(value):
        return None

    return value


def _mailbox(mailbox: Mailbox) -> str | None:
    """Return a mailbox as written; None if it needs quotes or encoding."""
    name, address = mailbox
    if not _ADDR_SPEC.fullmatch(address):
        return None
    if not name:
        return address
    if not _PHRASE.fullmatch(name):
        return None

    return f"{name} <{address}>"
