"""Rendering: an outgoing Mail Message event as the message that is sent.

The header is built with the standard library's ``email`` package under
the SMTP policy with lines of up to 998 octets (RFC 5322 2.1.1). With the
default 78, Python writes a long In-Reply-To or References, which it
takes for unstructured text, as RFC 2047 encoded-words (cpython#100991),
and the receiver no longer finds the Message-ID it names. Plain fields
and text bodies, most mail, are written by ``gateway.outbox.plain``
instead, to the same octets at a fraction of the cost.

A message our staff submitted keeps its own body and MIME fields as they
came (a signed body stays valid); the fields the event decides (From,
To, Cc, Subject, Date, Message-ID, In-Reply-To, References) are written
anew, and Bcc is never written. An event made otherwise gets a body made
from its text.

Limitation: such a made body lists any attachments flat, after the text;
inline images are not put in a multipart/related part beside the HTML.
No event has attachments without a submitted message today.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser

import aiosqlite

from gateway.addresses import domain_of
from gateway.crm.events import AttachmentInfo, Event, Party, get_event
from gateway.crm.tickets import get_ticket
from gateway.outbox import plain
from gateway.outbox.verp import return_path
from gateway.store.blobs import BlobStore

POLICY = email.policy.SMTP.clone(max_line_length=998)
UTF8_POLICY = email.policy.SMTPUTF8.clone(max_line_length=998)

# Fields the event decides, and fields that must not go out: Bcc would
# show the hidden recipients; trace fields belong to the transport.
_REPLACED = frozenset(
    {
        b"from",
        b"sender",
        b"to",
        b"cc",
        b"bcc",
        b"subject",
        b"date",
        b"message-id",
        b"in-reply-to",
        b"references",
        b"auto-submitted",
        b"return-path",
        b"received",
        b"delivered-to",
        b"x-original-to",
    }
)

# "Re:", "Fwd:" and their translations, which stay before our tag.
_REPLY_PREFIXES = re.compile(
    r"^(?:\s*(?:re|fwd?|aw|wg|sv|vs|tr|antw)(?:\[\d+\])?\s*:)*\s*",
    re.IGNORECASE,
)

_LINE_ENDING = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class Threading:
    """The In-Reply-To and References of one message."""

    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One rendered message with its SMTP envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: bytes
    # An address needs SMTPUTF8 (RFC 6531).
    utf8: bool = False

    @property
    def mail_options(self) -> list[str]:
        """Return the MAIL FROM parameters this message needs."""
        options = []
        if not self.message.isascii():
            options.append("BODY=8BITMIME")
        if self.utf8:
            options.append("SMTPUTF8")

        return options

    def headers(self) -> list[tuple[str, str]]:
        """Return the header fields, decoded, for people to read."""
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(
            self.message
        )

        return [(name, str(value)) for name, value in parsed.items()]


def rendered_by_us(event: Event) -> bool:
    """Return whether the gateway sends this event's mail itself.

    True for an outgoing Mail Message made here (on the command line or
    by submission); not for a copy of mail our staff sent elsewhere,
    which came in as it was.
    """
    source = event.details.get("source")

    return (
        event.is_mail
        and event.direction == "outgoing"
        and source in (None, "submission")
    )


async def render_event(
    db: aiosqlite.Connection,
    blobs: BlobStore,
    event: Event,
    *,
    bounce_domain: str = "",
    rcpt_tos: Sequence[str] | None = None,
) -> OutgoingMail:
    """Return the message an outgoing Mail Message is sent as.

    ``rcpt_tos`` narrows the envelope to some of its recipients (a retry);
    by default it holds every recipient, Bcc included. Raises OSError when
    a kept file cannot be read.
    """
    threading = await thread_of(db, event)
    tag = None
    if event.ticket_id is not None:
        tag = (await get_ticket(db, event.ticket_id)).tag

    source = None
    attachments: list[tuple[AttachmentInfo, bytes]] = []
    if event.raw_sha256 is not None:
        source = await asyncio.to_thread(blobs.read, event.raw_sha256)
    else:
        for item in event.attachments:
            data = await asyncio.to_thread(blobs.read, item.sha256)
            attachments.append((item, data))

    return compose(
        event,
        threading,
        tag=tag,
        source=source,
        attachments=attachments,
        bounce_domain=bounce_domain,
        rcpt_tos=rcpt_tos,
    )


def compose(
    event: Event,
    threading: Threading,
    *,
    tag: str | None = None,
    source: bytes | None = None,
    attachments: Sequence[tuple[AttachmentInfo, bytes]] = (),
    bounce_domain: str = "",
    rcpt_tos: Sequence[str] | None = None,
) -> OutgoingMail:
    """Return the message of an event, from what the store holds of it.

    ``source`` is the message as submitted, whose body and MIME fields are
    kept; without it the body is made from the event's text.
    """
    parties = (event.sender, *event.recipients)
    utf8 = not all(p.address.rpartition("@")[0].isascii() for p in parties)
    policy = UTF8_POLICY if utf8 else POLICY

    head = _head_fields(event, threading, tag, utf8)
    block = None if utf8 else plain.header_block(head)
    if block is None:
        block = _header_block(head, policy)

    entity = None
    if source is None and not attachments and event.content_html is None:
        # Its fields are MIME fields only, none of them replaced, and its
        # lines end in CRLF already: it goes as it is.
        entity = plain.text_entity(event.content)
    if entity is not None:
        message = block + entity
    else:
        if source is None:
            source = _body_of(event, attachments, policy)
        fields, body = _split(source)
        kept = b"".join(
            f for f in _fields(fields) if _name(f) not in _REPLACED
        )
        message = block + kept + b"\r\n" + body

    domain = _wire_domain(bounce_domain or domain_of(event.sender.address))
    if rcpt_tos is None:
        rcpt_tos = list(dict.fromkeys(p.address for p in event.recipients))

    return OutgoingMail(
        mail_from=return_path(event.id, domain),
        rcpt_tos=tuple(_wire_address(a, utf8) for a in rcpt_tos),
        message=message,
        utf8=utf8,
    )


def subject_of(title: str, tag: str | None) -> str:
    """Return the subject: the title with the ticket's tag, once."""
    if tag is None or tag in title:
        return title

    prefix = _REPLY_PREFIXES.match(title)
    end = prefix.end() if prefix else 0
    parts = (title[:end].strip(), tag, title[end:].strip())

    return " ".join(part for part in parts if part)


