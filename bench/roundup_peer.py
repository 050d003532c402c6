"""The peer: Roundup's mail gateway against mailgate, on the same messages.

Roundup is not a dependency of mailgate and none of its code is kept
here: install it into a virtual environment of its own first (see
bench/README.md) and name that environment with ``--roundup``. A demo
tracker (classic template, SQLite backend) is made in a temporary folder;
anonymous mail may create users and issues, and Roundup's own outgoing
mail goes to a file. Roundup takes the messages in pipe mode (one
``roundup-mailgw TRACKER`` process per message, as an MTA would run it)
and in mailbox mode (one process for an mbox file). Mailgate takes them
with ``mailgate ingest`` (one process per message, its pipe-like mode)
and over SMTP from 16 connections, into a fresh store each. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mailbox
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.messages import Sample, make_samples
from bench.servers import MailgateProcess, mailgate

PIPE_TARGET = 50.0
MAILBOX_TARGET = 10.0


def make_tracker(roundup: Path, folder: Path) -> Path:
    """Install and initialise a classic SQLite tracker; return its home."""
    home = folder / "tracker"
    admin = str(roundup / "bin" / "roundup-admin")
    subprocess.run(
        [
            admin,
            "-i",
            str(home),
            "install",
            "classic",
            "sqlite",
            "mail_domain=example.com,tracker_web=http://localhost:8917/,"
            "mail_host=localhost",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [admin, "-i", str(home), "initialise", "secret"],
        check=True,
        capture_output=True,
    )
    # Let mail from unknown senders create their users (and issues), as a
    # public support address must; Roundup's own mail goes to a file.
    schema = home / "schema.py"
    schema.write_text(
        schema.read_text().replace(
            "#db.security.addPermissionToRole('Anonymous', 'Email Access')",
            "db.security.addPermissionToRole('Anonymous', 'Email Access')",
        )
    )
    config = home / "config.ini"
    lines = config.read_text().splitlines()
    section = ""
    for index, line in enumerate(lines):
        if line.startswith("["):
            section = line
        if section == "[mail]" and line.startswith("debug ="):
            lines[index] = f"debug = {folder / 'outgoing.txt'}"
    config.write_text("\n".join(lines) + "\n")

    return home


def issues(roundup: Path, home: Path) -> int:
    """Return how many issues the tracker holds."""
    admin = str(roundup / "bin" / "roundup-admin")
    listed = subprocess.run(
        [admin, "-i", str(home), "list", "issue"],
        check=True,
        capture_output=True,
        text=True,
    )

    return len(listed.stdout.splitlines())


def roundup_pipe(roundup: Path, samples: list[Sample]) -> float:
    """Pipe each message into its own roundup-mailgw; return seconds."""
    with tempfile.TemporaryDirectory() as folder:
        home = make_tracker(roundup, Path(folder))
        gateway = str(roundup / "bin" / "roundup-mailgw")
        started = time.perf_counter()
        for sample in samples:
            subprocess.run(
                [gateway, str(home)],
                input=sample.raw,
                check=True,
                capture_output=True,
            )
        seconds = time.perf_counter() - started
        assert issues(roundup, home) > 0

    return seconds


def roundup_mailbox(roundup: Path, samples: list[Sample]) -> float:
    """Hand one mbox of every message to roundup-mailgw; return seconds."""
    with tempfile.TemporaryDirectory() as folder:
        home = make_tracker(roundup, Path(folder))
        path = Path(folder) / "inbox.mbox"
        box = mailbox.mbox(path)
        for sample in samples:
            box.add(mailbox.mboxMessage(sample.raw))
        box.close()
        started = time.perf_counter()
        subprocess.run(
            [
                str(roundup / "bin" / "roundup-mailgw"),
                str(home),
                "mailbox",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - started
        assert issues(roundup, home) > 0

    return seconds


def mailgate_ingest(samples: list[Sample]) -> float:
    """Run ``mailgate ingest`` once per message; return seconds."""
    with tempfile.TemporaryDirectory() as folder:
        daemon = MailgateProcess(Path(folder) / "data")
        daemon.cli(
            "org", "add", "Example", "--domain", "example.com", "--internal"
        ).check_returncode()
        files = []
        for number, sample in enumerate(samples):
            path = Path(folder) / f"{number}.eml"
            path.write_bytes(sample.raw)
            files.append(path)
        started = time.perf_counter()
        for path in files:
            daemon.cli(
                "ingest", "--mailbox", "support@example.com", str(path)
            ).check_returncode()

        return time.perf_counter() - started


def mailgate_smtp(samples: list[Sample], connections: int) -> float:
    """Send the messages to ``mailgate serve``; return seconds."""
    with mailgate() as port:
        result = asyncio.run(run_load("127.0.0.1", port, samples, connections))
    assert result.failures == 0

    return result.seconds


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench roundup")
    parser.add_argument(
        "--roundup",
        type=Path,
        default=Path("/tmp/roundup-venv"),
        help="The virtual environment Roundup is installed in.",
    )
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)
    if not (options.roundup / "bin" / "roundup-mailgw").exists():
        sys.exit(f"no roundup-mailgw in {options.roundup}; see README.md")

    samples = make_samples(options.messages, 2 * 1024)
    count = len(samples)
    rates = {
        "roundup pipe": count / roundup_pipe(options.roundup, samples),
        "roundup mailbox": count / roundup_mailbox(options.roundup, samples),
        "mailgate ingest": count / mailgate_ingest(samples),
        "mailgate smtp x16": count / mailgate_smtp(samples, 16),
    }
    smtp = rates["mailgate smtp x16"]
    ratios = {
        "smtp / roundup pipe": smtp / rates["roundup pipe"],
        "smtp / roundup mailbox": smtp / rates["roundup mailbox"],
        "ingest / roundup pipe": (
            rates["mailgate ingest"] / rates["roundup pipe"]
        ),
    }

    print(f"{count} messages of about 2 KB")
    print(f"{'reader':<22} {'messages/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<22} {rate:>10.1f}")
    print(f"{'ratio':<22} {'x':>10}")
    for name, ratio in ratios.items():
        print(f"{name:<22} {ratio:>10.1f}")

    options.output.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "benchmark": "roundup",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "messages": count,
        "messages_per_second": rates,
        "ratios": ratios,
        "targets": {
            "smtp / roundup pipe": PIPE_TARGET,
            "smtp / roundup mailbox": MAILBOX_TARGET,
        },
    }
    path = options.output / "roundup.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
