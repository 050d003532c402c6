"""MIME structure of an inbound message, as the stdlib parser builds it.

The parser runs with the compat32 policy changed in two ways:

- header values come back exactly as received (compat32 turns values
  with 8-bit octets into ``Header`` objects whose ``str()`` loses them);
- ``message/*`` parts stay leaves holding their octets. RFC 2046 5.2.1
  wants an attached message stored as transmitted, and a re-serialised
  parse is not that; delivery status fields are read from the octets too.
"""

from __future__ import annotations

import binascii
import re
from email.message import Message
from email.parser import BytesFeedParser, BytesParser
from email.policy import Compat32
from typing import TYPE_CHECKING, TypeAlias

from gateway.ingest.charsets import decode_octets, repair_header_text
from gateway.ingest.headers import decode_encoded_words, one_line, unfold

# typeshed makes Message generic over its header types; at run time it is
# not subscriptable.
Part: TypeAlias = "Message[str, str]"
if TYPE_CHECKING:
    _MessageBase = Message[str, str]
else:
    _MessageBase = Message

_KNOWN_TRANSFER_ENCODINGS = frozenset(
    {
        "7bit",
        "8bit",
        "binary",
        "base64",
        "quoted-printable",
        "x-uuencode",
        "uuencode",
        "uue",
        "x-uue",
    }
)


