"""Contacts: persons and organisations, their addresses, domains and roles.

An organisation marked internal is part of ours, and so is every
organisation below it (a department) and every person in one of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from gateway.addresses import (
    InvalidAddress,
    address_key,
    domain_of,
    normalize_address,
)
from gateway.clock import now_text
from gateway.crm.text import flattened, one_line
from gateway.crm.vocabulary import MANAGER, ROLES
from gateway.errors import InvalidInput, NotFound

PERSON = "person"
ORGANISATION = "organisation"


@dataclass(frozen=True, slots=True)
class Contact:
    """A person or an organisation, as the store knows it."""

    id: int
    kind: str
    name: str
    parent_id: int | None
    addresses: tuple[str, ...] = ()
    roles: frozenset[str] = frozenset()
    internal: bool = False
    domains: tuple[str, ...] = ()
    organisation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def email(self) -> str | None:
        """Return the first (main) address, if any."""
        return self.addresses[0] if self.addresses else None

    @property
    def is_manager(self) -> bool:
        """Return whether the contact holds the manager role."""
        return MANAGER in self.roles

    def to_json(self) -> dict[str, Any]:
        """Return the stable JSON form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "email": self.email,
            "addresses": list(self.addresses),
            "organisation": self.organisation,
            "roles": sorted(self.roles),
            "internal": self.internal,
            "domains": list(self.domains),
        }


def normalize(address: str) -> str:
    """Normalise an address given by a user; InvalidInput if it is not one."""
    try:
        return normalize_address(address)
    except InvalidAddress as error:
        raise InvalidInput(f"not a valid e-mail address: {error}") from None


async def add_organisation(
    db: aiosqlite.Connection,
    name: str,
    *,
    domains: Sequence[str] = (),
    addresses: Sequence[str] = (),
    internal: bool = False,
    parent: str | None = None,
) -> Contact:
    """Create an organisation; InvalidInput if the name or a domain is taken.

    A name that is not one line (a control character) is refused too.

    A department is an organisation whose parent is internal: it is
    internal too.

    Limitation: a mailbox address that inbound mail already gave to a
    person of its own (mail to it arrived before the department was set
    up) is refused here; moving an address and its history from one
    contact to another is not built yet.
    """
    name = one_line(name, "name")
    if not name:
        raise InvalidInput("an organisation needs a name")
    if await _organisation_id(db, name) is not None:
        raise InvalidInput(f"organisation {name!r} exists already")
    parent_id = None
    if parent is not None:
        parent_id = await organisation_id(db, parent)

    cursor = await db.execute(
        "INSERT INTO contact (kind, name, parent_id, internal, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (ORGANISATION, name, parent_id, int(internal), now_text()),
    )
    contact_id = _row_id(cursor)
    for domain in domains:
        await _add_domain(db, contact_id, domain)
    await _add_addresses(db, contact_id, addresses)

    return await get_contact(db, contact_id)


async def add_person(
    db: aiosqlite.Connection,
    address: str,
    *,
    name: str,
    organisation: str | None = None,
    roles: Iterable[str] = (),
    extra_addresses: Sequence[str] = (),
) -> Contact:
    """Create a person with one or more addresses and roles.

    Without an organisation, the person joins the one owning the domain of
    their address, if any (as ``ensure_contact`` does). Raises InvalidInput
    when an address belongs to someone already, a role is unknown or the
    name is not one line, NotFound when the organisation does not exist.
    """
    parent_id: int | None
    if organisation is not None:
        parent_id = await organisation_id(db, organisation)
    else:
        parent_id = await organisation_of_domain(
            db, domain_of(normalize(address))
        )
    roles = _checked_roles(roles)
    name = one_line(name, "name")

    cursor = await db.execute(
        "INSERT INTO contact (kind, name, parent_id, created_at) "
        "VALUES (?, ?, ?, ?)",
        (PERSON, name or address, parent_id, now_text()),
    )
    contact_id = _row_id(cursor)
    await _add_addresses(db, contact_id, [address, *extra_addresses])
    await db.executemany(
        "INSERT INTO contact_role (contact_id, role) VALUES (?, ?)",
        [(contact_id, role) for role in sorted(roles)],
    )

    return await get_contact(db, contact_id)


