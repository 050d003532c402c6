"""The SMTP load generator: C connections, each reused for its messages."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import aiosmtplib

from bench.messages import Sample


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured."""

    messages: int
    failures: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        """Messages answered 250 per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """DATA-to-250 latency at this fraction (0.5, 0.99), seconds."""
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else 0.0
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")

        return cuts[max(0, min(98, round(fraction * 100) - 1))]


async def run_load(
    host: str, port: int, samples: list[Sample], connections: int
) -> LoadResult:
    """Send every sample over ``connections`` parallel SMTP sessions."""
    shares = [samples[index::connections] for index in range(connections)]
    latencies: list[float] = []
    failures = 0

    async def client(share: list[Sample]) -> None:
        nonlocal failures
        if not share:
            return
        smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=300)
        await smtp.connect()
        try:
            for sample in share:
                await smtp.mail(sample.mail_from)
                await smtp.rcpt(sample.rcpt_to)
                started = time.perf_counter()
                try:
                    await smtp.data(sample.raw)
                except aiosmtplib.SMTPResponseException:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client(share) for share in shares))
    seconds = time.perf_counter() - started

    return LoadResult(len(latencies), failures, seconds, tuple(latencies))
