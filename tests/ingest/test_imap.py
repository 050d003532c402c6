"""The IMAP poller against a real Dovecot: nothing lost, nothing twice.

One Dovecot runs for the session; every test has a user of its own, so
no test sees another's mail. Messages go in over IMAP APPEND, as a mail
server would deliver them, and the poller runs on the test's loop over a
real SQLite store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
)
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from gateway.crm.contacts import add_organisation
from gateway.ingest import imap, imap_session
from gateway.ingest.imap import Poller
from gateway.ingest.imap_state import Place, read_place
from gateway.ingest.pipeline import Delivery, Ingestor
from gateway.server import Daemon
from gateway.settings import (
    ImapMailboxSettings,
    ImapSettings,
    Settings,
    SettingsError,
    SmtpSettings,
    load_settings,
)
from gateway.store import Store, StoreUnavailable

from .dovecot import (
    REQUIRE_VARIABLE,
    Account,
    Dovecot,
    imap_client,
    missing_reason,
    running_dovecot,
)

pytestmark = pytest.mark.dovecot

T = TypeVar("T")

SUPPORT = "support@example.com"
CRASH_SCRIPT = Path(__file__).with_name("imap_crash.py")

Logs = list[MutableMapping[str, Any]]


def _need_dovecot() -> None:
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A Dovecot on a loopback port, without TLS, for the whole session."""
    _need_dovecot()
    with running_dovecot() as server:
        yield server


@pytest.fixture(scope="session")
def tls_dovecot() -> Iterator[Dovecot]:
    """A Dovecot with a self-signed certificate: IMAPS and STARTTLS."""
    _need_dovecot()
    with running_dovecot(tls=True) as server:
        yield server


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A user of its own, with an empty mailbox."""
    return dovecot.add_account()


@pytest.fixture
async def ours(store: Store) -> Store:
    """The store, with our organisation: example.com and support@."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        await add_organisation(
            db, "Support", parent="Example", addresses=[SUPPORT]
        )

    return store


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Every structlog event of the test, debug included."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def mailbox(server: Dovecot, account: Account, **overrides: Any) -> Any:
    """Return the settings of a mailbox for account, as TOML would."""
    return {
        "name": "support",
        "host": server.host,
        "port": server.port,
        "tls": "none",
        "user": account.user,
        "password": account.password,
        "address": SUPPORT,
        "timeout_seconds": 5,
        "reconnect_max_seconds": 1,
        **overrides,
    }


def message(number: int, *, sender: str = "ann@customer.example") -> bytes:
    """Return a small message from a customer to support@."""
    return (
        f"From: Ann <{sender}>\r\n"
        f"To: {SUPPORT}\r\n"
        f"Subject: Question {number}\r\n"
        f"Message-ID: <question-{number}@customer.example>\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:0{number % 10} +0000\r\n"
        f"\r\n"
        f"Hello, question {number}.\r\n"
    ).encode()


@asynccontextmanager
async def polling(
    store: Store, data: dict[str, Any], **options: Any
) -> AsyncIterator[Poller]:
    """Run a poller on this loop for the block, then stop it."""
    settings = ImapMailboxSettings.model_validate(data)
    poller = Poller(settings, store, **options)
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        poller.stop()
        await asyncio.wait_for(task, 15)


async def eventually(
    probe: Callable[[], Awaitable[T]], timeout: float = 10.0
) -> T:
    """Return probe's first true result; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {result!r}")
        await asyncio.sleep(0.01)


def count(logs: Logs, name: str) -> int:
    """Return how many times an event was logged."""
    return sum(1 for entry in logs if entry["event"] == name)


def logged(logs: Logs, name: str, times: int = 1) -> Callable[[], Any]:
    """Return a probe: has the event been logged that many times?"""

    async def probe() -> bool:
        return count(logs, name) >= times

    return probe


async def events(store: Store) -> list[str]:
    """Return the Message-ID of every event, in creation order."""
    async with (
        store.reading() as db,
        db.execute("SELECT message_id FROM event ORDER BY id") as cursor,
    ):
        return [row[0] for row in await cursor.fetchall()]


def event_count(store: Store, expected: int) -> Callable[[], Any]:
    """Return a probe: are there that many events?"""

    async def probe() -> bool:
        return len(await events(store)) == expected

    return probe


async def place(store: Store) -> Place | None:
    """Return the poller's saved place in the "support" mailbox."""
    async with store.reading() as db:
        return await read_place(db, "support")


