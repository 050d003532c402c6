"""The body of an inbound message: its text, its HTML and its attachments.

The rules of RFC 2046 and RFC 2183: a part with ``Content-Disposition:
attachment`` is never body; multipart/alternative offers one content in
several forms (plain text is taken as the text, HTML as the HTML);
multipart/related has one root, the other parts serve it; in any other
multipart the inline text parts follow one another. Every other leaf is an
attachment, an attached message as one opaque attachment.

Limitation: format=flowed text (RFC 3676) is returned as transmitted, with
its soft line breaks, as joining them is cosmetic and risks changing
quoted text. HTML is converted by html2text, which writes Markdown: links
as ``[text](url)``, and a backslash before a digit-dot or dash that starts
a line. HTML over 2 MiB is only stripped of its tags, as html2text would
take seconds per MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import html2text

from gateway.ingest.charsets import decode_octets
from gateway.ingest.mime import (
    Part,
    content_id,
    content_type,
    disposition,
    filename,
    param,
    payload_octets,
    subparts,
)
from gateway.ingest.parsed import Attachment
from gateway.ingest.tnef import is_tnef, unpack_tnef

_BODY_TYPES = frozenset({"text/plain", "text/html"})

# Deeper nesting than this is an attack on the parser, not a mail.
_MAX_DEPTH = 50

# html2text needs about 1.5 s per MiB; larger HTML only has its text taken.
_HTML2TEXT_LIMIT = 2 * 1024 * 1024

# Elements after which the text continues on a new line.
_BLOCK_TAGS = frozenset(
    {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"}
)


@dataclass(frozen=True, slots=True)
class Body:
    """The decoded body text and HTML, and every attachment."""

    text: str
    html: str | None
    attachments: tuple[Attachment, ...]


@dataclass(slots=True)
class _Rendering:
    """One piece of body: the same content as plain text and/or HTML."""

    plain: str | None = None
    html: str | None = None


@dataclass(slots=True)
class _Walk:
    problems: list[str]
    pieces: list[_Rendering] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    tnef_bodies: list[_Rendering] = field(default_factory=list)


def extract_body(message: Part, problems: list[str]) -> Body:
    """Split a parsed message into body text, HTML and attachments."""
    walk = _Walk(problems)
    _visit(message, walk, depth=0)

    pieces = walk.pieces or walk.tnef_bodies
    texts = [_as_text(piece) for piece in pieces]
    htmls = [piece.html for piece in pieces if piece.html is not None]

    return Body(
        text=_newlines(_join(texts)),
        html=_join(htmls) if htmls else None,
        attachments=tuple(walk.attachments),
    )


def html_to_text(html: str) -> str:
    """Convert HTML to readable text, entities decoded, no line wrapping."""
    if len(html) > _HTML2TEXT_LIMIT:
        return _plain_html_text(html).strip("\n")

    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.unicode_snob = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    try:
        text = str(converter.handle(html))
    except Exception:  # html2text has failed on odd markup before
        text = _plain_html_text(html)

    # html2text marks <br> with two trailing spaces (Markdown hard breaks).
    lines = [line.rstrip() for line in _newlines(text).split("\n")]

    return "\n".join(lines).strip("\n")


def _visit(part: Part, walk: _Walk, depth: int) -> None:
    if depth > _MAX_DEPTH:
        walk.problems.append("MIME nesting too deep; inner parts ignored")
        return

    children = subparts(part)
    if children is None:
        _leaf(part, walk)
        return

    subtype = content_type(part).partition("/")[2]
    if subtype == "alternative":
        _alternative(children, walk, depth)
    elif subtype == "related":
        _related(part, children, walk, depth)
    else:
        for child in children:
            _visit(child, walk, depth + 1)


def _alternative(children: list[Part], walk: _Walk, depth: int) -> None:
    """Take the first plain text and the last (richest) HTML alternative."""
    chosen = _Rendering()
    for child in children:
        inner = _Walk(walk.problems)
        _visit(child, inner, depth + 1)
        walk.attachments.extend(inner.attachments)
        for piece in inner.pieces:
            if chosen.plain is None and piece.plain is not None:
                chosen.plain = piece.plain
            if piece.html is not None:
                chosen.html = piece.html

    if chosen.plain is not None or chosen.html is not None:
        walk.pieces.append(chosen)


def _related(
    part: Part, children: list[Part], walk: _Walk, depth: int
) -> None:
    """Visit the root (RFC 2387 start, else the first part) as body."""
    start = param(part, "start", walk.problems)
    root = children[0] if children else None
    if start is not None:
        wanted = start.strip().removeprefix("<").removesuffix(">")
        for child in children:
            if content_id(child) == wanted:
                root = child
                break

    for child in children:
        if child is root or child.is_multipart():
            _visit(child, walk, depth + 1)
        else:
            _keep_attachment(child, walk)


def _leaf(part: Part, walk: _Walk) -> None:
    declared = content_type(part)
    kind = disposition(part)
    name = filename(part, walk.problems)

    # A named text part is body only while no body has been seen: clients
    # name real body parts now and then, and attach text files inline.
    is_body = (
        declared in _BODY_TYPES
        and kind != "attachment"
        and (name is None or not walk.pieces)
    )
    if is_body:
        walk.pieces.append(_rendering(part, declared, walk.problems))
        return

    if declared.startswith("multipart/"):
        # A multipart without usable boundary: its content is still text.
        walk.problems.append(f"{declared} without parts read as text")
        walk.pieces.append(_rendering(part, "text/plain", walk.problems))
        return

    _keep_attachment(part, walk, name)


def _keep_attachment(part: Part, walk: _Walk, name: str | None = None) -> None:
    declared = content_type(part)
    if name is None:
        name = filename(part, walk.problems)

    data = payload_octets(part, walk.problems)

    if is_tnef(declared, name):
        unpacked = unpack_tnef(data, walk.problems)
        if unpacked is not None and unpacked.files:
            walk.attachments.extend(unpacked.files)
        if unpacked is not None and (unpacked.text or unpacked.html):
            walk.tnef_bodies.append(_Rendering(unpacked.text, unpacked.html))
        if unpacked is not None and unpacked.files:
            return

    identifier = content_id(part)
    kind = disposition(part)
    walk.attachments.append(
        Attachment(
            filename=name,
            content_type=declared,
            data=data,
            content_id=identifier,
            inline=kind == "inline" or (kind is None and bool(identifier)),
        )
    )


def _rendering(part: Part, declared: str, problems: list[str]) -> _Rendering:
    data = payload_octets(part, problems)
    decoded = decode_octets(data, param(part, "charset", problems))
    del data  # a large body is held as text from here on, not twice
    if decoded.problem:
        problems.append(f"{declared} body: {decoded.problem}")

    text = _newlines(decoded.text).removeprefix("\ufeff")
    if declared == "text/html":
        return _Rendering(html=text)

    return _Rendering(plain=text)


def _as_text(piece: _Rendering) -> str:
    # Some senders put an empty plain alternative beside the real HTML.
    if piece.plain is not None and (piece.plain.strip() or not piece.html):
        return piece.plain

    return html_to_text(piece.html or "")


def _join(texts: list[str]) -> str:
    """Join body pieces, each starting on a line of its own."""
    if len(texts) == 1:
        return texts[0]

    pieces = [text for text in texts if text]
    ends = [text if text.endswith("\n") else text + "\n" for text in pieces]

    return "".join(ends[:-1] + pieces[-1:])


def _newlines(text: str) -> str:
    if "\r" not in text:
        return text

    return text.replace("\r\n", "\n").replace("\r", "\n")


class _TextCollector(HTMLParser):
    """The text of HTML, for HTML too big for html2text or failing it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []

    def handle_starttag(
        self, tag: str, attrs: list[tuple[str, str | None]]
    ) -> None:
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def _plain_html_text(html: str) -> str:
    collector = _TextCollector()
    collector.feed(html)
    collector.close()

    return "".join(collector.chunks)
