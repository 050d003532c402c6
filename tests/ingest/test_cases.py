"""The shared inbound cases, each through ``mailgate ingest`` and SMTP.

Every case that ``expected.json`` lists is run, whatever their number:
some are held back and added on each release. The parent is fed first;
then every key of ``expect`` is checked against the store. A parent that
the product itself sent (``parent_kind: outgoing``) is taken in as a file,
which records it as the outgoing, sent event of our staff it is.

The folder is ``shared/cases`` beside the clone, or MAILGATE_CASES_DIR.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from gateway.crm.contacts import find_by_address
from gateway.crm.events import Event, NewEvent, create_event, get_event
from gateway.crm.vocabulary import MAIL_MESSAGE
from gateway.ingest.pipeline import (
    ACCEPTED,
    BOUNCE,
    DUPLICATE,
    QUARANTINED,
    Delivery,
    Ingestor,
    Outcome,
    may_acknowledge,
)
from gateway.outbox.render import render_event
from gateway.store import Store

from .conftest import Organisation, SendMail, staff

if TYPE_CHECKING:
    from conftest import Mailgate, MailgateProcess

CASES_DIR = Path(
    os.environ.get("MAILGATE_CASES_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared" / "cases"
)


def _load_cases() -> list[dict[str, Any]]:
    index = CASES_DIR / "expected.json"
    if not index.is_file():
        message = (
            f"no shared cases at {index}: put shared/cases beside the "
            "clone or name the folder in MAILGATE_CASES_DIR"
        )
        # CI sets MAILGATE_REQUIRE_CASES: there a missing folder is a fault.
        if os.environ.get("MAILGATE_REQUIRE_CASES"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    cases: list[dict[str, Any]] = json.loads(index.read_text("utf-8"))

    return cases


CASES = _load_cases()

# A few cases also go through the installed command, in a subprocess.
THROUGH_THE_COMMAND = ("001", "022", "027")

# Every key expected.json may hold in ``expect`` (README of the cases).
KNOWN_KEYS = frozenset(
    {
        "events",
        "redelivery_events",
        "direction",
        "sender",
        "sender_name",
        "recipients",
        "recipient_names",
        "delivered_to",
        "title",
        "content",
        "content_contains",
        "content_not_contains",
        "attachments",
        "attachments_may_also_include",
        "parent_expect",
        "sender_ascii_domain_equivalent",
        "message_id",
        "causality",
        "duplicate_of",
        "bounce_of",
        "failed_recipient",
        "dsn_status",
        "dsn_action",
        "auto_reply",
        "send_auto_ack",
        "mailing_list",
        "date_between",
        "outgoing_reply",
        "smtp",
        "error",
    }
)

_LOGGED_RESULTS = {
    "ingest.accepted": ACCEPTED,
    "ingest.duplicate": DUPLICATE,
    "ingest.bounce_recorded": BOUNCE,
    "ingest.quarantined": QUARANTINED,
}


def _case_id(case: dict[str, Any]) -> str:
    return str(case["id"])


@dataclass(frozen=True)
class Fed:
    """What feeding one file did: how it ended, and the events it added."""

    outcome: Outcome | None
    new_events: tuple[int, ...]
    mailbox: str | None
    # The reply to DATA over SMTP (None by other routes).
    reply_code: int | None = None


# Feed one file (to a mailbox of ours); return how it ended, and the
# reply to DATA when it went over SMTP.
Feed = Callable[
    [Path, str | None], Awaitable[tuple[Outcome | None, int | None]]
]


@dataclass
class Route:
    """How files reach the gateway in one test: feed and parent loading."""

    store: Store
    feed: Feed
    feed_outgoing: Feed

    async def take(self, path: Path, *, outgoing: bool = False) -> Fed:
        """Feed one file; return what it did."""
        mailbox = None if outgoing else _delivered_to(path.read_bytes())
        before = await _last_event(self.store)
        feed = self.feed_outgoing if outgoing else self.feed
        outcome, reply_code = await feed(path, mailbox)
        after = await _last_event(self.store)

        return Fed(
            outcome,
            tuple(range(before + 1, after + 1)),
            mailbox,
            reply_code,
        )


async def _last_event(store: Store) -> int:
    async with (
        store.reading() as db,
        db.execute("SELECT COALESCE(MAX(id), 0) FROM event") as cursor,
    ):
        row = await cursor.fetchone()

    return int(row[0]) if row else 0


def _headers(raw: bytes) -> Any:
    return BytesHeaderParser(policy=compat32).parsebytes(raw)


def _delivered_to(raw: bytes) -> str:
    """Return the mailbox of ours this copy reached, as a server would."""
    headers = _headers(raw)
    delivered = headers.get("Delivered-To")
    if delivered:
        return str(delivered).strip()
    addressed = getaddresses(
        [str(value) for value in headers.get_all("To", [])]
        + [str(value) for value in headers.get_all("Cc", [])]
    )
    for _, address in addressed:
        if address.lower().endswith("@example.com"):
            return address

    return Organisation().support


def _envelope(raw: bytes) -> tuple[str, list[str]]:
    """Return MAIL FROM and its parameters for a message, as sent."""
    headers = _headers(raw)
    return_path = headers.get("Return-Path")
    if return_path is not None:
        mail_from = str(return_path).strip().strip("<>")
    else:
        header = raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
        sender = next(
            (
                line[5:]
                for line in header.splitlines()
                if line.lower().startswith("from:")
            ),
            "",
        )
        mail_from = parseaddr(sender)[1]

    options = []
    if not raw.isascii():
        options.append("BODY=8BITMIME")
    header_block = raw.partition(b"\n\n")[0].partition(b"\r\n\r\n")[0]
    if not header_block.isascii() or not mail_from.isascii():
        # RFC 6531 3.4: UTF-8 in the envelope or the header fields.
        options.append("SMTPUTF8")

    return mail_from, options


def _outcome(document: dict[str, Any]) -> Outcome:
    """Return the Outcome that ``mailgate ingest --json`` printed."""
    return Outcome(
        document["result"],
        message_id=document["message_id"],
        event_id=document["event"],
        quarantine_id=document["quarantine"],
        direction=document["direction"],
        state=document["state"],
        thread_reason=document["thread_reason"],
        triage=document["triage"],
        automatic=document["automatic"],
        reason=document["reason"],
    )


def _logged_outcome(entries: list[dict[str, Any]]) -> Outcome:
    """Return the Outcome of one message from its ingest log event."""
    found = [e for e in entries if e["event"] in _LOGGED_RESULTS]
    assert len(found) == 1, [e["event"] for e in entries]
    entry = found[0]

    return Outcome(
        _LOGGED_RESULTS[entry["event"]],
        message_id=entry.get("message_id"),
        event_id=entry.get("event_id"),
        quarantine_id=entry.get("quarantine"),
        direction=entry.get("direction"),
        thread_reason=entry.get("thread_reason"),
        automatic=bool(entry.get("automatic")),
        reason=entry.get("reason"),
    )


def _arguments(path: Path, mailbox: str | None) -> list[str]:
    """Return ``mailgate ingest`` arguments for a file and its mailbox."""
    mailboxes = ["--mailbox", mailbox] if mailbox is not None else []

    return ["ingest", "--json", *mailboxes, str(path)]


def _cli_route(store: Store, mailgate: Mailgate) -> Route:
    async def feed(path: Path, mailbox: str | None) -> tuple[Outcome, None]:
        printed = await asyncio.to_thread(mailgate, *_arguments(path, mailbox))
        [document] = printed.json()

        return _outcome(document), None

    return Route(store, feed, feed)


def _smtp_route(store: Store, send_mail: SendMail) -> Route:
    async def feed(
        path: Path, mailbox: str | None
    ) -> tuple[Outcome | None, int]:
        assert mailbox is not None
        raw = path.read_bytes()
        mail_from, options = _envelope(raw)
        with capture_logs() as entries:
            reply = await send_mail(raw, [mailbox], mail_from, options)
        if reply.code != 250:
            return None, reply.code

        return _logged_outcome(entries), reply.code

    async def load_as_sent(
        path: Path, mailbox: str | None
    ) -> tuple[Outcome, None]:
        """Take in a mail our product sent: as a file, not over SMTP."""
        raw = path.read_bytes()

        return await Ingestor(store).ingest(Delivery(raw=raw)), None

    return Route(store, feed, load_as_sent)


async def _run_case(case: dict[str, Any], route: Route) -> None:
    """Feed a case's parent and file, then check every expected key."""
    expect = case["expect"]
    unknown = set(expect) - KNOWN_KEYS
    assert not unknown, f"keys this test does not know: {sorted(unknown)}"

    inbound = CASES_DIR / "inbound"
    parent = None
    if case.get("parent"):
        outgoing = str(case.get("parent_kind", "")).startswith("outgoing")
        parent = await route.take(inbound / case["parent"], outgoing=outgoing)
        assert parent.outcome is not None
        assert parent.outcome.result != QUARANTINED, parent.outcome.reason
        if "parent_expect" in expect:
            await _check(expect["parent_expect"], parent, None, route, case)

    fed = await route.take(inbound / case["file"])
    await _check(expect, fed, parent, route, case)

    if "redelivery_events" in expect:
        again = await route.take(inbound / case["file"])
        assert len(again.new_events) == expect["redelivery_events"]
        assert again.outcome is not None
        assert again.outcome.result != QUARANTINED


