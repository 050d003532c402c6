"""``mailgate serve``: the whole daemon as a process of its own.

The daemon runs as ``python -m gateway serve`` on a free loopback port,
with JSON logs on stderr; the test waits for its ``server.started`` event,
talks SMTP to it, stops it with SIGTERM and reads the store it wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from gateway.crm.events import get_event
from gateway.store import Store

if TYPE_CHECKING:
    from conftest import Mailgate

MESSAGE = (
    b"From: Laura Beispiel <laura@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Delivery delay for order 4711\r\n"
    b"Message-ID: <serve.1@mail.example.org>\r\n"
    b"\r\n"
    b"Where is my order?\r\n"
)


@pytest.fixture
def example(mailgate: Mailgate) -> None:
    """example.com, ours, with the Support mailbox."""
    mailgate("org", "add", "Example", "--domain", "example.com", "--internal")
    mailgate(
        "org",
        "add",
        "Support",
        "--parent",
        "Example",
        "--mailbox",
        "support@example.com",
    )


def _free_port() -> int:
    """Return a loopback port the system just had free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def _serving(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``mailgate serve`` on port; yield it once it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        env={
            **os.environ,
            "MAILGATE_SMTP_PORT": str(port),
            "MAILGATE_SMTP_HOSTNAME": "gateway.example.com",
            "MAILGATE_LOG_FORMAT": "json",
            "MAILGATE_LOG_LEVEL": "info",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _log_event(
    process: asyncio.subprocess.Process,
    wanted: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Read the process's JSON log until an event is wanted; return it."""
    assert process.stderr is not None
    while line := await asyncio.wait_for(process.stderr.readline(), 30):
        entry: dict[str, Any] = json.loads(line)
        if wanted(entry):
            return entry

    raise AssertionError("mailgate serve ended before the event came")


def _send(port: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        client.mail("laura@example.org")
        client.rcpt("support@example.com")
        return client.data(MESSAGE)


async def test_serve_takes_mail_and_stops_cleanly_on_sigterm(
    store: Store, example: None
) -> None:
    """One message over SMTP is stored; SIGTERM ends the process with 0."""
    port = _free_port()

    async with _serving(port) as process:
        started = await _log_event(
            process, lambda e: e["event"] == "server.started"
        )
        assert started["listeners"] == {"smtp": port}

        code, _ = await asyncio.to_thread(_send, port)
        assert code == 250

        process.send_signal(signal.SIGTERM)
        await _log_event(process, lambda e: e["event"] == "server.stopped")
        assert await asyncio.wait_for(process.wait(), 30) == 0

    async with (
        store.reading() as db,
        db.execute(
            "SELECT id FROM event WHERE message_id = ?",
            ("<serve.1@mail.example.org>",),
        ) as cursor,
    ):
        [(event_id,)] = await cursor.fetchall()
        event = await get_event(db, event_id)
    assert (event.direction, event.state) == ("incoming", "received")


async def test_serve_on_a_port_in_use_says_so_and_exits_1(
    store: Store, example: None
) -> None:
    """A port another program holds: one line on stderr, exit code 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])

        async with _serving(port) as process:
            assert await asyncio.wait_for(process.wait(), 30) == 1
            assert process.stderr is not None
            error = (await process.stderr.read()).decode()

    assert "cannot start" in error
