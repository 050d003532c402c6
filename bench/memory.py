"""Memory: peak resident memory growth of ``mailgate serve`` taking mail.

Each case starts a fresh daemon (``bench.servers.MailgateProcess``), reads
its peak resident set (``VmHWM`` in /proc/PID/status) once it listens,
sends the mail, and reads the peak again; the growth is the difference.
The do-nothing aiosmtpd listener (``bench.null_smtp``) takes the same mail
in the same way, as the baseline: its growth is what the SMTP library
alone costs. Cases: one 25 MB message, and 64 connections sending 1 MB
each at once. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.messages import Sample, make_samples
from bench.servers import ROOT, MailgateProcess, _wait_for_port_file

TARGET = 4.0
MEGABYTE = 1024 * 1024


def peak_kilobytes(pid: int) -> int:
    """Return a process's peak resident set size so far, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

    raise RuntimeError(f"no VmHWM for process {pid}")


@contextmanager
def mailgate_process() -> Iterator[tuple[int, int]]:
    """Run ``mailgate serve`` on a fresh store; yield its pid and port."""
    with tempfile.TemporaryDirectory() as folder:
        daemon = MailgateProcess(Path(folder) / "data")
        daemon.cli(
            "org", "add", "Example", "--domain", "example.com", "--internal"
        ).check_returncode()
        daemon.start()
        assert daemon.process is not None
        try:
            yield daemon.process.pid, daemon.port
        finally:
            daemon.stop()


@contextmanager
def null_process() -> Iterator[tuple[int, int]]:
    """Run the do-nothing listener; yield its pid and port."""
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.null_smtp", str(port_file)],
            cwd=ROOT,
        )
        try:
            yield process.pid, _wait_for_port_file(port_file, process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def growth(server: str, samples: list[Sample], connections: int) -> int:
    """Return the peak growth (octets) of one server taking the samples."""
    starter = mailgate_process if server == "mailgate" else null_process
    with starter() as (pid, port):
        before = peak_kilobytes(pid)
        result = asyncio.run(run_load("127.0.0.1", port, samples, connections))
        assert result.failures == 0 and result.messages == len(samples)
        after = peak_kilobytes(pid)

    return (after - before) * 1024


def measure(
    name: str, samples: list[Sample], connections: int
) -> dict[str, Any]:
    """Measure one case on both servers; return a row."""
    largest = max(len(sample.raw) for sample in samples)
    # Every message is in flight at once: growth is set against them all.
    total = sum(len(sample.raw) for sample in samples)
    ours = growth("mailgate", samples, connections)
    base = growth("null", samples, connections)

    return {
        "case": name,
        "message_octets": largest,
        "total_octets": total,
        "baseline_growth_octets": base,
        "mailgate_growth_octets": ours,
        "growth_per_octet": ours / total,
        "baseline_growth_per_octet": base / total,
        "ratio_to_baseline": ours / base if base else None,
    }


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)

    # make_samples puts an attachment in every fourth message: the 25 MB
    # message is mostly a base64 attachment, as such mail is.
    large = make_samples(4, 25 * MEGABYTE)[3:]
    rows = [
        measure("one 25 MB message", large, 1),
        measure("64 connections x 1 MB", make_samples(64, MEGABYTE), 64),
    ]
    rows[0]["met"] = rows[0]["growth_per_octet"] < TARGET

    print(
        f"{'case':<24} {'mail MB':>8} {'null +MB':>9} {'x mail':>7} "
        f"{'mailgate +MB':>12} {'x mail':>7} {'x null':>7}"
    )
    for row in rows:
        print(
            f"{row['case']:<24} {row['total_octets'] / MEGABYTE:>8.1f} "
            f"{row['baseline_growth_octets'] / MEGABYTE:>9.1f} "
            f"{row['baseline_growth_per_octet']:>7.2f} "
            f"{row['mailgate_growth_octets'] / MEGABYTE:>12.1f} "
            f"{row['growth_per_octet']:>7.2f} "
            f"{row['ratio_to_baseline'] or 0:>7.2f}"
        )

    options.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "memory",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "target_growth_per_octet": TARGET,
        "rows": rows,
    }
    path = options.output / "memory.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
