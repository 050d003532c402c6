"""Mistakes a user makes get one clear line on stderr, never a traceback.

Each test here is a fault a first-time user found; the right behaviour is
kept as a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

from gateway.cli.app import SQLITE_MAX_INTEGER
from gateway.cli.main import main

if TYPE_CHECKING:
    from conftest import Company, Mailgate


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines, "nothing on stderr"

    return lines[-1]


@pytest.mark.parametrize(
    "arguments",
    [
        ("event", "show", "99999999999999999999999"),
        ("event", "plan", "99999999999999999999999"),
        ("ticket", "show", "99999999999999999999999"),
        ("quarantine", "retry", "99999999999999999999999"),
        ("event", "list", "--limit", "100000000000000000000"),
        ("event", "list", "--limit", "0"),
        ("event", "list", "--ticket", "99999999999999999999999"),
        ("event", "follow-up", "1", "--ticket", "99999999999999999999999"),
        ("event", "acknowledge", "99999999999999999999999"),
    ],
)
def test_an_id_too_large_for_the_store_is_refused_cleanly(
    mailgate: Mailgate, company: Company, arguments: tuple[str, ...]
) -> None:
    """An id past SQLite's 64-bit range is a usage error, not a crash."""
    outcome = mailgate(*arguments, actor=company.manager, ok=False)

    assert outcome.exit_code == 2
    assert "Error" in _one_error_line(outcome.stderr)


def _integer_parameters(
    command: click.Command, path: str
) -> list[tuple[str, click.Parameter]]:
    found = [
        (f"{path} {parameter.name}", parameter)
        for parameter in command.params
        if isinstance(parameter.type, click.types.IntParamType)
    ]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _integer_parameters(sub, f"{path} {name}")

    return found


def test_every_integer_parameter_is_kept_within_sqlite_range() -> None:
    """No integer option or argument of any command can overflow SQLite."""
    parameters = _integer_parameters(main, "mailgate")

    assert parameters
    for where, parameter in parameters:
        kind = parameter.type
        assert isinstance(kind, click.IntRange), where
        assert kind.min is not None and kind.min >= 1, where
        assert kind.max is not None, where
        assert kind.max <= SQLITE_MAX_INTEGER, where


def test_content_file_that_is_not_utf8_is_refused(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """A binary --content-file gets one line naming the option."""
    binary = tmp_path / "scan.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")

    outcome = mailgate(
        "event", "new", "note", "--from", company.support,
        "--to", company.manager, "--title", "t",
        "--content-file", str(binary),
        actor=company.support, ok=False,
    )  # fmt: skip

    assert outcome.exit_code == 2
    assert "--content-file" in _one_error_line(outcome.stderr)


def test_an_event_needs_a_title(mailgate: Mailgate, company: Company) -> None:
    """An empty --title is refused; nothing is created."""
    outcome = mailgate(
        "event", "new", "note", "--from", company.support,
        "--to", company.manager, "--title", "  ",
        actor=company.support, ok=False,
    )  # fmt: skip

    assert outcome.exit_code == 2
    listed = mailgate("event", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_two_contacts_may_not_differ_only_by_case(
    mailgate: Mailgate, company: Company
) -> None:
    """Mail finds a contact whatever the case, so the CLI refuses a twin."""
    outcome = mailgate(
        "contact", "add", company.support.upper(), "--name", "Twin", ok=False
    )

    assert outcome.exit_code == 1
    assert "belongs to another contact" in _one_error_line(outcome.stderr)
    mailgate("worklist", actor=company.support.upper())


def test_a_contact_made_from_mail_can_become_staff(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """`contact update` gives a person first seen in mail an org and role."""
    mailgate(
        "event", "new", "mail-message", "--from", "new.hire@nexedi.com",
        "--to", company.support, "--title", "hello",
        actor=company.support,
    )  # fmt: skip

    mailgate(
        "contact", "update", "new.hire@nexedi.com", "--name", "New Hire",
        "--org", "Support", "--role", "staff",
    )  # fmt: skip

    shown = json.loads(mailgate("contact", "list", "--json").stdout)
    hire = next(c for c in shown if c["email"] == "new.hire@nexedi.com")
    assert hire["name"] == "New Hire"
    assert hire["organisation"] == "Support"
    assert hire["roles"] == ["staff"]
    mailgate("worklist", actor="new.hire@nexedi.com")


def test_a_mistyped_setting_variable_stops_mailgate(
    mailgate: Mailgate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAILGATE_SMPT_PORT (a typo) is named, not silently ignored."""
    monkeypatch.setenv("MAILGATE_SMPT_PORT", "25")

    outcome = mailgate("event", "list", ok=False)

    assert outcome.exit_code == 1
    assert "MAILGATE_SMPT_PORT" in _one_error_line(outcome.stderr)


def test_ingest_refuses_a_mailbox_that_is_not_ours(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """--mailbox must be ours, as RCPT TO must be over SMTP."""
    message = tmp_path / "m.eml"
    message.write_bytes(
        b"From: a@example.org\r\nTo: support@nexedi.com\r\n"
        b"Subject: hi\r\n\r\nhello\r\n"
    )

    outcome = mailgate(
        "ingest", str(message), "--mailbox", "other@example.net", ok=False
    )

    assert outcome.exit_code == 1
    assert "not a mailbox of ours" in _one_error_line(outcome.stderr)


def test_ingest_exits_1_when_a_file_is_quarantined(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """A script can tell that a file was not taken in as an event."""
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")

    outcome = mailgate(
        "ingest", str(empty), "--mailbox", company.support_mailbox, ok=False
    )

    assert outcome.exit_code == 1
    assert "quarantined" in _one_error_line(outcome.stderr)
    held = json.loads(mailgate("quarantine", "list", "--json").stdout)
    assert len(held) == 1


def test_a_huge_subject_tag_is_no_thread_and_no_fault(
    mailgate: Mailgate, company: Company, tmp_path: Path
) -> None:
    """[#EVT-<23 digits>] from a stranger is taken in, simply unthreaded."""
    message = tmp_path / "m.eml"
    message.write_bytes(
        b"From: a@example.org\r\nTo: support@nexedi.com\r\n"
        b"Subject: [#EVT-99999999999999999999999] huge\r\n\r\nhello\r\n"
    )

    mailgate("ingest", str(message), "--mailbox", company.support_mailbox)

    (event,) = json.loads(mailgate("event", "list", "--json").stdout)
    assert event["causality"] is None
    assert json.loads(mailgate("quarantine", "list", "--json").stdout) == []
