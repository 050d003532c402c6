"""Tests of parse_message: one behaviour per test, then the shared cases."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

from gateway.addresses import normalize_address
from gateway.ingest.mime import FEED_BYTES, parse_structure, payload_octets
from gateway.ingest.parse import (
    ParsedMessage,
    UnparsableMessage,
    parse_message,
)

CASES_DIR = Path(
    os.environ.get("MAILGATE_CASES_DIR")
    or Path(__file__).parents[2].parent / "shared" / "cases"
)


def _mail(*lines: str, body: bytes = b"Hello.\r\n") -> bytes:
    """Build a message from header lines (str) and a body (octets)."""
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + body


# RFC 2047/2231 and raw 8-bit values are written as octets in these tests.
def _raw(header_block: bytes, body: bytes = b"Hello.\r\n") -> bytes:
    return header_block + b"\r\n" + body


def test_message_id_outside_the_grammar_is_kept_verbatim() -> None:
    """A Message-ID that breaks RFC 5322 (``<[..]@host>``) stays as written."""
    parsed = parse_message(
        _mail(
            "From: a@example.net",
            "Message-ID: <[0a9e@notify.example.net]>",
        )
    )

    assert parsed.message_id == "<[0a9e@notify.example.net]>"
    assert not parsed.message_id_synthetic


def test_folded_message_id_is_unfolded() -> None:
    """A Message-ID folded onto the next line loses the fold and space."""
    parsed = parse_message(
        _mail("From: a@example.org", "Message-ID:", " <long.id@example.org>")
    )

    assert parsed.message_id == "<long.id@example.org>"


def test_bare_message_id_gets_angle_brackets() -> None:
    """An id written without angle brackets gets them, with a defect."""
    parsed = parse_message(
        _mail("From: a@example.org", "Message-ID: bare.id@example.org")
    )

    assert parsed.message_id == "<bare.id@example.org>"
    assert "Message-ID without angle brackets" in parsed.defects


def test_missing_message_id_gets_a_stable_synthetic_id() -> None:
    """Without Message-ID the id is a hash that ignores trace fields."""
    message = _mail(
        "From: scanner@example.org",
        "Subject: Scan",
        body=b"Scanned.\r\n",
    )
    first = parse_message(b"Received: by mx1.example.com\r\n" + message)
    again = parse_message(
        b"Delivered-To: other@example.com\r\n"
        + b"Received: by mx2.example.com\r\n"
        + message.replace(b"\r\n", b"\n")
    )

    assert first.message_id_synthetic
    assert first.message_id.endswith("@mailgate.invalid>")
    assert first.message_id == again.message_id


def test_synthetic_id_differs_for_different_bodies() -> None:
    """Two messages without Message-ID but other bodies get other ids."""
    one = parse_message(_mail("From: a@example.org", body=b"One.\r\n"))
    two = parse_message(_mail("From: a@example.org", body=b"Two.\r\n"))

    assert one.message_id != two.message_id


def test_in_reply_to_tokens_skip_comments() -> None:
    """In-Reply-To yields every msg-id in order, comments dropped."""
    parsed = parse_message(
        _mail(
            "From: a@example.net",
            "In-Reply-To: <one@example.net>",
            ' <two@example.com> (Support\'s message of "Tue, 01 Dec")',
            "References: <zero@example.net> (old)",
            "\t<one@example.net>",
        )
    )

    assert parsed.in_reply_to == ("<one@example.net>", "<two@example.com>")
    assert parsed.references == ("<zero@example.net>", "<one@example.net>")


def test_subject_with_multibyte_character_split_across_words() -> None:
    """Adjacent encoded-words are joined before decoding (RFC 2047 6.2)."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Subject: =?utf-8?B?R3LD?=\r\n =?utf-8?B?tsOfZQ==?=\r\n"
        )
    )

    assert parsed.title == "Größe"


