"""The store: its schema and migrations, transactions, blobs, durability."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from gateway.settings import Settings
from gateway.store import Store, StoreUnavailable
from gateway.store.blobs import BlobStore
from gateway.store.database import (
    BACKSTOP_CHECKPOINT_PAGES,
    CHECKPOINT_EVERY_COMMITS,
    DATABASE_NAME,
)
from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from conftest import Company, Dump, Mailgate, MailgateProcess

TABLES = {
    "contact",
    "contact_address",
    "contact_role",
    "organisation_domain",
    "ticket",
    "event",
    "event_recipient",
    "event_assignee",
    "attachment",
    "history",
    "open_delivery",
}


def _connect(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / DATABASE_NAME)


def _user_version(data_dir: Path) -> int:
    connection = _connect(data_dir)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


async def test_the_data_directory_is_created_on_first_use(
    settings: Settings, data_dir: Path
) -> None:
    """Opening the store makes the data directory and the database."""
    assert not data_dir.exists()

    store = await Store.open(settings.store)
    await store.close()

    assert (data_dir / DATABASE_NAME).is_file()


async def test_a_new_store_has_every_migration_applied(
    settings: Settings, data_dir: Path
) -> None:
    """The schema version is the number of migrations; the tables exist."""
    with capture_logs() as logs:
        store = await Store.open(settings.store)
        await store.close()

    assert len(MIGRATIONS) == SCHEMA_VERSION
    assert _user_version(data_dir) == SCHEMA_VERSION
    connection = _connect(data_dir)
    names = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    connection.close()
    assert names >= TABLES
    assert [
        entry["schema_version"]
        for entry in logs
        if entry["event"] == "store.migrated"
    ] == list(range(1, SCHEMA_VERSION + 1))


async def test_reopening_the_store_migrates_nothing(
    settings: Settings, data_dir: Path
) -> None:
    """A store at the current version is opened as it is."""
    store = await Store.open(settings.store)
    await store.close()

    with capture_logs() as logs:
        store = await Store.open(settings.store)
        await store.close()

    assert [e for e in logs if e["event"] == "store.migrated"] == []
    assert _user_version(data_dir) == SCHEMA_VERSION


async def test_stores_opened_at_once_on_first_use_all_open(
    settings: Settings, data_dir: Path
) -> None:
    """Concurrent first opens migrate once; none trips on the other's."""
    with capture_logs() as logs:
        opened = await asyncio.gather(
            *(Store.open(settings.store) for _ in range(4))
        )
    for store in opened:
        await store.close()

    assert _user_version(data_dir) == SCHEMA_VERSION
    assert [
        entry["schema_version"]
        for entry in logs
        if entry["event"] == "store.migrated"
    ] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_store_newer_than_the_program_is_refused(
    settings: Settings, data_dir: Path
) -> None:
    """A schema version above ours is not touched: StoreUnavailable."""
    store = await Store.open(settings.store)
    await store.close()
    connection = _connect(data_dir)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()

    with pytest.raises(StoreUnavailable, match="newer than this mailgate"):
        await Store.open(settings.store)

    assert _user_version(data_dir) == SCHEMA_VERSION + 1


def test_the_cli_refuses_a_newer_store_with_one_line(
    mailgate: Mailgate, data_dir: Path
) -> None:
    """The command stops with a line saying to upgrade, not a traceback."""
    mailgate("contact", "list")
    connection = _connect(data_dir)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()

    refused = mailgate("contact", "list", ok=False)

    assert refused.exit_code == 1
    assert len(refused.error.splitlines()) == 1
    assert "newer than this mailgate" in refused.error
    assert "upgrade mailgate" in refused.error


def _connection_threads() -> set[threading.Thread]:
    """Return the live aiosqlite connection threads of this process."""
    return {
        thread
        for thread in threading.enumerate()
        if "_connection_worker_thread" in thread.name
    }