async def update_person(
    db: aiosqlite.Connection,
    address: str,
    *,
    name: str | None = None,
    organisation: str | None = None,
    roles: Iterable[str] | None = None,
    extra_addresses: Sequence[str] = (),
) -> Contact:
    """Change a person: name, organisation, roles (replaced), addresses.

    This is how a contact first created from inbound mail becomes one of
    our staff. Raises NotFound for an unknown address, InvalidInput for an
    unknown role, a name that is not one line or an address that is
    someone else's.
    """
    person = await find_by_address(db, address)
    if person is None or person.kind != PERSON:
        raise NotFound(f"no person with address {address}")

    if name is not None and one_line(name, "name"):
        await db.execute(
            "UPDATE contact SET name = ? WHERE id = ?",
            (one_line(name, "name"), person.id),
        )
    if organisation is not None:
        await db.execute(
            "UPDATE contact SET parent_id = ? WHERE id = ?",
            (await organisation_id(db, organisation), person.id),
        )
    if roles is not None:
        await db.execute(
            "DELETE FROM contact_role WHERE contact_id = ?", (person.id,)
        )
        await db.executemany(
            "INSERT INTO contact_role (contact_id, role) VALUES (?, ?)",
            [(person.id, role) for role in sorted(_checked_roles(roles))],
        )
    await _add_addresses(db, person.id, extra_addresses)

    return await get_contact(db, person.id)


def _checked_roles(roles: Iterable[str]) -> set[str]:
    """Return roles as a set (a manager is staff too); refuse unknown ones."""
    checked = set(roles)
    unknown = checked - set(ROLES)
    if unknown:
        raise InvalidInput(
            f"unknown role {sorted(unknown)[0]!r}; expected one of: "
            f"{', '.join(ROLES)}"
        )
    if MANAGER in checked:
        checked.add("staff")

    return checked


async def find_by_address(
    db: aiosqlite.Connection, address: str
) -> Contact | None:
    """Return the contact owning an address, or None.

    The domain matches case-insensitively; the local part matches as
    written, or, when no one has it so, case-insensitively if that names a
    single contact.
    """
    key = address_key(normalize(address))
    rows = list(await db.execute_fetchall(_CONTACT_BY_KEY_QUERY, {"key": key}))

    return _contact_of(rows[0]) if rows else None


async def ensure_contact(
    db: aiosqlite.Connection, address: str, name: str = ""
) -> Contact:
    """Return the contact of an address, creating an external person.

    A new person whose domain belongs to a known organisation is placed in
    it (and so is staff when that organisation is internal). The name
    (a display name from a mail) is kept with its control characters
    made spaces.
    """
    found = await find_by_address(db, address)
    if found is not None:
        return found

    address = normalize(address)
    organisation = await organisation_of_domain(db, domain_of(address))
    cursor = await db.execute(
        "INSERT INTO contact (kind, name, parent_id, created_at) "
        "VALUES (?, ?, ?, ?)",
        (PERSON, flattened(name) or address, organisation, now_text()),
    )
    contact_id = _row_id(cursor)
    await _add_addresses(db, contact_id, [address])

    return await get_contact(db, contact_id)


async def get_contact(db: aiosqlite.Connection, contact_id: int) -> Contact:
    """Return one contact with its addresses, roles and standing."""
    rows = list(await db.execute_fetchall(_CONTACT_QUERY, {"id": contact_id}))
    if not rows:
        raise NotFound(f"no contact {contact_id}")

    return _contact_of(rows[0])


def _contact_of(row: aiosqlite.Row) -> Contact:
    """Return the contact of a row of the contact query."""
    return Contact(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        parent_id=row["parent_id"],
        addresses=tuple(json.loads(row["addresses"])),
        roles=frozenset(json.loads(row["roles"])),
        internal=bool(row["internal"]),
        domains=tuple(json.loads(row["domains"])),
        organisation=row["organisation"],
    )


