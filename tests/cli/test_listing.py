"""Listings and show: filters, the JSON documents, and errors on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.cli.app import CELL_WIDTH, table

if TYPE_CHECKING:
    from conftest import Company, Mailgate, MailgateProcess, Template

# The names scripts rely on; more may come, none of these may go.
SUMMARY_FIELDS = {
    "id",
    "type",
    "nature",
    "title",
    "sender",
    "recipients",
    "direction",
    "state",
    "causality",
    "ticket",
    "message_id",
    "start_date",
}
SHOW_FIELDS = (SUMMARY_FIELDS - {"recipients"}) | {
    "recipients",
    "content",
    "sender_name",
    "assignees",
    "author",
    "department",
    "in_reply_to",
    "references",
    "attachments",
    "history",
    "causality_chain",
}
STEP_FIELDS = {
    "transition",
    "state_before",
    "state_after",
    "actor",
    "at",
    "comment",
}


@pytest.fixture(scope="module")
def events_template(
    tmp_path_factory: pytest.TempPathFactory,
    company_template: Template,
    people: Company,
) -> tuple[Template, dict[str, int]]:
    """A few events of every kind the filters tell apart, made once.

    mail: Community's planned mail to the customer, for the campaign.
    call: a call from the customer to Sales, received.
    reply: the customer's answer to the mail, a draft.
    note: a sent note from Sales to Support.
    """
    template = company_template.derive(tmp_path_factory.mktemp("events"))
    company = people
    cm, sales = company.community_manager, company.sales
    campaign = template.run(
        "ticket", "new", "campaign", "--title", "Beta", "--json", actor=cm
    ).json()["id"]

    def new(actor: str, *arguments: str) -> int:
        made: dict[str, Any] = template.run(
            "event", "new", *arguments, "--json", actor=actor
        ).json()
        return int(made["id"])

    mail = new(
        cm,
        "mail-message",
        "--from",
        cm,
        "--to",
        company.customer,
        "--title",
        "SlapOS ongoing!",
        "--nature",
        "announcement",
        "--ticket",
        str(campaign),
    )
    template.run("event", "plan", str(mail), actor=cm)
    call = new(
        sales,
        "phone-call",
        "--from",
        company.customer,
        "--to",
        sales,
        "--title",
        "Ann calls",
        "--nature",
        "inquiry",
    )
    template.run("event", "receive", str(call), actor=sales)
    reply = new(
        cm,
        "mail-message",
        "--from",
        company.customer,
        "--to",
        cm,
        "--title",
        "Re: SlapOS ongoing!",
        "--causality",
        str(mail),
        "--ticket",
        str(campaign),
    )
    note = new(
        sales,
        "note",
        "--from",
        sales,
        "--to",
        company.support_mailbox,
        "--title",
        "Ann called",
    )
    template.run("event", "send", str(note), actor=company.manager)

    return template, {
        "mail": mail,
        "call": call,
        "reply": reply,
        "note": note,
        "campaign": campaign,
    }


@pytest.fixture
def events(
    events_template: tuple[Template, dict[str, int]],
    company: Company,
    data_dir: Path,
) -> dict[str, int]:
    """Start the test's store with the events of events_template."""
    template, ids = events_template
    template.copy_to(data_dir)

    return ids