async def thread_of(db: aiosqlite.Connection, event: Event) -> Threading:
    """Return In-Reply-To and References for an event's mail.

    From the causality (RFC 5322 3.6.4): In-Reply-To names its Message-ID,
    References are its own References (else its single In-Reply-To)
    followed by its Message-ID. Without a causality that is mail, what the
    event itself carries (a submitted message's own fields).
    """
    return await _thread_of(db, event, {event.id})


async def _thread_of(
    db: aiosqlite.Connection, event: Event, seen: set[int]
) -> Threading:
    parent = await _parent(db, event)
    if parent is None or parent.id in seen:
        return Threading(event.in_reply_to, event.references)

    assert parent.message_id is not None
    ancestors = await _references_of(db, parent, seen | {parent.id})
    references = [i for i in ancestors if i != parent.message_id]

    return Threading(
        (parent.message_id,),
        (*dict.fromkeys(references), parent.message_id),
    )


async def _parent(db: aiosqlite.Connection, event: Event) -> Event | None:
    """Return the causality when it is mail with a real Message-ID."""
    if event.causality_id is None:
        return None

    parent = await get_event(db, event.causality_id)
    if not parent.is_mail or not parent.message_id:
        return None
    if parent.details.get("message_id_synthetic"):
        # Made up by us for a message that had none: no one knows it.
        return None

    return parent


async def _references_of(
    db: aiosqlite.Connection, event: Event, seen: set[int]
) -> tuple[str, ...]:
    """Return the References the event's own message has (or will have)."""
    if event.references:
        return event.references
    if len(event.in_reply_to) == 1:
        return event.in_reply_to
    if event.direction == "outgoing":
        return (await _thread_of(db, event, seen)).references

    return ()


