"""Outlook's TNEF container (winmail.dat), unpacked with tnefparse.

MS-OXTNEF: Outlook may wrap the body and the files of a message into one
``application/ms-tnef`` part. Its files become attachments and its body
text stands in when the MIME message has no body of its own.

Limitation: RTF-only bodies (attRtfCompressed) are not turned into text,
as that needs an RTF decompressor and converter the project lacks; the
files are still unpacked and winmail.dat is kept when nothing came out.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

from tnefparse.tnef import TNEF

from gateway.ingest.charsets import decode_octets
from gateway.ingest.parsed import Attachment

# MS-OXPROPS PidTagAttachMimeTag.
_ATTACH_MIME_TAG = 0x370E


@dataclass(frozen=True, slots=True)
class TnefContent:
    """What a winmail.dat held: files and the body as text and HTML."""

    files: tuple[Attachment, ...]
    text: str | None
    html: str | None


def is_tnef(content_type: str, filename: str | None) -> bool:
    """Tell whether a part is a TNEF container."""
    if content_type in ("application/ms-tnef", "application/vnd.ms-tnef"):
        return True

    return filename is not None and filename.lower() == "winmail.dat"


def unpack_tnef(data: bytes, problems: list[str]) -> TnefContent | None:
    """Unpack a TNEF container; None when it cannot be read."""
    try:
        container = TNEF(data, do_checksum=False)
    except Exception:  # tnefparse raises whatever the truncated data hits
        problems.append("winmail.dat (TNEF) could not be read; kept as is")
        return None

    codepage = container.codepage or "cp1252"
    files = tuple(
        attachment
        for unpacked in container.attachments
        if (attachment := _attachment(unpacked, codepage, problems))
    )
    text = _body_text(container.body, codepage, problems)
    html = _body_text(container.htmlbody, codepage, problems)

    return TnefContent(files=files, text=text, html=html)


def _attachment(
    unpacked: Any, codepage: str, problems: list[str]
) -> Attachment | None:
    data = unpacked.data if isinstance(unpacked.data, bytes) else b""
    name = _attachment_name(unpacked, codepage, problems)
    if not data and name is None:
        return None

    return Attachment(
        filename=name,
        content_type=_attachment_type(unpacked, name),
        data=data,
        content_id=None,
        inline=False,
    )


def _attachment_name(
    unpacked: Any, codepage: str, problems: list[str]
) -> str | None:
    try:
        name = unpacked.long_filename()
    except UnicodeDecodeError:
        # tnefparse decodes attAttachTitle as UTF-8, but it is written in
        # the OEM code page (MS-OXTNEF 2.1.3.3.7).
        name = getattr(unpacked, "_name", b"")

    if isinstance(name, bytes):
        decoded = decode_octets(name, codepage)
        if decoded.problem:
            problems.append(f"winmail.dat file name: {decoded.problem}")
        name = decoded.text

    if not isinstance(name, str):
        return None

    return name.strip("\x00").strip() or None


def _attachment_type(unpacked: Any, name: str | None) -> str:
    for prop in getattr(unpacked, "mapi_attrs", []):
        tag = getattr(prop, "data", None)
        if getattr(prop, "name", None) == _ATTACH_MIME_TAG and tag:
            if isinstance(tag, bytes):
                tag = tag.decode("ascii", "replace")
            return str(tag).strip("\x00").strip().lower()

    if name:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed:
            return guessed

    return "application/octet-stream"


def _body_text(body: Any, codepage: str, problems: list[str]) -> str | None:
    if isinstance(body, bytes):
        decoded = decode_octets(body, codepage)
        if decoded.problem:
            problems.append(f"winmail.dat body: {decoded.problem}")
        body = decoded.text

    if not isinstance(body, str):
        return None

    return body.rstrip("\x00") or None
