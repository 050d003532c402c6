"""``mailgate event acknowledge``: one department receives another's event.

Sales sends a note to the Support department; a member of Support
acknowledges it, which creates an incoming, received event in Support whose
causality is the original. Everyone else is refused, and a refusal changes
nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate


def _note(
    mailgate: Mailgate,
    company: Company,
    *recipients: str,
    sender: str | None = None,
    send: bool = True,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write a note from Sales to recipients; the manager sends it."""
    author = sender or company.sales
    created: dict[str, Any] = mailgate(
        "event",
        "new",
        "note",
        "--from",
        author,
        *[option for r in recipients for option in ("--to", r)],
        "--title",
        "Customer Ann wants a support contract",
        "--nature",
        "information",
        *extra,
        "--json",
        actor=company.sales,
    ).json()
    if send:
        created = mailgate(
            "event",
            "send",
            str(created["id"]),
            "--json",
            actor=company.manager,
        ).json()

    return created


def _department(mailgate: Mailgate, name: str) -> int:
    for organisation in mailgate("org", "list", "--json").json():
        if organisation["name"] == name:
            return int(organisation["id"])
    raise AssertionError(f"no organisation {name}")


def test_acknowledging_creates_a_received_event_in_the_department(
    mailgate: Mailgate, company: Company
) -> None:
    """The new event is incoming, received, in Support, caused by the note."""
    note = _note(mailgate, company, company.support_mailbox)
    assert (note["state"], note["direction"]) == ("sent", "outgoing")

    acknowledged = mailgate(
        "event",
        "acknowledge",
        str(note["id"]),
        "--json",
        actor=company.support,
    ).json()

    assert acknowledged["id"] != note["id"]
    assert acknowledged["direction"] == "incoming"
    assert acknowledged["state"] == "received"
    assert acknowledged["causality"] == note["id"]
    assert acknowledged["department"] == _department(mailgate, "Support")
    assert acknowledged["type"] == "note"
    assert acknowledged["title"] == note["title"]
    assert acknowledged["sender"] == company.sales
    assert [r["email"] for r in acknowledged["recipients"]] == [
        company.support_mailbox
    ]

    shown = mailgate("event", "show", str(acknowledged["id"]), "--json").json()
    assert [
        (h["transition"], h["state_before"], h["state_after"], h["actor"])
        for h in shown["history"]
    ] == [("acknowledge", None, "received", company.support)]
    assert [e["id"] for e in shown["causality_chain"]] == [note["id"]]

    original = mailgate("event", "show", str(note["id"]), "--json").json()
    assert original["state"] == "sent"
    last = original["history"][-1]
    assert (last["transition"], last["actor"]) == (
        "acknowledge",
        company.support,
    )
    assert last["comment"] == f"acknowledged as event {acknowledged['id']}"

    worklists = mailgate("worklist", "--json", actor=company.support).json()
    to_deliver = next(w for w in worklists if w["name"] == "to-deliver")
    assert [e["id"] for e in to_deliver["events"]] == [acknowledged["id"]]


def test_a_person_of_the_department_counts_as_addressing_it(
    mailgate: Mailgate, company: Company
) -> None:
    """A note to one person of Support is acknowledged by another member."""
    note = _note(mailgate, company, company.support_colleague)

    acknowledged = mailgate(
        "event",
        "acknowledge",
        str(note["id"]),
        "--json",
        actor=company.support,
    ).json()

    assert acknowledged["causality"] == note["id"]
    assert acknowledged["state"] == "received"


def _refused(
    mailgate: Mailgate, dump: Dump, event_id: int, actor: str, reason: str
) -> None:
    """Acknowledging is refused with reason on stderr; nothing changes."""
    before = dump()

    refused = mailgate(
        "event", "acknowledge", str(event_id), actor=actor, ok=False
    )

    assert refused.exit_code != 0
    assert refused.stdout == ""
    assert reason in refused.error
    assert dump() == before


def test_the_sender_cannot_acknowledge_their_own_event(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """The sender is no member of a recipient department."""
    note = _note(mailgate, company, company.support_mailbox)

    _refused(
        mailgate,
        dump,
        note["id"],
        company.sales,
        "only recipient-department-member may",
    )


def test_the_senders_department_cannot_acknowledge_even_if_addressed(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """A note also copied to Sales is not Sales' to acknowledge."""
    mailgate(
        "contact",
        "add",
        "sam@nexedi.com",
        "--name",
        "Sam",
        "--org",
        "Sales",
    )
    note = _note(
        mailgate,
        company,
        company.support_mailbox,
        extra=("--cc", "sam@nexedi.com"),
    )

    _refused(
        mailgate,
        dump,
        note["id"],
        "sam@nexedi.com",
        "must come from another department of ours than yours",
    )


def test_a_department_not_addressed_cannot_acknowledge(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """Community was not a recipient of the note to Support."""
    note = _note(mailgate, company, company.support_mailbox)

    _refused(
        mailgate,
        dump,
        note["id"],
        company.community_manager,
        "only recipient-department-member may",
    )


@pytest.mark.parametrize(
    ("steps", "state"),
    [
        ((), "draft"),
        (("plan",), "planned"),
        (("plan", "confirm"), "confirmed"),
        (("cancel",), "cancelled"),
    ],
)
def test_an_event_not_sent_cannot_be_acknowledged(
    mailgate: Mailgate,
    company: Company,
    dump: Dump,
    steps: tuple[str, ...],
    state: str,
) -> None:
    """Only a sent event is acknowledged: not a draft, planned or confirmed."""
    note = _note(mailgate, company, company.support_mailbox, send=False)
    for step in steps:
        mailgate("event", step, str(note["id"]), actor=company.manager)

    _refused(
        mailgate,
        dump,
        note["id"],
        company.support,
        f"it is {state}, and acknowledge starts from sent",
    )


def test_a_mail_message_still_in_the_outbox_cannot_be_acknowledged(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """A manager's send leaves a Mail Message confirmed, not yet sent."""
    mail = mailgate(
        "event",
        "new",
        "mail-message",
        "--from",
        company.sales,
        "--to",
        company.support_mailbox,
        "--title",
        "Contract",
        "--json",
        actor=company.sales,
    ).json()
    sent = mailgate(
        "event", "send", str(mail["id"]), "--json", actor=company.manager
    ).json()
    assert sent["state"] == "confirmed"

    _refused(
        mailgate,
        dump,
        mail["id"],
        company.support,
        "it is confirmed, and acknowledge starts from sent",
    )


def test_an_event_from_outside_cannot_be_acknowledged(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """Only events from our own organisation are acknowledged."""
    note = _note(
        mailgate,
        company,
        company.support_mailbox,
        sender=company.customer,
        extra=("--direction", "outgoing"),
    )
    assert note["state"] == "sent"

    _refused(
        mailgate,
        dump,
        note["id"],
        company.support,
        "its sender is not of our organisation",
    )


def test_a_department_acknowledges_an_event_once(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """A second member of Support is refused; Community still may."""
    note = _note(
        mailgate,
        company,
        company.support_mailbox,
        extra=("--cc", company.colleague),
    )
    first = mailgate(
        "event",
        "acknowledge",
        str(note["id"]),
        "--json",
        actor=company.support,
    ).json()

    _refused(
        mailgate,
        dump,
        note["id"],
        company.support_colleague,
        f"your department did already, as event {first['id']}",
    )
    community = mailgate(
        "event",
        "acknowledge",
        str(note["id"]),
        "--json",
        actor=company.community_manager,
    ).json()
    assert community["causality"] == note["id"]
    assert community["department"] == _department(mailgate, "Community")
