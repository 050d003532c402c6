"""Delivery status notifications (RFC 3464, RFC 6533) about sent mail.

A DSN is a multipart/report (RFC 6522) with report-type delivery-status.
Its message/delivery-status part holds groups of fields separated by
blank lines: one group about the reporting MTA, then one per recipient.
Each group is read with the stdlib header parser. The returned message
or its headers (text/rfc822-headers) give the original Message-ID.

Limitation: only standard DSNs are read. Bounces in free text (old
Exchange, qmail) give no delivery report; they are still flagged as
automatic when they carry the usual markers.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser

from gateway.ingest.headers import FieldReader, one_line
from gateway.ingest.mailboxes import normalize_mailbox
from gateway.ingest.mime import (
    Part,
    content_type,
    param,
    payload_octets,
    subparts,
)
from gateway.ingest.msgid import message_id_token
from gateway.ingest.parsed import DeliveryReport, ReportedRecipient

_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_STATUS_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status"}
)
_RETURNED_TYPES = frozenset(
    {
        "text/rfc822-headers",
        "message/rfc822",
        "message/global",
        "message/global-headers",
    }
)

# RFC 3463 2: class "." subject "." detail.
_STATUS_CODE = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")

_BLANK_LINE = re.compile(rb"\n[ \t]*\n")

_HEADER_PARSER = BytesHeaderParser()


def report_type(message: Part, problems: list[str]) -> str | None:
    """Return the report-type of a multipart/report message, else None."""
    if content_type(message) != "multipart/report":
        return None

    kind = param(message, "report-type", problems)

    return kind.lower() if kind else "unknown"


def read_delivery_report(
    message: Part, problems: list[str]
) -> DeliveryReport | None:
    """Read the DSN carried by a message; None when it is no DSN."""
    if report_type(message, problems) not in _REPORT_TYPES:
        return None

    children = subparts(message)
    if children is None:
        problems.append("delivery report without parts")
        return None

    recipients: list[ReportedRecipient] = []
    original_message_id = None
    for child in children:
        declared = content_type(child)
        if declared in _STATUS_TYPES and not recipients:
            recipients = _recipients(payload_octets(child, problems), problems)
        elif declared in _RETURNED_TYPES and original_message_id is None:
            original_message_id = _returned_message_id(child, problems)

    return DeliveryReport(
        original_message_id=original_message_id,
        recipients=tuple(recipients),
    )


def _recipients(status: bytes, problems: list[str]) -> list[ReportedRecipient]:
    text = status.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    recipients = []
    for group in _BLANK_LINE.split(text.strip(b"\n")):
        fields = FieldReader(
            _HEADER_PARSER.parsebytes(group + b"\n").raw_items(), problems
        )
        recipient = _recipient(fields, problems)
        if recipient is not None:
            recipients.append(recipient)

    return recipients


def _recipient(
    fields: FieldReader, problems: list[str]
) -> ReportedRecipient | None:
    # RFC 3464 2.3: every per-recipient group has Final-Recipient, Action
    # and Status; the per-message group has none of them.
    typed_address = fields.first("final-recipient")
    if typed_address is None:
        typed_address = fields.first("original-recipient")
    if typed_address is None:
        return None

    # address-type ";" generic-address, e.g. "rfc822; user@example.net".
    address_text = typed_address.partition(";")[2] or typed_address
    address = normalize_mailbox(address_text, "Final-Recipient", problems)

    status = fields.first("status") or ""
    code = _STATUS_CODE.search(status)
    diagnostic = fields.first("diagnostic-code") or ""
    if ";" in diagnostic:
        diagnostic = diagnostic.partition(";")[2]

    return ReportedRecipient(
        address=address or address_text.strip(),
        action=(fields.first("action") or "").strip().lower(),
        status=code.group(0) if code else status.strip(),
        diagnostic=" ".join(one_line(diagnostic).split()),
    )


def _returned_message_id(part: Part, problems: list[str]) -> str | None:
    headers = _HEADER_PARSER.parsebytes(payload_octets(part, problems))
    fields = FieldReader(headers.raw_items(), problems)
    value = fields.first("message-id")

    return message_id_token(value) if value is not None else None