# A contact, its addresses, roles, domains, organisation and standing, in
# one query (each statement costs a trip into SQLite). ``picked`` names
# the contact; the chain climbs its parents to find whether it is ours.
_CONTACT_SELECT = """
chain(id, parent_id, internal) AS (
    SELECT c.id, c.parent_id, c.internal
    FROM picked JOIN contact c ON c.id = picked.id
    UNION ALL
    SELECT c.id, c.parent_id, c.internal
    FROM contact c JOIN chain ON c.id = chain.parent_id
)
SELECT c.id, c.kind, c.name, c.parent_id, p.name AS organisation,
    (SELECT json_group_array(address) FROM (
        SELECT address FROM contact_address WHERE contact_id = c.id
        ORDER BY position)) AS addresses,
    (SELECT json_group_array(role) FROM contact_role
        WHERE contact_id = c.id) AS roles,
    (SELECT json_group_array(domain) FROM (
        SELECT domain FROM organisation_domain WHERE organisation_id = c.id
        ORDER BY domain)) AS domains,
    (SELECT MAX(internal) FROM chain) AS internal
FROM picked JOIN contact c ON c.id = picked.id
LEFT JOIN contact p ON p.id = c.parent_id
"""

_CONTACT_QUERY = (
    f"WITH RECURSIVE picked(id) AS (SELECT :id), {_CONTACT_SELECT}"
)

# The owner of an address key, by find_by_address's two rules: the key
# as written, else the one contact whose key differs only by case.
_CONTACT_BY_KEY_QUERY = f"""
WITH RECURSIVE matches(key, contact_id) AS (
    SELECT key, contact_id FROM contact_address
    WHERE key = :key COLLATE NOCASE
),
picked(id) AS (
    SELECT COALESCE(
        (SELECT contact_id FROM matches WHERE key = :key),
        (SELECT CASE WHEN COUNT(DISTINCT contact_id) = 1
            THEN MIN(contact_id) END FROM matches)
    )
),
{_CONTACT_SELECT}"""


async def list_contacts(db: aiosqlite.Connection) -> list[Contact]:
    """Return every contact, organisations first, then by name."""
    async with db.execute(
        "SELECT id FROM contact ORDER BY kind, name COLLATE NOCASE, id"
    ) as cursor:
        ids = [int(row[0]) for row in await cursor.fetchall()]

    return [await get_contact(db, contact_id) for contact_id in ids]


async def is_internal(db: aiosqlite.Connection, contact_id: int) -> bool:
    """Return whether the contact is, or belongs to, our organisation."""
    async with db.execute(
        """
        WITH RECURSIVE chain(id, parent_id, internal) AS (
            SELECT id, parent_id, internal FROM contact WHERE id = ?
            UNION ALL
            SELECT c.id, c.parent_id, c.internal
            FROM contact c JOIN chain ON c.id = chain.parent_id
        )
        SELECT MAX(internal) FROM chain
        """,
        (contact_id,),
    ) as cursor:
        row = await cursor.fetchone()

    return bool(row and row[0])


async def department_of(
    db: aiosqlite.Connection, contact_id: int
) -> int | None:
    """Return the internal organisation a contact is or belongs to."""
    return department(await get_contact(db, contact_id))


def department(contact: Contact) -> int | None:
    """Return the internal organisation a contact is or belongs to."""
    if contact.kind == ORGANISATION:
        return contact.id if contact.internal else None
    if contact.parent_id is not None and contact.internal:
        return contact.parent_id

    return None


async def members_of(
    db: aiosqlite.Connection, organisation_id: int
) -> list[int]:
    """Return the persons of an organisation and of those below it."""
    async with db.execute(
        """
        WITH RECURSIVE tree(id) AS (
            SELECT ?
            UNION ALL
            SELECT c.id FROM contact c JOIN tree ON c.parent_id = tree.id
            WHERE c.kind = 'organisation'
        )
        SELECT c.id FROM contact c JOIN tree ON c.parent_id = tree.id
        WHERE c.kind = 'person' ORDER BY c.id
        """,
        (organisation_id,),
    ) as cursor:
        return [int(row[0]) for row in await cursor.fetchall()]


async def organisation_id(db: aiosqlite.Connection, name: str) -> int:
    """Return the id of an organisation by name; NotFound if none."""
    found = await _organisation_id(db, name)
    if found is None:
        raise NotFound(f"no organisation named {name!r}")

    return found


async def organisation_of_domain(
    db: aiosqlite.Connection, domain: str
) -> int | None:
    """Return the organisation owning a mail domain, or None."""
    async with db.execute(
        "SELECT organisation_id FROM organisation_domain WHERE domain = ?",
        (domain.lower(),),
    ) as cursor:
        row = await cursor.fetchone()

    return int(row[0]) if row else None


