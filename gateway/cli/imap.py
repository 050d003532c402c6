"""``mailgate imap``: the IMAP mailboxes the gateway takes mail from."""

from __future__ import annotations

import click

from gateway.cli.app import App, emit, json_option, pass_app, table
from gateway.ingest.imap_check import CheckReport, check_mailbox
from gateway.ingest.imap_session import ImapError
from gateway.settings import SettingsError
from gateway.store import Store


@click.group("imap")
def command() -> None:
    """IMAP mailboxes: compare a server's folder with the store."""


@command.command("check")
@click.argument("mailbox")
@json_option
@pass_app
def check(app: App, mailbox: str, as_json: bool) -> None:
    """List messages in MAILBOX's folder that have no event.

    Exits 1 when any is missing. MAILBOX is a name from [[imap.mailboxes]].
    """
    try:
        settings = app.settings.imap.mailbox(mailbox)
    except KeyError:
        raise click.ClickException(
            f"no IMAP mailbox named {mailbox!r} in the configuration"
        ) from None

    async def operation(store: Store) -> CheckReport:
        return await check_mailbox(settings, store)

    try:
        report = app.run(operation)
    except (ImapError, SettingsError) as error:
        raise click.ClickException(f"{mailbox}: {error}") from None

    emit(
        report.to_json(),
        as_json,
        table(
            [
                (item.uid, item.message_id or "", item.sender or "")
                for item in report.missing
            ],
            ["uid", "message_id", "sender"],
        ),
    )
    if report.missing:
        click.get_current_context().exit(1)
