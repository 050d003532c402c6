"""``mailgate quarantine``: messages kept raw, not understood."""

from __future__ import annotations

import click

from gateway.cli.app import ROW_ID, App, emit, json_option, pass_app, table
from gateway.errors import InvalidInput, NotFound
from gateway.ingest import quarantine as held_messages
from gateway.ingest.pipeline import QUARANTINED, Delivery, Ingestor, Outcome
from gateway.ingest.quarantine import Held
from gateway.store import Store


@click.group("quarantine")
def command() -> None:
    """Messages set aside: list them, retry one once the cause is fixed."""


@command.command("list")
@click.option("--all", "include_released", is_flag=True, help="Also retried.")
@json_option
@pass_app
def list_(app: App, include_released: bool, as_json: bool) -> None:
    """List quarantined messages, oldest first."""

    async def operation(store: Store) -> list[Held]:
        async with store.reading() as db:
            return await held_messages.list_held(
                db, include_released=include_released
            )

    found = app.run(operation)
    emit(
        [item.to_json() for item in found],
        as_json,
        table(
            [
                (
                    item.id,
                    item.received_at,
                    item.source,
                    ", ".join(item.mailboxes),
                    item.state,
                    item.reason,
                )
                for item in found
            ],
            ["id", "received", "source", "mailboxes", "state", "reason"],
        ),
    )


@command.command("retry")
@click.argument("held_id", type=ROW_ID, metavar="ID")
@json_option
@pass_app
def retry(app: App, held_id: int, as_json: bool) -> None:
    """Run quarantined message ID through the inbound path again."""

    async def operation(store: Store) -> Outcome:
        async with store.reading() as db:
            held = await held_messages.get_held(db, held_id)
        if held.state != "held":
            raise InvalidInput(f"message {held_id} was already taken in")
        try:
            raw = store.blobs.read(held.raw_sha256)
        except FileNotFoundError:
            raise NotFound(
                f"the raw file of message {held_id} is missing from "
                f"{store.blobs.root}"
            ) from None
        outcome = await Ingestor(store).ingest(
            Delivery(
                raw=raw,
                mailboxes=held.mailboxes,
                source=held.source,
                mail_from=held.mail_from,
            )
        )
        if outcome.result != QUARANTINED:
            async with store.transaction() as db:
                await held_messages.release(db, held_id, outcome.event_id)

        return outcome

    outcome = app.run(operation)
    if outcome.result == QUARANTINED:
        raise click.ClickException(
            f"message {held_id} is still not understood: {outcome.reason}"
        )
    emit(
        outcome.to_json(),
        as_json,
        f"message {held_id} taken in: {outcome.result}, "
        f"event {outcome.event_id}",
    )
