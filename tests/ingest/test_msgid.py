"""Tests of the substitute Message-ID, read in chunks, against its rule."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.msgid import (
    SYNTHETIC_DOMAIN,
    _synthetic_message_id,
    synthetic_message_id,
)


def _by_the_rule(raw: bytes) -> str:
    """The substitute id, computed on the whole message at once."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text.startswith(b"From "):
        text = text.partition(b"\n")[2]
    header_block, _, body = text.partition(b"\n\n")

    digest = hashlib.sha256()
    fields: list[bytes] = []
    for line in header_block.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    for field in fields:
        name = field.partition(b":")[0].strip().lower()
        if name in (b"received", b"return-path") or name.startswith(b"x-gm-"):
            continue
        digest.update(field + b"\n")
    digest.update(b"\n")
    digest.update(body.rstrip(b"\n"))

    return f"<{digest.hexdigest()}@{SYNTHETIC_DOMAIN}>"


_PIECES = st.lists(
    st.text(alphabet="\r\n F:rom\tab", max_size=40).map(str.encode),
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(pieces=_PIECES, size=st.integers(min_value=1, max_value=9))
def test_chunked_id_is_the_id_of_the_joined_message(
    pieces: list[bytes], size: int
) -> None:
    """Any split into pieces and chunks gives the id of the whole octets."""
    assert _synthetic_message_id(pieces, size) == _by_the_rule(
        b"".join(pieces)
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"From ann Wed Dec 2\r\nSubject: a\r\nReceived: x\r\n\r\nbody\r\n\r\n",
        b"Subject: a\r\n\tfolded\r\nX-GM-Labels: y\r\n\r\nbody\r\r\n\n",
        b"Subject: no body",
        b"From x\n\nabc\n\ndef\r",
    ],
)
def test_id_follows_the_rule(raw: bytes) -> None:
    """Trace fields, mbox From lines and trailing newlines do not count."""
    assert synthetic_message_id(raw[:7], raw[7:]) == _by_the_rule(raw)
