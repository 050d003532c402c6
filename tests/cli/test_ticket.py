"""``mailgate ticket``: its workflow through the CLI, refusals change nothing.

Sally (staff) creates each ticket; Alain is staff with no part in it; JP is
the manager, the only one who opens a ticket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate

SALLY = "sally@nexedi.com"
ALAIN = "alain@nexedi.com"
JP = "jp@nexedi.com"


def _ticket(mailgate: Mailgate, steps: tuple[tuple[str, str], ...]) -> int:
    made: dict[str, Any] = mailgate(
        "ticket",
        "new",
        "sale-opportunity",
        "--title",
        "Ann may buy",
        "--json",
        actor=SALLY,
    ).json()
    for step, actor in steps:
        mailgate("ticket", step, str(made["id"]), actor=actor)

    return int(made["id"])


def test_a_ticket_goes_from_draft_to_closed(
    mailgate: Mailgate, company: Company
) -> None:
    """Submitted by staff, opened by a manager, suspended, re-opened, shut."""
    steps = (
        ("submit", SALLY),
        ("open", JP),
        ("suspend", ALAIN),
        ("open", JP),
        ("close", SALLY),
    )
    ticket_id = _ticket(mailgate, steps)

    shown = mailgate("ticket", "show", str(ticket_id), "--json").json()

    assert shown["state"] == "closed"
    assert [
        (h["transition"], h["state_after"], h["actor"])
        for h in shown["history"]
    ] == [
        ("create", "draft", SALLY),
        ("submit", "submitted", SALLY),
        ("open", "open", JP),
        ("suspend", "suspended", ALAIN),
        ("open", "open", JP),
        ("close", "closed", SALLY),
    ]


@pytest.mark.parametrize(
    ("steps", "attempt", "actor", "reason"),
    [
        pytest.param(
            (("submit", SALLY),),
            "open",
            SALLY,
            "cannot open this ticket (submitted): only manager may",
            id="open-by-staff",
        ),
        pytest.param(
            (),
            "open",
            JP,
            "it is draft, and open starts from submitted or suspended",
            id="open-a-draft",
        ),
        pytest.param(
            (("submit", SALLY),),
            "submit",
            SALLY,
            "it is submitted, and submit starts from draft",
            id="submit-twice",
        ),
        pytest.param(
            (),
            "close",
            JP,
            "it is draft, and close starts from open or suspended",
            id="close-a-draft",
        ),
        pytest.param(
            (),
            "delete",
            ALAIN,
            "cannot delete this ticket (draft): only author or manager may",
            id="delete-by-a-colleague",
        ),
        pytest.param(
            (("submit", SALLY),),
            "delete",
            SALLY,
            "it is submitted, and delete starts from draft",
            id="delete-a-submitted-ticket",
        ),
        pytest.param(
            (("cancel", SALLY),),
            "cancel",
            JP,
            "it is cancelled, and cancel starts from",
            id="cancel-twice",
        ),
    ],
)
def test_a_refused_ticket_step_changes_nothing(
    mailgate: Mailgate,
    company: Company,
    dump: Dump,
    steps: tuple[tuple[str, str], ...],
    attempt: str,
    actor: str,
    reason: str,
) -> None:
    """Exit 1, why on stderr, and the database exactly as it was."""
    ticket_id = _ticket(mailgate, steps)
    before = dump()

    refused = mailgate(
        "ticket", attempt, str(ticket_id), actor=actor, ok=False
    )

    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert reason in refused.error
    assert dump() == before


def test_the_author_deletes_a_draft_ticket(
    mailgate: Mailgate, company: Company
) -> None:
    """A draft ticket is deleted by its author."""
    ticket_id = _ticket(mailgate, (("delete", SALLY),))

    shown = mailgate("ticket", "show", str(ticket_id), "--json").json()

    assert shown["state"] == "deleted"


def test_ticket_list_filters_by_state(
    mailgate: Mailgate, company: Company
) -> None:
    """ticket list --state keeps the tickets in that state, newest first."""
    draft = _ticket(mailgate, ())
    submitted = _ticket(mailgate, (("submit", SALLY),))
    other = _ticket(mailgate, ())

    def listed(*options: str) -> list[int]:
        found = mailgate("ticket", "list", *options, "--json").json()
        return [ticket["id"] for ticket in found]

    assert listed() == [other, submitted, draft]
    assert listed("--state", "draft") == [other, draft]
    assert listed("--state", "submitted") == [submitted]


def test_an_unknown_ticket_type_is_refused(
    mailgate: Mailgate, company: Company
) -> None:
    """ticket new with an unknown TYPE names the known ones."""
    refused = mailgate(
        "ticket", "new", "lunch", "--title", "Noon", actor=SALLY, ok=False
    )

    assert refused.exit_code == 2
    assert "unknown ticket type 'lunch'; expected one of: campaign" in (
        refused.error
    )
