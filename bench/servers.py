"""Servers under benchmark, each run as its own process on loopback."""

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
            _stop(process)


@contextmanager
def mailgate(extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``mailgate serve`` on a fresh store; yield its SMTP port."""
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "MAILGATE_STORE_DATA_DIR": str(Path(folder) / "data"),
            "MAILGATE_SMTP_PORT": "0",
            "MAILGATE_SMTP_MAX_MESSAGE_BYTES": str(64 * 1024 * 1024),
            "MAILGATE_LOG_FORMAT": "json",
            "MAILGATE_LOG_LEVEL": "info",
            **(extra_env or {}),
        }
        command = [sys.executable, "-m", "gateway"]
        subprocess.run(
            [
                *command,
                "org",
                "add",
                "Example",
                "--domain",
                "example.com",
                "--internal",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        log_path = Path(folder) / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "serve"], env=env, stderr=log, cwd=folder
            )
            try:
                yield _wait_for_listening(log_path, process)
            finally:
                _stop(process)


def _wait_for_port_file(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the baseline listener exited")
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)

    raise RuntimeError("the baseline listener did not start")


def _wait_for_listening(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mailgate exited: {path.read_text()}")
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "smtp.listening":
                return int(entry["port"])
        time.sleep(0.05)

    raise RuntimeError("mailgate did not start listening")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