async def last_uid(store: Store) -> int | None:
    """Return the highest UID the poller has passed, if it saved any."""
    found = await place(store)

    return None if found is None else found.last_uid


async def flags(
    server: Dovecot, account: Account, folder: str = "INBOX"
) -> dict[int, set[str]]:
    """Return the flags of each message in a folder, by UID."""
    async with imap_client(server, account) as client:
        return await client.flags(folder)


async def append(
    server: Dovecot, account: Account, *raws: bytes, **options: Any
) -> list[int]:
    """APPEND messages to a folder as a mail server would; return UIDs."""
    async with imap_client(server, account) as client:
        return [await client.append(raw, **options) for raw in raws]


async def imap_check(
    mailgate: Any, tmp_path: Path, data: dict[str, Any]
) -> Any:
    """Run ``mailgate imap check support --json`` on a configuration."""
    config = tmp_path / "imap.toml"
    lines = ["[[imap.mailboxes]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in data.items()]
    config.write_text("\n".join(lines) + "\n")

    return await asyncio.to_thread(
        mailgate,
        "--config",
        str(config),
        "imap",
        "check",
        "support",
        "--json",
        ok=False,
    )


async def assert_clean(
    mailgate: Any, tmp_path: Path, data: dict[str, Any]
) -> Any:
    """Assert that ``imap check`` finds no message without an event."""
    outcome = await imap_check(mailgate, tmp_path, data)
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    report = outcome.json()
    assert report["missing"] == []

    return report


async def test_message_appended_while_idling_is_an_event_within_seconds(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """IDLE brings new mail in at once; "leave" leaves it unseen.

    Polling is set to an hour, so only IDLE can have brought it. (How fast
    is measured by the benchmark, not asserted here: the machine is
    shared.)
    """
    data = mailbox(
        dovecot, account, after_store="leave", poll_interval_seconds=3600
    )

    async with polling(ours, data):
        await eventually(logged(logs, "imap.idling"))
        async with imap_client(dovecot, account) as client:
            await client.append(message(1))
            await eventually(event_count(ours, 1), timeout=30)

    assert await events(ours) == ["<question-1@customer.example>"]
    assert "\\Seen" not in (await flags(dovecot, account))[1]
    assert await last_uid(ours) == 1
    await assert_clean(mailgate, tmp_path, data)


@pytest.mark.parametrize(
    ("action", "move_capability"),
    [("seen", True), ("move", True), ("move", False), ("delete", True)],
    ids=["seen", "move", "copy-expunge", "delete"],
)
async def test_after_store_action_is_done_on_the_server(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
    mailgate: Any,
    tmp_path: Path,
    action: str,
    move_capability: bool,
) -> None:
    """Seen flags, move moves (with or without MOVE), delete deletes."""
    if not move_capability:
        offered = imap_session.ImapSession._capable
        monkeypatch.setattr(
            imap_session.ImapSession,
            "_capable",
            lambda self, name: name != "MOVE" and offered(self, name),
        )
    data = mailbox(
        dovecot, account, after_store=action, move_to="Done", batch_size=2
    )
    await append(dovecot, account, message(1), message(2), message(3))

    async with polling(ours, data):
        await eventually(event_count(ours, 3))
        await eventually(logged(logs, "imap.idling"))

    inbox = await flags(dovecot, account)
    if action == "seen":
        assert [("\\Seen" in found) for found in inbox.values()] == [True] * 3
    else:
        assert inbox == {}
    if action == "move":
        assert len(await flags(dovecot, account, "Done")) == 3
    # Three messages in batches of two: two round-trips, two marks.
    assert count(logs, "imap.batch_stored") == 2
    await assert_clean(mailgate, tmp_path, data)


async def test_server_without_idle_is_polled_at_the_interval(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No IDLE offered: the poller looks again every poll interval."""
    monkeypatch.setattr(
        imap_session.ImapSession, "idle_supported", property(lambda _: False)
    )
    data = mailbox(dovecot, account, poll_interval_seconds=0.2)

    async with polling(ours, data):
        await eventually(logged(logs, "imap.connected"))
        await append(dovecot, account, message(1))
        await eventually(event_count(ours, 1), timeout=5)

    assert count(logs, "imap.idling") == 0


async def test_message_a_person_already_read_is_still_taken_in(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """Selection is by UID: a message flagged \\Seen is no exception."""
    data = mailbox(dovecot, account, after_store="leave")
    await append(dovecot, account, message(1), flags="(\\Seen)")
    await append(dovecot, account, message(2))

    async with polling(ours, data):
        await eventually(event_count(ours, 2))

    await assert_clean(mailgate, tmp_path, data)


async def test_poller_killed_between_commit_and_flag_stores_once_then_flags(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    data_dir: Path,
    logs: Logs,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """SIGKILL after the commit: the message stays; a rerun flags it."""
    data = mailbox(dovecot, account, after_store="seen")
    await append(dovecot, account, message(1))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CRASH_SCRIPT),
        json.dumps(data),
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    process.send_signal(signal.SIGKILL)
    await process.wait()

    assert line == b"committed 1 accepted\n"
    assert await events(ours) == ["<question-1@customer.example>"]
    assert "\\Seen" not in (await flags(dovecot, account))[1]

    async with polling(ours, data):
        await eventually(logged(logs, "imap.batch_stored"))

    assert await events(ours) == ["<question-1@customer.example>"]
    assert count(logs, "ingest.duplicate") == 1
    assert "\\Seen" in (await flags(dovecot, account))[1]
    await assert_clean(mailgate, tmp_path, data)


async def test_new_uidvalidity_starts_over_without_duplicates(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """A folder deleted and made again is read from the top, deduped."""
    data = mailbox(dovecot, account, folder="Shared")
    async with imap_client(dovecot, account) as client:
        await client.create("Shared")
        await client.append(message(1), folder="Shared")
        await client.append(message(2), folder="Shared")
        before = await client.uid_validity("Shared")

    async with polling(ours, data):
        await eventually(event_count(ours, 2))
        async with imap_client(dovecot, account) as client:
            await client.delete("Shared")
            await client.create("Shared")
            for number in (1, 2, 3):
                await client.append(message(number), folder="Shared")
            after = await client.uid_validity("Shared")

        async def caught_up() -> bool:
            return await place(ours) == Place(after, 3)

        await eventually(caught_up)

    assert after != before
    assert await events(ours) == [
        f"<question-{number}@customer.example>" for number in (1, 2, 3)
    ]
    assert count(logs, "imap.uid_validity_changed") == 1
    assert count(logs, "ingest.duplicate") == 2
    await assert_clean(mailgate, tmp_path, data)


async def test_dovecot_restarted_under_the_poller_is_survived(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """The connection is re-opened; the loss is logged once."""
    data = mailbox(dovecot, account)

    async with polling(ours, data):
        await eventually(logged(logs, "imap.idling"))
        await asyncio.to_thread(dovecot.stop)
        await eventually(logged(logs, "imap.connection_lost"))
        dovecot.start()
        await eventually(logged(logs, "imap.reconnected"))
        await append(dovecot, account, message(1))
        await eventually(event_count(ours, 1))

    assert count(logs, "imap.connection_lost") == 1
    assert count(logs, "imap.reconnected") == 1
    await assert_clean(mailgate, tmp_path, data)


async def test_unparsable_message_is_quarantined_and_poller_goes_on(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """The ingest path keeps it raw; the place moves past it."""
    data = mailbox(dovecot, account, after_store="seen")
    await append(dovecot, account, b"just some text\r\nwithout any header\r\n")
    await append(dovecot, account, message(2))

    async with polling(ours, data):
        await eventually(event_count(ours, 1))

        async def passed() -> bool:
            return await last_uid(ours) == 2

        await eventually(passed)

    async with (
        ours.reading() as db,
        db.execute("SELECT source, mailboxes FROM quarantine") as cursor,
    ):
        held = [tuple(row) for row in await cursor.fetchall()]
    assert held == [("imap", json.dumps([SUPPORT]))]
    inbox = await flags(dovecot, account)
    assert ["\\Seen" in found for found in inbox.values()] == [True, True]
    report = await assert_clean(mailgate, tmp_path, data)
    assert report["quarantined"] == [1]


async def test_store_unavailable_leaves_message_untouched_until_retry(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """No action on the server for a message the store could not take."""
    data = mailbox(dovecot, account, after_store="seen")
    await append(dovecot, account, message(1))
    ingest = Ingestor.ingest
    failures = iter([StoreUnavailable("disk full")])

    async def flaky(self: Ingestor, delivery: Delivery, **options: Any) -> Any:
        for failure in failures:
            turn = options.get("turn")
            if turn is not None:
                turn.give_up()
            raise failure
        return await ingest(self, delivery, **options)

    monkeypatch.setattr(Ingestor, "ingest", flaky)

    async with polling(ours, data):
        await eventually(logged(logs, "imap.store_unavailable"))
        assert "\\Seen" not in (await flags(dovecot, account))[1]
        assert await last_uid(ours) == 0
        await eventually(event_count(ours, 1))
        await eventually(logged(logs, "imap.batch_stored"))

    assert "\\Seen" in (await flags(dovecot, account))[1]
    await assert_clean(mailgate, tmp_path, data)


def record_steps(
    monkeypatch: pytest.MonkeyPatch, steps: list[tuple[str, int]]
) -> None:
    """Log each fetch, \\Seen flag and saved place, by UID, in order."""
    fetch = imap_session.ImapSession.fetch
    flag_seen = imap_session.ImapSession.flag_seen
    save_place = imap.save_place

    async def fetching(self: Any, uids: Any) -> Any:
        steps.extend(("fetch", uid) for uid in uids)
        return await fetch(self, uids)

    async def flagging(self: Any, uids: Any) -> None:
        await flag_seen(self, uids)
        steps.extend(("seen", uid) for uid in uids)

    async def saving(store: Store, name: str, server: str, at: Place) -> None:
        await save_place(store, name, server, at)
        steps.append(("place", at.last_uid))

    monkeypatch.setattr(imap_session.ImapSession, "fetch", fetching)
    monkeypatch.setattr(imap_session.ImapSession, "flag_seen", flagging)
    monkeypatch.setattr(imap, "save_place", saving)


async def test_next_batch_is_fetched_while_one_is_stored_in_order(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """Batch two is fetched before batch one is flagged; yet each message
    is flagged only after its commit, the place moves only past flagged
    messages, and the events are in UID order."""
    steps: list[tuple[str, int]] = []
    record_steps(monkeypatch, steps)

    async def committed(uid: int, outcome: Any) -> None:
        steps.append(("committed", uid))

    data = mailbox(dovecot, account, after_store="seen", batch_size=2)
    uids = await append(dovecot, account, *(message(n) for n in range(6)))

    async with polling(ours, data, after_commit=committed):
        await eventually(logged(logs, "imap.batch_stored", 3))

    assert steps.index(("fetch", uids[2])) < steps.index(("seen", uids[0]))
    for uid in uids:
        assert steps.index(("committed", uid)) < steps.index(("seen", uid))
    for position, (step, passed) in enumerate(steps):
        if step == "place":
            flagged = {uid for name, uid in steps[:position] if name == "seen"}
            assert {uid for uid in uids if uid <= passed} <= flagged
    assert [passed for step, passed in steps if step == "place"] == [
        uids[1],
        uids[3],
        uids[5],
    ]
    assert await events(ours) == [
        f"<question-{n}@customer.example>" for n in range(6)
    ]
    await assert_clean(mailgate, tmp_path, data)


async def test_failure_in_a_batch_leaves_the_next_one_unflagged(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """The store refuses a message of batch one: the batch being stored
    behind it is neither flagged nor passed; the retry stores every
    message once and flags it."""
    steps: list[tuple[str, int]] = []
    record_steps(monkeypatch, steps)
    ingest = Ingestor.ingest
    failures = iter([StoreUnavailable("disk full")])

    async def flaky(self: Ingestor, delivery: Delivery, **options: Any) -> Any:
        if b"question-1@" in delivery.raw:
            for failure in failures:
                turn = options.get("turn")
                if turn is not None:
                    turn.give_up()
                raise failure
        return await ingest(self, delivery, **options)

    monkeypatch.setattr(Ingestor, "ingest", flaky)
    data = mailbox(dovecot, account, after_store="seen", batch_size=2)
    uids = await append(dovecot, account, *(message(n) for n in range(4)))

    async with polling(ours, data):
        await eventually(logged(logs, "imap.store_unavailable"))
        failed_at = len(steps)
        await eventually(logged(logs, "imap.batch_stored", 2))

    first_round = steps[:failed_at]
    assert ("seen", uids[0]) in first_round
    assert ("place", uids[0]) in first_round
    assert ("fetch", uids[2]) in first_round
    for uid in uids[1:]:
        assert ("seen", uid) not in first_round
    assert [step for step in first_round if step[0] == "place"] == [
        ("place", uids[0])
    ]
    assert sorted(await events(ours)) == [
        f"<question-{n}@customer.example>" for n in range(4)
    ]
    assert await last_uid(ours) == uids[3]
    inbox = await flags(dovecot, account)
    assert all("\\Seen" in inbox[uid] for uid in uids)
    await assert_clean(mailgate, tmp_path, data)


async def test_mail_for_an_address_not_ours_waits_on_the_server(
    ours: Store, dovecot: Dovecot, account: Account, logs: Logs
) -> None:
    """Nothing is taken in, flagged or quarantined until the address is ours.

    Once an organisation of ours owns the address, the poller takes the
    message in without being restarted.
    """
    desk = "desk@elsewhere.example"
    await append(dovecot, account, message(1))

    async with polling(
        ours, mailbox(dovecot, account, address=desk, after_store="seen")
    ):
        await eventually(logged(logs, "imap.address_not_ours"))
        assert "\\Seen" not in (await flags(dovecot, account))[1]
        assert await events(ours) == []
        async with ours.reading() as db:
            held = await db.execute_fetchall("SELECT id FROM quarantine")
        assert list(held) == []

        async with ours.transaction() as db:
            await add_organisation(
                db, "Desk", parent="Example", addresses=[desk]
            )
        await eventually(event_count(ours, 1))
        await eventually(logged(logs, "imap.batch_stored"))

    assert "\\Seen" in (await flags(dovecot, account))[1]


async def test_same_message_by_smtp_and_imap_is_one_event(
    ours: Store, dovecot: Dovecot, account: Account, logs: Logs
) -> None:
    """The IMAP copy of a message that came by SMTP is a redelivery."""
    received = b"Received: from mx.customer.example by gateway\r\n"
    await Ingestor(ours).ingest(
        Delivery(received + message(1), mailboxes=(SUPPORT,), source="smtp")
    )
    await append(dovecot, account, message(1))

    async with polling(ours, mailbox(dovecot, account)):
        await eventually(logged(logs, "imap.batch_stored"))

    assert await events(ours) == ["<question-1@customer.example>"]
    assert count(logs, "ingest.duplicate") == 1


async def test_imap_check_lists_messages_without_event(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """Exit 1 and the message's UID, Message-ID and sender."""
    data = mailbox(dovecot, account)
    await append(dovecot, account, message(1))

    outcome = await imap_check(mailgate, tmp_path, data)

    assert outcome.exit_code == 1
    assert outcome.json()["missing"] == [
        {
            "uid": 1,
            "message_id": "<question-1@customer.example>",
            "sender": "ann@customer.example",
        }
    ]

    async with polling(ours, data):
        await eventually(event_count(ours, 1))
    config = tmp_path / "imap.toml"
    text = await asyncio.to_thread(
        mailgate, "--config", str(config), "imap", "check", "support"
    )
    assert text.stdout.strip() == "(none)"


async def test_imap_check_of_an_unknown_mailbox_is_an_error(
    mailgate: Any,
) -> None:
    """A name that no [[imap.mailboxes]] table has: one line, exit 1."""
    outcome = await asyncio.to_thread(
        mailgate, "imap", "check", "nowhere", ok=False
    )

    assert outcome.exit_code == 1
    assert "no IMAP mailbox named 'nowhere'" in outcome.error


async def test_imap_check_matches_messages_without_message_id(
    ours: Store,
    dovecot: Dovecot,
    account: Account,
    mailgate: Any,
    tmp_path: Path,
) -> None:
    """A message without Message-ID is matched by its substitute id."""
    data = mailbox(dovecot, account)
    raw = b"".join(
        line
        for line in message(1).splitlines(keepends=True)
        if not line.startswith(b"Message-ID")
    )
    received = b"Received: from mx.customer.example by gateway\r\n"
    await Ingestor(ours).ingest(
        Delivery(received + raw, mailboxes=(SUPPORT,), source="smtp")
    )
    await append(dovecot, account, raw)

    await assert_clean(mailgate, tmp_path, data)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_poller_speaks_tls(
    ours: Store, tls_dovecot: Dovecot, tls: str
) -> None:
    """Implicit TLS and STARTTLS, the server's certificate checked."""
    account = tls_dovecot.add_account()
    data = mailbox(
        tls_dovecot,
        account,
        tls=tls,
        host="127.0.0.1",
        port=tls_dovecot.tls_port if tls == "implicit" else tls_dovecot.port,
        tls_ca_file=str(tls_dovecot.certificate),
    )
    await append(tls_dovecot, account, message(1))

    async with polling(ours, data):
        await eventually(event_count(ours, 1))


async def test_untrusted_certificate_is_refused(
    ours: Store, tls_dovecot: Dovecot, logs: Logs
) -> None:
    """Without the authority, the TLS handshake fails: nothing is sent."""
    account = tls_dovecot.add_account()
    data = mailbox(
        tls_dovecot, account, tls="implicit", port=tls_dovecot.tls_port
    )

    async with polling(ours, data):
        await eventually(logged(logs, "imap.connect_failed"))

    failure = next(e for e in logs if e["event"] == "imap.connect_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in failure["error"]


async def test_serve_runs_a_poller_per_mailbox(
    ours: Store,
    settings: Settings,
    dovecot: Dovecot,
    account: Account,
) -> None:
    """The daemon starts the pollers and stops them gracefully."""
    configured = settings.model_copy(
        update={
            "smtp": SmtpSettings(enabled=False),
            "imap": ImapSettings(
                mailboxes=(
                    ImapMailboxSettings.model_validate(
                        mailbox(dovecot, account)
                    ),
                )
            ),
        }
    )
    await append(dovecot, account, message(1))
    daemon = Daemon(configured, ours)

    await daemon.start()
    await eventually(event_count(ours, 1))
    daemon.stop()
    await asyncio.wait_for(daemon.wait(), 10)

    assert all(item.task.done() for item in daemon.pollers)


def remote(**changes: object) -> ImapMailboxSettings:
    """Validate the settings of a mailbox on a remote server."""
    data: dict[str, object] = {
        "name": "support",
        "host": "imap.example.com",
        "user": "support",
        "password": "secret",
        "address": SUPPORT,
    }
    data.update(changes)

    return ImapMailboxSettings.model_validate(
        {key: value for key, value in data.items() if value is not None}
    )


def test_tls_none_is_refused_for_a_remote_host() -> None:
    """Passwords in clear text only cross the loopback interface."""
    with pytest.raises(ValidationError, match="loopback"):
        remote(tls="none")


@pytest.mark.parametrize(
    "sources",
    [{"password": None}, {"password_env": "IMAP_PASSWORD"}],
    ids=["none", "two"],
)
def test_exactly_one_password_source(sources: dict[str, object]) -> None:
    """password, password_file and password_env exclude each other."""
    with pytest.raises(ValidationError, match="exactly one"):
        remote(**sources)


def test_folder_names_outside_ascii_are_refused() -> None:
    """Modified UTF-7 is not spoken: a clear error, not a wrong folder."""
    with pytest.raises(ValidationError, match="ASCII"):
        remote(folder="Boîte")


def test_move_needs_a_folder() -> None:
    """after_store = "move" without move_to is a settings error."""
    with pytest.raises(ValidationError, match="move_to"):
        remote(after_store="move")


def test_password_file_and_environment_are_read_at_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's final newline is dropped; a missing variable is an error."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")

    from_file = remote(password=None, password_file=secret)
    from_environment = remote(password=None, password_env="IMAP_PW")

    assert from_file.read_password() == "s3cret"
    with pytest.raises(SettingsError, match="IMAP_PW"):
        from_environment.read_password()
    monkeypatch.setenv("IMAP_PW", "other")
    assert from_environment.read_password() == "other"


def test_settings_error_never_shows_the_password(
    tmp_path: Path, data_dir: Path
) -> None:
    """A wrong mailbox is named in one line, its password masked."""
    config = tmp_path / "mailgate.toml"
    config.write_text(
        "[[imap.mailboxes]]\n"
        'name = "support"\nhost = "imap.example.com"\ntls = "none"\n'
        'user = "support"\npassword = "hunter2"\n'
        f'address = "{SUPPORT}"\n'
    )

    with pytest.raises(SettingsError) as caught:
        load_settings(config)

    assert "imap.mailboxes.0" in str(caught.value)
    assert "hunter2" not in str(caught.value)