def test_iso_2022_jp_with_nec_characters() -> None:
    """ISO-2022-JP text holding NEC row 13 (㈱, ①) decodes like CP50221."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Subject: =?ISO-2022-JP?B?GyRCLWolNSVzJVclaxsoQg==?=\r\n"
            b"Content-Type: text/plain; charset=iso-2022-jp\r\n",
            b"\x1b$B8+@Q=q-!\x1b(B\r\n",
        )
    )

    assert parsed.title == "㈱サンプル"
    assert parsed.text == "見積書①\n"


def test_unlabelled_iso_2022_jp_body_is_sniffed() -> None:
    """A body without charset but with ISO-2022-JP escapes is decoded."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\nContent-Type: text/plain\r\n",
            b"\x1b$B;3ED\x1b(B\r\n",
        )
    )

    assert parsed.text == "山田\n"


def test_latin1_label_is_read_as_windows_1252() -> None:
    """Octets 0x80-0x9F under an ISO-8859-1 label are windows-1252."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n",
            b"\x93Preis\x94 \x96 100 \x80\x85\r\n",
        )
    )

    assert parsed.text == "“Preis” \u2013 100 €…\n"


def test_windows_874_label_decodes_thai() -> None:
    """The windows-874 label, unknown to Python, decodes as cp874."""
    parsed = parse_message(
        _raw(
            b"From: =?windows-874?B?ysGq0sI=?= <s@example.org>\r\n"
            b"Content-Type: text/plain; charset=windows-874\r\n",
            b"\xca\xc1\xaa\xd2\xc2 \x96\x85\r\n",
        )
    )

    assert parsed.sender is not None
    assert parsed.sender.name == "สมชาย"
    assert parsed.text == "สมชาย \u2013…\n"


def test_legacy_label_on_utf8_octets_is_read_as_utf8() -> None:
    """Valid multi-byte UTF-8 under a legacy label is decoded as UTF-8."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n",
            "Grüße\r\n".encode(),
        )
    )

    assert parsed.text == "Grüße\n"


def test_undecodable_utf8_is_repaired_and_noted() -> None:
    """Octets that are no UTF-8 under a UTF-8 label never break the text."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"caf\xe9 cr\xe8me br\xfbl\xe9e\r\n",
        )
    )

    assert parsed.text.startswith("caf")
    parsed.text.encode("utf-8")
    assert any("utf-8" in defect for defect in parsed.defects)


def test_rfc2231_filename_continuations_are_joined() -> None:
    """filename*0*/filename*1* are joined, then decoded as one string."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n',
            b"--b\r\n"
            b"Content-Type: text/plain\r\n\r\n"
            b"See attached.\r\n"
            b"--b\r\n"
            b'Content-Type: application/pdf; name="other.pdf"\r\n'
            b"Content-Disposition: attachment;\r\n"
            b" filename*0*=UTF-8''Pr%C3%BCfbericht%20Gr%C3;\r\n"
            b" filename*1*=%B6%C3%9Fe.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"JVBERi0xLjQK\r\n"
            b"--b--\r\n",
        )
    )

    (attachment,) = parsed.attachments
    assert attachment.filename == "Prüfbericht Größe.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.data == b"%PDF-1.4\n"
    assert attachment.size == 9


def test_attachment_disposition_text_is_never_the_body() -> None:
    """A text/plain part marked attachment is a file, and the text is ''."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n',
            b"--b\r\n"
            b"Content-Disposition: attachment; filename=notes.txt\r\n"
            b"Content-Type: text/plain\r\n\r\n"
            b"Rollout plan\r\n"
            b"--b--\r\n",
        )
    )

    assert parsed.text == ""
    assert [a.filename for a in parsed.attachments] == ["notes.txt"]


def test_alternative_prefers_plain_text_and_keeps_html() -> None:
    """multipart/alternative gives the plain part as text, HTML as html."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b'Content-Type: multipart/alternative; boundary="b"\r\n',
            b"--b\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Plain words\r\n"
            b"--b\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n"
            b"<p>Rich <b>words</b></p>\r\n"
            b"--b--\r\n",
        )
    )

    assert parsed.text == "Plain words"
    assert parsed.html == "<p>Rich <b>words</b></p>"
    assert parsed.attachments == ()


