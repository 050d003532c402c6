"""``mailgate event`` steps: allowed ones move, refused ones change nothing.

The community manager (cm) authors each event; alain is a colleague with
no part in it; jp is the manager. A refused step exits 1 with the reason on
stderr, and the whole database is the same after it as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate

CM = "cm@nexedi.com"
ALAIN = "alain@nexedi.com"
JP = "jp@nexedi.com"
ANN = "ann@customer.example"

OUTGOING = ("--from", CM, "--to", ANN)
INCOMING = ("--from", ANN, "--to", CM)


def _event(
    mailgate: Mailgate,
    event_type: str,
    addressed: tuple[str, ...],
    steps: tuple[tuple[str, str], ...],
) -> int:
    """Create an event as cm and take the (step, actor) steps given."""
    made: dict[str, Any] = mailgate(
        "event",
        "new",
        event_type,
        *addressed,
        "--title",
        "Step by step",
        "--json",
        actor=CM,
    ).json()
    for step, actor in steps:
        if step == "assign":
            mailgate(
                "event", "assign", str(made["id"]), "--to", ALAIN, actor=actor
            )
        else:
            mailgate("event", step, str(made["id"]), actor=actor)

    return int(made["id"])


REFUSED = [
    pytest.param(
        "mail-message",
        OUTGOING,
        (),
        ("confirm",),
        JP,
        "it is draft, and confirm starts from planned",
        id="confirm-a-draft",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM),),
        ("confirm",),
        CM,
        "only manager may (your roles here: assignee, author, staff)",
        id="confirm-by-the-author",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM),),
        ("confirm",),
        ALAIN,
        "only manager may (your roles here: staff)",
        id="confirm-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (),
        ("plan",),
        ALAIN,
        "only assignee or author or manager may",
        id="plan-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (),
        ("send",),
        CM,
        "cannot send this event (draft): only manager may",
        id="send-a-draft-mail-by-the-author",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM), ("confirm", JP)),
        ("send",),
        JP,
        "only the gateway itself may",
        id="send-a-confirmed-mail-by-a-manager",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM), ("confirm", JP)),
        ("send",),
        CM,
        "only the gateway itself may",
        id="send-a-confirmed-mail-by-its-author",
    ),
    pytest.param(
        "phone-call",
        OUTGOING,
        (),
        ("send",),
        CM,
        "cannot send this event (draft): only manager may",
        id="send-a-draft-call-by-the-author",
    ),
    pytest.param(
        "phone-call",
        OUTGOING,
        (("send", JP),),
        ("send",),
        JP,
        "it is sent, and send starts from confirmed or draft or planned",
        id="send-a-sent-call",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("cancel", CM),),
        ("cancel",),
        JP,
        "it is cancelled, and cancel starts from confirmed or draft",
        id="cancel-a-cancelled-mail",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM),),
        ("delete",),
        CM,
        "it is planned, and delete starts from draft",
        id="delete-a-planned-mail",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (),
        ("delete",),
        ALAIN,
        "only author or manager may",
        id="delete-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("delete", CM),),
        ("plan",),
        JP,
        "it is deleted, and plan starts from draft",
        id="plan-a-deleted-mail",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (),
        ("deliver",),
        JP,
        "it is draft, and deliver starts from received",
        id="deliver-a-draft",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (),
        ("receive",),
        ALAIN,
        "only assignee or author or manager may",
        id="receive-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM), ("deliver", CM)),
        ("receive",),
        CM,
        "it is delivered, and receive starts from draft",
        id="receive-a-delivered-mail",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM),),
        ("deliver",),
        ALAIN,
        "cannot deliver this event (received): only assignee or manager",
        id="deliver-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM), ("assign", CM)),
        ("deliver",),
        CM,
        "cannot deliver this event (received): only assignee or manager",
        id="deliver-by-the-author-once-reassigned",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM),),
        ("assign",),
        ALAIN,
        "cannot assign this event (received): only assignee or manager",
        id="assign-by-a-colleague",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (),
        ("assign",),
        CM,
        "it is draft, and assign starts from received",
        id="assign-a-draft",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM), ("assign", CM)),
        ("follow-up", "--new", "support-request", "--title", "Help"),
        CM,
        "cannot follow-up this event (received): only assignee or manager",
        id="follow-up-by-the-author-once-reassigned",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("delete", CM),),
        ("follow-up", "--new", "support-request", "--title", "Help"),
        JP,
        "it is deleted, and follow-up starts from",
        id="follow-up-a-deleted-mail",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (),
        ("acknowledge",),
        ALAIN,
        "it is draft, and acknowledge starts from sent",
        id="acknowledge-a-draft",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "addressed", "steps", "attempt", "actor", "reason"),
    REFUSED,
)
def test_a_refused_step_changes_nothing(
    mailgate: Mailgate,
    company: Company,
    dump: Dump,
    event_type: str,
    addressed: tuple[str, ...],
    steps: tuple[tuple[str, str], ...],
    attempt: tuple[str, ...],
    actor: str,
    reason: str,
) -> None:
    """Exit 1, why on stderr, and the database exactly as it was."""
    event_id = _event(mailgate, event_type, addressed, steps)
    if attempt[0] == "assign":
        attempt = (*attempt, "--to", ALAIN)
    before = dump()

    refused = mailgate(
        "event", attempt[0], str(event_id), *attempt[1:], actor=actor, ok=False
    )

    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert reason in refused.error
    assert len(refused.error.splitlines()) == 1
    assert dump() == before


ALLOWED = [
    pytest.param(
        "mail-message",
        OUTGOING,
        (("send", JP),),
        "confirmed",
        id="a-manager-sends-a-draft-mail-to-the-outbox",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM), ("send", JP)),
        "confirmed",
        id="a-manager-sends-a-planned-mail-to-the-outbox",
    ),
    pytest.param(
        "phone-call",
        OUTGOING,
        (("send", JP),),
        "sent",
        id="a-manager-marks-a-call-made",
    ),
    pytest.param(
        "phone-call",
        OUTGOING,
        (("plan", CM), ("confirm", JP), ("send", CM)),
        "sent",
        id="the-assignee-marks-a-confirmed-call-made",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("plan", CM), ("cancel", CM)),
        "cancelled",
        id="the-author-cancels",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("delete", CM),),
        "deleted",
        id="the-author-deletes-a-draft",
    ),
    pytest.param(
        "mail-message",
        OUTGOING,
        (("delete", JP),),
        "deleted",
        id="a-manager-deletes-a-draft",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM), ("assign", CM), ("deliver", ALAIN)),
        "delivered",
        id="the-new-assignee-delivers",
    ),
    pytest.param(
        "mail-message",
        INCOMING,
        (("receive", CM), ("assign", JP)),
        "received",
        id="a-manager-reassigns",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "addressed", "steps", "state"), ALLOWED
)
def test_an_allowed_path_reaches_its_state(
    mailgate: Mailgate,
    company: Company,
    event_type: str,
    addressed: tuple[str, ...],
    steps: tuple[tuple[str, str], ...],
    state: str,
) -> None:
    """Each step is taken and recorded, with its actor, in order."""
    event_id = _event(mailgate, event_type, addressed, steps)

    shown = mailgate("event", "show", str(event_id), "--json").json()

    assert shown["state"] == state
    assert [(h["transition"], h["actor"]) for h in shown["history"]] == [
        ("create", CM),
        *steps,
    ]


def test_a_refused_follow_up_makes_no_ticket(
    mailgate: Mailgate, company: Company
) -> None:
    """The ticket a refused follow-up would have made is not kept."""
    event_id = _event(mailgate, "mail-message", INCOMING, (("receive", CM),))

    refused = mailgate(
        "event",
        "follow-up",
        str(event_id),
        "--new",
        "support-request",
        "--title",
        "Help",
        actor=ALAIN,
        ok=False,
    )

    assert refused.exit_code == 1
    assert mailgate("ticket", "list", "--json").json() == []


def test_following_up_an_existing_ticket_delivers(
    mailgate: Mailgate, company: Company
) -> None:
    """--ticket ID attaches a received event to that ticket, delivered."""
    ticket = mailgate(
        "ticket", "new", "meeting", "--title", "Kick-off", "--json", actor=JP
    ).json()
    event_id = _event(mailgate, "mail-message", INCOMING, (("receive", CM),))

    followed = mailgate(
        "event",
        "follow-up",
        str(event_id),
        "--ticket",
        str(ticket["id"]),
        "--json",
        actor=CM,
    ).json()

    assert (followed["state"], followed["ticket"]) == (
        "delivered",
        ticket["id"],
    )
    shown = mailgate("ticket", "show", str(ticket["id"]), "--json").json()
    assert shown["events"] == [event_id]


def test_following_up_a_sent_call_keeps_its_state(
    mailgate: Mailgate, company: Company
) -> None:
    """Only a received event is delivered by a follow-up; others stay."""
    event_id = _event(mailgate, "phone-call", OUTGOING, (("send", JP),))

    followed = mailgate(
        "event",
        "follow-up",
        str(event_id),
        "--new",
        "sale-opportunity",
        "--title",
        "Ann may buy",
        "--json",
        actor=CM,
    ).json()

    assert followed["state"] == "sent"
    assert followed["ticket"] is not None


def test_only_a_person_of_ours_is_assigned(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """Assigning to a customer is refused and changes nothing."""
    event_id = _event(mailgate, "mail-message", INCOMING, (("receive", CM),))
    before = dump()

    refused = mailgate(
        "event", "assign", str(event_id), "--to", ANN, actor=CM, ok=False
    )

    assert refused.exit_code == 1
    assert f"{ANN} is not a person of our organisation" in refused.error
    assert dump() == before