def _spoil(data_dir: Path, how: str) -> None:
    """Make the store in data_dir one that SQLite cannot open, as root too.

    chmod stops no write by root, which the tests may run as: a database
    file that is no database fails at the first statement that reads it
    (as a read-only directory does), and a directory in its place fails
    at the connection itself.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    database = data_dir / DATABASE_NAME
    if how == "not-a-database":
        database.write_bytes(bytes(range(256)) * 64)
    else:
        database.mkdir()


@pytest.mark.parametrize("how", ["not-a-database", "a-directory"])
async def test_a_store_that_cannot_be_opened_leaves_no_thread(
    settings: Settings, data_dir: Path, how: str
) -> None:
    """StoreUnavailable, and every connection opened on the way is closed."""
    _spoil(data_dir, how)
    before = _connection_threads()

    with pytest.raises(StoreUnavailable, match="cannot open the store"):
        await Store.open(settings.store)

    assert _connection_threads() == before


@pytest.mark.parametrize("how", ["not-a-database", "a-directory"])
def test_the_cli_exits_with_one_line_on_a_store_it_cannot_open(
    data_dir: Path, how: str
) -> None:
    """The console script ends (no hang, no traceback) with exit code 1."""
    _spoil(data_dir, how)

    ended = subprocess.run(
        [sys.executable, "-m", "gateway", "contact", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert ended.returncode == 1
    assert len(ended.stderr.strip().splitlines()) == 1, ended.stderr
    assert "cannot open the store in" in ended.stderr


def test_the_cli_exits_on_a_read_only_data_directory(
    mailgate: Mailgate, data_dir: Path, tmp_path: Path
) -> None:
    """A store on a read-only mount: one line and exit code 1, no hang.

    The mount is a read-only bind mount in a private mount namespace,
    which needs root (or the capability); without it the test is skipped.
    """
    mailgate("contact", "list")
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    script = (
        f"mount --bind -o ro {data_dir} {mount_point} && "
        f"exec {sys.executable} -m gateway contact list"
    )
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro / {mount_point}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("no read-only bind mount here (needs root)")

    ended = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "MAILGATE_STORE_DATA_DIR": str(mount_point)},
    )

    assert ended.returncode == 1
    assert len(ended.stderr.strip().splitlines()) == 1, ended.stderr
    assert "cannot open the store in" in ended.stderr


async def test_the_database_is_in_wal_mode(
    settings: Settings, data_dir: Path
) -> None:
    """Readers see the last commit while a writer works: WAL."""
    store = await Store.open(settings.store)
    await store.close()

    connection = _connect(data_dir)
    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert mode == "wal"


async def test_statements_in_transactions_and_reads_run_inline(
    store: Store,
) -> None:
    """Inside a transaction or a read, no statement goes to a thread.

    This holds only while aiosqlite routes every call through the method
    the store overrides; a new aiosqlite that does not fails here.
    """
    loop_thread = threading.get_ident()

    async with store.transaction() as db:
        await db.create_function("caller_thread", 0, threading.get_ident)
        written = await db.execute_fetchall("SELECT caller_thread()")
    async with store.reading() as db:
        await db.create_function("caller_thread", 0, threading.get_ident)
        read = await db.execute_fetchall("SELECT caller_thread()")

    assert [tuple(row) for row in written] == [(loop_thread,)]
    assert [tuple(row) for row in read] == [(loop_thread,)]


async def test_waiting_for_another_writer_leaves_the_loop_free(
    store: Store, data_dir: Path
) -> None:
    """While another process holds the write lock, the loop keeps running.

    The transaction starts once the lock is released, and commits.
    """
    other = sqlite3.connect(data_dir / DATABASE_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO contact (kind, name, created_at) "
                "VALUES ('person', 'Late', 'now')"
            )

    writing = asyncio.create_task(write())
    ticks = 0
    while ticks < 20:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writing.done()
    other.execute("COMMIT")
    other.close()
    await writing

    async with store.reading() as db:
        rows = await db.execute_fetchall("SELECT name FROM contact")
    assert [row[0] for row in rows] == ["Late"]


async def test_a_transaction_that_raises_leaves_nothing(
    store: Store,
) -> None:
    """Every write of a failed transaction is rolled back; the error stays."""

    class Failure(Exception):
        pass

    with pytest.raises(Failure):
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO contact (kind, name, created_at) "
                "VALUES ('person', 'Ghost', 'now')"
            )
            await db.execute(
                "INSERT INTO ticket (type, title, state, created_at) "
                "VALUES ('campaign', 'Ghost', 'draft', 'now')"
            )
            raise Failure

    async with store.reading() as db:
        for table in ("contact", "ticket"):
            async with db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            assert row[0] == 0


async def test_a_sqlite_fault_in_a_transaction_is_store_unavailable(
    store: Store,
) -> None:
    """An operational error (a retry may cure it) becomes StoreUnavailable."""
    with pytest.raises(StoreUnavailable):
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO contact (kind, name, created_at) "
                "VALUES ('person', 'Ghost', 'now')"
            )
            await db.execute("SELECT * FROM no_such_table")

    async with (
        store.reading() as db,
        db.execute("SELECT COUNT(*) FROM contact") as cursor,
    ):
        row = await cursor.fetchone()
    assert row is not None
    assert row[0] == 0


def test_a_command_that_fails_halfway_leaves_nothing(
    mailgate: Mailgate, company: Company, dump: Dump
) -> None:
    """A bad second recipient undoes the contact made for the first one."""
    before = dump()

    failed = mailgate(
        "event",
        "new",
        "note",
        "--from",
        company.sales,
        "--to",
        "new.person@elsewhere.example",
        "--to",
        "not an address",
        "--title",
        "Half made",
        actor=company.sales,
        ok=False,
    )

    assert failed.exit_code == 1
    assert "not a valid e-mail address" in failed.error
    assert dump() == before


async def test_blobs_are_named_by_their_sha256(tmp_path: Path) -> None:
    """A blob's name is the SHA-256 of its content, under a fan-out folder."""
    blobs = BlobStore(tmp_path / "blobs")
    data = b"Return-Path: <ann@customer.example>\r\n\r\nHello\r\n"

    digest = await blobs.put(data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert (
        blobs.path_of(digest) == tmp_path / "blobs" / digest[:2] / digest[2:]
    )
    assert blobs.read(digest) == data


async def test_storing_a_blob_twice_keeps_one_file(tmp_path: Path) -> None:
    """Putting the same content again returns the same digest, one file."""
    blobs = BlobStore(tmp_path / "blobs")

    first = await blobs.put(b"same")
    second = blobs.put_now(b"same")
    other = await blobs.put(b"other")

    assert first == second != other
    files = sorted(p for p in (tmp_path / "blobs").rglob("*") if p.is_file())
    assert files == sorted([blobs.path_of(first), blobs.path_of(other)])


async def test_a_blob_in_pieces_is_their_content_joined(
    tmp_path: Path,
) -> None:
    """Pieces are stored, and named, as the one content they make."""
    blobs = BlobStore(tmp_path / "blobs")
    trace = b"Received: from client.example.org\r\n"
    message = b"From: ann@customer.example\r\n\r\nHello\r\n"

    digest = await blobs.put(trace, message)

    assert digest == hashlib.sha256(trace + message).hexdigest()
    assert blobs.read(digest) == trace + message
    assert blobs.put_now(trace + message) == digest


def test_reading_a_missing_blob_raises(tmp_path: Path) -> None:
    """An unknown digest is FileNotFoundError, not empty content."""
    with pytest.raises(FileNotFoundError):
        BlobStore(tmp_path).read("ab" * 32)


# A long series of commands run in one process, as fast as it can, each
# one through the CLI's own entry point: one transaction per command. It
# prints "ID STATE" once a command has returned, that is once committed.
_SERIES = """
import contextlib, io, json, sys
from gateway.cli.main import main

actor, *recipients = sys.argv[1:]
to = [option for address in recipients for option in ("--to", address)]

def run(*arguments):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        main(["--as", actor, *arguments, "--json"], standalone_mode=False)
    event = json.loads(output.getvalue())
    print(event["id"], event["state"], flush=True)
    return event["id"]

for number in range(100_000):
    mail = run("event", "new", "mail-message", "--from", actor, *to,
               "--title", f"Mail {number}")
    run("event", "plan", str(mail))
    run("event", "cancel" if number % 3 == 0 else "confirm", str(mail))
    call = run("event", "new", "phone-call", "--from", actor, *to[:2],
               "--title", f"Call {number}")
    run("event", "send", str(call))
    run("event", "follow-up", str(call), "--new", "meeting",
        "--title", f"Meeting {number}")
"""


def _check_consistent(data_dir: Path) -> None:
    """Check the database after kills: whole, and no half-made object."""
    connection = _connect(data_dir)
    try:
        query = connection.execute
        assert query("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert query("PRAGMA foreign_key_check").fetchall() == []

        no_recipient = query(
            "SELECT id FROM event WHERE id NOT IN "
            "(SELECT event_id FROM event_recipient)"
        ).fetchall()
        assert no_recipient == []
        for kind in ("event", "ticket"):
            rows = query(
                f"SELECT o.id, o.state, "
                f"(SELECT transition || ' ' || IFNULL(state_before, '-') "
                f"FROM history h WHERE h.object_type = '{kind}' "
                f"AND h.object_id = o.id ORDER BY h.id LIMIT 1), "
                f"(SELECT state_after FROM history h WHERE h.object_type = "
                f"'{kind}' AND h.object_id = o.id ORDER BY h.id DESC "
                f"LIMIT 1) FROM {kind} o"
            ).fetchall()
            for object_id, state, first, last in rows:
                assert first == "create -", (kind, object_id)
                assert last == state, (kind, object_id)
            orphans = query(
                f"SELECT id FROM history WHERE object_type = '{kind}' "
                f"AND object_id NOT IN (SELECT id FROM {kind})"
            ).fetchall()
            assert orphans == []
    finally:
        connection.close()


def _states(data_dir: Path, event_id: int) -> list[str]:
    connection = _connect(data_dir)
    try:
        rows = connection.execute(
            "SELECT state_after FROM history WHERE object_type = 'event' "
            "AND object_id = ? ORDER BY id",
            (event_id,),
        ).fetchall()
    finally:
        connection.close()

    return [row[0] for row in rows]


def test_the_store_survives_being_killed_in_a_series_of_commands(
    mailgate: Mailgate, company: Company, data_dir: Path
) -> None:
    """SIGKILL at random points: whole database, every reported step kept."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    chance = random.Random(seed)
    recipients = [f"developer{n}@beta.example" for n in range(14)]
    arguments = [company.manager, *recipients]
    reported: list[tuple[int, str]] = []

    with tempfile.TemporaryFile() as errors:
        for _ in range(4):
            series = subprocess.Popen(
                [sys.executable, "-c", _SERIES, *arguments],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            assert series.stdout is not None
            try:
                for _ in range(chance.randint(1, 30)):
                    line = series.stdout.readline()
                    assert line, "the series stopped before it was killed"
                    event_id, state = line.split()
                    reported.append((int(event_id), state))
                # Let it run on for a moment, into the next command.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    series.wait(timeout=chance.uniform(0, 0.05))
            finally:
                os.kill(series.pid, signal.SIGKILL)
                series.wait()
                series.stdout.close()
            assert series.returncode == -signal.SIGKILL

            _check_consistent(data_dir)

        errors.seek(0)
        assert errors.read() == b""

    for event_id, state in reported:
        assert state in _states(data_dir, event_id), (event_id, state, seed)


def test_the_console_script_killed_while_it_runs_leaves_a_whole_store(
    mailgate: Mailgate,
    mailgate_process: MailgateProcess,
    company: Company,
    data_dir: Path,
) -> None:
    """python -m gateway killed at a random moment; the next command works."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    chance = random.Random(seed)
    recipients = [f"--to=developer{n}@beta.example" for n in range(14)]
    command = [
        sys.executable,
        "-m",
        "gateway",
        "--as",
        company.manager,
        "event",
        "new",
        "mail-message",
        "--from",
        company.manager,
        *recipients,
        "--title",
        "Killed or not",
    ]

    for _ in range(3):
        running = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.wait(timeout=chance.uniform(0.1, 0.8))
        running.send_signal(signal.SIGKILL)
        running.wait()

        _check_consistent(data_dir)

    listed = mailgate_process("event", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert all(
        event["title"] == "Killed or not"
        for event in json.loads(listed.stdout)
    )


async def test_the_wal_is_checkpointed_in_the_background(store: Store) -> None:
    """After enough commits the WAL is copied into the database on a
    connection of its own; the writer's own checkpoint is only a backstop
    at a larger size."""
    with capture_logs() as logs:
        for number in range(CHECKPOINT_EVERY_COMMITS):
            async with store.transaction() as db:
                await db.execute(
                    "INSERT INTO contact (kind, name, created_at) "
                    "VALUES ('person', ?, '2026-01-01T00:00:00Z')",
                    (f"person {number}",),
                )
        async with store.transaction() as db:
            rows = await db.execute_fetchall("PRAGMA wal_autocheckpoint")

        async def checkpointed() -> dict[str, object]:
            while True:
                for entry in logs:
                    if entry["event"] == "store.checkpointed":
                        return entry
                await asyncio.sleep(0.01)

        entry = await asyncio.wait_for(checkpointed(), timeout=10)

    assert [tuple(row) for row in rows] == [(BACKSTOP_CHECKPOINT_PAGES,)]
    assert isinstance(entry["frames"], int)
    assert entry["frames"] > 0
    assert entry["copied"] == entry["frames"]


async def test_closing_waits_for_a_background_checkpoint(
    settings: Settings,
) -> None:
    """The store closes cleanly while a checkpoint is under way, and every
    commit is in the database file once it is closed."""
    store = await Store.open(settings.store)
    for number in range(CHECKPOINT_EVERY_COMMITS):
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO contact (kind, name, created_at) "
                "VALUES ('person', ?, '2026-01-01T00:00:00Z')",
                (f"person {number}",),
            )

    await store.close()

    connection = _connect(settings.store.data_dir)
    try:
        count = connection.execute("SELECT COUNT(*) FROM contact").fetchone()
    finally:
        connection.close()
    assert count == (CHECKPOINT_EVERY_COMMITS,)
