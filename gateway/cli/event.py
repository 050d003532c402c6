"""``mailgate event``: create, list, show and move events."""

from __future__ import annotations

from email.errors import MessageError
from pathlib import Path
from typing import Any

import click

from gateway.cli.app import (
    ROW_COUNT,
    ROW_ID,
    App,
    add_step_commands,
    emit,
    json_option,
    pass_app,
    table,
)
from gateway.crm import events as crm_events
from gateway.crm import steps as event_steps
from gateway.crm.contacts import find_by_address
from gateway.crm.deliveries import retry_delivery
from gateway.crm.events import Event, NewEvent
from gateway.crm.tickets import create_ticket
from gateway.crm.vocabulary import (
    DIRECTIONS,
    EVENT_TYPES,
    TICKET_TYPES,
    display,
    parse_word,
)
from gateway.errors import InvalidInput, MailgateError, NotFound
from gateway.outbox.queue import QUEUED, entry_of
from gateway.outbox.render import render_event, rendered_by_us
from gateway.store import Store
from workflow import event as event_workflow

STEPS = ("plan", "confirm", "send", "receive", "deliver", "cancel", "delete")


@click.group("event")
def command() -> None:
    """Events: mails, calls, visits, notes, letters..."""


@command.command("new")
@click.argument("event_type", metavar="TYPE")
@click.option("--from", "sender", required=True, metavar="EMAIL")
@click.option("--to", "to", multiple=True, required=True, metavar="EMAIL")
@click.option("--cc", "cc", multiple=True, metavar="EMAIL")
@click.option("--title", required=True)
@click.option("--nature")
@click.option("--content", default=None, help="The text of the event.")
@click.option(
    "--content-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the text from a file.",
)
@click.option("--causality", type=ROW_ID, metavar="ID")
@click.option("--ticket", type=ROW_ID, metavar="ID")
@click.option("--direction", type=click.Choice(DIRECTIONS))
@json_option
@pass_app
def new(
    app: App,
    event_type: str,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    title: str,
    nature: str | None,
    content: str | None,
    content_file: Path | None,
    causality: int | None,
    ticket: int | None,
    direction: str | None,
    as_json: bool,
) -> None:
    """Create a draft event of TYPE (mail-message, phone-call, ...)."""
    if content is not None and content_file is not None:
        raise click.UsageError("give --content or --content-file, not both")
    if not title.strip():
        raise click.BadParameter("a title is needed", param_hint="--title")
    try:
        text = content_file.read_text() if content_file else content or ""
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(
            f"cannot read it as UTF-8 text: {error}",
            param_hint="--content-file",
        ) from None
    try:
        event_type = parse_word(event_type, EVENT_TYPES, "event type")
        if nature is not None:
            nature = parse_word(nature, app.settings.crm.natures, "nature")
    except InvalidInput as error:
        raise click.BadParameter(str(error)) from None

    async def operation(store: Store) -> Event:
        actor = await app.actor(store)
        async with store.transaction() as db:
            return await crm_events.create_event(
                db,
                NewEvent(
                    type=event_type,
                    sender=sender,
                    to=to,
                    cc=cc,
                    title=title,
                    nature=nature,
                    content=text,
                    causality_id=causality,
                    ticket_id=ticket,
                    direction=direction,
                ),
                actor,
            )

    event = app.run(operation)
    emit(event.to_json(), as_json, f"event {event.id} ({event.state})")