def test_html_only_body_is_converted_to_text() -> None:
    """Without plain text, the HTML becomes text with entities decoded."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n",
            b"<html><body><p>Fish &amp; chips &euro; 5</p>"
            b"<p>Second&nbsp;line</p></body></html>\r\n",
        )
    )

    assert "Fish & chips € 5" in parsed.text
    assert "Second\u00a0line" in parsed.text
    assert "<p>" not in parsed.text


def test_related_image_is_an_inline_attachment() -> None:
    """An image in multipart/related is an inline attachment with its cid."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b'Content-Type: multipart/related; boundary="b"\r\n',
            b"--b\r\n"
            b"Content-Type: text/html\r\n\r\n"
            b'<p>Logo: <img src="cid:logo@x"></p>\r\n'
            b"--b\r\n"
            b"Content-Type: image/png\r\n"
            b"Content-ID: <logo@x>\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"iVBORw0KGgo=\r\n"
            b"--b--\r\n",
        )
    )

    (image,) = parsed.attachments
    assert image.content_type == "image/png"
    assert image.content_id == "logo@x"
    assert image.inline
    assert image.filename is None
    assert "Logo:" in parsed.text


def test_attached_message_keeps_its_original_octets() -> None:
    """message/rfc822 is one attachment of the octets as sent, not walked."""
    inner = (
        b"From: inner@example.net\r\n"
        b"Subject:   odd   spacing\r\n\r\n"
        b"Inner body\r\n"
    )
    parsed = parse_message(
        _raw(
            b"From: outer@example.org\r\n"
            b"Subject: Fwd\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n',
            b"--b\r\n"
            b"Content-Type: text/plain\r\n\r\n"
            b"Outer body\r\n"
            b"--b\r\n"
            b"Content-Type: message/rfc822\r\n"
            b'Content-Disposition: attachment; filename="orig.eml"\r\n\r\n'
            + inner
            + b"\r\n--b--\r\n",
        )
    )

    (attached,) = parsed.attachments
    assert attached.content_type == "message/rfc822"
    assert attached.filename == "orig.eml"
    assert attached.data == inner
    assert parsed.text == "Outer body"
    assert parsed.title == "Fwd"


_TNEF = (
    "eJ8+Ii0cAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAAEIgAcAGAAAAElQTS5N"
    "aWNyb3NvZnQgTWFpbC5Ob3RlADEIAQSAAQAQAAAAUHJpY2UgbGlzdCAyMDI3ALoEAQyAAgCF"
    "AAAARGVhciBzdXBwb3J0IHRlYW0sDQoNCnBsZWFzZSBmaW5kIG91ciBwcmljZSBsaXN0IGZv"
    "ciAyMDI3IGF0dGFjaGVkLiBQcmljZXMgYXJlIHZhbGlkIGZyb20gMSBKYW51YXJ5IDIwMjcu"
    "DQoNClJlZ2FyZHMNCkZyYW5rIEjkbmRsZXINCjUrAgKQBgAOAAAAAQD//////////wAAAAD5"
    "BwIQgAEAFAAAAFByZWlzbGlzdGUgMjAyNy50eHQAnQYCD4AGAEEAAABBcnRpa2VsO1ByZWlz"
    "DQpIWC0zIEVyc2F0enRlaWxzYXR6Ozg0LDAwDQpLWC00MCBTY2hhcm5pZXI7MTIsNTANCq0T"
)


def test_winmail_dat_is_unpacked_into_files_and_body() -> None:
    """A TNEF winmail.dat gives its files and, lacking a body, its text."""
    parsed = parse_message(
        _raw(
            b"From: f@example.net\r\n"
            b'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
            b'Content-Disposition: attachment; filename="winmail.dat"\r\n'
            b"Content-Transfer-Encoding: base64\r\n",
            _TNEF.encode() + b"\r\n",
        )
    )

    (price_list,) = parsed.attachments
    assert price_list.filename == "Preisliste 2027.txt"
    assert price_list.content_type == "text/plain"
    assert price_list.size == 65
    assert "please find our price list" in parsed.text
    assert "Frank Händler" in parsed.text
    assert "\r" not in parsed.text


