"""The daemon in-process: what it reports once every listener is up."""

from __future__ import annotations

import os
import time

from structlog.testing import capture_logs

from gateway.server import Daemon
from gateway.settings import Settings, SmtpSettings, SubmissionSettings
from gateway.store import Store


async def test_started_lists_every_running_listener_with_its_port(
    settings: Settings, store: Store
) -> None:
    """SMTP, LMTP and submission all appear in server.started."""
    configured = settings.model_copy(
        update={
            "smtp": SmtpSettings(
                host="127.0.0.1",
                port=0,
                lmtp_enabled=True,
                lmtp_port=0,
                hostname="gateway.example.com",
                shutdown_grace_seconds=1,
            ),
            "submission": SubmissionSettings(
                enabled=True,
                host="127.0.0.1",
                port=0,
                allow_plain_loopback=True,
                hostname="gateway.example.com",
                shutdown_grace_seconds=1,
            ),
        }
    )
    daemon = Daemon(configured, store)

    with capture_logs() as logs:
        await daemon.start()
    try:
        assert daemon.submission is not None
        ports = {item.protocol: item.port for item in daemon.listeners}
        submission = daemon.submission.port
    finally:
        daemon.stop()
        await daemon.wait()

    [started] = [log for log in logs if log["event"] == "server.started"]
    assert started["listeners"] == {
        "smtp": ports["smtp"],
        "lmtp": ports["lmtp"],
        "submission": submission,
    }
    assert all(port > 0 for port in started["listeners"].values())


async def test_start_removes_the_temporary_blob_files_a_crash_left(
    settings: Settings, store: Store
) -> None:
    """A .in- file over an hour old goes at start; a fresh one stays."""
    folder = store.blobs.root / "7f"
    folder.mkdir(parents=True, exist_ok=True)
    left, fresh = folder / ".in-left", folder / ".in-fresh"
    left.write_bytes(b"half")
    fresh.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))
    quiet = SmtpSettings(enabled=False)
    daemon = Daemon(settings.model_copy(update={"smtp": quiet}), store)

    with capture_logs() as logs:
        await daemon.start()
    daemon.stop()
    await daemon.wait()

    [removed] = [
        log for log in logs if log["event"] == "store.temporary_files_removed"
    ]
    assert removed["count"] == 1
    assert not left.exists()
    assert fresh.exists()