def _parent_event(parent: Fed | None) -> int:
    assert parent is not None and parent.outcome is not None
    assert parent.outcome.event_id is not None

    return parent.outcome.event_id


async def _check(
    expect: dict[str, Any],
    fed: Fed,
    parent: Fed | None,
    route: Route,
    case: dict[str, Any],
) -> None:
    """Check every expected key of one fed file."""
    outcome = fed.outcome
    error = expect.get("error")
    if error is not None:
        # A clear rejection: a 5xx reply, or the quarantine, never an event.
        assert fed.new_events == ()
        assert (fed.reply_code or 0) >= 500 or (
            outcome is not None and outcome.result == QUARANTINED
        ), error
        return

    assert fed.reply_code in (None, 250), case.get("smtp")
    assert outcome is not None
    assert outcome.result != QUARANTINED, outcome.reason

    if "events" in expect:
        assert len(fed.new_events) == expect["events"]

    event_id = fed.new_events[0] if fed.new_events else outcome.event_id
    async with route.store.reading() as db:
        event = await get_event(db, event_id) if event_id else None
        parent_event = (
            await get_event(db, _parent_event(parent)) if parent else None
        )
    _check_event(expect, event)
    await _check_links(expect, fed, event, parent, parent_event, route.store)

    if "auto_reply" in expect:
        assert outcome.automatic is expect["auto_reply"]
        if fed.new_events:
            assert event is not None
            assert event.automatic is expect["auto_reply"]
    if "send_auto_ack" in expect:
        assert may_acknowledge(outcome) is expect["send_auto_ack"]
    if "delivered_to" in expect:
        assert event is not None
        await _check_delivered_to(route.store, event, expect["delivered_to"])
    if "sender_ascii_domain_equivalent" in expect:
        assert event is not None
        async with route.store.reading() as db:
            for spelling in (
                event.sender.address,
                expect["sender_ascii_domain_equivalent"],
            ):
                contact = await find_by_address(db, spelling)
                assert contact is not None, spelling
                assert contact.id == event.sender.contact_id
    if "attachments" in expect or "attachments_may_also_include" in expect:
        assert event is not None
        _check_attachments(
            route.store,
            event,
            expect.get("attachments", []),
            expect.get("attachments_may_also_include", []),
        )

    if "outgoing_reply" in expect:
        assert event is not None
        await _check_outgoing_reply(
            route.store, event, expect["outgoing_reply"]
        )


