"""Drill: the daemon killed under 16 sending clients loses and doubles none."""

from __future__ import annotations

import smtplib
import sqlite3
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

from bench.servers import MailgateProcess

CLIENTS = 16
MESSAGES_PER_CLIENT = 15


def _message(client: int, number: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"client{client}@example.org"
    message["To"] = "support@example.com"
    message["Subject"] = f"drill {client}-{number}"
    message["Message-ID"] = make_msgid(
        f"drill{client}x{number}", "example.org"
    )
    message.set_content(f"message {number} of client {client}\n" * 20)

    return message


class Client:
    """One sending client: what it sent, what was answered 250."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.messages = [
            _message(number, index) for index in range(MESSAGES_PER_CLIENT)
        ]
        self.accepted: set[str] = set()

    def send_all(self, port_of: list[int], stop: threading.Event) -> None:
        """Send every message not yet answered 250, over one connection."""
        pending = [
            m for m in self.messages if m["Message-ID"] not in self.accepted
        ]
        try:
            with smtplib.SMTP("127.0.0.1", port_of[0], timeout=30) as smtp:
                for message in pending:
                    if stop.is_set():
                        return
                    smtp.send_message(message)
                    self.accepted.add(message["Message-ID"])
        except (OSError, smtplib.SMTPException):
            return


def _event_counts(daemon: MailgateProcess) -> dict[str, int]:
    database = sqlite3.connect(daemon.data_dir / "mailgate.sqlite3")
    try:
        rows = database.execute(
            "SELECT message_id, COUNT(*) FROM event GROUP BY message_id"
        ).fetchall()
    finally:
        database.close()

    return {str(row[0]): int(row[1]) for row in rows}


def test_every_accepted_message_has_one_event_after_sigkill(
    daemon: MailgateProcess,
) -> None:
    """A message answered 250 before the kill has exactly one event after it;
    clients that got no answer send again, and still nothing is doubled."""
    port_of = [daemon.start()]
    clients = [Client(number) for number in range(CLIENTS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=client.send_all, args=(port_of, stop))
        for client in clients
    ]
    for thread in threads:
        thread.start()

    # Kill once some, but not all, messages have been answered.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(len(c.accepted) for c in clients) >= CLIENTS * 3:
            break
        time.sleep(0.01)
    daemon.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    accepted_before = {mid for c in clients for mid in c.accepted}
    counts = _event_counts(daemon)
    assert accepted_before, "the drill killed the daemon before any 250"
    assert all(counts.get(mid) == 1 for mid in accepted_before)

    # The clients resend what got no 250, to the restarted daemon.
    port_of[0] = daemon.start()
    resend = threading.Event()
    threads = [
        threading.Thread(target=client.send_all, args=(port_of, resend))
        for client in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert daemon.stop() == 0

    counts = _event_counts(daemon)
    every = {m["Message-ID"] for c in clients for m in c.messages}
    assert {mid for c in clients for mid in c.accepted} == every
    assert {mid: counts.get(mid) for mid in every} == dict.fromkeys(every, 1)