def test_broken_winmail_dat_is_kept_as_attachment() -> None:
    """A TNEF part that cannot be read stays as winmail.dat, noted."""
    parsed = parse_message(
        _raw(
            b"From: f@example.net\r\n"
            b"Content-Type: application/ms-tnef\r\n"
            b'Content-Disposition: attachment; filename="winmail.dat"\r\n',
            b"not tnef at all\r\n",
        )
    )

    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert any("TNEF" in defect for defect in parsed.defects)


_DSN = (
    b"Return-Path: <>\r\n"
    b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
    b'\tboundary="r"\r\n'
    b"\r\n"
    b"--r\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"Could not be delivered.\r\n"
    b"--r\r\n"
    b"Content-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; max@Example.NET\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <max@example.net>:\r\n"
    b"    mailbox unavailable\r\n"
    b"\r\n"
    b"Original-Recipient: rfc822; other@example.net\r\n"
    b"Action: delayed\r\n"
    b"Status: 4.4.1 (connection timed out)\r\n"
    b"\r\n"
    b"--r\r\n"
    b"Content-Type: text/rfc822-headers\r\n\r\n"
    b"From: support@example.com\r\n"
    b"Message-ID: <1042@crm.example.com>\r\n"
    b"\r\n"
    b"--r--\r\n"
)


def test_delivery_status_notification_is_read() -> None:
    """A DSN yields each recipient's action and status and the original id."""
    parsed = parse_message(_DSN)

    report = parsed.delivery_report
    assert report is not None
    assert report.original_message_id == "<1042@crm.example.com>"
    failed, delayed = report.recipients
    assert failed.address == "max@example.net"
    assert failed.action == "failed"
    assert failed.status == "5.1.1"
    assert failed.diagnostic == (
        "550 5.1.1 <max@example.net>: mailbox unavailable"
    )
    assert delayed.address == "other@example.net"
    assert delayed.status == "4.4.1"
    assert parsed.text == "Could not be delivered."
    assert parsed.automatic


def test_auto_submitted_marks_the_message_automatic() -> None:
    """Auto-Submitted other than "no" is automatic (RFC 3834 5)."""
    parsed = parse_message(
        _mail("From: a@example.net", "Auto-Submitted: auto-generated")
    )

    assert parsed.automatic
    assert parsed.automatic_reason == "Auto-Submitted: auto-generated"


def test_auto_submitted_no_is_not_automatic() -> None:
    """Auto-Submitted: no marks a message written by a person."""
    parsed = parse_message(_mail("From: a@example.net", "Auto-Submitted: no"))

    assert not parsed.automatic
    assert parsed.automatic_reason is None


def test_auto_response_suppress_alone_is_not_automatic() -> None:
    """X-Auto-Response-Suppress only asks others not to answer."""
    parsed = parse_message(
        _mail("From: a@example.net", "X-Auto-Response-Suppress: All")
    )

    assert not parsed.automatic


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: list", "Precedence: list"),
        ("Return-Path: <>", "Return-Path: <>"),
        ("X-Autoreply: yes", "X-Autoreply: yes"),
        ("Subject: Out of Office: back Monday", "Subject: Out of Office:"),
    ],
)
def test_usual_markers_make_a_message_automatic(
    header: str, reason: str
) -> None:
    """Bulk precedence, null return path, autoreply markers are automatic."""
    parsed = parse_message(_mail("From: a@example.net", header))

    assert parsed.automatic
    assert parsed.automatic_reason == reason


def test_list_id_is_the_part_in_angle_brackets() -> None:
    """List-Id gives the id between angle brackets (RFC 2919)."""
    parsed = parse_message(
        _mail("From: a@example.net", "List-Id: Sales team <sales.example.com>")
    )

    assert parsed.list_id == "sales.example.com"


def test_raw_utf8_headers_decode_without_surrogates() -> None:
    """RFC 6532 raw UTF-8 in From, Subject and Message-ID is decoded."""
    parsed = parse_message(
        _raw(
            "From: Zoë Ångström <zoë@bücher.example.org>\r\n"
            "Subject: Rückfrage\r\n"
            "Message-ID: <id@bücher.example.org>\r\n".encode()
        )
    )

    assert parsed.sender is not None
    assert parsed.sender.email == "zoë@bücher.example.org"
    assert parsed.sender.name == "Zoë Ångström"
    assert parsed.title == "Rückfrage"
    assert parsed.message_id == "<id@bücher.example.org>"