def _check_event(expect: dict[str, Any], event: Event | None) -> None:
    """Check the keys about the event's own fields."""
    simple = {
        "direction": lambda e: e.direction,
        "sender": lambda e: e.sender.address,
        "sender_name": lambda e: e.sender.name,
        "title": lambda e: e.title,
        "recipients": lambda e: [
            party.address
            for party in e.recipients
            if party.kind in ("to", "cc")
        ],
        "mailing_list": lambda e: e.details.get("list_id"),
    }
    for key, read in simple.items():
        if key in expect:
            assert event is not None
            assert read(event) == expect[key], key

    if "recipient_names" in expect:
        assert event is not None
        names = expect["recipient_names"]
        pairs = names.items() if isinstance(names, dict) else names
        shown = {party.address: party.name for party in event.recipients}
        for item in pairs:
            address, name = (
                (item["email"], item["name"])
                if isinstance(item, dict)
                else item
            )
            assert shown.get(address) == name, address

    if any(key.startswith("content") for key in expect):
        assert event is not None
        _check_content(expect, event.content)

    if "message_id" in expect:
        assert event is not None
        if str(expect["message_id"]).startswith("(synthetic"):
            # Stable: redelivery_events proves the same bytes give one event.
            assert event.details.get("message_id_synthetic") is True
            assert event.message_id
        else:
            assert event.message_id == expect["message_id"]

    if "date_between" in expect:
        assert event is not None
        earliest, latest = (_utc(text) for text in expect["date_between"])
        assert earliest <= _utc(event.start_date) <= latest


