"""Shared fixtures: a data directory of our own, the CLI, and a company.

Every test gets an empty data directory under tmp_path, named by
MAILGATE_STORE_DATA_DIR, so that the store is a real SQLite file. The
``mailgate`` fixture runs the CLI in-process with click's runner; the
``mailgate_process`` fixture runs the real ``python -m gateway`` in a
subprocess. Data many tests start from (our company) is made once by the
CLI in a template store and copied into each test's data directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import structlog
from click.testing import CliRunner

from gateway.cli.main import main
from gateway.settings import Settings, load_settings
from gateway.store import Store
from gateway.store.database import DATABASE_NAME


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Undo what a command's configure_logging did, before and after.

    The CLI points structlog at the stderr of click's runner, which is
    closed once the command returns, and filters below its level.
    """
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MAILGATE_STORE_DATA_DIR at an empty directory (not yet made).

    Every other MAILGATE_ variable of the developer's shell is removed.
    """
    for name in list(os.environ):
        if name.startswith("MAILGATE_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "data"
    monkeypatch.setenv("MAILGATE_STORE_DATA_DIR", str(directory))
    # Only errors on stderr, so that tests can read it as the error line.
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "warning")

    return directory


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """The settings mailgate would load in this test's environment."""
    return load_settings()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """An open store in the test's data directory."""
    opened = await Store.open(settings.store)
    yield opened
    await opened.close()


@dataclass(frozen=True)
class Outcome:
    """What one run of ``mailgate`` printed and how it ended."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Return stdout parsed as the one JSON document it should be."""
        return json.loads(self.stdout)

    @property
    def error(self) -> str:
        """Return stderr without surrounding blank space."""
        return self.stderr.strip()


class Mailgate(Protocol):
    """Run ``mailgate`` with arguments, optionally acting as someone."""

    def __call__(
        self, *arguments: str, actor: str | None = ..., ok: bool = ...
    ) -> Outcome: ...


def invoke(
    arguments: Sequence[str],
    actor: str | None = None,
    ok: bool = True,
    env: Mapping[str, str | None] | None = None,
) -> Outcome:
    """Run the CLI in-process with click's runner, as the script would.

    ``actor`` becomes ``--as``; ``ok`` asserts exit code 0; ``env``
    changes the environment for this run only.
    """
    prefix = ["--as", actor] if actor else []
    result = CliRunner().invoke(
        main, [*prefix, *arguments], prog_name="mailgate", env=env
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    outcome = Outcome(result.exit_code, result.stdout, result.stderr)
    if ok:
        assert outcome.exit_code == 0, outcome.stderr

    return outcome


@pytest.fixture
def mailgate(data_dir: Path) -> Mailgate:
    """Run the CLI in-process on the test's data directory.

    ``actor`` becomes ``--as``; ``ok`` (the default) asserts exit code 0.
    """

    def run(
        *arguments: str, actor: str | None = None, ok: bool = True
    ) -> Outcome:
        return invoke(arguments, actor, ok)

    return run


class MailgateProcess(Protocol):
    """Run ``python -m gateway`` with arguments in a subprocess."""

    def __call__(
        self, *arguments: str, env: dict[str, str] | None = ...
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def mailgate_process(data_dir: Path) -> MailgateProcess:
    """Run the real console entry point, ``python -m gateway``."""

    def run(
        *arguments: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *arguments],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
            check=False,
        )

    return run


class Dump(Protocol):
    """Return the whole database as SQL text."""

    def __call__(self) -> list[str]: ...


@pytest.fixture
def dump(data_dir: Path) -> Dump:
    """Dump the store's database as SQL, to compare before and after."""

    def run() -> list[str]:
        connection = sqlite3.connect(data_dir / DATABASE_NAME)
        try:
            return list(connection.iterdump())
        finally:
            connection.close()

    return run


@dataclass(frozen=True)
class Company:
    """Our organisation, as the ``company`` fixture creates it.

    Nexedi (nexedi.com, internal) has the departments Community, Support
    and Sales. The manager is in Nexedi itself; everyone else is staff.
    """

    manager: str = "jp@nexedi.com"
    community_manager: str = "cm@nexedi.com"
    colleague: str = "alain@nexedi.com"
    support: str = "sven@nexedi.com"
    support_colleague: str = "sara@nexedi.com"
    sales: str = "sally@nexedi.com"
    support_mailbox: str = "support@nexedi.com"
    customer: str = "ann@customer.example"


class Template:
    """A store made once by the CLI, then copied for each test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def run(self, *arguments: str, actor: str | None = None) -> Outcome:
        """Run a command on the template, which must succeed."""
        isolated: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("MAILGATE_")
        }
        isolated["MAILGATE_STORE_DATA_DIR"] = str(self.directory)
        isolated["MAILGATE_LOG_LEVEL"] = "warning"
        try:
            return invoke(arguments, actor, env=isolated)
        finally:
            structlog.reset_defaults()

    def derive(self, directory: Path) -> Template:
        """Return a new template that starts as a copy of this one."""
        self.copy_to(directory)

        return Template(directory)

    def copy_to(self, data_dir: Path) -> None:
        """Make data_dir's database a copy of the template's."""
        data_dir.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(self.directory / DATABASE_NAME)
        target = sqlite3.connect(data_dir / DATABASE_NAME)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()


@pytest.fixture(scope="session")
def people() -> Company:
    """Who is who in the company fixture, without copying its store."""
    return Company()


@pytest.fixture(scope="session")
def company_template(
    tmp_path_factory: pytest.TempPathFactory, people: Company
) -> Template:
    """Our organisation, its departments, staff and one customer, once."""
    template = Template(tmp_path_factory.mktemp("company"))
    template.run(
        "org", "add", "Nexedi", "--domain", "nexedi.com", "--internal"
    )
    template.run("org", "add", "Community", "--parent", "Nexedi")
    template.run(
        "org",
        "add",
        "Support",
        "--parent",
        "Nexedi",
        "--mailbox",
        people.support_mailbox,
    )
    template.run("org", "add", "Sales", "--parent", "Nexedi")
    template.run("org", "add", "Customer", "--domain", "customer.example")
    staff = (
        (people.manager, "Jean-Paul", "Nexedi", "manager"),
        (people.community_manager, "Cédric", "Community", "staff"),
        (people.colleague, "Alain", "Community", "staff"),
        (people.support, "Sven", "Support", "staff"),
        (people.support_colleague, "Sara", "Support", "staff"),
        (people.sales, "Sally", "Sales", "staff"),
    )
    for address, name, organisation, role in staff:
        template.run(
            "contact",
            "add",
            address,
            "--name",
            name,
            "--org",
            organisation,
            "--role",
            role,
        )
    template.run(
        "contact", "add", people.customer, "--name", "Ann", "--org", "Customer"
    )

    return template


@pytest.fixture
def company(
    company_template: Template, people: Company, data_dir: Path
) -> Company:
    """Start the test's store with our organisation (see Company)."""
    company_template.copy_to(data_dir)

    return people
