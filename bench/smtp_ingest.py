"""SMTP ingest: mailgate against a do-nothing aiosmtpd listener.

Both run as separate processes on loopback and get the same messages from
the same load generator, one after the other, for each message size and
number of concurrent connections. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import LoadResult, run_load
from bench.messages import make_samples
from bench.servers import mailgate, null_listener

SIZES = {"2KB": 2 * 1024, "30KB": 30 * 1024, "1MB": 1024 * 1024}
COUNTS = {"2KB": 2000, "30KB": 1000, "1MB": 64}


def measure(size_name: str, connections: int, scale: float) -> dict[str, Any]:
    """Run one size and concurrency against both servers; return a row."""
    count = max(connections, int(COUNTS[size_name] * scale))
    samples = make_samples(count, SIZES[size_name])

    with null_listener() as port:
        baseline = asyncio.run(
            run_load("127.0.0.1", port, samples, connections)
        )
    with mailgate() as port:
        ours = asyncio.run(run_load("127.0.0.1", port, samples, connections))

    return {
        "size": size_name,
        "connections": connections,
        "messages": count,
        "baseline": _numbers(baseline),
        "mailgate": _numbers(ours),
        "rate_ratio": ours.rate / baseline.rate if baseline.rate else None,
        "p99_ratio": (
            ours.percentile(0.99) / baseline.percentile(0.99)
            if baseline.percentile(0.99)
            else None
        ),
    }


def _numbers(result: LoadResult) -> dict[str, float]:
    return {
        "messages_per_second": result.rate,
        "p50_ms": result.percentile(0.5) * 1000,
        "p99_ms": result.percentile(0.99) * 1000,
        "failures": result.failures,
    }


def main(arguments: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench smtp-ingest")
    parser.add_argument("--sizes", default="2KB,30KB,1MB")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="Multiply message counts."
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    options = parser.parse_args(arguments)

    rows = [
        measure(size, int(connections), options.scale)
        for size in options.sizes.split(",")
        for connections in options.connections.split(",")
    ]

    print(
        f"{'size':>5} {'conns':>5} {'baseline/s':>10} {'mailgate/s':>10} "
        f"{'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99 base':>8} "
        f"{'p99 x':>6}"
    )
    for row in rows:
        print(
            f"{row['size']:>5} {row['connections']:>5} "
            f"{row['baseline']['messages_per_second']:>10.1f} "
            f"{row['mailgate']['messages_per_second']:>10.1f} "
            f"{row['rate_ratio']:>6.2f} "
            f"{row['mailgate']['p50_ms']:>8.1f} "
            f"{row['mailgate']['p99_ms']:>8.1f} "
            f"{row['baseline']['p99_ms']:>8.1f} "
            f"{row['p99_ratio']:>6.2f}"
        )

    options.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "smtp-ingest",
        "at": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
    }
    path = options.output / "smtp_ingest.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