def _utc(text: str) -> datetime:
    """Read an ISO 8601 time; one without an offset is UTC."""
    moment = datetime.fromisoformat(text)

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_content(expect: dict[str, Any], content: str) -> None:
    if "content" in expect:
        # The line break ending a body belongs to the transport (SMTP adds
        # one where a file had none); the text is compared without it.
        assert content.rstrip("\r\n") == expect["content"].rstrip("\r\n")
    for text in expect.get("content_contains", []):
        assert text in content
    for text in expect.get("content_not_contains", []):
        assert text not in content


async def _check_links(
    expect: dict[str, Any],
    fed: Fed,
    event: Event | None,
    parent_fed: Fed | None,
    parent: Event | None,
    store: Store,
) -> None:
    """Check causality, duplicates and delivery reports against the parent."""
    outcome = fed.outcome
    assert outcome is not None
    if expect.get("causality") == "parent":
        assert event is not None and parent is not None
        assert event.causality_id == parent.id
        assert event.ticket_id == parent.ticket_id

    if expect.get("duplicate_of") == "parent":
        assert parent is not None
        assert fed.new_events == ()
        assert outcome.result == DUPLICATE
        assert outcome.event_id == parent.id
        async with store.reading() as db:
            named = {
                p.address for p in (await get_event(db, parent.id)).recipients
            }
        # Both copies' mailboxes (007: sales@ and support@) are named, so
        # the event shows in both worklists.
        assert parent_fed is not None
        assert {fed.mailbox, parent_fed.mailbox} <= named

    if expect.get("bounce_of") == "parent":
        assert parent is not None
        assert outcome.result == BOUNCE
        assert outcome.event_id == parent.id
        async with store.reading() as db:
            reported = await get_event(db, parent.id)
            async with db.execute(
                "SELECT recipient, status, action FROM delivery_report "
                "WHERE event_id = ?",
                (parent.id,),
            ) as cursor:
                rows = [tuple(row) for row in await cursor.fetchall()]
        failed = expect["failed_recipient"]
        assert (failed, expect["dsn_status"], expect["dsn_action"]) in rows
        [party] = [p for p in reported.recipients if p.address == failed]
        assert party.delivery_status == "bounced"


