"""One-line text fields: event and ticket titles, contact names.

A title or a name becomes a header field of the mail we send (Subject,
the display names of From and To); a line break in it would start a
header field of its own, and the stdlib refuses to render it.
"""

from __future__ import annotations

import unicodedata

from gateway.errors import InvalidInput

# Control characters (C0, DEL, C1) and the Unicode line and paragraph
# separators.
_NOT_ON_ONE_LINE = frozenset({"Cc", "Zl", "Zp"})


def one_line(value: str, what: str) -> str:
    """Return value stripped; InvalidInput if it holds a control character.

    ``what`` names the field in the error (``"title"``, ``"name"``).
    """
    for character in value:
        if unicodedata.category(character) in _NOT_ON_ONE_LINE:
            raise InvalidInput(
                f"the {what} must be one line without control characters;"
                f" it holds {_spelled(character)}"
            )

    return value.strip()


def flattened(value: str) -> str:
    """Return value with each control character made a space, stripped.

    For text that comes from outside (a display name in a received mail)
    and is kept rather than refused.
    """
    if all(c.isprintable() or c == " " for c in value):
        return value.strip()

    return "".join(
        " " if unicodedata.category(c) in _NOT_ON_ONE_LINE else c
        for c in value
    ).strip()


def _spelled(character: str) -> str:
    """Return a control character as people can read it: ``U+000A (LF)``."""
    names = {"\n": "LF", "\r": "CR", "\t": "TAB", "\x00": "NUL"}
    code = f"U+{ord(character):04X}"
    name = names.get(character)

    return f"{code} ({name})" if name else code
