"""``mailgate ingest``: run message files through the inbound path."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.app import App, emit, json_option, pass_app, table
from gateway.crm.contacts import normalize, our_mailbox
from gateway.errors import InvalidInput
from gateway.ingest.pipeline import QUARANTINED, Delivery, Ingestor, Outcome
from gateway.store import Store


@click.command("ingest")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--mailbox",
    "mailboxes",
    multiple=True,
    metavar="EMAIL",
    help="Our mailbox it was delivered to (as the envelope would say).",
)
@click.option("--dry-run", is_flag=True, help="Show what would happen only.")
@json_option
@pass_app
def command(
    app: App,
    files: tuple[Path, ...],
    mailboxes: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Take in FILES (.eml, raw RFC 5322) as if they had arrived by mail.

    Exits 1 when a file could not be understood (it is then quarantined).
    """

    async def operation(store: Store) -> list[Outcome]:
        async with store.reading() as db:
            for mailbox in mailboxes:
                if await our_mailbox(db, normalize(mailbox)) is None:
                    raise InvalidInput(
                        f"--mailbox {mailbox}: not a mailbox of ours"
                    )
        ingestor = Ingestor(store)
        outcomes = []
        for path in files:
            delivery = Delivery(
                raw=path.read_bytes(), mailboxes=mailboxes, source="file"
            )
            outcomes.append(await ingestor.ingest(delivery, dry_run=dry_run))

        return outcomes

    outcomes = app.run(operation)
    would = "would be " if dry_run else ""
    rows = [
        (
            path.name,
            would + outcome.result,
            outcome.event_id or outcome.quarantine_id or "",
            outcome.direction or "",
            (outcome.thread_reason or {}).get("header", ""),
            outcome.reason or "",
        )
        for path, outcome in zip(files, outcomes, strict=True)
    ]
    emit(
        [
            {"file": str(path), "dry_run": dry_run, **outcome.to_json()}
            for path, outcome in zip(files, outcomes, strict=True)
        ],
        as_json,
        table(
            rows,
            ["file", "result", "id", "direction", "threaded by", "reason"],
        )
        + ("\ndry run: nothing was stored" if dry_run else ""),
    )
    held = sum(outcome.result == QUARANTINED for outcome in outcomes)
    if held:
        raise click.ClickException(
            f"{held} of {len(outcomes)} file(s) not understood "
            f"{'(dry run)' if dry_run else 'and quarantined'}"
        )
