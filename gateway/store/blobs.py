"""Content-addressed files: raw messages and attachments, kept by SHA-256.

Blobs asked for at the same time (an IMAP batch, concurrent SMTP
sessions) are made durable together: each written and fsynced, side by
side on a pool of threads so that the file system's journal commits them
at once, then renamed into place; then one fsync per directory. A blob is
returned to its caller only once its file and the directory entry naming
it are on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# fsyncs run side by side share the journal's commits; beyond some tens
# at once the disk gains nothing more.
FSYNC_WORKERS = 16

# A blob is written to a file named so, in its folder, then renamed.
TEMPORARY_PREFIX = ".in-"

# A temporary file older than this was left by a crash: no writer takes an
# hour between creating it and its rename.
TEMPORARY_MAX_AGE_SECONDS = 3600.0


# One blob's content: pieces written one after another, never joined.
Pieces = tuple[bytes, ...]


@dataclass(slots=True)
class _Pending:
    pieces: Pieces
    future: asyncio.Future[str]


class BlobStore:
    """Files named by the SHA-256 of their content, under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._syncers: ThreadPoolExecutor | None = None

    def path_of(self, digest: str) -> Path:
        """Return where the blob with this hex digest lives."""
        return self.root / digest[:2] / digest[2:]

    async def put(self, *pieces: bytes) -> str:
        """Store data durably (written and fsynced) and return its digest.

        The content is the pieces one after another, never joined in
        memory. Storing the same content twice keeps one file. Raises
        OSError when the disk refuses.
        """
        return (await self._gather([pieces]))[0]

    async def put_many(self, items: Sequence[bytes]) -> list[str]:
        """Store several blobs durably; return their digests, in order.

        They join the group being gathered, made durable together with
        the blobs that other callers ask for meanwhile. Raises OSError
        when the disk refuses any of them.

        Limitation: one group is written at a time, so a blob asked for
        while a large one (a 25 MB attachment) is being written waits
        for that whole group; splitting groups by size is deferred.
        """
        return await self._gather([(data,) for data in items])

    async def _gather(self, contents: Sequence[Pieces]) -> list[str]:
        """Queue contents into the group being gathered; their digests."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str]] = []
        for pieces in contents:
            future: asyncio.Future[str] = loop.create_future()
            self._queue.append(_Pending(pieces, future))
            futures.append(future)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())

        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

        return [result for result in results if isinstance(result, str)]

    def put_now(self, *pieces: bytes) -> str:
        """Store data durably, blocking; return its digest."""
        result = self._put_group([pieces])[0]
        if isinstance(result, OSError):
            raise result

        return result

    def read(self, digest: str) -> bytes:
        """Return the content of a blob; raises FileNotFoundError."""
        return self.path_of(digest).read_bytes()

    def remove_temporary_files(self, older_than_seconds: float) -> int:
        """Remove the temporary files a crash left; return how many.

        Blocking. Only files older than older_than_seconds go: a younger
        one may be under way in another process (a CLI ingest). Only the
        256 two-hex-digit folders are read; a file that cannot be removed
        is left for the next sweep.

        Limitation: a complete blob that no row refers to (its event was
        never committed) is left alone: removing it safely needs a
        reference check against a store another process may be writing.
        """
        oldest = time.time() - older_than_seconds
        removed = 0
        for number in range(256):
            try:
                with os.scandir(self.root / f"{number:02x}") as entries:
                    stale = [
                        entry.path
                        for entry in entries
                        if entry.name.startswith(TEMPORARY_PREFIX)
                        and _modified_before(entry, oldest)
                    ]
            except OSError:
                continue

            for path in stale:
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed += 1

        return removed

    def close(self) -> None:
        """Let the fsync threads end; a later put starts them again."""
        syncers, self._syncers = self._syncers, None
        if syncers is not None:
            syncers.shutdown(wait=False)

    async def _drain(self) -> None:
        """Make the queued blobs durable, group by group, until none."""
        while self._queue:
            group, self._queue = self._queue, []
            try:
                results = await asyncio.to_thread(
                    self._put_group, [pending.pieces for pending in group]
                )
                for pending, result in zip(group, results, strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(result, OSError):
                        pending.future.set_exception(result)
                    else:
                        pending.future.set_result(result)
            except Exception as error:  # a fault of ours: tell each caller
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            finally:
                for pending in group:
                    pending.future.cancel()

    def _put_group(self, items: Sequence[Pieces]) -> list[str | OSError]:
        """Store blobs durably, blocking; a digest or an error for each."""
        digests = [sha256_of(*pieces) for pieces in items]
        errors: dict[str, OSError] = {}

        new = [
            (digest, pieces)
            for digest, pieces in dict(
                zip(digests, items, strict=True)
            ).items()
            if not self.path_of(digest).exists()
        ]
        written = self._each(lambda item: self._write(*item), new)
        for (digest, _), error in zip(new, written, strict=True):
            if error is not None:
                errors[digest] = error

        # A blob found already there may have just been renamed by another
        # writer, its directory not yet synced: sync it for this caller.
        directories = sorted(
            {
                self.path_of(digest).parent
                for digest in digests
                if digest not in errors
            }
        )
        synced = self._each(_fsync_directory, directories)
        for directory, error in zip(directories, synced, strict=True):
            if error is None:
                continue
            for digest in digests:
                if self.path_of(digest).parent == directory:
                    errors.setdefault(digest, error)

        return [errors.get(digest, digest) for digest in digests]

    def _write(self, digest: str, pieces: Pieces) -> None:
        """Write data to its file through a synced temporary one.

        The directory entry is not synced: the caller does that once for
        every blob of a directory.
        """
        target = self.path_of(digest)
        try:
            handle, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=TEMPORARY_PREFIX
            )
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                dir=target.parent, prefix=TEMPORARY_PREFIX
            )
        try:
            try:
                for piece in pieces:
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(handle, view) :]
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _each(
        self, work: Callable[[T], None], items: Iterable[T]
    ) -> list[OSError | None]:
        """Run blocking work on every item side by side; the errors."""

        def attempt(item: T) -> OSError | None:
            try:
                work(item)
            except OSError as error:
                return error
            return None

        listed = list(items)
        if len(listed) <= 1:
            return [attempt(item) for item in listed]
        if self._syncers is None:
            self._syncers = ThreadPoolExecutor(
                FSYNC_WORKERS, thread_name_prefix="mailgate-fsync"
            )

        return list(self._syncers.map(attempt, listed))


def sha256_of(*pieces: bytes) -> str:
    """Return the hex SHA-256 of the pieces one after another."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)

    return digest.hexdigest()


def _modified_before(entry: os.DirEntry[str], moment: float) -> bool:
    """Tell whether a file was last written before a moment (epoch s)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < moment
    except OSError:
        return False


def _fsync_directory(directory: Path) -> None:
    """Make a rename in directory durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
