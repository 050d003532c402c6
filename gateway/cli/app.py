"""What every subcommand shares: settings, the acting person, output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiosqlite
import click
from tabulate import tabulate

from gateway.crm.contacts import Contact, find_by_address
from gateway.errors import InvalidInput, MailgateError
from gateway.settings import Settings
from gateway.store import Store, StoreUnavailable
from workflow import TransitionRefused

T = TypeVar("T")


@dataclass(frozen=True)
class App:
    """The state of one command-line invocation."""

    settings: Settings
    actor_address: str | None

    def run(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        """Open the store, run an operation on it, close it.

        Errors a person can act on become one line on stderr and exit 1.
        """
        try:
            return asyncio.run(self._run(operation))
        except (MailgateError, TransitionRefused, StoreUnavailable) as error:
            raise click.ClickException(str(error)) from None

    async def _run(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        store = await Store.open(self.settings.store)
        try:
            return await operation(store)
        finally:
            await store.close()

    async def actor(self, store: Store) -> Contact:
        """Return the acting person (``--as`` / MAILGATE_USER), one of ours.

        Raises InvalidInput when none is named or they are not staff.
        """
        if not self.actor_address:
            raise InvalidInput(
                "say who is acting: --as EMAIL or MAILGATE_USER=EMAIL"
            )
        async with store.reading() as db:
            person = await find_by_address(db, self.actor_address)
        if person is None or person.kind != "person":
            raise InvalidInput(f"no person with address {self.actor_address}")
        if not person.internal:
            raise InvalidInput(
                f"{self.actor_address} is not a member of our organisation"
            )

        return person


pass_app = click.make_pass_decorator(App)

# The largest integer SQLite stores; a larger one would crash the query.
SQLITE_MAX_INTEGER = 2**63 - 1

# Row ids as SQLite stores them: positive 64-bit integers.
ROW_ID = click.IntRange(1, SQLITE_MAX_INTEGER)

# A count of rows (a --limit), passed to SQLite: at least one, and within
# its 64-bit range. Every integer option or argument uses one of these two.
ROW_COUNT = click.IntRange(1, SQLITE_MAX_INTEGER)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document."
)


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print data as JSON or text for people, on stdout."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(text)


# A cell longer than this is cut, so that each row stays one line wide
# enough for a terminal; --json gives every value whole.
CELL_WIDTH = 60


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Return rows as a plain table for people, one line per row.

    Text cells are put on one line (a subject may hold line breaks) and
    cut to CELL_WIDTH characters, ending with an ellipsis.
    """
    if not rows:
        return "(none)"

    return str(
        tabulate(
            [[_cell(value) for value in row] for row in rows],
            headers=headers,
            tablefmt="simple",
        )
    )


def _cell(value: Any) -> Any:
    """Return a table cell: text on one line and at most CELL_WIDTH long."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    if len(text) <= CELL_WIDTH:
        return text

    return text[: CELL_WIDTH - 1] + "\N{HORIZONTAL ELLIPSIS}"


class Stepped(Protocol):
    """An object moved along a workflow: an event or a ticket."""

    @property
    def id(self) -> int: ...

    @property
    def state(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


StepTaker = Callable[
    [aiosqlite.Connection, int, str, Contact, str], Awaitable[Stepped]
]


def add_step_commands(
    group: click.Group, kind: str, names: Sequence[str], take: StepTaker
) -> None:
    """Add one subcommand per workflow step: ``NAME ID [--comment C]``."""
    for name in names:
        group.add_command(_step_command(kind, name, take))


def _step_command(kind: str, name: str, take: StepTaker) -> click.Command:
    @click.command(name, help=f"Take the {name!r} step on {kind} ID.")
    @click.argument("object_id", type=ROW_ID, metavar="ID")
    @click.option("--comment", default="", help="Why, for the history.")
    @json_option
    @pass_app
    def step(app: App, object_id: int, comment: str, as_json: bool) -> None:
        async def operation(store: Store) -> Stepped:
            actor = await app.actor(store)
            async with store.transaction() as db:
                return await take(db, object_id, name, actor, comment)

        moved = app.run(operation)
        emit(moved.to_json(), as_json, f"{kind} {moved.id}: {moved.state}")

    return step
