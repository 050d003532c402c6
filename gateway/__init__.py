"""mailgate: a mail gateway that records every communication as events."""

__version__ = "0.1.0"
