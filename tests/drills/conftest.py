"""Fixtures of the fault drills: a real ``mailgate serve`` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import MailgateProcess


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[MailgateProcess]:
    """A daemon (not started) on a store that knows example.com as ours."""
    process = MailgateProcess(tmp_path / "data")
    process.cli(
        "org", "add", "Example", "--domain", "example.com", "--internal"
    ).check_returncode()
    yield process
    if process.process is not None and process.process.poll() is None:
        process.kill()