def _ids(mailgate: Mailgate, *options: str) -> list[int]:
    listed = mailgate("event", "list", *options, "--json").json()
    return [event["id"] for event in listed]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), ["note", "reply", "call", "mail"]),
        (("--state", "planned"), ["mail"]),
        (("--state", "received"), ["call"]),
        (("--state", "draft"), ["reply"]),
        (("--state", "delivered"), []),
        (("--type", "mail-message"), ["reply", "mail"]),
        (("--type", "Phone Call"), ["call"]),
        (("--direction", "incoming"), ["reply", "call"]),
        (("--direction", "outgoing"), ["note", "mail"]),
        (("--ticket", "campaign"), ["reply", "mail"]),
        (("--contact", "ann@customer.example"), ["reply", "call", "mail"]),
        (("--contact", "sally@nexedi.com"), ["note", "call"]),
        (("--contact", "SUPPORT@Nexedi.com"), ["note"]),
        (("--contact", "nobody@nowhere.example"), []),
        (("--type", "mail-message", "--direction", "incoming"), ["reply"]),
        (("--limit", "2"), ["note", "reply"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_event_list_filters(
    mailgate: Mailgate,
    events: dict[str, int],
    options: tuple[str, ...],
    expected: list[str],
) -> None:
    """Each filter keeps the events that match, newest first; they combine."""
    options = tuple(
        str(events[value]) if value in events else value for value in options
    )

    assert _ids(mailgate, *options) == [events[name] for name in expected]


def test_event_list_json_has_the_stable_fields(
    mailgate: Mailgate, company: Company, events: dict[str, int]
) -> None:
    """Every summary names id, type, nature, ... with the values stored."""
    listed = mailgate("event", "list", "--json").json()
    assert all(set(summary) >= SUMMARY_FIELDS for summary in listed)

    reply = next(e for e in listed if e["id"] == events["reply"])
    assert reply == {
        **reply,
        "type": "mail-message",
        "nature": None,
        "title": "Re: SlapOS ongoing!",
        "sender": company.customer,
        "recipients": [company.community_manager],
        "direction": "incoming",
        "state": "draft",
        "causality": events["mail"],
        "ticket": events["campaign"],
        "message_id": None,
    }


def test_event_show_json_has_history_and_causality(
    mailgate: Mailgate, company: Company, events: dict[str, int]
) -> None:
    """show --json: the event, its history steps and its causality chain."""
    shown = mailgate("event", "show", str(events["reply"]), "--json").json()

    assert set(shown) >= SHOW_FIELDS
    assert shown["recipients"] == [
        {
            "contact": shown["recipients"][0]["contact"],
            "email": company.community_manager,
            "name": "",
            "kind": "to",
            "delivery_status": None,
            "delivery_detail": None,
        }
    ]
    assert [set(step) for step in shown["history"]] == [STEP_FIELDS]
    assert [e["id"] for e in shown["causality_chain"]] == [events["mail"]]
    assert set(shown["causality_chain"][0]) >= SUMMARY_FIELDS


@pytest.mark.parametrize(
    "command",
    [
        ("org", "list"),
        ("contact", "list"),
        ("event", "list"),
        ("event", "show", "mail"),
        ("ticket", "list"),
        ("ticket", "show", "campaign"),
        ("worklist",),
    ],
    ids=" ".join,
)
def test_every_listing_and_show_prints_one_json_document(
    mailgate: Mailgate,
    company: Company,
    events: dict[str, int],
    command: tuple[str, ...],
) -> None:
    """--json prints exactly one JSON document on stdout, nothing on stderr."""
    arguments = [str(events.get(part, part)) for part in command]

    printed = mailgate(*arguments, "--json", actor=company.manager)

    assert printed.stderr == ""
    document = json.loads(printed.stdout)
    assert isinstance(document, list | dict)
    assert document


def test_ticket_json_names_its_fields(
    mailgate: Mailgate, events: dict[str, int]
) -> None:
    """ticket show --json: id, type, title, state, tag, events, history."""
    shown = mailgate("ticket", "show", str(events["campaign"]), "--json")

    ticket = shown.json()
    assert ticket["type"] == "campaign"
    assert ticket["tag"] == f"[#TKT-{events['campaign']}]"
    assert ticket["events"] == [events["mail"], events["reply"]]
    assert [step["transition"] for step in ticket["history"]] == ["create"]


def test_listings_for_people_are_tables(
    mailgate: Mailgate, events: dict[str, int]
) -> None:
    """Without --json a listing is a table with a header, or (none)."""
    table = mailgate("event", "list").stdout.splitlines()
    empty = mailgate("event", "list", "--state", "deleted").stdout

    assert table[0].split() == [
        "id",
        "type",
        "state",
        "direction",
        "sender",
        "title",
        "ticket",
    ]
    assert len(table) == 2 + 4
    assert empty.strip() == "(none)"


def test_a_long_or_multi_line_cell_is_cut_to_one_line() -> None:
    """A table row stays one line: long text is cut, with an ellipsis."""
    title = "Re: " + "very long subject " * 10 + "\n\tfolded"
    lines = table([(7, title), (8, "short")], ["id", "title"]).splitlines()

    assert len(lines) == 2 + 2
    cell = lines[2].split(None, 1)[1].rstrip()
    assert len(cell) == CELL_WIDTH
    assert cell.startswith("Re: very long subject very")
    assert cell.endswith("\N{HORIZONTAL ELLIPSIS}")
    assert lines[3].split() == ["8", "short"]


ERRORS = [
    pytest.param(
        ("event", "show", "999"), None, 1, "Error: no event 999", id="show"
    ),
    pytest.param(
        ("event", "plan", "999"),
        "cm@nexedi.com",
        1,
        "Error: no event 999",
        id="step",
    ),
    pytest.param(
        ("ticket", "show", "999"), None, 1, "Error: no ticket 999", id="ticket"
    ),
    pytest.param(
        ("event", "list", "--type", "pigeon"),
        None,
        1,
        "unknown event type 'pigeon'; expected one of: mail-message",
        id="list-type",
    ),
    pytest.param(
        (
            "event",
            "new",
            "pigeon",
            "--from",
            "cm@nexedi.com",
            "--to",
            "ann@customer.example",
            "--title",
            "Coo",
        ),
        "cm@nexedi.com",
        2,
        "unknown event type 'pigeon'",
        id="new-type",
    ),
    pytest.param(
        ("event", "plan", "1"),
        None,
        1,
        "say who is acting: --as EMAIL or MAILGATE_USER=EMAIL",
        id="missing-as",
    ),
    pytest.param(
        ("worklist",),
        "ann@customer.example",
        1,
        "ann@customer.example is not a member of our organisation",
        id="outsider",
    ),
    pytest.param(
        ("worklist",),
        "ghost@nexedi.com",
        1,
        "no person with address ghost@nexedi.com",
        id="unknown-actor",
    ),
    pytest.param(
        ("event", "follow-up", "1"),
        "cm@nexedi.com",
        2,
        "give --ticket ID or --new TYPE --title T",
        id="follow-up-without-ticket",
    ),
    pytest.param(
        ("event", "follow-up", "1", "--new", "lunch", "--title", "T"),
        "cm@nexedi.com",
        2,
        "unknown ticket type 'lunch'",
        id="follow-up-bad-type",
    ),
    pytest.param(
        ("event", "assign", "1", "--to", "nobody@nexedi.com"),
        "cm@nexedi.com",
        1,
        "no person with address nobody@nexedi.com",
        id="assign-unknown",
    ),
    pytest.param(
        (
            "event",
            "new",
            "note",
            "--from",
            "cm@nexedi.com",
            "--to",
            "ann@customer.example",
            "--title",
            "T",
            "--causality",
            "999",
        ),
        "cm@nexedi.com",
        1,
        "Error: no event 999",
        id="unknown-causality",
    ),
]


@pytest.mark.parametrize(("arguments", "actor", "code", "expected"), ERRORS)
def test_errors_go_to_stderr_with_a_non_zero_exit(
    mailgate: Mailgate,
    events: dict[str, int],
    arguments: tuple[str, ...],
    actor: str | None,
    code: int,
    expected: str,
) -> None:
    """Nothing on stdout; the reason on stderr; exit 1, or 2 for usage."""
    failed = mailgate(*arguments, actor=actor, ok=False)

    assert failed.exit_code == code
    assert failed.stdout == ""
    assert expected in failed.error


def test_content_and_content_file_are_exclusive(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """The text comes from --content or --content-file, not both."""
    text = tmp_path / "text.txt"
    text.write_text("From a file.\n", encoding="utf-8")
    base = (
        "event",
        "new",
        "note",
        "--from",
        company.sales,
        "--to",
        company.customer,
        "--title",
        "Text",
    )

    made = mailgate(
        *base, "--content-file", str(text), "--json", actor=company.sales
    )
    both = mailgate(
        *base,
        "--content-file",
        str(text),
        "--content",
        "Inline",
        actor=company.sales,
        ok=False,
    )

    assert made.json()["content"] == "From a file.\n"
    assert both.exit_code == 2
    assert "give --content or --content-file, not both" in both.error


def test_mailgate_user_names_the_actor(
    mailgate: Mailgate,
    company: Company,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAILGATE_USER stands for --as."""
    monkeypatch.setenv("MAILGATE_USER", company.manager)

    worklists = mailgate("worklist", "--json").json()

    assert "to-confirm" in [worklist["name"] for worklist in worklists]


def test_worklist_headings_name_each_list_as_json_does(
    mailgate: Mailgate, company: Company, events: dict[str, int]
) -> None:
    """Each text heading shows the title, the --json name and the count."""
    lists = mailgate("worklist", "--json", actor=company.manager).json()

    printed = mailgate("worklist", actor=company.manager).stdout

    headings = [f"{w['title']} ({w['name']}): {w['count']}" for w in lists]
    failed = "Mail that could not be delivered (failed-deliveries): 0"
    assert failed in headings
    assert [line for line in printed.splitlines() if line in headings] == (
        headings
    )


def test_the_console_scripts_print_the_same_listing(
    mailgate: Mailgate,
    mailgate_process: MailgateProcess,
    events: dict[str, int],
) -> None:
    """python -m gateway and the mailgate script match the in-process run."""
    expected = mailgate("event", "list", "--json").json()

    module = mailgate_process("event", "list", "--json")
    script = subprocess.run(
        [
            str(Path(sys.executable).parent / "mailgate"),
            "event",
            "list",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert module.returncode == 0, module.stderr
    assert json.loads(module.stdout) == expected
    assert script.returncode == 0, script.stderr
    assert json.loads(script.stdout) == expected


def test_the_console_script_reports_an_unknown_event_on_stderr(
    mailgate_process: MailgateProcess, events: dict[str, int]
) -> None:
    """A real process: exit 1, one line on stderr, nothing on stdout."""
    failed = mailgate_process("event", "show", "999", "--json")

    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.splitlines() == ["Error: no event 999"]
