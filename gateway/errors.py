"""Errors that a person can act on, shown to them as one line."""


class MailgateError(Exception):
    """A request that cannot be carried out; the message says why."""


class NotFound(MailgateError):
    """A named object (event, ticket, contact...) does not exist."""


class InvalidInput(MailgateError):
    """A value given by the user is not acceptable."""
