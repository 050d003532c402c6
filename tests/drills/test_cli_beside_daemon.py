"""Drill: the CLI works while the daemon takes in mail at full speed."""

from __future__ import annotations

import json
import smtplib
import threading
from email.message import EmailMessage

from bench.servers import MailgateProcess

SENDERS = 4
MESSAGES_PER_SENDER = 40


def _send(port: int, sender: int, failures: list[str]) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            for number in range(MESSAGES_PER_SENDER):
                message = EmailMessage()
                message["From"] = f"sender{sender}@example.org"
                message["To"] = "support@example.com"
                message["Subject"] = f"load {sender}-{number}"
                message.set_content("x" * 500)
                smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        failures.append(repr(error))


def test_cli_and_daemon_never_see_a_locked_database(
    daemon: MailgateProcess,
) -> None:
    """Listing, delivering and worklists run beside full-speed ingest: no
    command fails, no 'database is locked', every message is answered 250."""
    created = daemon.cli(
        "contact",
        "add",
        "maria@example.com",
        "--name",
        "Maria",
        "--org",
        "Example",
        "--role",
        "manager",
    )
    assert created.returncode == 0, created.stderr
    daemon.start()
    failures: list[str] = []
    senders = [
        threading.Thread(target=_send, args=(daemon.port, n, failures))
        for n in range(SENDERS)
    ]
    for thread in senders:
        thread.start()

    outputs = []
    delivered = 0
    while any(thread.is_alive() for thread in senders) or delivered == 0:
        listed = daemon.cli("event", "list", "--state", "received", "--json")
        outputs.append(listed)
        outputs.append(daemon.cli("--as", "maria@example.com", "worklist"))
        received = json.loads(listed.stdout or "[]")
        if received:
            step = daemon.cli(
                "--as",
                "maria@example.com",
                "event",
                "deliver",
                str(received[-1]["id"]),
            )
            outputs.append(step)
            delivered += step.returncode == 0
    for thread in senders:
        thread.join(timeout=120)
    daemon.stop()

    assert failures == []
    for output in outputs:
        assert "locked" not in output.stderr
        assert output.returncode == 0, output.stderr
    assert delivered > 0
    total = daemon.cli("event", "list", "--limit", "100000", "--json")
    assert len(json.loads(total.stdout)) == SENDERS * MESSAGES_PER_SENDER
