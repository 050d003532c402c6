"""The default configuration shipped with mailgate (``mailgate.toml``)."""
