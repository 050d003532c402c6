"""Group commit: concurrent units of work share one transaction and fsync.

Each unit of work (a job) runs in its own SAVEPOINT inside a transaction
shared with the jobs queued beside it. A job that raises is rolled back
alone; the others are committed together, with one fsync. No job's caller
is answered before the COMMIT that holds its work has returned, so what a
caller is told is stored is on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite
import structlog

logger = structlog.get_logger(__name__)

T = TypeVar("T")

Job = Callable[[aiosqlite.Connection], Awaitable[T]]

# Enough to share an fsync among every connection of a busy listener,
# few enough that one slow group does not hold many replies back.
MAX_GROUP = 64


class GroupFailed(Exception):
    """The shared transaction could not commit: no job of it is kept."""


@dataclass(slots=True)
class _Pending:
    work: Job[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


class GroupCommitter:
    """Runs queued jobs in shared transactions, one group at a time."""

    def __init__(
        self,
        transaction: Callable[
            [], AbstractAsyncContextManager[aiosqlite.Connection]
        ],
        unavailable: Callable[[str], Exception],
        max_group: int = MAX_GROUP,
    ) -> None:
        self._transaction = transaction
        self._unavailable = unavailable
        self._max_group = max_group
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, work: Job[T]) -> T:
        """Run work in a shared transaction; return once it is committed.

        Raises what work raised (its changes alone rolled back), or the
        store's unavailable error when the shared transaction could not
        commit (then nothing of work is kept).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())

        return await future

    async def _drain(self) -> None:
        """Commit groups until the queue is empty."""
        while self._queue:
            group = self._queue[: self._max_group]
            del self._queue[: self._max_group]
            try:
                await self._commit(group)
            finally:
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(
                            self._unavailable("the commit was interrupted")
                        )

    async def _commit(self, group: list[_Pending]) -> None:
        """Run one group in one transaction, then answer each job."""
        try:
            async with self._transaction() as db:
                for pending in group:
                    # A caller gone before its turn (its session dropped)
                    # has nothing stored; the sender will try again.
                    if not pending.future.cancelled():
                        await self._run_one(db, pending)
        except Exception as error:
            logger.warning(
                "store.group_commit_failed", jobs=len(group), error=str(error)
            )
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(self._unavailable(str(error)))
            return

        for pending in group:
            if pending.future.done():
                continue
            if pending.error is not None:
                pending.future.set_exception(pending.error)
            else:
                pending.future.set_result(pending.result)

    async def _run_one(
        self, db: aiosqlite.Connection, pending: _Pending
    ) -> None:
        """Run one job in its savepoint; roll back only it if it fails."""
        await db.execute("SAVEPOINT job")
        try:
            pending.result = await pending.work(db)
        except Exception as error:
            # SQLite may have rolled back the whole transaction (disk full,
            # I/O error): then no job of the group can be kept.
            if not db.in_transaction:
                raise GroupFailed(str(error)) from error
            await db.execute("ROLLBACK TO job")
            await db.execute("RELEASE job")
            pending.error = (
                self._unavailable(str(error))
                if isinstance(error, sqlite3.OperationalError)
                else error
            )
            return
        await db.execute("RELEASE job")
