"""Property tests: whatever octets arrive, Ingestor.ingest loses nothing.

Mangled messages (bad header fields, truncated MIME, wrong charsets, NUL
octets, bare LF or CR, huge header fields, random octets) go through the
whole ingest path on a real store. None raises, and none needs the
safety net for faults of ours; each ends as an event (new or known) or in
the quarantine, and the store says so.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.ingest.pipeline import (
    ACCEPTED,
    BOUNCE,
    DUPLICATE,
    QUARANTINED,
    Delivery,
    Ingestor,
    Outcome,
)
from gateway.settings import StoreSettings
from gateway.store import Store

from .conftest import set_up_organisation

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
    b"To: Support <support@example.com>, Group: a@example.net;\r\n"
    b"Cc: sales@example.com\r\n"
    b"Subject: =?iso-8859-1?q?Gr=FC=DFe?= [#EVT-1] [#TKT-1]\r\n"
    b"Date: Wed, 2 Dec 2026 10:00:00 +0100\r\n"
    b"Message-ID: <m.1@example.org>\r\n"
    b"In-Reply-To: <m.0@example.org>\r\n"
    b"References: <root@example.org> <m.0@example.org>\r\n"
    b"Thread-Index: AQHdgWu7Xgw6fZGyT2qMHS4/QFFicwAD005x\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe, the invoice =E2=82=AC 84\r\n"
    b"--outer\r\n"
    b"Content-Type: text/html; charset=windows-1252\r\n"
    b"\r\n"
    b"<p>\x93quoted\x94 &amp; <b>bold</b></p>\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="a.pdf"\r\n'
    b"Content-Disposition: attachment;\r\n"
    b" filename*0*=UTF-8''Pr%C3%BCf;\r\n"
    b" filename*1*=bericht.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.net\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer--\r\n"
)

_REPORT = (
    b"Return-Path: <>\r\n"
    b"From: MAILER-DAEMON@mx.example.net\r\n"
    b"To: support@example.com\r\n"
    b"Message-ID: <dsn.1@mx.example.net>\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;"
    b' boundary="r"\r\n'
    b"\r\n"
    b"--r\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; max@example.net\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"--r\r\n"
    b"Content-Type: text/rfc822-headers\r\n"
    b"\r\n"
    b"Message-ID: <m.1@example.org>\r\n"
    b"--r--\r\n"
)

_PLAIN = (
    b"From: laura@example.org\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Hello\r\n"
    b"\r\n"
    b"Plain text.\r\n"
)

_CHARSETS = [
    b"iso-2022-jp",
    b"bogus",
    b'""',
    b"utf-16",
    b"windows-874",
    b"utf-7",
    b"us-ascii",
    b"\x00",
]

Mutation = Callable[[st.DrawFn, bytes], bytes]


def _truncate(draw: st.DrawFn, raw: bytes) -> bytes:
    return raw[: draw(st.integers(0, len(raw)))]


def _nul(draw: st.DrawFn, raw: bytes) -> bytes:
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + b"\x00" * draw(st.integers(1, 8)) + raw[at:]


def _bare_lf(draw: st.DrawFn, raw: bytes) -> bytes:
    return raw.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r"])))


def _wrong_charset(draw: st.DrawFn, raw: bytes) -> bytes:
    label = draw(st.sampled_from(_CHARSETS))
    return raw.replace(b"charset=utf-8", b"charset=" + label).replace(
        b"=?utf-8?", b"=?" + label + b"?"
    )


def _huge_header(draw: st.DrawFn, raw: bytes) -> bytes:
    size = draw(st.integers(1_000, 60_000))
    if draw(st.booleans()):
        field = b"Subject: " + b"word " * (size // 5) + b"\r\n"
    else:
        field = b"".join(
            b"X-Filler-%d: %d\r\n" % (n, n) for n in range(size // 20)
        )
    return field + raw


def _bad_field(draw: st.DrawFn, raw: bytes) -> bytes:
    field = draw(
        st.sampled_from(
            [
                b"From: <<<@@>>>, ;;\r\n",
                b"To: undisclosed-recipients:;\r\n",
                b"Message-ID: <>\r\n",
                b"Date: 31 Feb 99999 25:61:61 +9999\r\n",
                b"Content-Type: multipart/mixed\r\n",
                b"Subject: =?utf-8?b?////?=\r\n",
                b": no name\r\n",
                b" starts with a fold\r\n",
                b"Subject: \xff\xfe\x80 raw octets\r\n",
            ]
        )
    )
    return field + raw


def _splice(draw: st.DrawFn, raw: bytes) -> bytes:
    start = draw(st.integers(0, len(raw)))
    end = draw(st.integers(start, min(len(raw), start + 64)))
    return raw[:start] + draw(st.binary(max_size=64)) + raw[end:]


def _lose_boundary(draw: st.DrawFn, raw: bytes) -> bytes:
    return raw.replace(b'boundary="outer"', b'boundary="elsewhere"')


_MUTATIONS: list[Mutation] = [
    _truncate,
    _nul,
    _bare_lf,
    _wrong_charset,
    _huge_header,
    _bad_field,
    _splice,
    _lose_boundary,
]


@st.composite
def _mangled(draw: st.DrawFn) -> bytes:
    """A real-looking message, mangled one to four times."""
    raw = draw(st.sampled_from([_MULTIPART, _REPORT, _PLAIN]))
    for mutation in draw(st.lists(st.sampled_from(_MUTATIONS), max_size=4)):
        raw = mutation(draw, raw)

    return raw


_MESSAGES = st.one_of(
    _mangled(),
    st.binary(max_size=512),
    st.builds(
        lambda fields, body: fields + b"\r\n" + body,
        st.lists(
            st.sampled_from(
                [b"From", b"To", b"Subject", b"Message-ID"]
            ).flatmap(
                lambda name: st.binary(max_size=80).map(
                    lambda value: name + b": " + value + b"\r\n"
                )
            ),
            max_size=6,
        ).map(b"".join),
        st.binary(max_size=200),
    ),
)


async def _ingest_and_find(store: Store, raw: bytes) -> Outcome:
    """Ingest one message; check the store holds it as its outcome says."""
    outcome = await Ingestor(store).ingest(
        Delivery(raw=raw, mailboxes=("support@example.com",), source="smtp")
    )

    digest = hashlib.sha256(raw).hexdigest()
    async with store.reading() as db:
        if outcome.result == QUARANTINED:
            query = "SELECT id FROM quarantine WHERE raw_sha256 = ?"
            expected = outcome.quarantine_id
        else:
            query = "SELECT event_id FROM receipt WHERE raw_sha256 = ?"
            expected = outcome.event_id
        async with db.execute(query, (digest,)) as cursor:
            found = {row[0] for row in await cursor.fetchall()}
    assert expected in found, (outcome, raw[:200])

    return outcome


async def _count(store: Store, query: str) -> int:
    async with store.reading() as db, db.execute(query) as cursor:
        row = await cursor.fetchone()

    return int(row[0]) if row else 0


def test_mangled_messages_end_as_events_or_in_quarantine(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No exception; every message an event or quarantined; none lost."""
    directory: Path = tmp_path_factory.mktemp("store")
    results: Counter[str] = Counter()
    quarantined: set[bytes] = set()

    with asyncio.Runner() as runner:
        store = runner.run(Store.open(StoreSettings(data_dir=directory)))
        try:
            runner.run(set_up_organisation(store))

            @_SETTINGS
            @given(raw=_MESSAGES)
            def feed(raw: bytes) -> None:
                with capture_logs() as logs:
                    outcome = runner.run(_ingest_and_find(store, raw))
                # Set aside, but a fault of ours all the same.
                faults = {"ingest.parser_failed", "ingest.record_failed"}
                assert not [e for e in logs if e["event"] in faults], logs
                assert outcome.result in (
                    ACCEPTED,
                    DUPLICATE,
                    BOUNCE,
                    QUARANTINED,
                )
                results[outcome.result] += 1
                if outcome.result == QUARANTINED:
                    quarantined.add(raw)

            feed()

            events = runner.run(_count(store, "SELECT COUNT(*) FROM event"))
            held = runner.run(_count(store, "SELECT COUNT(*) FROM quarantine"))
        finally:
            runner.run(store.close())

    assert events == results[ACCEPTED]
    assert held == len(quarantined)
    assert results[ACCEPTED] and results[QUARANTINED], results
