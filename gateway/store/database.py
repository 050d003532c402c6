"""The store's SQLite connections, transactions and data directory.

One writer connection, guarded by a lock so that one transaction runs at a
time in this process, and one reader connection, which in WAL mode sees the
last committed state while a write is under way. A third connection,
opened once a busy store needs it, copies the WAL into the database in the
background. Other processes (the CLI beside the daemon) wait up to
``busy_timeout_ms`` for the write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from gateway.settings import StoreSettings
from gateway.store.blobs import BlobStore
from gateway.store.group_commit import GroupCommitter
from gateway.store.schema import NewerSchema, migrate

logger = structlog.get_logger(__name__)

DATABASE_NAME = "mailgate.sqlite3"

# SQLite's own checkpoint runs inside the COMMIT that crosses its
# threshold, so the messages of that group wait for it (copying the WAL
# into the database and an fsync) before their 250. The store checkpoints
# in the background instead, on a connection of its own, once this many
# commits have gone by; the writer's automatic checkpoint, at a larger
# size (pages), stays as a backstop.
CHECKPOINT_EVERY_COMMITS = 32
BACKSTOP_CHECKPOINT_PAGES = 4000


class StoreUnavailable(Exception):
    """The store cannot be written now (locked, read-only, disk full...).

    The caller should answer so that the work is retried later.
    """


class Store:
    """The event store of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        writer: _Connection,
        reader: _Connection,
        busy_timeout_ms: int,
    ) -> None:
        self.data_dir = data_dir
        self._busy_timeout_ms = busy_timeout_ms
        self.blobs = BlobStore(data_dir / "blobs")
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._path = data_dir / DATABASE_NAME
        self._commits = 0
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        # Concurrent ingest jobs share a transaction and its fsync.
        self.group = GroupCommitter(self.transaction, StoreUnavailable)

    @classmethod
    async def open(cls, settings: StoreSettings) -> Store:
        """Open (creating and migrating if need be) the store of settings.

        Raises StoreUnavailable when the directory or database cannot be
        opened, or was written by a newer mailgate. On any error, what was
        opened is closed again: no connection thread outlives the call.
        """
        data_dir = settings.data_dir.resolve()
        path = data_dir / DATABASE_NAME
        opened: list[aiosqlite.Connection] = []
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path, settings.busy_timeout_ms)
            opened.append(writer)
            await _use_wal(writer, settings.busy_timeout_ms)
            await writer.execute(
                f"PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}"
            )
            await migrate(writer)
            reader = await _connect(path, settings.busy_timeout_ms)
            opened.append(reader)
            store = cls(data_dir, writer, reader, settings.busy_timeout_ms)
        except BaseException as error:
            await _close_all(opened)
            if isinstance(error, (OSError, sqlite3.Error, NewerSchema)):
                raise StoreUnavailable(
                    f"cannot open the store in {data_dir}: {error}"
                ) from error
            raise

        return store

    async def close(self) -> None:
        """Close the connections and let the blob fsync threads end.

        A background checkpoint under way is waited for first. Each
        connection is closed even when closing another fails; the first
        error is raised then.
        """
        if self._checkpoint is not None:
            await self._checkpoint
        connections: list[aiosqlite.Connection] = [self._reader, self._writer]
        if self._checkpointer is not None:
            connections.append(self._checkpointer)
        try:
            await _close_all(connections)
        finally:
            self.blobs.close()

    async def set_read_only(self, read_only: bool) -> None:
        """Refuse (or allow again) every write through this store.

        Waits for the running transaction. While read-only, transactions
        raise StoreUnavailable, as on a read-only disk, so listeners answer
        451 and senders retry: meant for maintenance, such as copying the
        data directory.
        """
        async with self._write_lock:
            await self._writer.execute(f"PRAGMA query_only = {int(read_only)}")
            # Nor may a background checkpoint write the database file then.
            if read_only and self._checkpoint is not None:
                await self._checkpoint

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run one write transaction: committed on exit, rolled back on error.

        SQLite faults that a retry may cure (busy, read-only, disk full,
        I/O) are raised as StoreUnavailable; nothing of the transaction is
        kept then.
        """
        async with self._write_lock:
            try:
                await self._begin_immediate()
            except sqlite3.Error as error:
                raise StoreUnavailable(str(error)) from error
            try:
                with self._writer.inline():
                    yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException as error:
                await self._rollback()
                if isinstance(error, sqlite3.OperationalError):
                    raise StoreUnavailable(str(error)) from error
                raise
        self._committed()

    def _committed(self) -> None:
        """Count a commit; start a background checkpoint when one is due."""
        self._commits += 1
        running = self._checkpoint is not None and not self._checkpoint.done()
        if self._commits < CHECKPOINT_EVERY_COMMITS or running:
            return

        self._commits = 0
        self._checkpoint = asyncio.create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        """Copy the WAL into the database without holding up writers.

        PASSIVE: it waits for no one and stops where readers or the writer
        still need the WAL; what it leaves is copied next time. A failure
        is logged: the commits are durable in the WAL all the same.
        """
        try:
            if self._checkpointer is None:
                self._checkpointer = await _connect(
                    self._path, self._busy_timeout_ms
                )
            rows = await self._checkpointer.execute_fetchall(
                "PRAGMA wal_checkpoint(PASSIVE)"
            )
        except (sqlite3.Error, OSError) as error:
            logger.warning("store.checkpoint_failed", error=str(error))
            return

        for busy, frames, copied in rows:
            logger.debug(
                "store.checkpointed", busy=busy, frames=frames, copied=copied
            )

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """Give a connection that sees one committed snapshot of the store."""
        async with self._read_lock:
            with self._reader.inline():
                await self._reader.execute("BEGIN")
                try:
                    yield self._reader
                finally:
                    await self._reader.execute("COMMIT")

    async def _begin_immediate(self) -> None:
        """Take the write lock: inline when free, else waiting in a thread.

        Inline, SQLite is told not to wait, so the event loop never blocks
        on another process's transaction; only when the lock is taken does
        the wait (up to the busy timeout) go to the connection's thread.
        """
        with self._writer.inline():
            await self._writer.execute("PRAGMA busy_timeout = 0")
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
            finally:
                await self._writer.execute(
                    f"PRAGMA busy_timeout = {self._busy_timeout_ms}"
                )

        await self._writer.execute("BEGIN IMMEDIATE")

    async def _rollback(self) -> None:
        """Roll back the writer's transaction if one is still open."""
        if self._writer.in_transaction:
            try:
                await self._writer.execute("ROLLBACK")
            except sqlite3.Error as error:
                logger.error("store.rollback_failed", error=str(error))