def test_raw_8bit_header_in_legacy_charset_is_clean_text() -> None:
    """Raw 8-bit header octets that are no UTF-8 become windows-1252."""
    parsed = parse_message(
        _raw(b"From: J\xf6rg <j@example.org>\r\nSubject: Gr\xfc\xdfe\r\n")
    )

    assert parsed.title == "Grüße"
    assert parsed.sender is not None
    assert parsed.sender.name == "Jörg"


def test_idna_domain_is_normalised_to_unicode() -> None:
    """An A-label domain is stored in its Unicode form, lower-cased."""
    parsed = parse_message(_mail("From: Zoe <Zoe@XN--BCHER-KVA.Example.ORG>"))

    assert parsed.sender is not None
    assert parsed.sender.email == "Zoe@bücher.example.org"


def test_groups_give_members_and_invalid_addresses_are_skipped() -> None:
    """Group members count, group names do not; bad entries are noted."""
    parsed = parse_message(
        _mail(
            "From: a@example.org",
            "To: Team: one@example.com, two@example.com;, not-an-address",
            "Cc: undisclosed-recipients:;",
        )
    )

    assert [a.email for a in parsed.to] == [
        "one@example.com",
        "two@example.com",
    ]
    assert parsed.cc == ()
    assert any("not-an-address" in defect for defect in parsed.defects)


def test_sender_and_reply_to_are_read() -> None:
    """Sender: and Reply-To: are parsed like From:."""
    parsed = parse_message(
        _mail(
            "From: Boss <boss@example.org>",
            "Sender: Assistant <assist@example.org>",
            "Reply-To: a@example.org, =?utf-8?q?B=C3=BCro?= <b@example.org>",
        )
    )

    assert parsed.sender_header is not None
    assert parsed.sender_header.email == "assist@example.org"
    assert [(a.email, a.name) for a in parsed.reply_to] == [
        ("a@example.org", ""),
        ("b@example.org", "Büro"),
    ]


def test_delivered_to_collects_envelope_recipients() -> None:
    """Delivered-To and X-Original-To give the mailboxes, normalised."""
    parsed = parse_message(
        _mail(
            "Delivered-To: Kundendienst@Example.COM",
            "X-Original-To: <sales@example.com>",
            "From: a@example.org",
        )
    )

    assert parsed.delivered_to == (
        "Kundendienst@example.com",
        "sales@example.com",
    )


def test_date_is_aware_utc() -> None:
    """The Date field is converted to an aware UTC datetime."""
    parsed = parse_message(
        _mail("From: a@example.org", "Date: Wed, 2 Dec 2026 14:02:08 +0900")
    )

    assert parsed.date == datetime(2026, 12, 2, 5, 2, 8, tzinfo=UTC)
    assert parsed.date_problem is None


def test_missing_date_is_reported() -> None:
    """Without Date, date is None and date_problem says missing."""
    parsed = parse_message(
        _mail(
            "Received: from x by y; Wed, 2 Dec 2026 10:00:00 +0000",
            "From: a@example.org",
        )
    )

    assert parsed.date is None
    assert parsed.date_problem == "missing"
    assert parsed.received_date == datetime(2026, 12, 2, 10, tzinfo=UTC)


def test_unparsable_date_is_reported_with_its_value() -> None:
    """A Date that cannot be read gives 'unparsable: <value>'."""
    parsed = parse_message(_mail("From: a@example.org", "Date: yesterday"))

    assert parsed.date is None
    assert parsed.date_problem == "unparsable: yesterday"


def test_thread_index_is_base64_decoded() -> None:
    """Thread-Index is decoded; invalid base64 gives None and a defect."""
    good = parse_message(
        _mail(
            "From: a@example.org",
            "Thread-Index: AQHdgWu7Xgw6fZGyT2qMHS4/QFFicw==",
            "Thread-Topic: Delivery delay",
        )
    )
    bad = parse_message(
        _mail("From: a@example.org", "Thread-Index: not*base64!")
    )

    assert good.thread_index is not None
    assert len(good.thread_index) == 22
    assert good.thread_topic == "Delivery delay"
    assert bad.thread_index is None
    assert any("Thread-Index" in defect for defect in bad.defects)


