"""The admin command line, ``mailgate``: one module per subcommand."""
