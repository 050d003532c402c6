"""The issue's scenario, through the CLI: a campaign mail and its reply.

A community manager (staff) drafts an outgoing Mail Message to 14 contacts
for a campaign, plans it; staff cannot confirm it; the manager confirms it
from their worklist; a reply is entered, received, reassigned and delivered
by a Support Request follow-up; every step is in the history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate

TITLE = "SlapOS ongoing!"
CAMPAIGN = "Beta Developer Program"


def _worklist(
    mailgate: Mailgate, person: str, name: str
) -> list[dict[str, Any]] | None:
    """Return one worklist of a person (None if they have no such list)."""
    for worklist in mailgate("worklist", "--json", actor=person).json():
        if worklist["name"] == name:
            assert worklist["count"] == len(worklist["events"])
            return list(worklist["events"])

    return None


def _show(mailgate: Mailgate, event_id: int) -> dict[str, Any]:
    document: dict[str, Any] = mailgate(
        "event", "show", str(event_id), "--json"
    ).json()

    return document


def _contacts(mailgate: Mailgate, count: int) -> list[str]:
    """Add count external developers and return their addresses."""
    mailgate("org", "add", "Beta Testers", "--domain", "beta.example")
    addresses = []
    for number in range(1, count + 1):
        address = f"developer{number}@beta.example"
        mailgate("contact", "add", address, "--name", f"Developer {number}")
        addresses.append(address)

    return addresses


def _assert_history(
    document: dict[str, Any], expected: list[tuple[str, str, str, str]]
) -> None:
    """Check transitions, states and actors; every step has a UTC time."""
    history = document["history"]
    assert [
        (
            h["transition"],
            h["state_before"] or "",
            h["state_after"],
            h["actor"],
        )
        for h in history
    ] == expected

    moments = [datetime.fromisoformat(h["at"]) for h in history]
    assert all(moment.tzinfo is not None for moment in moments)
    assert all(moment.utcoffset() == UTC.utcoffset(None) for moment in moments)
    assert moments == sorted(moments)


def test_campaign_mail_and_reply_through_every_step(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """The scenario of the issue, step by step, with every check it names."""
    cm = company.community_manager
    developers = _contacts(mailgate, 14)

    # The campaign, and the community manager's draft for it.
    campaign = mailgate(
        "ticket", "new", "campaign", "--title", CAMPAIGN, "--json", actor=cm
    ).json()
    assert (campaign["type"], campaign["state"]) == ("campaign", "draft")

    recipients = [option for d in developers for option in ("--to", d)]
    draft = mailgate(
        "event",
        "new",
        "mail-message",
        "--from",
        cm,
        *recipients,
        "--title",
        TITLE,
        "--nature",
        "announcement",
        "--content",
        "SlapOS beta is open to developers.",
        "--ticket",
        str(campaign["id"]),
        "--json",
        actor=cm,
    ).json()
    mail = draft["id"]
    assert draft["type"] == "mail-message"
    assert draft["direction"] == "outgoing"
    assert draft["state"] == "draft"
    assert draft["ticket"] == campaign["id"]
    assert [r["email"] for r in draft["recipients"]] == developers
    assert _worklist(mailgate, cm, "draft") == [
        {
            "id": mail,
            "type": "mail-message",
            "title": TITLE,
            "sender": cm,
            "state": "draft",
            "direction": "outgoing",
            "ticket": campaign["id"],
        }
    ]

    planned = mailgate("event", "plan", str(mail), "--json", actor=cm).json()
    assert planned["state"] == "planned"

    # Staff cannot confirm: not the colleague, not the author either.
    before = dump()
    shown_before = _show(mailgate, mail)
    for staff in (company.colleague, cm):
        refused = mailgate(
            "event", "confirm", str(mail), actor=staff, ok=False
        )
        assert refused.exit_code != 0
        assert refused.stdout == ""
        assert "cannot confirm this event (planned)" in refused.error
        assert "only manager may" in refused.error
        assert len(refused.error.splitlines()) == 1
    assert dump() == before
    assert _show(mailgate, mail) == shown_before
    assert _worklist(mailgate, company.colleague, "to-confirm") is None

    # The manager sees it among planned events to confirm, and confirms.
    to_confirm = _worklist(mailgate, company.manager, "to-confirm")
    assert [event["id"] for event in to_confirm or []] == [mail]
    confirmed = mailgate(
        "event", "confirm", str(mail), "--json", actor=company.manager
    ).json()
    assert confirmed["state"] == "confirmed"
    assert _worklist(mailgate, company.manager, "to-confirm") == []

    to_send = _worklist(mailgate, cm, "to-send")
    assert [event["id"] for event in to_send or []] == [mail]
    assert [
        event["id"] for event in _worklist(mailgate, cm, "draft") or []
    ] == []

    # A reply from one developer, entered as incoming with the mail as
    # causality (the direction follows from the outside sender).
    replier = developers[6]
    reply = mailgate(
        "event",
        "new",
        "mail-message",
        "--from",
        replier,
        "--to",
        cm,
        "--title",
        f"Re: {TITLE}",
        "--nature",
        "inquiry",
        "--causality",
        str(mail),
        "--json",
        actor=cm,
    ).json()
    answer = reply["id"]
    assert reply["direction"] == "incoming"
    assert reply["causality"] == mail
    assert reply["sender"] == replier

    received = mailgate(
        "event", "receive", str(answer), "--json", actor=cm
    ).json()
    assert received["state"] == "received"
    assert [e["id"] for e in _worklist(mailgate, cm, "to-deliver") or []] == [
        answer
    ]

    colleague = mailgate(
        "event",
        "assign",
        str(answer),
        "--to",
        company.colleague,
        "--json",
        actor=cm,
    ).json()
    assert colleague["state"] == "received"
    assert _worklist(mailgate, cm, "to-deliver") == []
    assert [
        e["id"]
        for e in _worklist(mailgate, company.colleague, "to-deliver") or []
    ] == [answer]

    delivered = mailgate(
        "event",
        "follow-up",
        str(answer),
        "--new",
        "support-request",
        "--title",
        "Beta access for developer 7",
        "--json",
        actor=company.colleague,
    ).json()
    assert delivered["state"] == "delivered"
    request = mailgate("ticket", "show", str(delivered["ticket"]), "--json")
    assert request.json()["type"] == "support-request"
    assert request.json()["events"] == [answer]
    assert _worklist(mailgate, company.colleague, "to-deliver") == []

    # Every step is in the history, with actor and time.
    _assert_history(
        _show(mailgate, mail),
        [
            ("create", "", "draft", cm),
            ("plan", "draft", "planned", cm),
            ("confirm", "planned", "confirmed", company.manager),
        ],
    )
    shown = _show(mailgate, answer)
    _assert_history(
        shown,
        [
            ("create", "", "draft", cm),
            ("receive", "draft", "received", cm),
            ("assign", "received", "received", cm),
            ("follow-up", "received", "delivered", company.colleague),
        ],
    )
    assert company.colleague in shown["history"][2]["comment"]
    assert [e["id"] for e in shown["causality_chain"]] == [mail]


def test_the_history_is_readable_by_people(
    mailgate: Mailgate, company: Company
) -> None:
    """Without --json, show lists each step with its actor."""
    cm = company.community_manager
    created = mailgate(
        "event",
        "new",
        "phone-call",
        "--from",
        cm,
        "--to",
        company.customer,
        "--title",
        "Call about the beta",
        "--json",
        actor=cm,
    ).json()
    mailgate("event", "plan", str(created["id"]), actor=cm)

    text = mailgate("event", "show", str(created["id"])).stdout

    assert "Event 1: Call about the beta" in text
    assert "type:       Phone Call" in text
    assert "History:" in text
    assert f"create       - -> draft  by {cm}" in text
    assert f"plan         draft -> planned  by {cm}" in text
