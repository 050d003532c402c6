"""Rendering: the message an outgoing event is sent as."""

from __future__ import annotations

import json
import os
from email import message_from_bytes, policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from gateway.cli.main import main
from gateway.crm.contacts import add_organisation, add_person
from gateway.crm.events import NewEvent, create_event, get_event
from gateway.outbox import plain
from gateway.outbox.render import compose, subject_of, thread_of
from gateway.store import Store

from .conftest import CASES_DIR

if TYPE_CHECKING:
    from conftest import Mailgate

CASES = Path(os.environ.get("MAILGATE_CASES_DIR") or CASES_DIR)
MARIA = "maria.staff@example.com"


@pytest.fixture
def example(mailgate: Mailgate) -> None:
    """example.com with its Support mailbox and Maria, through the CLI."""
    mailgate("org", "add", "Example", "--domain", "example.com", "--internal")
    mailgate(
        "org",
        "add",
        "Support",
        "--parent",
        "Example",
        "--mailbox",
        "support@example.com",
    )
    mailgate(
        "contact",
        "add",
        MARIA,
        "--name",
        "Maria Staff",
        "--org",
        "Support",
        "--role",
        "staff",
    )


def _case(number: str) -> dict[str, Any]:
    expected = CASES / "expected.json"
    if not expected.is_file():
        pytest.skip(f"no shared cases at {CASES}")
    cases: list[dict[str, Any]] = json.loads(expected.read_text("utf-8"))

    return next(case for case in cases if case["id"] == number)


def _raw(event_id: int) -> bytes:
    """Return what ``event show ID --raw`` prints, octet for octet."""
    result = CliRunner().invoke(
        main, ["event", "show", str(event_id), "--raw"]
    )
    assert result.exit_code == 0, result.output

    return result.stdout_bytes


def _header_block(raw: bytes) -> str:
    return raw.partition(b"\r\n\r\n")[0].decode("ascii")


def _field(head: str, name: str) -> str:
    """Return one field's value exactly as written, unfolded."""
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t")
    found = [
        line.partition(":")[2].strip()
        for line in unfolded.split("\r\n")
        if line.lower().startswith(f"{name.lower()}:")
    ]
    assert len(found) == 1, (name, found)

    return found[0]


def _reply(mailgate: Mailgate, causality: int, **options: str) -> int:
    arguments = [
        "event",
        "new",
        "mail-message",
        "--from",
        MARIA,
        "--to",
        "jonas.beispiel@example.org",
        "--title",
        options.get("title", "Re: Question about warranty extension"),
        "--content",
        "Yes, it can.",
        "--causality",
        str(causality),
        "--json",
    ]
    if "ticket" in options:
        arguments += ["--ticket", options["ticket"]]
    created = mailgate(*arguments, actor=MARIA).json()

    return int(created["id"])


def test_case_005_reply_names_the_long_message_id_verbatim(
    mailgate: Mailgate, example: None
) -> None:
    """The 85-octet Message-ID stays whole: no RFC 2047, no extra <>."""
    case = _case("005")
    expected = case["expect"]["outgoing_reply"]
    ingested = mailgate(
        "ingest",
        str(CASES / "inbound" / case["file"]),
        "--mailbox",
        "support@example.com",
        "--json",
    ).json()
    reply = _reply(mailgate, ingested[0]["event"])

    raw = _raw(reply)
    head = _header_block(raw)

    assert _field(head, "In-Reply-To") == expected["in_reply_to"]
    assert (
        _field(head, "References").split()[-1] == (expected["references_last"])
    )
    for forbidden in expected["must_not_contain"]:
        assert forbidden not in head
    # The same as a receiver's parser sees it.
    parsed = message_from_bytes(raw, policy=policy.default)
    assert str(parsed["In-Reply-To"]) == expected["in_reply_to"]


def test_message_id_is_made_at_creation_and_kept(
    mailgate: Mailgate, example: None
) -> None:
    """event new gives a Message-ID; every rendering carries that one."""
    created = mailgate(
        "event",
        "new",
        "mail-message",
        "--from",
        MARIA,
        "--to",
        "jonas.beispiel@example.org",
        "--title",
        "Hello",
        "--json",
        actor=MARIA,
    ).json()
    message_id = created["message_id"]

    first = _raw(created["id"])
    second = _raw(created["id"])
    shown = mailgate("event", "show", str(created["id"])).stdout

    assert message_id.startswith("<") and message_id.endswith("@example.com>")
    assert _field(_header_block(first), "Message-ID") == message_id
    assert first == second
    assert "As it will be sent:" in shown
    assert f"Message-ID: {message_id}" in shown
    assert (
        f"(envelope) MAIL FROM: <bounces+evt-{created['id']}@example.com>"
        in shown
    )


