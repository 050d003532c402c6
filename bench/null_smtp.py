"""The baseline: an aiosmtpd listener whose handler does nothing.

Run as ``python -m bench.null_smtp PORT_FILE``: it binds a free loopback
port, writes the port to PORT_FILE, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class NullHandler:
    """Accept every message and keep nothing."""

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        return "250 2.0.0 OK"


async def main(port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            NullHandler(),
            data_size_limit=64 * 1024 * 1024,
            enable_SMTPUTF8=True,
            loop=loop,
        ),
        host="127.0.0.1",
        port=0,
    )
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