async def internal_domains(db: aiosqlite.Connection) -> set[str]:
    """Return every mail domain of our own organisation."""
    async with db.execute(
        "SELECT domain, organisation_id FROM organisation_domain"
    ) as cursor:
        rows = list(await cursor.fetchall())

    return {row[0] for row in rows if await is_internal(db, int(row[1]))}


async def set_password_hash(
    db: aiosqlite.Connection, contact_id: int, password_hash: str
) -> None:
    """Store a person's password hash (never the password)."""
    await db.execute(
        "UPDATE contact SET password_hash = ? WHERE id = ?",
        (password_hash, contact_id),
    )


async def _organisation_id(db: aiosqlite.Connection, name: str) -> int | None:
    async with db.execute(
        "SELECT id FROM contact WHERE kind = 'organisation' "
        "AND name = ? COLLATE NOCASE",
        (name.strip(),),
    ) as cursor:
        row = await cursor.fetchone()

    return int(row[0]) if row else None


async def _add_domain(
    db: aiosqlite.Connection, organisation: int, domain: str
) -> None:
    domain = domain_of(normalize(f"postmaster@{domain.strip()}"))
    if await organisation_of_domain(db, domain) is not None:
        raise InvalidInput(
            f"domain {domain!r} belongs to another organisation"
        )
    await db.execute(
        "INSERT INTO organisation_domain (domain, organisation_id) "
        "VALUES (?, ?)",
        (domain, organisation),
    )


async def _add_addresses(
    db: aiosqlite.Connection, contact_id: int, addresses: Iterable[str]
) -> None:
    async with db.execute(
        "SELECT COUNT(*) FROM contact_address WHERE contact_id = ?",
        (contact_id,),
    ) as cursor:
        row = await cursor.fetchone()
    position = int(row[0]) if row else 0
    for address in addresses:
        normalised = normalize(address)
        key = address_key(normalised)
        # Mail finds a contact whatever the case of its local part, so
        # two contacts may not differ only by case.
        async with db.execute(
            "SELECT address FROM contact_address WHERE key = ? COLLATE NOCASE",
            (key,),
        ) as cursor:
            taken = await cursor.fetchone()
        if taken is not None:
            raise InvalidInput(
                f"address {normalised} belongs to another contact "
                f"(as {taken[0]})"
            )
        await db.execute(
            "INSERT INTO contact_address (key, address, contact_id, position) "
            "VALUES (?, ?, ?, ?)",
            (key, normalised, contact_id, position),
        )
        position += 1


def _row_id(cursor: aiosqlite.Cursor) -> int:
    if cursor.lastrowid is None:
        raise RuntimeError("insert returned no row id")

    return cursor.lastrowid


async def our_mailbox(db: aiosqlite.Connection, address: str) -> int | None:
    """Return the department an address of ours leads to, else None.

    An address is ours when it belongs to a person or organisation of ours,
    or is at a mail domain of ours (then it leads to that domain's
    organisation). Returns None for anyone else's address.
    """
    return (await find_mailbox(db, address))[1]


async def find_mailbox(
    db: aiosqlite.Connection, address: str
) -> tuple[Contact | None, int | None]:
    """Return the contact owning an address and where it leads, if ours.

    The contact is None when no one owns the address (or it is not a
    valid one); the department is what ``our_mailbox`` answers. For
    callers that need both, at the cost of one lookup.
    """
    try:
        found = await find_by_address(db, address)
    except InvalidInput:
        return None, None
    if found is not None and found.internal:
        found_department = department(found)
        return found, (
            found.id if found_department is None else found_department
        )
    if found is not None:
        return found, None

    rows = await db.execute_fetchall(
        """
        WITH RECURSIVE chain(id, parent_id, internal) AS (
            SELECT c.id, c.parent_id, c.internal
            FROM organisation_domain d JOIN contact c
            ON c.id = d.organisation_id WHERE d.domain = :domain
            UNION ALL
            SELECT c.id, c.parent_id, c.internal
            FROM contact c JOIN chain ON c.id = chain.parent_id
        )
        SELECT (SELECT organisation_id FROM organisation_domain
            WHERE domain = :domain), MAX(internal) FROM chain
        """,
        {"domain": domain_of(address).lower()},
    )
    row = next(iter(rows), None)
    if row is None or row[0] is None or not row[1]:
        return None, None

    return None, int(row[0])