def test_ticket_tag_goes_in_the_subject_once(
    mailgate: Mailgate, example: None
) -> None:
    """Following a ticket: its tag after the Re:, never twice."""
    mailgate("ticket", "new", "support-request", "--title", "W", actor=MARIA)
    customer = mailgate(
        "event",
        "new",
        "mail-message",
        "--from",
        "jonas.beispiel@example.org",
        "--to",
        "support@example.com",
        "--title",
        "Question",
        "--ticket",
        "1",
        "--json",
        actor=MARIA,
    ).json()

    plain = _reply(mailgate, customer["id"], title="Re: Question", ticket="1")
    tagged = _reply(
        mailgate, customer["id"], title="Re: [#TKT-1] Question", ticket="1"
    )

    for event_id in (plain, tagged):
        subject = _field(_header_block(_raw(event_id)), "Subject")
        assert subject == "Re: [#TKT-1] Question"


def test_subject_tag_placement() -> None:
    """Reply prefixes stay first; a tag already there is not repeated."""
    assert subject_of("Hello", "[#TKT-7]") == "[#TKT-7] Hello"
    assert subject_of("RE: AW: Hello", "[#TKT-7]") == "RE: AW: [#TKT-7] Hello"
    assert subject_of("Re: Hello [#TKT-7]", "[#TKT-7]") == (
        "Re: Hello [#TKT-7]"
    )
    assert subject_of("Hello", None) == "Hello"


async def test_references_run_through_an_outgoing_parent(
    store: Store,
) -> None:
    """A reply to our own earlier reply carries the whole chain."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        maria = await add_person(db, MARIA, name="Maria")
        question = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender="jonas@example.org",
                to=["support@example.com"],
                title="Question",
                message_id="<question@example.org>",
                references=["<older@example.org>"],
                state="received",
            ),
            None,
        )
        first = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender=MARIA,
                to=["jonas@example.org"],
                title="Re: Question",
                causality_id=question.id,
            ),
            maria,
        )
        second = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender=MARIA,
                to=["jonas@example.org"],
                title="Re: Question (more)",
                causality_id=first.id,
            ),
            maria,
        )
        threading = await thread_of(db, second)
        gateway_mail = await get_event(db, first.id)

    assert threading.in_reply_to == (first.message_id,)
    assert threading.references == (
        "<older@example.org>",
        "<question@example.org>",
        first.message_id,
    )

    rendered = compose(gateway_mail, threading)
    assert b"Auto-Submitted" not in rendered.message
    assert rendered.mail_from == f"bounces+evt-{first.id}@example.com"


async def test_mail_the_gateway_writes_itself_is_auto_submitted(
    store: Store,
) -> None:
    """No author (the gateway): Auto-Submitted: auto-generated."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        await add_person(db, "support@example.com", name="Support")
        event = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender="support@example.com",
                to=["jonas@example.org"],
                title="We have your message",
            ),
            None,
        )

    rendered = compose(event, await _threading(store, event.id))

    assert b"\r\nAuto-Submitted: auto-generated\r\n" in rendered.message
    assert rendered.rcpt_tos == ("jonas@example.org",)


@pytest.mark.parametrize(
    "content", ["", "One line", "Dear customer,\n\nyour order.\n" * 3]
)
async def test_a_made_text_body_goes_as_a_kept_one_would(
    store: Store, content: str
) -> None:
    """The text entity made for a plain event is sent octet for octet
    as the same entity given as the source whose fields are kept."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        maria = await add_person(db, MARIA, name="Maria")
        event = await create_event(
            db,
            NewEvent(
                type="mail-message",
                sender=MARIA,
                to=["jonas@example.org"],
                title="Your order",
                content=content,
            ),
            maria,
        )
    threading = await _threading(store, event.id)
    entity = plain.text_entity(content)
    assert entity is not None

    made = compose(event, threading)
    kept = compose(event, threading, source=entity)

    assert made.message == kept.message
    assert made.message.endswith(
        b"\r\n\r\n" + entity.partition(b"\r\n\r\n")[2]
    )


async def _threading(store: Store, event_id: int) -> Any:
    async with store.reading() as db:
        return await thread_of(db, await get_event(db, event_id))
