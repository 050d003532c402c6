"""``mailgate org``: organisations, our own departments among them."""

from __future__ import annotations

import click

from gateway.cli.app import App, emit, json_option, pass_app, table
from gateway.crm.contacts import Contact, add_organisation, list_contacts
from gateway.store import Store


@click.group("org")
def command() -> None:
    """Organisations and departments."""


@command.command("add")
@click.argument("name")
@click.option("--domain", "domains", multiple=True, help="A mail domain.")
@click.option(
    "--mailbox",
    "addresses",
    multiple=True,
    metavar="EMAIL",
    help="An address of the organisation itself (support@...).",
)
@click.option("--internal", is_flag=True, help="Part of our organisation.")
@click.option("--parent", metavar="ORG", help="The organisation above it.")
@json_option
@pass_app
def add(
    app: App,
    name: str,
    domains: tuple[str, ...],
    addresses: tuple[str, ...],
    internal: bool,
    parent: str | None,
    as_json: bool,
) -> None:
    """Add an organisation NAME."""

    async def operation(store: Store) -> Contact:
        async with store.transaction() as db:
            return await add_organisation(
                db,
                name,
                domains=domains,
                addresses=addresses,
                internal=internal,
                parent=parent,
            )

    organisation = app.run(operation)
    emit(organisation.to_json(), as_json, f"organisation {organisation.id}")


@command.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List organisations."""

    async def operation(store: Store) -> list[Contact]:
        async with store.reading() as db:
            return [c for c in await list_contacts(db) if c.kind != "person"]

    organisations = app.run(operation)
    rows = [
        (
            o.id,
            o.name,
            ", ".join(o.domains),
            o.organisation or "",
            "yes" if o.internal else "",
        )
        for o in organisations
    ]
    emit(
        [o.to_json() for o in organisations],
        as_json,
        table(rows, ["id", "name", "domains", "parent", "internal"]),
    )
