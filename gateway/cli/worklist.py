"""``mailgate worklist``: what waits for the acting person."""

from __future__ import annotations

import click

from gateway.cli.app import App, emit, json_option, pass_app, table
from gateway.crm.worklists import Worklist, worklists_for
from gateway.store import Store


@click.command("worklist")
@json_option
@pass_app
def command(app: App, as_json: bool) -> None:
    """Show each worklist of the acting person, with counts.

    Each heading gives the list's title, then its name as --json and the
    README spell it, then how many events it holds.
    """

    async def operation(store: Store) -> list[Worklist]:
        actor = await app.actor(store)
        async with store.reading() as db:
            return await worklists_for(db, actor)

    worklists = app.run(operation)
    parts = []
    for worklist in worklists:
        shown = len(worklist.events)
        parts.append(
            f"{worklist.title} ({worklist.name}): {worklist.count}"
            + (f", the first {shown}:" if shown < worklist.count else "")
        )
        if worklist.events and worklist.reasons:
            parts.append(
                table(
                    [
                        (e.id, e.state, e.sender.address, e.title, reason)
                        for e in worklist.events
                        for reason in [worklist.reasons.get(e.id, "")]
                    ],
                    ["id", "state", "sender", "title", "reason"],
                )
            )
        elif worklist.events:
            parts.append(
                table(
                    [
                        (e.id, e.state, e.sender.address, e.title)
                        for e in worklist.events
                    ],
                    ["id", "state", "sender", "title"],
                )
            )
        parts.append("")
    emit([w.to_json() for w in worklists], as_json, "\n".join(parts).rstrip())
