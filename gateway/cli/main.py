"""The ``mailgate`` command: global options and the subcommands."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli import (
    contact,
    event,
    imap,
    ingest,
    org,
    quarantine,
    serve,
    ticket,
    worklist,
)
from gateway.cli.app import App
from gateway.logs import configure_logging
from gateway.settings import SettingsError, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MAILGATE_CONFIG",
    help="Configuration file (default: the one shipped in config/).",
)
@click.option(
    "--as",
    "actor",
    envvar="MAILGATE_USER",
    metavar="EMAIL",
    help="The person acting (default: $MAILGATE_USER).",
)
@click.version_option(package_name="mailgate")
@click.pass_context
def main(
    context: click.Context, config: Path | None, actor: str | None
) -> None:
    """mailgate: every communication of the organisation, as CRM events."""
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings.log)
    context.obj = App(settings=settings, actor_address=actor)


for module in (
    org,
    contact,
    event,
    ticket,
    worklist,
    ingest,
    quarantine,
    imap,
    serve,
):
    main.add_command(module.command)