def test_bare_lf_long_line_without_final_newline() -> None:
    """Bare LF line ends and a last line without newline keep all text."""
    line = ";".join(f"ROW{n:04d}" for n in range(2000))
    raw = (
        b"From: erp@example.org\n"
        b"Subject: Export\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
        b"Rows:\n" + line.encode() + b"\nEND"
    )

    parsed = parse_message(raw)

    assert parsed.title == "Export"
    assert parsed.text == f"Rows:\n{line}\nEND"


def test_empty_input_is_unparsable() -> None:
    """Empty octets raise UnparsableMessage."""
    with pytest.raises(UnparsableMessage):
        parse_message(b" \r\n")


def test_octets_without_header_block_are_unparsable() -> None:
    """Octets with no header field at all raise UnparsableMessage."""
    with pytest.raises(UnparsableMessage):
        parse_message(b"just some text\r\nwithout any header\r\n")


def test_no_from_and_no_content_is_unparsable() -> None:
    """Header fields without From and without any content are unusable."""
    with pytest.raises(UnparsableMessage):
        parse_message(b"Subject: nothing\r\n\r\n")


def test_message_without_from_but_with_body_parses() -> None:
    """A missing From gives sender None, not an error."""
    parsed = parse_message(_mail("Subject: anonymous", body=b"Text\r\n"))

    assert parsed.sender is None
    assert parsed.text == "Text\n"


