"""Content-addressed files: raw messages and attachments, kept by SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path


class BlobStore:
    """Files named by the SHA-256 of their content, under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, digest: str) -> Path:
        """Return where the blob with this hex digest lives."""
        return self.root / digest[:2] / digest[2:]

    async def put(self, *pieces: bytes) -> str:
        """Store data durably (written and fsynced) and return its digest.

        The content is the pieces one after another, never joined in
        memory. Storing the same content twice keeps one file. Raises
        OSError when the disk refuses.
        """
        return await asyncio.to_thread(self.put_now, *pieces)

    def put_now(self, *pieces: bytes) -> str:
        """Store data durably, blocking; return its digest."""
        digest = sha256_of(*pieces)
        target = self.path_of(digest)
        if target.exists():
            return digest

        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".in-")
        try:
            with os.fdopen(handle, "wb") as stream:
                for piece in pieces:
                    stream.write(piece)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)

        return digest

    def read(self, digest: str) -> bytes:
        """Return the content of a blob; raises FileNotFoundError."""
        return self.path_of(digest).read_bytes()


def sha256_of(*pieces: bytes) -> str:
    """Return the hex SHA-256 of the pieces one after another."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)

    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    """Make a rename in directory durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
