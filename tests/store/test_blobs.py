"""Blobs asked for together: each durable before its caller is answered."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from gateway.store.blobs import BlobStore


class SyncLog:
    """Records which paths were fsynced and which renames were made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: set[Path] = set()
        self.renamed_unsynced: list[Path] = []
        fsync = os.fsync
        replace = os.replace

        def syncing(descriptor: int) -> None:
            fsync(descriptor)
            self.synced.add(Path(os.readlink(f"/proc/self/fd/{descriptor}")))

        def renaming(source: str | Path, target: str | Path) -> None:
            if Path(source) not in self.synced:
                self.renamed_unsynced.append(Path(target))
            replace(source, target)

        monkeypatch.setattr(os, "fsync", syncing)
        monkeypatch.setattr(os, "replace", renaming)


def leftovers(root: Path) -> list[Path]:
    """Return the temporary files left under root."""
    return sorted(root.rglob(".in-*"))


async def test_blobs_asked_together_are_durable_before_each_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is synced before it is renamed into place, and its
    directory is synced before its caller gets the digest."""
    log = SyncLog(monkeypatch)
    blobs = BlobStore(tmp_path / "blobs")
    contents = [f"message {n}\r\n".encode() for n in range(40)]
    undurable: list[bytes] = []

    async def put(data: bytes) -> str:
        digest = await blobs.put(data)
        if blobs.path_of(digest).parent not in log.synced:
            undurable.append(data)
        return digest

    digests = await asyncio.gather(*(put(data) for data in contents))

    assert digests == [hashlib.sha256(data).hexdigest() for data in contents]
    assert [blobs.read(digest) for digest in digests] == contents
    assert log.renamed_unsynced == []
    assert undurable == []
    assert leftovers(blobs.root) == []
    blobs.close()


async def test_same_content_asked_twice_at_once_is_one_file(
    tmp_path: Path,
) -> None:
    """Two callers with the same content get the same digest, one file."""
    blobs = BlobStore(tmp_path / "blobs")

    first, second, other = await asyncio.gather(
        blobs.put(b"same"), blobs.put(b"same"), blobs.put(b"other")
    )

    assert first == second != other
    files = sorted(p for p in blobs.root.rglob("*") if p.is_file())
    assert files == sorted([blobs.path_of(first), blobs.path_of(other)])
    blobs.close()


async def test_a_blob_the_disk_refuses_fails_only_its_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on one blob of a group: that caller gets OSError, no
    temporary file stays, and the others are stored."""
    write = os.write

    def refusing(descriptor: int, data: bytes | memoryview) -> int:
        if bytes(memoryview(data)[:8]) == b"too big ":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(descriptor, data)

    monkeypatch.setattr(os, "write", refusing)
    blobs = BlobStore(tmp_path / "blobs")

    results = await asyncio.gather(
        blobs.put(b"fits"),
        blobs.put(b"too big for the disk"),
        blobs.put(b"fits too"),
        return_exceptions=True,
    )

    assert results[0] == hashlib.sha256(b"fits").hexdigest()
    assert isinstance(results[1], OSError)
    assert results[1].errno == errno.ENOSPC
    assert results[2] == hashlib.sha256(b"fits too").hexdigest()
    assert leftovers(blobs.root) == []
    assert not blobs.path_of(
        hashlib.sha256(b"too big for the disk").hexdigest()
    ).exists()
    blobs.close()


async def test_a_blob_already_there_has_its_directory_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content found on disk (perhaps just renamed by another writer) is
    answered only once its directory entry is synced."""
    blobs = BlobStore(tmp_path / "blobs")
    digest = await blobs.put(b"already here")
    log = SyncLog(monkeypatch)

    again = await blobs.put(b"already here")

    assert again == digest
    assert blobs.path_of(digest).parent in log.synced
    blobs.close()


async def test_put_many_keeps_the_order_of_its_contents(
    tmp_path: Path,
) -> None:
    """put_many answers one digest per content, in the order given."""
    blobs = BlobStore(tmp_path / "blobs")
    contents = [b"b", b"a", b"b", b"c"]

    digests = await blobs.put_many(contents)

    assert digests == [hashlib.sha256(data).hexdigest() for data in contents]
    blobs.close()


def _temporary(folder: Path, name: str, age_seconds: float) -> Path:
    """Write a temporary blob file last modified age_seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half a message")
    moment = time.time() - age_seconds
    os.utime(path, (moment, moment))

    return path


async def test_only_old_temporary_files_are_swept(tmp_path: Path) -> None:
    """Crash leftovers over the age go; young ones and blobs stay."""
    blobs = BlobStore(tmp_path / "blobs")
    digest = await blobs.put(b"a whole message")
    old = _temporary(tmp_path / "blobs" / "ab", ".in-old", 7200)
    young = _temporary(tmp_path / "blobs" / "ab", ".in-young", 60)
    elsewhere = _temporary(tmp_path / "blobs" / "other", ".in-other", 7200)
    os.utime(blobs.path_of(digest), (0, 0))

    removed = blobs.remove_temporary_files(3600)

    assert removed == 1
    assert not old.exists()
    assert young.exists()
    assert elsewhere.exists()
    assert blobs.read(digest) == b"a whole message"


def test_sweeping_a_store_with_no_blobs_yet_removes_nothing(
    tmp_path: Path,
) -> None:
    """No blobs folder at all: nothing to do, and no error."""
    assert BlobStore(tmp_path / "blobs").remove_temporary_files(3600) == 0