def _head_fields(
    event: Event, threading: Threading, tag: str | None, utf8: bool
) -> list[tuple[str, plain.FieldValue]]:
    """Return the header fields the event decides, in their order."""
    head: list[tuple[str, plain.FieldValue]] = [
        ("From", [_mailbox(event.sender, utf8)])
    ]
    for kind, name in (("to", "To"), ("cc", "Cc")):
        shown = [_mailbox(p, utf8) for p in event.recipients if p.kind == kind]
        if shown:
            head.append((name, shown))
    if len(head) == 1:
        # RFC 5322 A.1.3: only hidden recipients; an empty group says so.
        head.append(("To", plain.UNDISCLOSED))
    head.append(("Subject", subject_of(event.title, tag)))
    head.append(("Date", datetime.fromisoformat(event.start_date)))
    if event.message_id:
        head.append(("Message-ID", event.message_id))
    if threading.in_reply_to:
        head.append(("In-Reply-To", " ".join(threading.in_reply_to)))
    if threading.references:
        head.append(("References", " ".join(threading.references)))
    if event.automatic or event.author_id is None:
        # RFC 3834 5: written by the gateway itself, not by a person.
        head.append(("Auto-Submitted", "auto-generated"))

    return head


def _mailbox(party: Party, utf8: bool) -> plain.Mailbox:
    """Return a party as a header mailbox (no name if it is the address)."""
    name = party.name if party.name != party.address else ""

    return name, _wire_address(party.address, utf8)


def _wire_address(address: str, utf8: bool) -> str:
    """Return an address as it goes on the wire: IDNA unless SMTPUTF8."""
    if utf8:
        return address

    local_part, _, domain = address.rpartition("@")

    return f"{local_part}@{_wire_domain(domain)}"


def _wire_domain(domain: str) -> str:
    """Return a domain as an IDNA A-label (RFC 5890) when it is not ASCII."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _body_of(
    event: Event,
    attachments: Sequence[tuple[AttachmentInfo, bytes]],
    policy: email.policy.EmailPolicy[EmailMessage],
) -> bytes:
    """Return a MIME body made from the event's text and attachments."""
    # 7bit: any smart host takes it, 8BITMIME or not.
    body = EmailMessage(policy=policy.clone(cte_type="7bit"))
    body.set_content(event.content)
    if event.content_html is not None:
        body.add_alternative(event.content_html, subtype="html")
    for item, data in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if maintype in ("message", "multipart") or not subtype:
            # These may not be base64-encoded (RFC 2046 5); sent as octets.
            maintype, subtype = "application", "octet-stream"
        body.add_attachment(
            data,
            maintype=maintype,
            subtype=subtype,
            filename=item.filename,
            cid=item.content_id,
            disposition="inline" if item.inline else "attachment",
        )

    return body.as_bytes()


def _header_block(
    fields: Sequence[tuple[str, plain.FieldValue]],
    policy: email.policy.EmailPolicy[EmailMessage],
) -> bytes:
    """Return header fields written by the email package, CRLF-ended."""
    head = EmailMessage(policy=policy)
    for name, value in fields:
        if isinstance(value, list):
            head[name] = [
                Address(display_name=shown, addr_spec=address)
                for shown, address in value
            ]
        else:
            head[name] = value

    return head.as_bytes().removesuffix(b"\r\n\r\n") + b"\r\n"


def _split(message: bytes) -> tuple[bytes, bytes]:
    """Return the header block and the body, with CRLF line endings."""
    message = _LINE_ENDING.sub(b"\r\n", message)
    head, blank, body = message.partition(b"\r\n\r\n")
    if not blank:
        # Header fields only, no body.
        return message.removesuffix(b"\r\n") + b"\r\n", b""

    return head + b"\r\n", body


def _fields(header_block: bytes) -> list[bytes]:
    """Split a header block into fields, each with its folded lines."""
    fields: list[bytes] = []
    for line in header_block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)

    return fields


def _name(field: bytes) -> bytes:
    return field.partition(b":")[0].strip().lower()
