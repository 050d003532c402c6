"""``mailgate ticket``: campaigns, meetings, opportunities, requests."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.app import (
    ROW_ID,
    App,
    add_step_commands,
    emit,
    json_option,
    pass_app,
    table,
)
from gateway.crm import tickets as crm_tickets
from gateway.crm.tickets import Ticket
from gateway.crm.vocabulary import TICKET_TYPES, display, parse_word
from gateway.errors import InvalidInput
from gateway.store import Store
from workflow import ticket as ticket_workflow

STEPS = ("submit", "open", "suspend", "close", "cancel", "delete")


@click.group("ticket")
def command() -> None:
    """Tickets that events follow up."""


@command.command("new")
@click.argument("ticket_type", metavar="TYPE")
@click.option("--title", required=True)
@json_option
@pass_app
def new(app: App, ticket_type: str, title: str, as_json: bool) -> None:
    """Create a draft ticket of TYPE (campaign, support-request, ...)."""
    try:
        ticket_type = parse_word(ticket_type, TICKET_TYPES, "ticket type")
    except InvalidInput as error:
        raise click.BadParameter(str(error)) from None

    async def operation(store: Store) -> Ticket:
        actor = await app.actor(store)
        async with store.transaction() as db:
            return await crm_tickets.create_ticket(
                db, ticket_type, title, actor
            )

    ticket = app.run(operation)
    emit(ticket.to_json(), as_json, f"ticket {ticket.id} ({ticket.state})")


@command.command("list")
@click.option("--state", type=click.Choice(ticket_workflow.STATES))
@json_option
@pass_app
def list_(app: App, state: str | None, as_json: bool) -> None:
    """List tickets, newest first."""

    async def operation(store: Store) -> list[Ticket]:
        async with store.reading() as db:
            return await crm_tickets.list_tickets(db, state)

    found = app.run(operation)
    emit(
        [t.to_json() for t in found],
        as_json,
        table(
            [
                (t.id, display(t.type), t.state, t.title, len(t.event_ids))
                for t in found
            ],
            ["id", "type", "state", "title", "events"],
        ),
    )


@command.command("show")
@click.argument("ticket_id", type=ROW_ID, metavar="ID")
@json_option
@pass_app
def show(app: App, ticket_id: int, as_json: bool) -> None:
    """Show a ticket with its events and history."""

    async def operation(store: Store) -> dict[str, Any]:
        async with store.reading() as db:
            ticket = await crm_tickets.get_ticket(db, ticket_id)
            steps = await crm_tickets.history_of(db, ticket_id)
        document = ticket.to_json()
        document["history"] = [step.to_json() for step in steps]

        return document

    document = app.run(operation)
    lines = [
        f"Ticket {document['id']} {document['tag']}: {document['title']}",
        f"  type:   {display(document['type'])}",
        f"  state:  {document['state']}",
        f"  events: {len(document['events'])} "
        f"({', '.join(map(str, document['events'])) or 'none'})",
        "History:",
        *(
            f"  {h['at']}  {h['transition']:<8} "
            f"{h['state_before'] or '-'} -> {h['state_after']}  "
            f"by {h['actor']}"
            for h in document["history"]
        ),
    ]
    emit(document, as_json, "\n".join(lines))


add_step_commands(command, "ticket", STEPS, crm_tickets.transition_ticket)
