"""``mailgate serve``: run the gateway daemon in the foreground."""

from __future__ import annotations

import asyncio

import click

from gateway.cli.app import App, pass_app
from gateway.server import serve
from gateway.store import StoreUnavailable


@click.command("serve")
@pass_app
def command(app: App) -> None:
    """Run the gateway (listeners per the configuration) until stopped."""
    try:
        asyncio.run(serve(app.settings))
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot start: {error}") from None
