"""Parsing of inbound mail: raw octets in, a ParsedMessage out.

``parse_message`` is a pure function: no I/O, no store. It reads almost
anything and lists what it had to repair in ``ParsedMessage.defects``;
only octets without any usable content raise UnparsableMessage.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.errors import MessageDefect

from gateway.ingest.automatic import automatic_reason
from gateway.ingest.body import extract_body
from gateway.ingest.charsets import scrub
from gateway.ingest.dates import parse_date, received_date
from gateway.ingest.dsn import read_delivery_report, report_type
from gateway.ingest.headers import FieldReader
from gateway.ingest.mailboxes import normalize_mailbox, parse_mailboxes
from gateway.ingest.mime import Part, parse_structure
from gateway.ingest.msgid import (
    message_id_token,
    msg_id_tokens,
    synthetic_message_id,
)
from gateway.ingest.parsed import (
    Address,
    Attachment,
    DeliveryReport,
    ParsedMessage,
    ReportedRecipient,
)

__all__ = [
    "Address",
    "Attachment",
    "DeliveryReport",
    "ParsedMessage",
    "ReportedRecipient",
    "UnparsableMessage",
    "parse_message",
]

# MS-OXOMSG 2.2.1.3 PidTagConversationIndex: a 22-octet header block.
_THREAD_INDEX_HEADER = 22

_LIST_ID = re.compile(r"<([^<>]+)>")


class UnparsableMessage(Exception):
    """Octets from which no message can be read at all."""


def parse_message(raw: bytes, *, trace: bytes = b"") -> ParsedMessage:
    """Parse one inbound message from its raw octets.

    The message is trace then raw: trace fields we add are given apart,
    as a Delivery keeps them. Raises UnparsableMessage when the octets
    hold no header fields, or neither a From field nor any body or
    attachment.
    """
    if _blank(trace) and _blank(raw):
        raise UnparsableMessage("empty message")

    problems: list[str] = []
    message = parse_structure(raw, problems, trace=trace)
    fields = FieldReader(message.raw_items(), problems)
    if not fields:
        raise UnparsableMessage("no header fields")

    senders = parse_mailboxes(fields.all("from"), "From", problems)
    body = extract_body(message, problems)
    has_content = _has_content(body.text, body.html) or body.attachments
    if not fields.has("from") and not has_content:
        raise UnparsableMessage("no From field and no content")

    message_id, synthetic = _message_id(fields, trace, raw, problems)
    title = fields.text("subject") or ""
    date = parse_date(fields.first("date"))
    if date.value is not None and date.problem:
        problems.append(f"Date: {date.problem}")

    sender = senders[0] if senders else None
    kind = report_type(message, problems)
    reason = automatic_reason(fields, kind, sender, title)
    report = read_delivery_report(message, problems)

    senders_field = parse_mailboxes(fields.all("sender"), "Sender", problems)
    reply_to = _addresses(fields, "reply-to", "Reply-To", problems)
    to = _addresses(fields, "to", "To", problems)
    cc = _addresses(fields, "cc", "Cc", problems)
    delivered_to = _delivered_to(fields, problems)
    thread_index = _thread_index(fields, problems)
    thread_topic = _optional(fields.text("thread-topic"))
    received = received_date(fields.all("received"))
    problems.extend(_stdlib_defects(message))

    return ParsedMessage(
        message_id=scrub(message_id),
        message_id_synthetic=synthetic,
        sender=_clean_address(sender),
        sender_header=_clean_address(
            senders_field[0] if senders_field else None
        ),
        reply_to=reply_to,
        to=to,
        cc=cc,
        delivered_to=delivered_to,
        title=scrub(title),
        date=date.value,
        date_problem=_optional(date.problem) if date.value is None else None,
        text=scrub(body.text),
        html=scrub(body.html) if body.html is not None else None,
        attachments=tuple(_clean_attachment(a) for a in body.attachments),
        in_reply_to=_tokens(fields, "in-reply-to"),
        references=_tokens(fields, "references"),
        thread_index=thread_index,
        thread_topic=thread_topic,
        automatic=reason is not None,
        automatic_reason=_optional(reason),
        list_id=_list_id(fields),
        delivery_report=_clean_report(report),
        defects=tuple(scrub(text) for text in dict.fromkeys(problems)),
        received_date=received,
    )


def _blank(octets: bytes) -> bool:
    """Return whether octets are only ASCII white space, without a copy."""
    return not octets or octets.isspace()


def _has_content(text: str, html: str | None) -> bool:
    return bool(text.strip()) or bool(html and html.strip())


def _message_id(
    fields: FieldReader, trace: bytes, raw: bytes, problems: list[str]
) -> tuple[str, bool]:
    value = fields.first("message-id")
    if value is not None:
        token = message_id_token(value)
        if token is not None:
            if token == f"<{value.strip()}>":
                problems.append("Message-ID without angle brackets")
            return token, False

        problems.append(f"Message-ID unusable: {value.strip()!r}")

    return synthetic_message_id(trace, raw), True


def _addresses(
    fields: FieldReader, name: str, label: str, problems: list[str]
) -> tuple[Address, ...]:
    mailboxes = parse_mailboxes(fields.all(name), label, problems)

    return tuple(
        address
        for mailbox in mailboxes
        if (address := _clean_address(mailbox)) is not None
    )


def _delivered_to(fields: FieldReader, problems: list[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for name, label in (
        ("delivered-to", "Delivered-To"),
        ("x-original-to", "X-Original-To"),
    ):
        for value in fields.all(name):
            address = normalize_mailbox(value, label, problems)
            if address is not None:
                found[scrub(address)] = None

    return tuple(found)


def _tokens(fields: FieldReader, name: str) -> tuple[str, ...]:
    tokens: list[str] = []
    for value in fields.all(name):
        tokens.extend(scrub(token) for token in msg_id_tokens(value))

    return tuple(tokens)


def _thread_index(fields: FieldReader, problems: list[str]) -> bytes | None:
    value = fields.first("thread-index")
    if value is None:
        return None

    try:
        index = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        problems.append("Thread-Index is not base64; ignored")
        return None

    if len(index) < _THREAD_INDEX_HEADER:
        problems.append("Thread-Index shorter than 22 octets; ignored")
        return None

    return index


def _list_id(fields: FieldReader) -> str | None:
    value = fields.first("list-id")
    if value is None:
        return None

    # RFC 2919 2: the list-id is the part between angle brackets.
    found = _LIST_ID.search(value)
    if found is not None:
        return scrub(found.group(1).strip()) or None

    bare = value.strip()

    return scrub(bare) if bare and " " not in bare else None


def _stdlib_defects(message: Part) -> list[str]:
    """Describe the MIME defects the stdlib parser noted, once each."""
    kinds: dict[type[MessageDefect], None] = {}
    for part in message.walk():
        for defect in part.defects:
            kinds[type(defect)] = None

    notes = []
    for kind in kinds:
        summary = (kind.__doc__ or kind.__name__).strip().splitlines()[0]
        notes.append(f"MIME: {summary}")

    return notes


def _optional(text: str | None) -> str | None:
    return scrub(text) if text else None


def _clean_address(address: Address | None) -> Address | None:
    if address is None:
        return None

    return Address(email=scrub(address.email), name=scrub(address.name))


def _clean_attachment(attachment: Attachment) -> Attachment:
    filename = attachment.filename
    identifier = attachment.content_id

    return Attachment(
        filename=scrub(filename) if filename is not None else None,
        content_type=scrub(attachment.content_type),
        data=attachment.data,
        content_id=scrub(identifier) if identifier is not None else None,
        inline=attachment.inline,
    )


def _clean_report(report: DeliveryReport | None) -> DeliveryReport | None:
    if report is None:
        return None

    original = report.original_message_id

    return DeliveryReport(
        original_message_id=scrub(original) if original is not None else None,
        recipients=tuple(
            ReportedRecipient(
                address=scrub(recipient.address),
                action=scrub(recipient.action),
                status=scrub(recipient.status),
                diagnostic=scrub(recipient.diagnostic),
            )
            for recipient in report.recipients
        ),
    )
