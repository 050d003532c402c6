"""E-mail address normalisation, shared by contacts and inbound mail."""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    """An e-mail address that is not syntactically valid."""


@lru_cache(maxsize=8192)
def normalize_address(text: str) -> str:
    """Return the canonical spelling of an e-mail address.

    The domain is lower-cased and given in its Unicode form (an IDNA
    A-label such as ``xn--bcher-kva.example.org`` becomes
    ``bücher.example.org``); the local part is kept as written. No DNS
    lookup is made. Raises InvalidAddress with the validator's reason.
    """
    try:
        validated = validate_email(
            text.strip(),
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=True,
        )
    except EmailNotValidError as error:
        raise InvalidAddress(f"{text!r}: {error}") from None

    return str(validated.normalized)


def address_key(address: str) -> str:
    """Return the key that matches addresses: the domain case-insensitively.

    The address must already be normalised.
    """
    local_part, _, domain = address.rpartition("@")

    return f"{local_part}@{domain.lower()}"


def domain_of(address: str) -> str:
    """Return the lower-cased domain of a normalised address."""
    return address.rpartition("@")[2].lower()
