"""``mailgate contact``: persons and their addresses and roles."""

from __future__ import annotations

import sys

import click

from gateway.cli.app import App, emit, json_option, pass_app, table
from gateway.crm.contacts import (
    Contact,
    add_person,
    find_by_address,
    list_contacts,
    update_person,
)
from gateway.crm.passwords import set_password
from gateway.crm.vocabulary import ROLES
from gateway.errors import NotFound
from gateway.store import Store


@click.group("contact")
def command() -> None:
    """Persons: customers, partners and our staff."""


@command.command("add")
@click.argument("email")
@click.option("--name", required=True, help="The person's name.")
@click.option("--org", "organisation", metavar="ORG", help="Organisation.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="A role of ours (repeatable).",
)
@click.option(
    "--address",
    "extra",
    multiple=True,
    metavar="EMAIL",
    help="Another address.",
)
@json_option
@pass_app
def add(
    app: App,
    email: str,
    name: str,
    organisation: str | None,
    roles: tuple[str, ...],
    extra: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a person with address EMAIL."""

    async def operation(store: Store) -> Contact:
        async with store.transaction() as db:
            return await add_person(
                db,
                email,
                name=name,
                organisation=organisation,
                roles=roles,
                extra_addresses=extra,
            )

    person = app.run(operation)
    emit(person.to_json(), as_json, f"contact {person.id}")


@command.command("update")
@click.argument("email")
@click.option("--name", help="A new name.")
@click.option("--org", "organisation", metavar="ORG", help="Organisation.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="Roles of ours (repeatable; replaces the roles held).",
)
@click.option("--no-roles", is_flag=True, help="Take every role of ours away.")
@click.option(
    "--address",
    "extra",
    multiple=True,
    metavar="EMAIL",
    help="Add an address.",
)
@json_option
@pass_app
def update(
    app: App,
    email: str,
    name: str | None,
    organisation: str | None,
    roles: tuple[str, ...],
    no_roles: bool,
    extra: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change the person with address EMAIL (one made from mail, say)."""
    if roles and no_roles:
        raise click.UsageError("give --role or --no-roles, not both")

    async def operation(store: Store) -> Contact:
        async with store.transaction() as db:
            return await update_person(
                db,
                email,
                name=name,
                organisation=organisation,
                roles=() if no_roles else (roles or None),
                extra_addresses=extra,
            )

    person = app.run(operation)
    emit(person.to_json(), as_json, f"contact {person.id} updated")


@command.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List contacts: organisations, then persons."""

    async def operation(store: Store) -> list[Contact]:
        async with store.reading() as db:
            return await list_contacts(db)

    contacts = app.run(operation)
    rows = [
        (
            c.id,
            c.kind,
            c.name,
            ", ".join(c.addresses),
            c.organisation or "",
            ", ".join(sorted(c.roles)),
            "yes" if c.internal else "",
        )
        for c in contacts
    ]
    emit(
        [c.to_json() for c in contacts],
        as_json,
        table(
            rows,
            [
                "id",
                "kind",
                "name",
                "addresses",
                "organisation",
                "roles",
                "ours",
            ],
        ),
    )


@command.command("password")
@click.argument("email")
@click.option(
    "--password-stdin",
    "from_stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)
@json_option
@pass_app
def password(app: App, email: str, from_stdin: bool, as_json: bool) -> None:
    """Set the password our person EMAIL logs in with to send mail.

    Only a salted hash of it is stored.
    """
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )

    async def operation(store: Store) -> Contact:
        async with store.transaction() as db:
            person = await find_by_address(db, email)
            if person is None:
                raise NotFound(f"no person with address {email}")
            await set_password(db, person, secret)

        return person

    person = app.run(operation)
    emit(
        {"id": person.id, "email": person.email, "password_set": True},
        as_json,
        f"password set for {person.email}",
    )
