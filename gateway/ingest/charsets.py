"""Charsets of inbound mail: octets turned into text despite bad labels.

Python's codecs do the decoding (NKF only for ISO-2022-JP with Windows
vendor characters). This module only chooses the codec: it maps labels
Python lacks to the codec the WHATWG Encoding Standard uses, sniffs
unlabelled ISO-2022-JP, tries UTF-8 where a label is missing or wrong, and
asks charset-normalizer only when no label fits the octets.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import nkf
from charset_normalizer import from_bytes

# WHATWG Encoding Standard, section 4.2 (names and labels): mail clients
# label octets with these names, but what they send is the superset on the
# right. Python either lacks the label (windows-874) or maps it to the
# strict subset (iso-8859-1 has C1 controls where windows-1252 has curly
# quotes, the euro sign, ellipsis and dashes).
_SUPERSETS: dict[str, str] = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso-ir-100": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "cp819": "cp1252",
    "ibm819": "cp1252",
    "iso-8859-9": "cp1254",
    "iso8859-9": "cp1254",
    "latin5": "cp1254",
    "windows-874": "cp874",
    "dos-874": "cp874",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso8859-11": "cp874",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms-kanji": "cp932",
    "windows-31j": "cp932",
    "euc-kr": "cp949",
    "ks-c-5601-1987": "cp949",
    "ks-c-5601": "cp949",
    "ksc5601": "cp949",
    "windows-949": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "iso-8859-8-i": "iso8859-8",
    "x-mac-roman": "mac-roman",
    "x-euc-jp": "euc-jp",
}

# Octets where ISO-8859-1 has C1 controls and windows-1252 has characters.
_C1_RANGE = re.compile(rb"[\x80-\x9f]")

# Labels that name no charset at all (RFC 1428 unknown-8bit and friends).
_UNKNOWN = frozenset(
    {"unknown-8bit", "x-unknown", "unknown", "x-user-defined", "default"}
)

_ISO_2022_JP = "iso2022_jp"

# RFC 1468: ESC $ @ or ESC $ B designates JIS X 0208 into G0. In 7-bit
# text with no charset these escapes can only mean ISO-2022-JP.
_JIS_DESIGNATOR = re.compile(rb"\x1b\$[@B]")

_SURROGATE = re.compile("[\ud800-\udfff]")

# Detection reads a sample only: a few dozen kilobytes settle the charset.
_DETECTION_SAMPLE = 64 * 1024

# Below this, guesses are noise (four octets "detected" as UTF-16).
_DETECTION_MINIMUM = 32


@dataclass(frozen=True, slots=True)
class Decoded:
    """Text decoded from octets, with a note when the label was repaired."""

    text: str
    problem: str | None = None


def decode_octets(data: bytes, label: str | None) -> Decoded:
    """Decode octets labelled with a MIME charset (None when unlabelled)."""
    name = _label_key(label)
    if not name or name in _UNKNOWN:
        return _decode_unlabelled(data, label)

    codec = _codec_name(name)
    if codec is None:
        return _decode_unlabelled(data, label)

    if codec == "ascii":
        return _decode_unlabelled(data, label)

    if codec.startswith(_ISO_2022_JP) and data.isascii():
        return _decode_iso_2022_jp(data, codec)

    if codec == "utf-8":
        return _decode_labelled_utf8(data, label)

    # A legacy label on octets that are valid UTF-8 with multi-byte
    # sequences: real legacy text almost never forms such sequences, so the
    # label is the mistake (common with mail composed in UTF-8 editors).
    if not codec.startswith("utf") and not data.isascii():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return Decoded(text, f"charset {label} is really UTF-8")

    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        pass
    else:
        widened = _SUPERSETS.get(name) == "cp1252"
        if widened and _C1_RANGE.search(data) is not None:
            return Decoded(text, f"charset {label} read as windows-1252")

        return Decoded(text)

    detected = _detect(data, exclude=codec)
    if detected is not None:
        return Decoded(
            detected.text, f"charset {label} does not fit; {detected.problem}"
        )

    return Decoded(
        data.decode(codec, "replace"),
        f"charset {label}: undecodable octets replaced",
    )


def repair_header_text(value: str) -> Decoded:
    """Turn a raw header value from the parser into clean text.

    The stdlib parser keeps octets above 127 as surrogate escapes. RFC
    6532 allows raw UTF-8 in header fields, so those octets are decoded as
    UTF-8, else as windows-1252; unlabelled ISO-2022-JP is sniffed.
    """
    if value.isascii():
        if "\x1b" in value and _JIS_DESIGNATOR.search(value.encode()):
            return _decode_iso_2022_jp(value.encode())

        return Decoded(value)

    try:
        octets = value.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return Decoded(scrub(value))

    try:
        return Decoded(octets.decode("utf-8"))
    except UnicodeDecodeError:
        pass

    return Decoded(
        octets.decode("cp1252", "replace"),
        "raw 8-bit header octets are not UTF-8; read as windows-1252",
    )


def scrub(text: str) -> str:
    """Replace lone surrogates, which no UTF-8 encoder accepts."""
    if _SURROGATE.search(text) is None:
        return text

    return _SURROGATE.sub("\ufffd", text)


def _label_key(label: str | None) -> str:
    if label is None:
        return ""

    # RFC 2231 section 5 lets an encoded-word carry a language: utf-8*de.
    key = label.strip().strip("\"'").split("*", 1)[0].strip().lower()

    return key.replace("_", "-")


def _codec_name(key: str) -> str | None:
    key = _SUPERSETS.get(key, key)
    try:
        name = codecs.lookup(key).name
        # Python also registers bytes-to-bytes codecs (base64, zlib, rot13)
        # that bytes.decode refuses; a label must name a text encoding.
        b"a".decode(name, "replace")
    except (LookupError, ValueError):
        return None

    return name


def _decode_unlabelled(data: bytes, label: str | None) -> Decoded:
    said = f"charset {label}" if label else "no charset"
    if data.isascii():
        if b"\x1b" in data and _JIS_DESIGNATOR.search(data):
            decoded = _decode_iso_2022_jp(data)
            return Decoded(
                decoded.text, f"{said}, but ISO-2022-JP escapes found"
            )

        return Decoded(data.decode("ascii"))

    try:
        return Decoded(data.decode("utf-8"), f"{said}; 8-bit text is UTF-8")
    except UnicodeDecodeError:
        pass

    detected = _detect(data, exclude="utf-8")
    if detected is not None:
        return Decoded(detected.text, f"{said}; {detected.problem}")

    return Decoded(
        data.decode("cp1252", "replace"), f"{said}; read as windows-1252"
    )


def _decode_labelled_utf8(data: bytes, label: str | None) -> Decoded:
    try:
        return Decoded(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass

    detected = _detect(data, exclude="utf-8")
    if detected is not None:
        return Decoded(
            detected.text, f"charset {label} does not fit; {detected.problem}"
        )

    return Decoded(
        data.decode("utf-8", "replace"),
        f"charset {label}: undecodable octets replaced",
    )


def _detect(data: bytes, exclude: str) -> Decoded | None:
    """Guess the charset with charset-normalizer and decode the octets."""
    if len(data) < _DETECTION_MINIMUM:
        return None

    best = from_bytes(data[:_DETECTION_SAMPLE]).best()
    if best is None:
        return None

    codec = _codec_name(best.encoding)
    if codec is None or codec == exclude:
        return None

    # The sample may end inside a character, so the whole is decoded
    # leniently.
    text = data.decode(codec, "replace")

    return Decoded(text, f"detected {best.encoding}")


def _decode_iso_2022_jp(data: bytes, codec: str = _ISO_2022_JP) -> Decoded:
    try:
        return Decoded(data.decode(codec))
    except UnicodeDecodeError:
        pass

    # Japanese Windows clients write NEC row 13 (circled digits, ㈱) and IBM
    # extensions under the ISO-2022-JP label (Microsoft CP50221, WHATWG
    # index-jis0208); Python's ISO-2022-JP codecs reject them, NKF reads
    # them. -m0: no MIME decoding, -x: keep half-width katakana.
    converted = nkf.nkf("--ic=CP50221 --oc=UTF-8 -m0 -x", data)

    return Decoded(
        converted.decode("utf-8", "replace"),
        "ISO-2022-JP with vendor characters read as CP50221",
    )
