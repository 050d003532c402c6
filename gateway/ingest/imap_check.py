"""The IMAP check: which messages in a mailbox's folder have no event.

A message is accounted for when the store knows it under the dedup key
the ingest path gives it (sender and Message-ID), or holds its very
octets (a receipt, or the quarantine). Most messages are matched from two
header fields; only the others are fetched whole.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from gateway.addresses import address_key
from gateway.ingest.imap_responses import Fetched
from gateway.ingest.imap_session import ImapSession
from gateway.ingest.parse import UnparsableMessage, parse_message
from gateway.settings import ImapMailboxSettings
from gateway.store import Store

_HEADER_FIELDS = ("Message-ID", "From", "Sender")


@dataclass(frozen=True, slots=True)
class Unrecorded:
    """A message on the server that the store does not know."""

    uid: int
    message_id: str | None
    sender: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "uid": self.uid,
            "message_id": self.message_id,
            "sender": self.sender,
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the check found in one folder."""

    mailbox: str
    server: str
    messages: int
    quarantined: tuple[int, ...] = ()
    missing: tuple[Unrecorded, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "mailbox": self.mailbox,
            "server": self.server,
            "messages": self.messages,
            "quarantined": list(self.quarantined),
            "missing": [item.to_json() for item in self.missing],
        }


async def check_mailbox(
    settings: ImapMailboxSettings, store: Store
) -> CheckReport:
    """Compare the mailbox's folder with the store.

    Raises ImapError when the server cannot be reached or refuses us,
    SettingsError when the password cannot be read.
    """
    session = ImapSession(settings)
    try:
        await session.open()
        uids = await session.uids_after(0)
        unknown: list[int] = []
        for batch in _batches(uids, settings.batch_size):
            headers = await session.fetch_headers(batch, _HEADER_FIELDS)
            unknown.extend(await _unknown_by_key(store, headers))

        quarantined: list[int] = []
        missing: list[Unrecorded] = []
        for batch in _batches(unknown, settings.batch_size):
            for message in await session.fetch(batch):
                verdict = await _verdict(store, message.raw)
                if verdict == "quarantined":
                    quarantined.append(message.uid)
                elif verdict == "missing":
                    missing.append(await _unrecorded(message))
    finally:
        await session.close()

    return CheckReport(
        mailbox=settings.name,
        server=session.server,
        messages=len(uids),
        quarantined=tuple(quarantined),
        missing=tuple(missing),
    )


async def _unknown_by_key(
    store: Store, headers: Sequence[Fetched]
) -> list[int]:
    """Return the UIDs whose header fields name no message of the store."""
    keys = {
        item.uid: await asyncio.to_thread(_dedup_key, item.raw)
        for item in headers
    }
    async with store.reading() as db:
        return [
            uid
            for uid, key in keys.items()
            if key is None or not await _key_known(db, key)
        ]


async def _verdict(store: Store, raw: bytes) -> str:
    """Return "recorded", "quarantined" or "missing" for whole octets."""
    digest = hashlib.sha256(raw).hexdigest()
    key = await asyncio.to_thread(_dedup_key, raw, True)
    async with store.reading() as db:
        async with db.execute(
            "SELECT 1 FROM receipt WHERE raw_sha256 = ? LIMIT 1", (digest,)
        ) as cursor:
            if await cursor.fetchone() is not None:
                return "recorded"
        if key is not None and await _key_known(db, key):
            return "recorded"
        async with db.execute(
            "SELECT 1 FROM quarantine WHERE raw_sha256 = ? LIMIT 1", (digest,)
        ) as cursor:
            if await cursor.fetchone() is not None:
                return "quarantined"

    return "missing"


async def _key_known(db: aiosqlite.Connection, key: str) -> bool:
    async with db.execute(
        "SELECT 1 FROM message_key WHERE key = ?", (key,)
    ) as cursor:
        return await cursor.fetchone() is not None


def _dedup_key(raw: bytes, whole: bool = False) -> str | None:
    """Return the key the ingest path files these octets under.

    As ``pipeline._record`` builds it: the sender's address key and the
    Message-ID. None when there is no sender or the octets cannot be
    read; unless ``whole``, also when the Message-ID is missing (the
    substitute is computed from the whole message).
    """
    try:
        parsed = parse_message(raw)
    except UnparsableMessage:
        return None
    sender = parsed.sender or parsed.sender_header
    if sender is None or (parsed.message_id_synthetic and not whole):
        return None

    return f"{address_key(sender.email)} {parsed.message_id}"


async def _unrecorded(message: Fetched) -> Unrecorded:
    """Describe a missing message by what it says of itself."""
    try:
        parsed = await asyncio.to_thread(parse_message, message.raw)
    except UnparsableMessage:
        return Unrecorded(message.uid, None, None)
    sender = parsed.sender or parsed.sender_header

    return Unrecorded(
        message.uid,
        parsed.message_id,
        sender.email if sender is not None else None,
    )


def _batches(uids: Sequence[int], size: int) -> list[Sequence[int]]:
    return [uids[start : start + size] for start in range(0, len(uids), size)]
