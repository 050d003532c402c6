"""Passwords: how our staff prove who they are to the submission listener.

Only a salted Argon2id hash (RFC 9106) is stored, made and checked by
argon2-cffi with its recommended parameters; the password itself is never
written anywhere.
"""

from __future__ import annotations

import asyncio
import functools

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.crm.contacts import (
    PERSON,
    Contact,
    find_by_address,
    set_password_hash,
)
from gateway.errors import InvalidInput

MINIMUM_LENGTH = 8

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """Return a new salted hash of a password; InvalidInput if too short."""
    if len(password) < MINIMUM_LENGTH:
        raise InvalidInput(
            f"a password needs at least {MINIMUM_LENGTH} characters"
        )

    return _HASHER.hash(password)


async def set_password(
    db: aiosqlite.Connection, person: Contact, password: str
) -> None:
    """Store the hash of a person's new password.

    Raises InvalidInput unless the person is one of our staff and the
    password is long enough.
    """
    if person.kind != PERSON or not person.internal:
        raise InvalidInput(
            f"{person.email or person.name} is not a person of our "
            "organisation"
        )

    password_hash = await asyncio.to_thread(hash_password, password)
    await set_password_hash(db, person.id, password_hash)


async def check_password(
    db: aiosqlite.Connection, login: str, password: str
) -> Contact | None:
    """Return the person of ours whose address and password these are.

    Returns None when the login names no one of ours, they have no
    password, or the password is wrong.
    """
    try:
        person = await find_by_address(db, login)
    except InvalidInput:
        person = None
    password_hash = None
    if person is not None and person.kind == PERSON and person.internal:
        async with db.execute(
            "SELECT password_hash FROM contact WHERE id = ?", (person.id,)
        ) as cursor:
            row = await cursor.fetchone()
        password_hash = row[0] if row else None

    matches = await asyncio.to_thread(
        _verify, password_hash or _unknown_hash(), password
    )
    if not matches or password_hash is None:
        return None

    return person


@functools.cache
def _unknown_hash() -> str:
    """Return a hash to check when the login names no one.

    An unknown login then takes as long to refuse as a wrong password.
    """
    return _HASHER.hash("no one has this password")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
