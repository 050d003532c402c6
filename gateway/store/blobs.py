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

    async def put(self, data: bytes) -> str:
        """Store data durably (written and fsynced) and return its digest.

        Storing the same content twice keeps one file. Raises OSError when
        the disk refuses.
        """
        return await asyncio.to_thread(self.put_now, data)

    def put_now(self, data: bytes) -> str:
        """Store data durably, blocking; return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_of(digest)
        if target.exists():
            return digest

        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".in-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
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


def _fsync_directory(directory: Path) -> None:
    """Make a rename in directory durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