async def _use_wal(
    connection: aiosqlite.Connection, busy_timeout_ms: int
) -> None:
    """Put the database in WAL mode, waiting out another opener.

    Changing the journal mode needs the database to itself, and SQLite
    answers "database is locked" at once, without its busy handler, while
    another process opens it at the same moment.
    """
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(sqlite3.OperationalError),
        stop=stop_after_delay(max(busy_timeout_ms, 1000) / 1000),
        wait=wait_random_exponential(multiplier=0.01, max=0.2),
        reraise=True,
    ):
        with attempt:
            await connection.execute("PRAGMA journal_mode = WAL")


class _Connection(aiosqlite.Connection):
    """A connection whose statements can run on the caller's thread.

    aiosqlite sends every call to the connection's own thread and back,
    and each trip hands the GIL over twice: with twenty-odd statements a
    message, the ingest path spent more time in futex calls than in its
    own code. Statements that cannot wait on another process run inline
    instead: those of a write transaction once BEGIN IMMEDIATE holds the
    write lock (in WAL mode readers never block the writer), and reads,
    which never wait on the writer. BEGIN IMMEDIATE (which may wait for
    the CLI's transaction), COMMIT (the fsync) and ROLLBACK still go to
    the connection's thread.

    Limitation: this overrides aiosqlite's private ``_execute``, the one
    place every call goes through (aiosqlite 0.20 to 0.22);
    tests/store/test_store.py checks that it still takes effect. An
    inline statement holds the event loop while it runs, so the daemon's
    transactions and reads must stay short (indexed lookups).
    """

    _inline = False

    @contextmanager
    def inline(self) -> Iterator[None]:
        """Run statements on the calling thread within this block."""
        self._inline = True
        try:
            yield
        finally:
            self._inline = False

    async def _execute(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if self._inline:
            return fn(*args, **kwargs)

        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]


async def _connect(path: Path, busy_timeout_ms: int) -> _Connection:
    """Open one connection with the pragmas every connection needs."""
    # Used from the event loop's thread too (see _Connection).
    connection = _Connection(
        partial(
            sqlite3.connect,
            path,
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            check_same_thread=False,
        ),
        iter_chunk_size=64,
    )
    try:
        await connection
        connection.row_factory = aiosqlite.Row
        await connection.execute(
            f"PRAGMA busy_timeout = {int(busy_timeout_ms)}"
        )
        await connection.execute("PRAGMA foreign_keys = ON")
        # FULL: a commit is on disk before we answer anyone that it is
        # stored. The first statement that reads the file: a read-only
        # directory or a file that is no database fails here.
        await connection.execute("PRAGMA synchronous = FULL")
        # Each job of a group commit runs in a savepoint, whose journal of
        # page images SQLite spills to a temporary file past 64 KiB: dozens
        # of writes a message. In memory, a rollback to the savepoint still
        # restores the pages; the WAL and its fsync are unchanged.
        await connection.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        await _close_all([connection])
        raise

    return connection


async def _end_thread(connection: aiosqlite.Connection) -> None:
    """Wait until the thread of a connection that failed to connect ends.

    aiosqlite stops it on its own then, but answers the stop through the
    event loop: were the loop closed first, the thread would die with a
    traceback on stderr.

    Limitation: this reads aiosqlite's private ``_thread`` (0.20 to
    0.22), as _Connection does ``_execute``.
    """
    thread = connection._thread
    if thread.is_alive():
        await asyncio.to_thread(thread.join)


async def _close_all(connections: Sequence[aiosqlite.Connection]) -> None:
    """Close every connection and end its thread, even if one fails.

    aiosqlite's thread is not a daemon thread: one left running keeps the
    process from exiting.
    """
    errors: list[BaseException] = []
    for connection in connections:
        try:
            await connection.close()
            await _end_thread(connection)
        except BaseException as error:
            errors.append(error)
    if errors:
        raise errors[0]
