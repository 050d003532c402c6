"""Address normalisation: the cached answers are the validator's own."""

from __future__ import annotations

import pytest

from gateway.addresses import InvalidAddress, normalize_address

SPELLINGS = [
    "ann@customer.example",
    "Ann@Customer.EXAMPLE",
    "  ann@customer.example ",
    "hans@xn--bcher-kva.example.org",
    "hans@BÜCHER.example.org",
    '"john smith"@example.org',
    "user@[192.0.2.1]",
    "josé@exämple.org",
    "ann@@customer.example",
    "no at sign",
    "",
]


def _uncached(text: str) -> str | type[InvalidAddress]:
    try:
        return str(normalize_address.__wrapped__(text))
    except InvalidAddress:
        return InvalidAddress


@pytest.mark.parametrize("text", SPELLINGS)
def test_the_cache_answers_as_the_validator(text: str) -> None:
    """Asked once or twice, the cached function gives the uncached value,
    and an invalid address raises every time (errors are not kept)."""
    normalize_address.cache_clear()
    expected = _uncached(text)

    for _ in range(2):
        if expected is InvalidAddress:
            with pytest.raises(InvalidAddress):
                normalize_address(text)
        else:
            assert normalize_address(text) == expected


def test_the_cache_is_bounded() -> None:
    """Mail from ever new senders cannot grow the cache without end."""
    normalize_address.cache_clear()
    maxsize = normalize_address.cache_info().maxsize
    assert maxsize is not None

    for number in range(maxsize + 10):
        normalize_address(f"sender{number}@example.org")

    assert normalize_address.cache_info().currsize == maxsize