def test_malformed_mime_is_noted_in_defects() -> None:
    """A multipart cut off before its close boundary still parses."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n',
            b"--b\r\nContent-Type: text/plain\r\n\r\nPartial",
        )
    )

    assert parsed.text == "Partial"
    assert any(defect.startswith("MIME:") for defect in parsed.defects)


def test_html_over_two_mebibytes_is_reduced_to_its_text() -> None:
    """Very large HTML skips html2text; tags go, entities and lines stay."""
    paragraph = b"<p>Fish &amp; chips</p>\n"
    html = paragraph * (3 * 1024 * 1024 // len(paragraph))
    parsed = parse_message(
        _raw(b"From: a@example.org\r\nContent-Type: text/html\r\n", html)
    )

    assert parsed.text.startswith("Fish & chips\n")
    assert "<p>" not in parsed.text


def test_label_of_a_bytes_codec_is_not_used() -> None:
    """A charset label naming a non-text codec (base64) is treated as junk."""
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: text/plain; charset=base64\r\n",
            b"Plain words\r\n",
        )
    )

    assert parsed.text == "Plain words\n"


def test_absurdly_deep_mime_nesting_does_not_crash() -> None:
    """Thousands of nested multiparts give a message with a defect."""
    nesting = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
        % (level, level + 1)
        for level in range(3000)
    )
    parsed = parse_message(
        _raw(
            b"From: a@example.org\r\n"
            b"Content-Type: multipart/mixed; boundary=b0\r\n",
            nesting,
        )
    )

    assert any("nesting" in defect for defect in parsed.defects)


# The shared real-world cases -------------------------------------------


def _cases() -> list[Any]:
    expected = CASES_DIR / "expected.json"
    if not expected.is_file():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"no cases at {CASES_DIR}"),
                id="no-cases",
            )
        ]

    cases = json.loads(expected.read_text(encoding="utf-8"))

    return [pytest.param(case, id=case["id"]) for case in cases]


def _parse_file(name: str) -> ParsedMessage:
    return parse_message((CASES_DIR / "inbound" / name).read_bytes())


def _check_attachments(parsed: ParsedMessage, expect: dict[str, Any]) -> None:
    remaining = list(parsed.attachments)
    for wanted in expect["attachments"]:
        match = next(
            (
                attachment
                for attachment in remaining
                if attachment.filename == wanted["filename"]
            ),
            None,
        )
        assert match is not None, f"no attachment {wanted['filename']!r}"
        remaining.remove(match)
        assert match.size == wanted["size"]
        assert match.content_type == wanted["content_type"]
        if "content_id" in wanted:
            assert match.content_id == wanted["content_id"]
        if "inline" in wanted:
            assert match.inline == wanted["inline"]

    allowed = expect.get("attachments_may_also_include", [])
    for extra in remaining:
        assert any(
            extra.filename == optional["filename"]
            and extra.size == optional["size"]
            for optional in allowed
        ), f"unexpected attachment {extra.filename!r}"


def _check_recipient_names(
    parsed: ParsedMessage, expected: dict[str, str] | list[str]
) -> None:
    recipients = parsed.to + parsed.cc
    if isinstance(expected, dict):
        names = {address.email: address.name for address in recipients}
        for email, name in expected.items():
            assert names[normalize_address(email)] == name
    else:
        names_seen = [address.name for address in recipients]
        for name in expected:
            assert name in names_seen


def _check_expectations(
    parsed: ParsedMessage,
    expect: dict[str, Any],
    parent: ParsedMessage | None,
) -> None:
    if "sender" in expect:
        assert parsed.sender is not None
        assert parsed.sender.email == expect["sender"]
    if "sender_name" in expect:
        assert parsed.sender is not None
        assert parsed.sender.name == expect["sender_name"]
    if "sender_ascii_domain_equivalent" in expect:
        assert parsed.sender is not None
        equivalent = expect["sender_ascii_domain_equivalent"]
        assert normalize_address(equivalent) == parsed.sender.email
    if "recipients" in expect:
        emails = [address.email for address in parsed.to + parsed.cc]
        assert emails == expect["recipients"]
    if "recipient_names" in expect:
        _check_recipient_names(parsed, expect["recipient_names"])
    if "delivered_to" in expect:
        assert normalize_address(expect["delivered_to"]) in parsed.delivered_to
    if "title" in expect:
        assert parsed.title == expect["title"]
    if "content" in expect:
        assert parsed.text == expect["content"]
    for text in expect.get("content_contains", []):
        assert text in parsed.text
    for text in expect.get("content_not_contains", []):
        assert text not in parsed.text
    if "attachments" in expect:
        _check_attachments(parsed, expect)
    if "message_id" in expect:
        if expect["message_id"].startswith("(synthetic"):
            assert parsed.message_id_synthetic
        else:
            assert parsed.message_id == expect["message_id"]
            assert not parsed.message_id_synthetic
    if "auto_reply" in expect:
        assert parsed.automatic == expect["auto_reply"]
    if "mailing_list" in expect:
        assert parsed.list_id == expect["mailing_list"]
    if "date_between" in expect:
        start, end = (
            datetime.fromisoformat(t) for t in expect["date_between"]
        )
        assert parsed.date is not None
        assert start <= parsed.date <= end
    _check_report(parsed, expect, parent)
    _check_links(parsed, expect, parent)


def _check_report(
    parsed: ParsedMessage,
    expect: dict[str, Any],
    parent: ParsedMessage | None,
) -> None:
    keys = ("failed_recipient", "dsn_status", "dsn_action", "bounce_of")
    if not any(key in expect for key in keys):
        return

    report = parsed.delivery_report
    assert report is not None
    recipient = report.recipients[0]
    if "failed_recipient" in expect:
        assert recipient.address == expect["failed_recipient"]
    if "dsn_status" in expect:
        assert recipient.status == expect["dsn_status"]
    if "dsn_action" in expect:
        assert recipient.action == expect["dsn_action"]
    if expect.get("bounce_of") == "parent":
        assert parent is not None
        assert report.original_message_id == parent.message_id


def _check_links(
    parsed: ParsedMessage,
    expect: dict[str, Any],
    parent: ParsedMessage | None,
) -> None:
    if expect.get("duplicate_of") == "parent":
        assert parent is not None
        assert parsed.message_id == parent.message_id
    if expect.get("causality") == "parent":
        assert parent is not None
        by_id = parent.message_id in parsed.in_reply_to + parsed.references
        by_index = (
            parsed.thread_index is not None
            and parent.thread_index is not None
            and parsed.thread_index[:22] == parent.thread_index[:22]
        )
        assert by_id or by_index
    reply = expect.get("outgoing_reply")
    if reply is not None:
        assert parsed.message_id == reply["in_reply_to"]
        assert parsed.message_id == reply["references_last"]


@pytest.mark.parametrize("case", _cases())
def test_shared_case(case: dict[str, Any]) -> None:
    """Each real-world case gives the values expected.json lists."""
    parent = _parse_file(case["parent"]) if case.get("parent") else None
    if parent is not None and "parent_expect" in case["expect"]:
        _check_expectations(parent, case["expect"]["parent_expect"], None)

    raw = (CASES_DIR / "inbound" / case["file"]).read_bytes()
    parsed = parse_message(raw)

    _check_expectations(parsed, case["expect"], parent)
    again = parse_message(raw)
    assert again.message_id == parsed.message_id
    for text in (parsed.title, parsed.text, parsed.message_id):
        text.encode("utf-8")


@pytest.mark.parametrize("shift", [-2, -1, 0, 1])
def test_a_line_break_across_feed_pieces_is_one_line_break(shift: int) -> None:
    """Feeding the parser in pieces gives the tree that one piece gives.

    The message is padded so that a CRLF, or a boundary line, falls on
    the edge between two pieces.
    """
    header = b"From: ann@customer.example\r\nContent-Type: multipart/mixed;"
    header += b' boundary="edge"\r\n\r\n'
    first = b"--edge\r\nContent-Type: text/plain\r\n\r\n"
    filler = b"x" * (FEED_BYTES - len(header) - len(first) + shift - 2)
    raw = header + first + filler + b"\r\n--edge\r\n\r\nsecond\r\n--edge--\r\n"

    pieces = parse_structure(raw, [])
    whole = BytesParser(policy=compat32).parsebytes(raw)

    assert pieces.as_bytes() == whole.as_bytes()
    assert [len(p.get_payload()) for p in pieces.get_payload()] == [
        len(filler),
        len("second"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        _mail("From: ann@customer.example", "Subject: Hello"),
        _mail("Subject: no identifier", body=b"Hello.\r\n" * 5000),
        b"\r\n \t\r\n",
        b"",
    ],
)
def test_trace_given_apart_parses_as_the_joined_message(raw: bytes) -> None:
    """A trace field given apart reads as one written before the octets."""
    trace = b"Received: from client.example.org\r\n\tby gate; id 1\r\n"

    def outcome(message: bytes, **options: bytes) -> object:
        try:
            return parse_message(message, **options)
        except UnparsableMessage as error:
            return str(error)

    assert outcome(raw, trace=trace) == outcome(trace + raw)


@pytest.mark.parametrize(
    "body",
    [
        b"QUJD\r\nREVG\r\n",
        b"QUJDRA==\r\n",
        b"QUJD=\r\n",
        b"QQ==\r\nQQ==\r\n",
        b"QUJ\r\n",
        b"QU JD\r\n",
        b"Q\r\n",
    ],
)
def test_base64_bodies_decode_as_the_stdlib_decodes(body: bytes) -> None:
    """Same octets and same defects as the stdlib, well-formed or not."""
    raw = _raw(
        b"From: ann@customer.example\r\nContent-Type: application/pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n",
        body,
    )
    ours = parse_structure(raw, [])
    stdlib = BytesParser(policy=compat32).parsebytes(raw)

    assert payload_octets(ours, []) == stdlib.get_payload(decode=True)
    assert [type(d) for d in ours.defects] == [type(d) for d in stdlib.defects]


@pytest.mark.parametrize(
    "body",
    [
        b"caf=C3=A9 cr=e8me\r\n",
        b"a soft=\r\nbreak and one at the end=\r\n",
        b"trailing space  \r\ntab\t\r\n",
        b"=ZZ =4 =\r\n",
        b"8-bit \xe9t\xe9 =3D\r\n",
        b"no line break at all",
    ],
)
def test_quoted_printable_bodies_decode_as_the_stdlib_decodes(
    body: bytes,
) -> None:
    """Same octets as the stdlib, with soft breaks, bad escapes, 8-bit."""
    raw = _raw(
        b"From: ann@customer.example\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        body,
    )
    ours = parse_structure(raw, [])
    stdlib = BytesParser(policy=compat32).parsebytes(raw)

    assert payload_octets(ours, []) == stdlib.get_payload(decode=True)
