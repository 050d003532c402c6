"""Header fields of an inbound message, read raw, unfolded and decoded.

The stdlib parser (with a policy that returns raw values) splits the
fields; the stdlib ``email.header`` module splits RFC 2047 encoded-words.
This module adds the charset repair of ``charsets`` on top of both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.header import decode_header

from gateway.ingest.charsets import decode_octets, repair_header_text

# RFC 5322 2.2.3: unfolding removes a line break that precedes white space.
# Bare LF and bare CR count as line breaks here, as mail passes through
# systems whose local newline is LF.
_FOLD = re.compile(r"\r\n(?=[ \t])|\n(?=[ \t])|\r(?=[ \t])")

# A line break not followed by white space (a broken fold) and NUL.
_STRAY = re.compile(r"[\r\n\x00]")

# Every control character (C0, DEL, C1) and the Unicode line separators:
# the text becomes a title or a name, which must fit on one line.
_CONTROL_SPACE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def unfold(value: str) -> str:
    """Return a header value on one line (RFC 5322 2.2.3)."""
    return _STRAY.sub(" ", _FOLD.sub("", value))


def decode_encoded_words(text: str, problems: list[str]) -> str:
    """Decode RFC 2047 encoded-words in already unfolded header text.

    ``email.header.decode_header`` joins adjacent encoded-words of one
    charset before decoding, so a character split across two words (RFC
    2047 5(3) forbids it, senders do it) still decodes.
    """
    if "=?" not in text:
        return text

    try:
        chunks = decode_header(text)
    except Exception:  # the stdlib raises assorted errors on bad words
        problems.append("malformed RFC 2047 encoded-word kept as written")
        return text

    # Text outside encoded-words comes back as raw-unicode-escape octets.
    plain_codec = "ascii" if text.isascii() else "raw-unicode-escape"
    pieces: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            pieces.append(chunk)
        elif charset is None:
            pieces.append(chunk.decode(plain_codec, "replace"))
        else:
            decoded = decode_octets(chunk, charset)
            if decoded.problem:
                problems.append(f"encoded-word: {decoded.problem}")
            pieces.append(decoded.text)

    return "".join(pieces)


def one_line(text: str) -> str:
    """Turn control characters and line breaks into spaces; trim the ends."""
    return _CONTROL_SPACE.sub(" ", text).strip()


class FieldReader:
    """Read header fields by name, as raw octets repaired into text."""

    def __init__(
        self, items: Iterable[tuple[str, str]], problems: list[str]
    ) -> None:
        self._fields: dict[str, list[str]] = {}
        for name, value in items:
            key = name.strip().lower()
            self._fields.setdefault(key, []).append(value)

        self._problems = problems

    def __bool__(self) -> bool:
        return bool(self._fields)

    def has(self, name: str) -> bool:
        """Tell whether the field is present at all."""
        return name.lower() in self._fields

    def all(self, name: str) -> list[str]:
        """Return every value of the field, unfolded and repaired."""
        values = []
        for raw in self._fields.get(name.lower(), []):
            repaired = repair_header_text(unfold(raw))
            if repaired.problem:
                self._problems.append(f"{name}: {repaired.problem}")

            values.append(repaired.text)

        return values

    def first(self, name: str) -> str | None:
        """Return the first value of the field, unfolded and repaired."""
        values = self.all(name)

        return values[0] if values else None

    def text(self, name: str) -> str | None:
        """Return the first value of an unstructured field, decoded."""
        value = self.first(name)
        if value is None:
            return None

        return one_line(decode_encoded_words(value, self._problems))