class _RawHeaderPolicy(Compat32):
    """compat32, but header values are handed out exactly as received."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


class _LeafMessage(_MessageBase):
    """A message whose ``message/*`` parts the parser keeps as octets.

    The feed parser descends into a part when ``get_content_type`` says
    ``message/...``; answering ``application/octet-stream`` instead keeps
    the encapsulated octets as the part's payload. Use ``content_type``
    for the declared type.
    """

    def get_content_type(self) -> str:
        declared = content_type(self)
        if declared.startswith("message/"):
            return "application/octet-stream"

        return declared


_POLICY = _RawHeaderPolicy()
_PARSER = BytesParser(_LeafMessage, policy=_POLICY)

# The parser is fed this much at a time. Given the whole message at once,
# the stdlib decodes it into one string and splits all of it into lines
# before it parses any: about 7.5 times the message at its peak, against
# 2.5 times when fed in pieces.
FEED_BYTES = 64 * 1024


def parse_structure(
    raw: bytes, problems: list[str], *, trace: bytes = b""
) -> Part:
    """Parse octets into a tree of parts; never raises on bad MIME.

    The message is trace then raw, never joined in memory.

    Limitation: the feed parser holds a leaf part's lines as separate
    strings until the part ends, then joins them into its payload: for a
    message that is mostly one base64 attachment the parse peaks at
    about 2.6 times the message on top of its octets. Only a parser of
    our own could decode such a part as it comes.
    """
    try:
        return _feed(trace, raw)
    except RecursionError:
        # The feed parser recurses once per nesting level.
        problems.append("MIME nesting too deep; body kept unparsed")
        return _PARSER.parsebytes(trace + raw, headersonly=True)


def _feed(*pieces: bytes) -> Part:
    """Parse octets, handing them to the feed parser piece by piece."""
    parser = BytesFeedParser(_LeafMessage, policy=_POLICY)
    for octets in pieces:
        view = memoryview(octets)
        for start in range(0, len(octets), FEED_BYTES):
            parser.feed(view[start : start + FEED_BYTES].tobytes())
    parsed: Part = parser.close()

    return parsed


def subparts(part: Part) -> list[Part] | None:
    """Return the parts of a multipart, None for a leaf."""
    if not part.is_multipart():
        return None

    payload = part.get_payload()
    if not isinstance(payload, list):
        return None

    return [child for child in payload if isinstance(child, Message)]


def content_type(part: Part) -> str:
    """Return the declared lower-case ``maintype/subtype`` of a part."""
    return Message.get_content_type(part)


def param(
    part: Part,
    name: str,
    problems: list[str],
    header: str = "content-type",
) -> str | None:
    """Return a decoded header parameter, None when absent or empty.

    The stdlib joins RFC 2231 continuations and percent-decodes them;
    their charset, and RFC 2047 words in quoted values (forbidden by RFC
    2047 5, sent by Outlook and Thunderbird), are decoded here.
    """
    try:
        value = part.get_param(name, header=header)
    except Exception:  # the stdlib trips over malformed RFC 2231 sections
        problems.append(f"{header}: parameter {name} unreadable")
        return None

    if isinstance(value, tuple):
        charset, _language, encoded = value
        try:
            octets = encoded.encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            octets = encoded.encode("utf-8", "surrogateescape")
        decoded = decode_octets(octets, charset or None)
        if decoded.problem:
            problems.append(f"{header} {name}: {decoded.problem}")
        text = decoded.text
    elif value is None:
        return None
    else:
        repaired = repair_header_text(unfold(value))
        if repaired.problem:
            problems.append(f"{header} {name}: {repaired.problem}")
        text = decode_encoded_words(repaired.text, problems)

    return one_line(text) or None


def disposition(part: Part) -> str | None:
    """Return the lower-case Content-Disposition type (RFC 2183)."""
    value = part.get("content-disposition")
    if value is None:
        return None

    kind = str(value).partition(";")[0].strip().lower()

    return kind or None


def filename(part: Part, problems: list[str]) -> str | None:
    """Return the part's file name; Content-Disposition wins (RFC 2183)."""
    name = param(part, "filename", problems, header="content-disposition")
    if name is None:
        name = param(part, "name", problems)

    return name


def content_id(part: Part) -> str | None:
    """Return the Content-ID without its angle brackets."""
    value = part.get("content-id")
    if value is None:
        return None

    text = repair_header_text(unfold(str(value))).text.strip()

    return text.removeprefix("<").removesuffix(">").strip() or None


def payload_octets(part: Part, problems: list[str]) -> bytes:
    """Return a leaf part's body with its transfer encoding undone."""
    declared = part.get("content-transfer-encoding")
    if declared is not None:
        encoding = str(declared).strip().lower()
        # compat32 compares the raw value, so " base64 " would not decode.
        if encoding != declared:
            part.replace_header("content-transfer-encoding", encoding)
        if encoding not in _KNOWN_TRANSFER_ENCODINGS:
            problems.append(f"unknown transfer encoding {encoding!r}")

        if encoding == "base64":
            clean = _clean_base64(part)
            if clean is not None:
                return clean
        if encoding == "quoted-printable":
            decoded = _ascii_quoted_printable(part)
            if decoded is not None:
                return decoded

    try:
        payload = part.get_payload(decode=True)
    except Exception:  # bad uuencode and the like
        problems.append("body part could not be decoded; kept as sent")
        del part["content-transfer-encoding"]
        part["Content-Transfer-Encoding"] = "8bit"
        payload = part.get_payload(decode=True)

    return payload if isinstance(payload, bytes) else b""


def _ascii_quoted_printable(part: Part) -> bytes | None:
    """Decode a quoted-printable body of ASCII text; None for any other.

    binascii reads the text as it is; the stdlib first turns it into
    bytes, one more copy of a large body, and decodes those the same.
    """
    try:
        payload = part.get_payload()
    except Exception:  # 8-bit octets under a charset the stdlib trips on
        return None
    if not isinstance(payload, str) or not payload.isascii():
        return None

    return binascii.a2b_qp(payload)


# A well-formed base64 body: its alphabet and line breaks, then at most
# two padding characters at the end.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")


def _clean_base64(part: Part) -> bytes | None:
    """Decode a well-formed base64 body; None for any other.

    The stdlib turns the body into bytes, splits those into lines and
    joins them again before decoding: three more copies, a problem for a
    large attachment. binascii skips the line breaks itself. Anything
    else (stray characters, bad padding) is left to the stdlib, which
    repairs it and notes the defect.
    """
    try:
        payload = part.get_payload()
    except Exception:  # 8-bit octets under a charset the stdlib trips on
        return None
    if not isinstance(payload, str) or not _BASE64_TEXT.fullmatch(payload):
        return None
    breaks = payload.count("\r") + payload.count("\n")
    if (len(payload) - breaks) % 4:
        return None
    try:
        return binascii.a2b_base64(payload)
    except binascii.Error:
        return None
