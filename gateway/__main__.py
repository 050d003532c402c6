"""``python -m gateway``: the same as the ``mailgate`` command."""

from gateway.cli.main import main

main(prog_name="mailgate")
