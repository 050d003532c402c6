"""The quarantine: messages not understood are kept raw, listed, retried."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from gateway.ingest.pipeline import QUARANTINED, Delivery, Ingestor
from gateway.store import Store

from .conftest import Organisation, SendMail, mail

if TYPE_CHECKING:
    from conftest import Mailgate, Outcome

ORPHAN = mail(
    "From: Laura Beispiel <laura@example.org>",
    "To: info@example.com",
    "Subject: Opening hours",
    "Message-ID: <hours.1@example.org>",
    body="When are you open on Saturdays? Code word: PELICAN.\r\n",
)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "unparsable: empty message"),
        (
            b"\x00\x01 garbage, no header at all",
            "unparsable: no header fields",
        ),
    ],
)
async def test_a_message_not_understood_at_all_is_kept_raw(
    store: Store, raw: bytes, reason: str
) -> None:
    """Nothing to read: the octets are kept as they came, with the reason."""
    with capture_logs() as logs:
        outcome = await Ingestor(store).ingest(
            Delivery(raw=raw, mailboxes=("support@example.com",))
        )

    assert (outcome.result, outcome.reason) == (QUARANTINED, reason)
    async with (
        store.reading() as db,
        db.execute(
            "SELECT raw_sha256, reason, state FROM quarantine"
        ) as cursor,
    ):
        [(digest, kept_reason, state)] = await cursor.fetchall()
    assert store.blobs.read(digest) == raw
    assert (kept_reason, state) == (reason, "held")
    [logged] = [e for e in logs if e["event"] == "ingest.quarantined"]
    assert logged["quarantine"] == outcome.quarantine_id
    assert logged["reason"] == reason
    assert logged["mailboxes"] == ["support@example.com"]
    assert logged["log_level"] == "error"


def _ingest_held(mailgate: Mailgate, *arguments: str) -> Outcome:
    """Ingest files that end in the quarantine: the command exits 1."""
    outcome = mailgate("ingest", *arguments, ok=False)
    assert outcome.exit_code == 1, outcome.stderr

    return outcome


async def test_quarantine_list_shows_what_is_held(
    store: Store, mailgate: Mailgate, tmp_path: Path
) -> None:
    """``mailgate quarantine list`` names each held message and its reason."""
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    await asyncio.to_thread(_ingest_held, mailgate, str(empty))

    listed = await asyncio.to_thread(mailgate, "quarantine", "list", "--json")
    shown = await asyncio.to_thread(mailgate, "quarantine", "list")

    [held] = listed.json()
    assert (held["reason"], held["source"], held["state"]) == (
        "unparsable: empty message",
        "file",
        "held",
    )
    assert "unparsable: empty message" in shown.stdout


async def test_retry_takes_a_message_in_once_the_cause_is_fixed(
    store: Store, mailgate: Mailgate, tmp_path: Path
) -> None:
    """No mailbox of ours yet: held; with our domain, retry makes an event."""
    path = tmp_path / "orphan.eml"
    path.write_bytes(ORPHAN)
    printed = await asyncio.to_thread(
        _ingest_held, mailgate, "--json", str(path)
    )
    [ingested] = printed.json()
    assert ingested["result"] == "quarantined"
    assert ingested["reason"] == "addressed to no mailbox of ours"
    # The CLI logs warnings and errors on stderr, the body never.
    assert "ingest.quarantined" in printed.stderr
    assert "<hours.1@example.org>" in printed.stderr
    assert "PELICAN" not in printed.stderr

    organisation = ["org", "add", "Example", "--domain", "example.com"]
    await asyncio.to_thread(mailgate, *organisation, "--internal")
    held = str(ingested["quarantine"])
    retried = await asyncio.to_thread(
        mailgate, "quarantine", "retry", held, "--json"
    )

    document = retried.json()
    assert document["result"] == "accepted"
    listed = await asyncio.to_thread(
        mailgate, "quarantine", "list", "--all", "--json"
    )
    [released] = listed.json()
    assert (released["state"], released["event"]) == (
        "released",
        document["event"],
    )
    assert (
        await asyncio.to_thread(mailgate, "quarantine", "list", "--json")
    ).json() == []
    again = await asyncio.to_thread(
        mailgate, "quarantine", "retry", held, ok=False
    )
    assert again.exit_code == 1
    assert "already taken in" in again.error


async def test_retry_of_a_message_still_not_understood_keeps_one_entry(
    store: Store,
    organisation: Organisation,
    mailgate: Mailgate,
    tmp_path: Path,
) -> None:
    """A retry that fails again says so, exits 1 and holds it still, once."""
    path = tmp_path / "garbage.eml"
    path.write_bytes(b"no header here")
    [ingested] = (
        await asyncio.to_thread(_ingest_held, mailgate, "--json", str(path))
    ).json()

    retried = await asyncio.to_thread(
        mailgate, "quarantine", "retry", str(ingested["quarantine"]), ok=False
    )

    assert retried.exit_code == 1
    assert "still not understood" in retried.error
    listed = await asyncio.to_thread(mailgate, "quarantine", "list", "--json")
    assert [item["id"] for item in listed.json()] == [ingested["quarantine"]]


async def test_an_empty_message_over_smtp_is_accepted_and_held(
    store: Store, send_mail: SendMail
) -> None:
    """Never dropped: 250, and kept raw with our Received field."""
    reply = await send_mail(b"")

    assert reply.code == 250
    async with (
        store.reading() as db,
        db.execute(
            "SELECT raw_sha256, source, mailboxes, reason FROM quarantine"
        ) as cursor,
    ):
        [(digest, source, mailboxes, reason)] = await cursor.fetchall()
    assert (source, json.loads(mailboxes)) == ("smtp", ["support@example.com"])
    assert reason == "unparsable: no From field and no content"
    assert store.blobs.read(digest).startswith(b"Received: from ")


async def test_retry_when_the_raw_file_is_gone_says_so(
    store: Store, mailgate: Mailgate, tmp_path: Path
) -> None:
    """A lost raw file is one line on stderr and exit 1, not a traceback."""
    path = tmp_path / "empty.eml"
    path.write_bytes(b"")
    [ingested] = (
        await asyncio.to_thread(_ingest_held, mailgate, "--json", str(path))
    ).json()
    async with (
        store.reading() as db,
        db.execute("SELECT raw_sha256 FROM quarantine") as cursor,
    ):
        [(digest,)] = await cursor.fetchall()
    store.blobs.path_of(digest).unlink()

    retried = await asyncio.to_thread(
        mailgate, "quarantine", "retry", str(ingested["quarantine"]), ok=False
    )

    assert retried.exit_code == 1
    assert "is missing from" in retried.error
