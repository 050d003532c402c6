"""The daemon in-process: what it reports once every listener is up."""

from __future__ import annotations

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