@command.command("list")
@click.option("--state", type=click.Choice(event_workflow.STATES))
@click.option("--type", "event_type")
@click.option("--direction", type=click.Choice(DIRECTIONS))
@click.option("--ticket", type=ROW_ID, metavar="ID")
@click.option("--contact", metavar="EMAIL", help="Sent or received by.")
@click.option("--limit", type=ROW_COUNT, default=100, show_default=True)
@json_option
@pass_app
def list_(
    app: App,
    state: str | None,
    event_type: str | None,
    direction: str | None,
    ticket: int | None,
    contact: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List events, newest first."""

    async def operation(store: Store) -> list[Event]:
        async with store.reading() as db:
            return await crm_events.list_events(
                db,
                state=state,
                event_type=event_type,
                direction=direction,
                ticket_id=ticket,
                contact=contact,
                limit=limit,
            )

    found = app.run(operation)
    emit(
        [summary(event) for event in found],
        as_json,
        table(
            [
                (
                    e.id,
                    display(e.type),
                    e.state,
                    e.direction,
                    e.sender.address,
                    _shorten(e.title),
                    e.ticket_id or "",
                )
                for e in found
            ],
            ["id", "type", "state", "direction", "sender", "title", "ticket"],
        ),
    )


# What rendering a stored event as a mail raises when a value does not fit
# in it (the stdlib refuses a header value with a line break).
UNRENDERABLE = (ValueError, MessageError)


@command.command("show")
@click.argument("event_id", type=ROW_ID, metavar="ID")
@click.option(
    "--raw",
    is_flag=True,
    help="Print the message itself: as it will be sent, or as it came.",
)
@json_option
@pass_app
def show(app: App, event_id: int, raw: bool, as_json: bool) -> None:
    """Show an event with its history, causality chain and mail."""
    bounce_domain = app.settings.outbox.bounce_domain

    async def operation(store: Store) -> dict[str, Any]:
        async with store.reading() as db:
            event = await crm_events.get_event(db, event_id)
            chain = await crm_events.causality_chain(db, event)
            steps = await crm_events.history_of(db, event_id)
            document = event.to_json()
            document["history"] = [step.to_json() for step in steps]
            document["causality_chain"] = [summary(e) for e in chain]
            if not rendered_by_us(event):
                return document
            entry = await entry_of(db, event_id)
            document["delivery"] = entry.to_json() if entry else None
            try:
                mail = await render_event(
                    db, store.blobs, event, bounce_domain=bounce_domain
                )
                headers = [list(field) for field in mail.headers()]
            except OSError as error:
                raise MailgateError(
                    f"cannot render event {event_id}: {error}"
                ) from None
            except UNRENDERABLE as error:
                # A stored value the mail cannot carry (a line break in a
                # header field): the rest of the event is still shown.
                document["outgoing_mail"] = {"error": str(error)}
                return document
        document["outgoing_mail"] = {
            "mail_from": mail.mail_from,
            "rcpt_tos": list(mail.rcpt_tos),
            "headers": headers,
            "raw": mail.message.decode("utf-8", "replace") if raw else None,
        }

        return document

    async def message(store: Store) -> bytes:
        try:
            async with store.reading() as db:
                event = await crm_events.get_event(db, event_id)
                if rendered_by_us(event):
                    mail = await render_event(
                        db, store.blobs, event, bounce_domain=bounce_domain
                    )
                    return mail.message
            if event.raw_sha256 is None:
                raise NotFound(f"event {event_id} has no message")
            return store.blobs.read(event.raw_sha256)
        except (OSError, *UNRENDERABLE) as error:
            raise MailgateError(
                f"cannot read the message of event {event_id}: {error}"
            ) from None

    if raw and not as_json:
        click.echo(app.run(message), nl=False)
        return
    document = app.run(operation)
    emit(document, as_json, _describe(document))


add_step_commands(command, "event", STEPS, event_steps.transition)


@command.command("assign")
@click.argument("event_id", type=ROW_ID, metavar="ID")
@click.option("--to", "assignee", required=True, metavar="EMAIL")
@click.option("--comment", default="")
@json_option
@pass_app
def assign(
    app: App, event_id: int, assignee: str, comment: str, as_json: bool
) -> None:
    """Hand received event ID to another person of ours."""

    async def operation(store: Store) -> Event:
        actor = await app.actor(store)
        async with store.transaction() as db:
            person = await find_by_address(db, assignee)
            if person is None:
                raise NotFound(f"no person with address {assignee}")
            return await event_steps.assign(
                db, event_id, person, actor, comment
            )

    event = app.run(operation)
    emit(event.to_json(), as_json, f"event {event.id} assigned to {assignee}")


@command.command("acknowledge")
@click.argument("event_id", type=ROW_ID, metavar="ID")
@click.option("--comment", default="")
@json_option
@pass_app
def acknowledge(app: App, event_id: int, comment: str, as_json: bool) -> None:
    """Record event ID of another department as received in yours."""

    async def operation(store: Store) -> Event:
        actor = await app.actor(store)
        async with store.transaction() as db:
            return await event_steps.acknowledge(db, event_id, actor, comment)

    event = app.run(operation)
    emit(event.to_json(), as_json, f"event {event.id} ({event.state})")


@command.command("retry")
@click.argument("event_id", type=ROW_ID, metavar="ID")
@click.option("--comment", default="", help="Why, for the history.")
@json_option
@pass_app
def retry(app: App, event_id: int, comment: str, as_json: bool) -> None:
    """Queue failed Mail Message ID again, for whom it failed only."""

    async def operation(store: Store) -> Event:
        actor = await app.actor(store)
        async with store.transaction() as db:
            return await retry_delivery(db, event_id, actor, comment)

    event = app.run(operation)
    queued = [
        p.address for p in event.recipients if p.delivery_status == QUEUED
    ]
    emit(
        event.to_json(),
        as_json,
        f"event {event.id} ({event.state}): queued again for "
        + ", ".join(dict.fromkeys(queued)),
    )


@command.command("follow-up")
@click.argument("event_id", type=ROW_ID, metavar="ID")
@click.option("--ticket", "ticket_id", type=ROW_ID, metavar="ID")
@click.option("--new", "ticket_type", metavar="TYPE", help="New ticket type.")
@click.option("--title", help="Title of the new ticket.")
@click.option("--comment", default="")
@json_option
@pass_app
def follow_up(
    app: App,
    event_id: int,
    ticket_id: int | None,
    ticket_type: str | None,
    title: str | None,
    comment: str,
    as_json: bool,
) -> None:
    """Attach event ID to a ticket (existing or new); delivers if received."""
    if (ticket_id is None) == (ticket_type is None):
        raise click.UsageError("give --ticket ID or --new TYPE --title T")
    if ticket_type is not None:
        if not title:
            raise click.UsageError("--new needs --title")
        try:
            ticket_type = parse_word(ticket_type, TICKET_TYPES, "ticket type")
        except InvalidInput as error:
            raise click.BadParameter(str(error)) from None

    async def operation(store: Store) -> Event:
        actor = await app.actor(store)
        async with store.transaction() as db:
            target = ticket_id
            if ticket_type is not None and title is not None:
                target = (
                    await create_ticket(db, ticket_type, title, actor)
                ).id
            assert target is not None
            return await event_steps.follow_up(
                db, event_id, target, actor, comment
            )

    event = app.run(operation)
    emit(
        event.to_json(),
        as_json,
        f"event {event.id} follows up ticket {event.ticket_id} "
        f"({event.state})",
    )


def summary(event: Event) -> dict[str, Any]:
    """Return the short JSON form of an event used in listings."""
    return {
        "id": event.id,
        "type": event.type,
        "nature": event.nature,
        "title": event.title,
        "sender": event.sender.address,
        "recipients": [party.address for party in event.recipients],
        "direction": event.direction,
        "state": event.state,
        "causality": event.causality_id,
        "ticket": event.ticket_id,
        "message_id": event.message_id,
        "start_date": event.start_date,
    }


def _describe_mail(document: dict[str, Any]) -> list[str]:
    """Return the lines showing the mail as it will be sent."""
    mail = document.get("outgoing_mail")
    if not mail:
        return []

    if "error" in mail:
        return [f"As it will be sent: cannot render it: {mail['error']}"]

    lines = ["As it will be sent:"]
    lines.extend(f"  {name}: {value}" for name, value in mail["headers"])
    lines.append(f"  (envelope) MAIL FROM: <{mail['mail_from']}>")
    lines.extend(f"  (envelope) RCPT TO: <{a}>" for a in mail["rcpt_tos"])
    delivery = document.get("delivery")
    if delivery:
        lines.append(
            f"  delivery: {delivery['attempts']} attempt(s), "
            f"last reply: {delivery['last_reply'] or '-'}"
        )
        if delivery["next_attempt_at"] and not delivery["failure"]:
            lines.append(f"  next attempt: {delivery['next_attempt_at']}")
        if delivery["failure"]:
            lines.append(f"  failed: {delivery['failure']}")
    for party in document["recipients"]:
        if party["delivery_status"]:
            lines.append(
                f"  {party['email']}: {party['delivery_status']}"
                + (
                    f" ({party['delivery_detail']})"
                    if party["delivery_detail"]
                    else ""
                )
            )

    return lines


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe(document: dict[str, Any]) -> str:
    recipients = ", ".join(
        f"{r['email']} ({r['kind']}"
        + (
            f", {r['delivery_status']}: {r['delivery_detail'] or ''}"
            if r["delivery_status"]
            in ("bounced", "deferred", "delayed", "failed")
            else ""
        )
        + ")"
        for r in document["recipients"]
    )
    lines = [
        f"Event {document['id']}: {document['title']}",
        f"  type:       {display(document['type'])}",
        f"  nature:     {document['nature'] or ''}",
        f"  state:      {document['state']}",
        f"  direction:  {document['direction']}",
        f"  sender:     {document['sender']}",
        f"  recipients: {recipients}",
        f"  date:       {document['start_date']}",
        f"  causality:  {document['causality'] or ''}",
        f"  ticket:     {document['ticket'] or ''}",
    ]
    if document["message_id"]:
        lines.append(f"  message-id: {document['message_id']}")
    for item in document["attachments"]:
        lines.append(
            f"  attachment: {item['filename'] or '(no name)'} "
            f"{item['content_type']} {item['size']} bytes"
        )
    if document["causality_chain"]:
        lines.append("Caused by:")
        lines.extend(
            f"  {e['id']}: {e['title']} ({e['state']})"
            for e in document["causality_chain"]
        )
    lines.extend(_describe_mail(document))
    lines.append("History:")
    lines.extend(
        f"  {h['at']}  {h['transition']:<12} "
        f"{h['state_before'] or '-'} -> {h['state_after']}  by {h['actor']}"
        + (f"  ({h['comment']})" if h["comment"] else "")
        for h in document["history"]
    )
    if document["content"]:
        lines.extend(["", document["content"]])

    return "\n".join(lines)
