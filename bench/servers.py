"""Servers under benchmark or drill, each run as its own process on loopback.

Used by the benchmarks and by the fault drills in tests/drills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class MailgateProcess:
    """``mailgate serve`` on one data directory, started and stopped at will.

    The listener binds a free loopback port; ``port`` is read from the
    daemon's own ``smtp.listening`` log event.
    """

    def __init__(
        self, data_dir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "MAILGATE_STORE_DATA_DIR": str(data_dir),
            "MAILGATE_SMTP_PORT": "0",
            "MAILGATE_SMTP_MAX_MESSAGE_BYTES": str(64 * 1024 * 1024),
            "MAILGATE_LOG_FORMAT": "json",
            "MAILGATE_LOG_LEVEL": "info",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run one ``mailgate`` command on the same store."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> int:
        """Start the daemon; return its SMTP port once it listens."""
        self.log_path.write_bytes(b"")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=self.env,
                stderr=log,
                cwd=self.data_dir.parent,
            )
        self.port = self._wait_for_listening()

        return self.port

    def stop(self) -> int:
        """Stop gracefully (SIGTERM); return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """Kill the daemon at once (SIGKILL), as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log_events(self) -> list[dict[str, object]]:
        """Return the daemon's log events so far."""
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue

        return events

    def _wait_for_listening(self) -> int:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mailgate exited: {self.log_path.read_text()}"
                )
            for entry in self.log_events():
                if entry.get("event") == "smtp.listening":
                    return int(str(entry["port"]))
            time.sleep(0.05)

        raise RuntimeError("mailgate did not start listening")


@contextmanager
def mailgate(extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``mailgate serve`` on a fresh store; yield its SMTP port.

    The store knows our organisation: example.com, internal.
    """
    with tempfile.TemporaryDirectory() as folder:
        daemon = MailgateProcess(Path(folder) / "data", extra_env)
        daemon.cli(
            "org", "add", "Example", "--domain", "example.com", "--internal"
        ).check_returncode()
        daemon.start()
        try:
            yield daemon.port
        finally:
            daemon.stop()


@contextmanager
def null_listener() -> Iterator[int]:
    """Run the do-nothing aiosmtpd listener; yield its port."""
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.null_smtp", str(port_file)],
            cwd=ROOT,
        )
        try:
            yield _wait_for_port_file(port_file, process)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port_file(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the baseline listener exited")
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)

    raise RuntimeError("the baseline listener did not start")
