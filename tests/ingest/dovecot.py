"""A real Dovecot for the IMAP poller's tests, and a small client for it.

``Dovecot`` runs ``dovecot -F -c CONFIG`` with a configuration of its own
under a temporary folder: loopback only, a free port, a passwd-file of
users, maildirs owned by ``nobody``. It must be started as root (the
master switches to Dovecot's own users). ``ImapClient`` puts messages in
over APPEND and reads flags and folders back, with aioimaplib.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioimaplib

HOST = "127.0.0.1"
REQUIRE_VARIABLE = "MAILGATE_REQUIRE_DOVECOT"
# Users in the passwd-file, one per test that needs a mailbox.
ACCOUNTS = 200

_CONFIG = """\
instance_name = mailgate-test-{name}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = {host}
log_path = /dev/stderr
disable_plaintext_auth = no
{ssl}
mail_uid = nobody
mail_gid = nogroup
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
  }}
}}
"""

_SSL = """\
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
"""

_FLAGS = re.compile(
    rb"UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)"
)
_APPEND_UID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_UID_VALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


def dovecot_binary() -> str | None:
    """Return the path of the dovecot binary, None if it is missing."""
    sbin = Path("/usr/sbin/dovecot")

    return shutil.which("dovecot") or (str(sbin) if sbin.exists() else None)


def missing_reason() -> str | None:
    """Return why Dovecot cannot run here, or None if it can."""
    if dovecot_binary() is None:
        return "the dovecot binary is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "Dovecot must be started as root"

    return None


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]

    return port


@dataclass(frozen=True)
class Account:
    """A user of the test Dovecot, with a mailbox of its own."""

    user: str
    password: str


class Dovecot:
    """One Dovecot instance: configuration, users, process."""

    def __init__(self, root: Path, *, tls: bool = False) -> None:
        self.root = root
        self.host = HOST
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._numbers = itertools.count(1)

        for folder in ("run", "state", "mail"):
            (root / folder).mkdir()
        os.chown(
            root / "mail",
            pwd.getpwnam("nobody").pw_uid,
            grp.getgrnam("nogroup").gr_gid,
        )
        # Dovecot looks at a changed passwd-file at most once a second:
        # the users are all written before it starts.
        passwd = root / "passwd"
        passwd.write_text(
            "".join(
                f"{account.user}:{{PLAIN}}{account.password}\n"
                for account in map(_account, range(1, ACCOUNTS + 1))
            )
        )
        passwd.chmod(0o644)
        if tls:
            _make_certificate(root)
        (root / "dovecot.conf").write_text(
            _CONFIG.format(
                name=root.name,
                root=root,
                host=self.host,
                port=self.port,
                tls_port=self.tls_port,
                ssl=_SSL.format(root=root) if tls else "ssl = no",
            )
        )

    @property
    def certificate(self) -> Path:
        """Return the self-signed certificate the server shows (TLS)."""
        return self.root / "cert.pem"

    def start(self) -> None:
        """Start the master and wait until the port accepts connections.

        Call it from the main thread: Linux ends the master when the
        thread that started it ends (see _end_with_parent).
        """
        assert threading.current_thread() is threading.main_thread()
        log = (self.root / "dovecot.log").open("ab")
        # A process group of its own: stop() ends the master and every
        # child, as a service manager would. The master is also ended
        # when the test process dies without tearing down (killed).
        self.process = subprocess.Popen(
            [
                dovecot_binary() or "dovecot",
                "-F",
                "-c",
                str(self.root / "dovecot.conf"),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_end_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log_text()}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), 0.5).close()
                return
            time.sleep(0.02)

        raise RuntimeError(f"dovecot did not listen: {self.log_text()}")

    def stop(self) -> None:
        """Stop the master and its children; wait until all are gone.

        Dovecot's imap processes outlive their master for about ten
        seconds; a service manager ends them with it, and so does this.
        """
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        self.process.wait(15)
        self.process = None
        deadline = time.monotonic() + 5
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

    def add_account(self) -> Account:
        """Return a user not handed out before, with an empty mailbox."""
        number = next(self._numbers)
        assert number <= ACCOUNTS, "raise ACCOUNTS in tests/ingest/dovecot.py"

        return _account(number)

    def log_text(self) -> str:
        """Return what Dovecot logged so far."""
        path = self.root / "dovecot.log"

        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_dovecot(*, tls: bool = False) -> Iterator[Dovecot]:
    """Run a Dovecot for the duration of the block, then remove it."""
    # The mail user (nobody) must reach the folders: not under pytest's
    # private temporary folder.
    root = Path(tempfile.mkdtemp(prefix="mailgate-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class ImapClient:
    """A person's mail client, as far as the tests need one."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def append(
        self, raw: bytes, folder: str = "INBOX", flags: str | None = None
    ) -> int:
        """Put a message into a folder; return its UID."""
        response = await self.client.append(raw, mailbox=folder, flags=flags)
        assert response.result == "OK", response
        match = _APPEND_UID.search(bytes(response.lines[-1]))
        assert match, response

        return int(match.group(1))

    async def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """Return each message's flags in a folder, by UID."""
        response = await self.client.select(folder)
        assert response.result == "OK", response
        response = await self.client.uid("fetch", "1:*", "(UID FLAGS)")
        assert response.result == "OK", response
        found: dict[int, set[str]] = {}
        for line in response.lines[:-1]:
            match = _FLAGS.search(bytes(line))
            if match:
                uid = match.group(1) or match.group(4)
                flags = match.group(2) or match.group(3) or b""
                found[int(uid)] = set(flags.decode().split())
        await self.client.close()

        return found

    async def create(self, folder: str) -> None:
        """Create a folder."""
        response = await self.client.create(folder)
        assert response.result == "OK", response

    async def delete(self, folder: str) -> None:
        """Delete a folder and its messages."""
        response = await self.client.delete(folder)
        assert response.result == "OK", response

    async def uid_validity(self, folder: str) -> int:
        """Return the UIDVALIDITY of a folder."""
        response = await self.client.status(folder, "(UIDVALIDITY)")
        assert response.result == "OK", response
        match = _UID_VALIDITY.search(bytes(response.lines[0]))
        assert match, response

        return int(match.group(1))


@contextlib.asynccontextmanager
async def imap_client(
    server: Dovecot, account: Account
) -> AsyncIterator[ImapClient]:
    """Log in as account over plain IMAP; log out at the end."""
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(account.user, account.password)
    assert response.result == "OK", response
    try:
        yield ImapClient(client)
    finally:
        await client.logout()


def _end_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when the parent dies.

    The parent is the thread that forked, not its process (prctl(2)).
    """
    if sys.platform == "linux":
        # prctl(2) PR_SET_PDEATHSIG is option 1.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _group_alive(group: int) -> bool:
    """Return whether any process of the group is still running."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False

    return True


def _account(number: int) -> Account:
    return Account(f"user{number}", f"secret{number}")


def _make_certificate(root: Path) -> None:
    """Write a self-signed certificate for 127.0.0.1 and its key."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(root / "key.pem"),
            "-out",
            str(root / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
