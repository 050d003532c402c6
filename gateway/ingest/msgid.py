"""Message identifiers: msg-id tokens (RFC 5322 3.6.4) and substitutes.

Ids are opaque tokens compared as written: an id that breaks the msg-id
grammar (``<[...]@host>``) is kept verbatim. Only the folding white space
and the comments around the tokens are dropped.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence

SYNTHETIC_DOMAIN = "mailgate.invalid"

# Fields that transport adds or rewrites on the way (RFC 5321 4.4 trace
# fields, delivery and authentication stamps, spam filter verdicts): they
# differ between copies of one message delivered along different paths.
_TRACE_FIELDS = frozenset(
    {
        b"received",
        b"return-path",
        b"delivered-to",
        b"x-original-to",
        b"envelope-to",
        b"x-envelope-to",
        b"x-envelope-from",
        b"x-original-recipient",
        b"dkim-signature",
        b"domainkey-signature",
        b"authentication-results",
        b"received-spf",
        b"x-received",
        b"x-uid",
        b"status",
        b"x-status",
        b"x-keywords",
        b"lines",
        b"content-length",
    }
)
_TRACE_PREFIXES = (
    b"arc-",
    b"resent-",
    b"x-spam",
    b"x-virus",
    b"x-ms-exchange-",
    b"x-microsoft-antispam",
    b"x-forefront-",
    b"x-google-",
    b"x-gm-",
    b"x-rspamd",
    b"x-mozilla-",
)

_WHITE_SPACE = re.compile(r"\s+")


def msg_id_tokens(value: str) -> tuple[str, ...]:
    """Return the ``<...>`` tokens of a field, skipping comments and phrases.

    In-Reply-To and References may hold comments between ids (RFC 5322
    3.6.4, CFWS) and, in the obsolete syntax, quoted phrases.
    """
    tokens: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "(":
            index = _skip_comment(value, index)
        elif char == '"':
            index = _skip_quoted(value, index)
        elif char == "<":
            end = value.find(">", index + 1)
            if end == -1:
                break

            token = _WHITE_SPACE.sub("", value[index : end + 1])
            if len(token) > 2:
                tokens.append(token)
            index = end + 1
        else:
            index += 1

    return tuple(tokens)


def message_id_token(value: str) -> str | None:
    """Return the Message-ID token of a field value, None if it has none.

    A bare id without angle brackets gets them, so that replies quoting it
    properly still match.
    """
    tokens = msg_id_tokens(value)
    if tokens:
        return tokens[0]

    bare = value.strip()
    if bare and _WHITE_SPACE.search(bare) is None and "@" in bare:
        return f"<{bare}>"

    return None


def synthetic_message_id(*pieces: bytes) -> str:
    """Return a stable substitute Message-ID for a message that has none.

    It is the SHA-256 of the header block without trace fields, plus the
    body, with line endings made LF and trailing newlines dropped: the
    same message delivered twice, by different paths, gets the same id.
    The message is the pieces one after another; only its header block
    is ever held whole.
    """
    return _synthetic_message_id(pieces, CHUNK_BYTES)


# The octets are read this much at a time, so that a large body is
# hashed without copies of it.
CHUNK_BYTES = 64 * 1024


def _synthetic_message_id(pieces: Sequence[bytes], size: int) -> str:
    """Return the substitute id, reading the octets size at a time."""
    chunks = _lf_chunks(pieces, size)
    head = bytearray()
    for chunk in chunks:
        window = len(head) - 1
        head += chunk
        if head.find(b"\n\n", max(window, 0)) >= 0 and _header_known(head):
            break

    text = bytes(head)
    del head
    if text.startswith(b"From "):
        # An mbox envelope line, added by the local delivery agent.
        text = text.partition(b"\n")[2]

    header_block, _, body = text.partition(b"\n\n")

    digest = hashlib.sha256()
    for field in _header_fields(header_block):
        name = field.partition(b":")[0].strip().lower()
        if name in _TRACE_FIELDS or name.startswith(_TRACE_PREFIXES):
            continue

        digest.update(field)
        digest.update(b"\n")

    digest.update(b"\n")
    # The rest of the body, without its trailing newlines: a run of them
    # is hashed only once more text follows it.
    held = 0
    for part in itertools.chain((body,), chunks):
        core = part.rstrip(b"\n")
        if core:
            digest.update(b"\n" * held)
            digest.update(core)
            held = 0
        held += len(part) - len(core)

    return f"<{digest.hexdigest()}@{SYNTHETIC_DOMAIN}>"


def _header_known(head: bytearray) -> bool:
    """Return whether head holds the whole header block (and more)."""
    if len(head) < len(b"From "):
        return False

    start = 0
    if head.startswith(b"From "):
        start = head.find(b"\n") + 1
        if start == 0:
            return False

    return head.find(b"\n\n", start) >= 0


def _lf_chunks(pieces: Sequence[bytes], size: int) -> Iterator[bytes]:
    """Yield the octets in chunks of about size, line endings made LF."""
    carry = b""
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(piece), size):
            chunk = carry + view[start : start + size].tobytes()
            carry = b""
            # A CR at the end may be the first half of a CRLF.
            if chunk.endswith(b"\r"):
                chunk, carry = chunk[:-1], b"\r"
            yield chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    if carry:
        yield b"\n"


def _header_fields(header_block: bytes) -> list[bytes]:
    """Split a header block into fields, each with its folded lines."""
    fields: list[bytes] = []
    for line in header_block.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)

    return fields


def _skip_comment(value: str, index: int) -> int:
    """Return the index after the (possibly nested) comment at ``index``."""
    depth = 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1

        index += 1

    return index


def _skip_quoted(value: str, index: int) -> int:
    """Return the index after the quoted string starting at ``index``."""
    index += 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 1
        elif char == '"':
            return index + 1

        index += 1

    return index
