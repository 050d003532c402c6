"""Property tests: parse_message survives whatever octets arrive."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.parse import (
    ParsedMessage,
    UnparsableMessage,
    parse_message,
)

_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_TEMPLATE = (
    b"Received: from a.example.net by mx.example.com; "
    b"Wed, 2 Dec 2026 10:00:00 +0000\r\n"
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
    b'To: Team: a@example.com, b@example.com;, "C" <c@example.com>\r\n'
    b"Cc: =?iso-2022-jp?B?GyRCLWobKEI=?= <d@example.com>\r\n"
    b"Subject: =?utf-8?B?UsO8Y2tmcmFnZQ==?= about it\r\n"
    b"Date: Wed, 2 Dec 2026 10:00:00 +0100\r\n"
    b"Message-ID: <abc.123@example.org>\r\n"
    b'In-Reply-To: <x@example.com> (comment "quoted")\r\n'
    b"References: <y@example.com>\r\n <x@example.com>\r\n"
    b"Thread-Index: AQHdgWu7Xgw6fZGyT2qMHS4/QFFicw==\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"List-Id: Sales <sales.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=FC=DFe =93quoted=94 =80\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Gr\xc3\xbc\xc3\x9fe &amp; <b>bold</b></p>\r\n"
    b"--inner--\r\n"
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
    b"--outer\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;"
    b' boundary="report"\r\n'
    b"\r\n"
    b"--report\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; max@example.net\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"--report--\r\n"
    b"--outer--\r\n"
)

_CHARSETS = st.sampled_from(
    [
        "utf-8",
        "us-ascii",
        "iso-8859-1",
        "windows-874",
        "iso-2022-jp",
        "shift_jis",
        "utf-7",
        "utf-16",
        "x-unknown",
        "bogus\x00",
        "",
        '"',
        "utf-8*de",
    ]
)


def _strings(value: Any) -> list[str]:
    """Collect every str inside a parsed message, however deep."""
    if isinstance(value, str):
        return [value]

    if isinstance(value, (tuple, list)):
        return [text for item in value for text in _strings(item)]

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            text
            for item in dataclasses.fields(value)
            for text in _strings(getattr(value, item.name))
        ]

    return []


def _check(raw: bytes) -> None:
    try:
        parsed = parse_message(raw)
    except UnparsableMessage:
        return

    assert isinstance(parsed, ParsedMessage)
    for text in _strings(parsed):
        text.encode("utf-8")

    assert parsed.message_id


@st.composite
def _mangled(draw: st.DrawFn) -> bytes:
    raw = _TEMPLATE
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        mutation = draw(st.integers(min_value=0, max_value=8))
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        if mutation == 0:
            raw = raw[:at]
        elif mutation == 1:
            raw = raw[:at] + b"\x00" + raw[at:]
        elif mutation == 2:
            raw = raw.replace(b"\r\n", b"\n")
        elif mutation == 3:
            raw = raw.replace(b"\r\n", b"\r")
        elif mutation == 4:
            charset = draw(_CHARSETS).encode("latin-1")
            raw = raw.replace(b"charset=utf-8", b"charset=" + charset)
            raw = raw.replace(b"=?utf-8?", b"=?" + charset + b"?")
        elif mutation == 5:
            header = b"X-Huge: " + b"a" * draw(
                st.integers(min_value=1, max_value=20000)
            )
            raw = header + b"\r\n" + raw
        elif mutation == 6:
            junk = draw(st.binary(min_size=1, max_size=40))
            raw = raw[:at] + junk + raw[at:]
        elif mutation == 7:
            raw = raw[:at] + raw[at + draw(st.integers(0, 200)) :]
        else:
            raw = raw.replace(b"\r\n", b" ", draw(st.integers(0, 5)))

    return raw


@_SETTINGS
@given(st.binary(max_size=3000))
def test_random_octets_never_crash(raw: bytes) -> None:
    """Random octets give a message or UnparsableMessage, nothing else."""
    _check(raw)


@_SETTINGS
@given(_mangled())
def test_mangled_messages_never_crash(raw: bytes) -> None:
    """Truncated, NUL-laden, re-newlined or mislabelled mail still parses."""
    _check(raw)


@_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "From",
                    "To",
                    "Cc",
                    "Subject",
                    "Message-ID",
                    "In-Reply-To",
                    "References",
                    "Date",
                    "Content-Type",
                    "Content-Disposition",
                    "Content-Transfer-Encoding",
                    "Thread-Index",
                    "List-Id",
                    "Auto-Submitted",
                    "Return-Path",
                    "Delivered-To",
                ]
            ),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=12,
    ),
    st.binary(max_size=500),
)
def test_bad_header_values_never_crash(
    headers: list[tuple[str, bytes]], body: bytes
) -> None:
    """Any octets in the usual header fields give clean Unicode values."""
    raw = b"".join(
        name.encode() + b": " + value + b"\r\n" for name, value in headers
    )
    _check(raw + b"\r\n" + body)


@_SETTINGS
@given(
    st.text(max_size=200),
    _CHARSETS,
    st.sampled_from(["text/plain", "text/html", "multipart/mixed"]),
    st.sampled_from(["7bit", "base64", "quoted-printable", "x-bogus"]),
)
def test_any_text_under_any_label_decodes(
    text: str, charset: str, content_type: str, encoding: str
) -> None:
    """Text of any content under any charset label decodes to clean text."""
    body = text.encode("utf-8", "surrogatepass")
    raw = (
        b"From: a@example.org\r\n"
        b"Content-Type: "
        + content_type.encode()
        + b"; charset="
        + charset.encode("latin-1")
        + b"\r\nContent-Transfer-Encoding: "
        + encoding.encode()
        + b"\r\n\r\n"
        + body
    )
    _check(raw)