async def _check_delivered_to(
    store: Store, event: Event, mailbox: str
) -> None:
    async with (
        store.reading() as db,
        db.execute(
            "SELECT mailbox FROM receipt WHERE event_id = ?", (event.id,)
        ) as cursor,
    ):
        receipts = {row[0] for row in await cursor.fetchall()}
    named = set(event.details.get("delivered_to", []))

    assert mailbox in receipts | named


async def _check_outgoing_reply(
    store: Store, event: Event, expected: dict[str, Any]
) -> None:
    """Our staff's answer, as the outbox renders it, names the message."""
    maria = await staff(store, Organisation().staff)
    async with store.transaction() as db:
        answer = await create_event(
            db,
            NewEvent(
                type=MAIL_MESSAGE,
                sender=maria.email or "",
                to=[event.sender.address],
                title=f"Re: {event.title}",
                content="Yes, it can.",
                causality_id=event.id,
                ticket_id=event.ticket_id,
            ),
            maria,
        )
    async with store.reading() as db:
        rendered = await render_event(db, store.blobs, answer)

    header_block = rendered.message.partition(b"\r\n\r\n")[0]
    headers = _headers(header_block + b"\r\n\r\n")
    unfolded = {
        name: " ".join(str(headers[name]).split())
        for name in ("In-Reply-To", "References")
    }
    assert unfolded["In-Reply-To"] == expected["in_reply_to"]
    assert unfolded["References"].split()[-1] == expected["references_last"]
    for text in expected.get("must_not_contain", []):
        assert text.encode() not in header_block, text


def _check_attachments(
    store: Store,
    event: Event,
    required: list[dict[str, Any]],
    allowed: list[dict[str, Any]],
) -> None:
    """Each required attachment is stored once, extras only if allowed."""
    stored = list(event.attachments)
    for attachment in stored:
        assert len(store.blobs.read(attachment.sha256)) == attachment.size

    for wanted in required:
        matches = [
            item
            for item in stored
            if item.filename == wanted["filename"]
            and item.size == wanted["size"]
            and item.content_type == wanted["content_type"]
        ]
        assert matches, f"{wanted} not in {[a.to_json() for a in stored]}"
        found = matches[0]
        if "content_id" in wanted:
            assert found.content_id == wanted["content_id"]
        if "inline" in wanted:
            assert found.inline is wanted["inline"]
        stored.remove(found)

    for extra in stored:
        assert any(
            extra.filename == item.get("filename", extra.filename)
            and extra.size == item.get("size", extra.size)
            for item in allowed
        ), f"unexpected attachment {extra.to_json()}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
async def test_case_through_mailgate_ingest(
    case: dict[str, Any],
    store: Store,
    organisation: Organisation,
    mailgate: Mailgate,
) -> None:
    """``mailgate ingest FILE`` gives every expected value of the case."""
    await _run_case(case, _cli_route(store, mailgate))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
async def test_case_through_smtp(
    case: dict[str, Any], store: Store, send_mail: SendMail
) -> None:
    """Sent over SMTP on loopback, the case gives every expected value."""
    await _run_case(case, _smtp_route(store, send_mail))


@pytest.mark.parametrize(
    "case",
    [case for case in CASES if case["id"] in THROUGH_THE_COMMAND],
    ids=_case_id,
)
async def test_case_through_the_installed_command(
    case: dict[str, Any],
    store: Store,
    organisation: Organisation,
    mailgate_process: MailgateProcess,
) -> None:
    """``python -m gateway ingest`` in a process of its own does the same."""

    async def feed(path: Path, mailbox: str | None) -> tuple[Outcome, None]:
        finished = await asyncio.to_thread(
            mailgate_process, *_arguments(path, mailbox)
        )
        assert finished.returncode == 0, finished.stderr
        [document] = json.loads(finished.stdout)

        return _outcome(document), None

    await _run_case(case, Route(store, feed, feed))
