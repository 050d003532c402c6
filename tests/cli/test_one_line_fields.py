"""Titles and names are one line: control characters are refused.

A title becomes the Subject of the mail we send and a name a display
name in From or To: a line break in either would start a header field of
its own (``Bcc: evil@example.net``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.ingest.parse import parse_message
from gateway.store.database import DATABASE_NAME

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate

CONTROLS = [
    pytest.param("line1\nBcc: evil@example.net", id="lf"),
    pytest.param("line1\rBcc: evil@example.net", id="cr"),
    pytest.param("line1\r\nBcc: evil@example.net", id="crlf"),
    pytest.param("nul\x00here", id="nul"),
    pytest.param("escape\x1b[31m", id="escape"),
    pytest.param("separator\u2028here", id="line-separator"),
]


def _commands(company: Company, value: str) -> dict[str, list[str]]:
    return {
        "event-title": [
            "event",
            "new",
            "mail-message",
            "--from",
            company.community_manager,
            "--to",
            company.customer,
            "--title",
            value,
        ],
        "ticket-title": ["ticket", "new", "support-request", "--title", value],
        "organisation-name": ["org", "add", value],
        "contact-name": ["contact", "add", "new@example.org", "--name", value],
        "contact-update-name": [
            "contact",
            "update",
            company.customer,
            "--name",
            value,
        ],
    }


@pytest.mark.parametrize("value", CONTROLS)
@pytest.mark.parametrize(
    "field",
    [
        "event-title",
        "ticket-title",
        "organisation-name",
        "contact-name",
        "contact-update-name",
    ],
)
def test_a_control_character_in_a_one_line_field_is_refused(
    mailgate: Mailgate, company: Company, dump: Dump, field: str, value: str
) -> None:
    """One line on stderr naming the field, exit 1, nothing stored."""
    before = dump()

    refused = mailgate(
        *_commands(company, value)[field],
        actor=company.community_manager,
        ok=False,
    )

    assert refused.exit_code == 1
    assert len(refused.error.splitlines()) == 1, refused.error
    assert "must be one line without control characters" in refused.error
    assert dump() == before


def _store_title(data_dir: Path, event_id: int, title: str) -> None:
    """Give a stored event a title as an older mailgate let in."""
    connection = sqlite3.connect(data_dir / DATABASE_NAME)
    try:
        connection.execute(
            "UPDATE event SET title = ? WHERE id = ?", (title, event_id)
        )
        connection.commit()
    finally:
        connection.close()


def test_event_show_shows_an_event_whose_mail_cannot_be_rendered(
    mailgate: Mailgate, company: Company, data_dir: Path
) -> None:
    """The event and its history are shown; the mail part says why not."""
    made = mailgate(
        *_commands(company, "Fine at first")["event-title"],
        "--json",
        actor=company.community_manager,
    ).json()
    _store_title(data_dir, made["id"], "line1\nBcc: evil@example.net")

    shown = mailgate("event", "show", str(made["id"]))
    document = mailgate("event", "show", str(made["id"]), "--json").json()
    raw = mailgate("event", "show", str(made["id"]), "--raw", ok=False)

    assert f"Event {made['id']}:" in shown.stdout
    assert "History:" in shown.stdout
    assert "As it will be sent: cannot render it:" in shown.stdout
    assert document["title"] == "line1\nBcc: evil@example.net"
    assert "linefeed" in document["outgoing_mail"]["error"]
    assert document["history"]
    assert raw.exit_code == 1
    assert len(raw.error.splitlines()) == 1, raw.error
    assert "cannot read the message" in raw.error


def test_an_inbound_subject_with_encoded_control_characters_is_one_line() -> (
    None
):
    """Encoded-words may hide a line break or a NUL: they become spaces."""
    raw = (
        b"From: =?utf-8?q?Ann=0ABcc=3A_x?= <ann@customer.example>\r\n"
        b"To: support@nexedi.com\r\n"
        b"Subject: =?utf-8?q?line1=0ABcc=3A_evil=00@example.net?=\r\n"
        b"Message-ID: <one-line@customer.example>\r\n"
        b"\r\n"
        b"Hello\r\n"
    )

    parsed = parse_message(raw)

    assert parsed.title == "line1 Bcc: evil @example.net"
    assert parsed.sender is not None
    assert parsed.sender.name == "Ann Bcc: x"
