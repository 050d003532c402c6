"""Drill: the data directory's disk fills up, then space comes back."""

from __future__ import annotations

import smtplib
import sqlite3
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from bench.servers import MailgateProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs file system, mounted for this test only."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> None:
    """Write zeros until the file system refuses."""
    with path.open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "customer@example.org"
    message["To"] = "support@example.com"
    message["Subject"] = "written while the disk was full"
    message["Message-ID"] = "<disk-full-drill@example.org>"
    message.set_content("please keep this\n" * 200)

    return message


def test_full_disk_answers_451_and_recovers(small_disk: Path) -> None:
    """With no space the listener answers 451 (the sender keeps the mail);
    once space is back the same message is stored, once."""
    daemon = MailgateProcess(small_disk / "data")
    daemon.cli(
        "org", "add", "Example", "--domain", "example.com", "--internal"
    ).check_returncode()
    daemon.start()
    try:
        filler = small_disk / "filler"
        _fill(filler)

        with (
            smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as smtp,
            pytest.raises(smtplib.SMTPDataError) as refused,
        ):
            smtp.send_message(_message())
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.3.0")

        filler.unlink()
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as smtp:
            assert smtp.send_message(_message()) == {}
    finally:
        daemon.stop()

    database = sqlite3.connect(small_disk / "data" / "mailgate.sqlite3")
    try:
        count = database.execute(
            "SELECT COUNT(*) FROM event WHERE message_id = ?",
            ("<disk-full-drill@example.org>",),
        ).fetchone()[0]
    finally:
        database.close()
    assert count == 1
