"""Contacts: addresses normalised and matched, our departments, direction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.crm.contacts import (
    add_organisation,
    add_person,
    department_of,
    ensure_contact,
    find_by_address,
    find_mailbox,
    get_contact,
    our_mailbox,
)
from gateway.errors import InvalidInput, NotFound
from gateway.store import Store

if TYPE_CHECKING:
    from conftest import Company, Mailgate


async def test_an_idna_a_label_and_u_label_are_one_contact(
    store: Store,
) -> None:
    """xn--bcher-kva and bücher name the same domain, kept as Unicode."""
    async with store.transaction() as db:
        hans = await add_person(
            db, "hans@xn--bcher-kva.example.org", name="Hans"
        )
        assert hans.email == "hans@bücher.example.org"

        for spelling in (
            "hans@bücher.example.org",
            "hans@XN--BCHER-KVA.example.ORG",
            "hans@BÜCHER.example.org",
        ):
            found = await find_by_address(db, spelling)
            assert found is not None
            assert found.id == hans.id
            assert (await ensure_contact(db, spelling)).id == hans.id

        with pytest.raises(InvalidInput, match="belongs to another contact"):
            await add_person(db, "hans@bücher.example.org", name="Again")


async def test_the_domain_matches_whatever_its_case(store: Store) -> None:
    """The domain is lower-cased on the way in and matched so."""
    async with store.transaction() as db:
        ann = await add_person(db, "Ann@Customer.EXAMPLE", name="Ann")

        found = await find_by_address(db, "Ann@customer.Example")

    assert ann.email == "Ann@customer.example"
    assert found is not None
    assert found.id == ann.id


async def test_the_local_part_is_kept_as_written(store: Store) -> None:
    """Ann@ keeps its spelling and is found by any case of it; a second
    person differing only by case is refused (mail could not tell them
    apart)."""
    async with store.transaction() as db:
        upper = await add_person(db, "Ann@customer.example", name="Ann")
        found = await find_by_address(db, "ANN@customer.example")
        with pytest.raises(InvalidInput, match="belongs to another contact"):
            await add_person(db, "ann@customer.example", name="Other")

    assert upper.email == "Ann@customer.example"
    assert found is not None
    assert found.id == upper.id


async def test_an_address_that_is_not_one_is_refused(store: Store) -> None:
    """The validator's reason is given; nothing is looked up in DNS."""
    async with store.transaction() as db:
        with pytest.raises(InvalidInput, match="not a valid e-mail address"):
            await add_person(db, "ann@@customer.example", name="Ann")
        with pytest.raises(InvalidInput, match="not a valid e-mail address"):
            await find_by_address(db, "no at sign")


async def test_departments_and_their_people_are_internal(
    store: Store,
) -> None:
    """Below an internal organisation everything is ours, however deep."""
    async with store.transaction() as db:
        ours = await add_organisation(
            db, "Nexedi", domains=["nexedi.com"], internal=True
        )
        support = await add_organisation(db, "Support", parent="Nexedi")
        europe = await add_organisation(db, "Support EU", parent="Support")
        sven = await add_person(
            db, "sven@nexedi.com", name="Sven", organisation="Support EU"
        )
        customer = await add_organisation(db, "Customer")
        ann = await add_person(
            db, "ann@customer.example", name="Ann", organisation="customer"
        )

        assert ours.internal and support.internal and europe.internal
        assert sven.internal
        assert sven.organisation == "Support EU"
        assert await department_of(db, sven.id) == europe.id
        assert await department_of(db, support.id) == support.id
        assert not customer.internal
        assert not ann.internal
        assert await department_of(db, ann.id) is None


async def test_a_person_without_organisation_joins_their_domains(
    store: Store,
) -> None:
    """An address at a domain of ours makes its owner one of ours."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Nexedi", domains=["Nexedi.COM"], internal=True
        )
        jp = await add_person(db, "jp@nexedi.com", name="JP")
        stranger = await add_person(db, "x@elsewhere.example", name="X")

    assert jp.organisation == "Nexedi"
    assert jp.internal
    assert stranger.organisation is None
    assert not stranger.internal


async def test_an_unknown_address_becomes_an_external_person(
    store: Store,
) -> None:
    """ensure_contact creates a person outside our organisation."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Nexedi", domains=["nexedi.com"], internal=True
        )
        made = await ensure_contact(db, "Newcomer@Elsewhere.example", "New")
        again = await ensure_contact(db, "Newcomer@elsewhere.EXAMPLE")
        colleague = await ensure_contact(db, "new.colleague@nexedi.com")

    assert (made.kind, made.name, made.internal) == ("person", "New", False)
    assert made.email == "Newcomer@elsewhere.example"
    assert again.id == made.id
    assert colleague.internal
    assert colleague.organisation == "Nexedi"


async def test_names_and_domains_of_organisations_are_unique(
    store: Store,
) -> None:
    """An organisation name (any case) or a domain is not given twice."""
    async with store.transaction() as db:
        await add_organisation(db, "Customer", domains=["customer.example"])
        with pytest.raises(InvalidInput, match="exists already"):
            await add_organisation(db, "CUSTOMER")
        with pytest.raises(InvalidInput, match="belongs to another"):
            await add_organisation(db, "Other", domains=["Customer.Example"])
        with pytest.raises(NotFound, match="no organisation named 'Nope'"):
            await add_person(db, "a@b.example", name="A", organisation="Nope")


async def test_a_manager_is_staff_too(store: Store) -> None:
    """The manager role brings the staff role with it."""
    async with store.transaction() as db:
        boss = await add_person(
            db, "boss@nexedi.com", name="Boss", roles=["manager"]
        )
        again = await get_contact(db, boss.id)

    assert again.roles == {"manager", "staff"}
    assert again.is_manager


def test_contact_list_gives_organisations_then_persons(
    mailgate: Mailgate, company: Company
) -> None:
    """contact list --json: organisations first, then persons, by name."""
    listed = mailgate("contact", "list", "--json").json()

    kinds = [contact["kind"] for contact in listed]
    assert kinds == sorted(kinds)
    persons = [c["name"] for c in listed if c["kind"] == "person"]
    assert persons == sorted(persons, key=str.casefold)
    assert set(listed[0]) == {
        "id",
        "kind",
        "name",
        "email",
        "addresses",
        "organisation",
        "roles",
        "internal",
        "domains",
    }


def _new_note(
    mailgate: Mailgate, actor: str, sender: str, *options: str
) -> dict[str, object]:
    made: dict[str, object] = mailgate(
        "event",
        "new",
        "note",
        "--from",
        sender,
        "--to",
        "somebody@elsewhere.example",
        "--title",
        "Direction",
        *options,
        "--json",
        actor=actor,
    ).json()

    return made


def test_the_direction_follows_the_sender(
    mailgate: Mailgate, company: Company
) -> None:
    """One of ours sends: outgoing; anyone else: incoming."""
    ours = _new_note(mailgate, company.sales, company.sales)
    theirs = _new_note(mailgate, company.sales, company.customer)
    stranger = _new_note(mailgate, company.sales, "who@unknown.example")

    assert ours["direction"] == "outgoing"
    assert theirs["direction"] == "incoming"
    assert stranger["direction"] == "incoming"
    listed = mailgate("contact", "list", "--json").json()
    made = next(c for c in listed if c["email"] == "who@unknown.example")
    assert (made["kind"], made["internal"]) == ("person", False)


def test_the_direction_can_be_given(
    mailgate: Mailgate, company: Company
) -> None:
    """--direction overrides what the sender implies, both ways."""
    ours = _new_note(
        mailgate, company.sales, company.sales, "--direction", "incoming"
    )
    theirs = _new_note(
        mailgate, company.sales, company.customer, "--direction", "outgoing"
    )

    assert ours["direction"] == "incoming"
    assert theirs["direction"] == "outgoing"


def test_a_wrong_direction_is_refused(
    mailgate: Mailgate, company: Company
) -> None:
    """--direction takes incoming or outgoing only."""
    refused = mailgate(
        "event",
        "new",
        "note",
        "--from",
        company.sales,
        "--to",
        company.customer,
        "--title",
        "Sideways",
        "--direction",
        "sideways",
        actor=company.sales,
        ok=False,
    )

    assert refused.exit_code == 2
    assert "'sideways' is not one of 'incoming', 'outgoing'" in refused.error


async def test_case_variants_from_older_data_are_told_apart(
    store: Store,
) -> None:
    """Addresses differing only by case (kept from before the rule) are
    found as written; a case no one has is ambiguous, so no one."""
    async with store.transaction() as db:
        upper = await add_person(db, "Ann@customer.example", name="Ann")
        lower = await add_person(db, "bob@customer.example", name="Other")
        await db.execute(
            "UPDATE contact_address SET key = ?, address = ? "
            "WHERE contact_id = ?",
            ("ann@customer.example", "ann@customer.example", lower.id),
        )

        as_upper = await find_by_address(db, "Ann@customer.example")
        as_lower = await find_by_address(db, "ann@customer.example")
        neither = await find_by_address(db, "ANN@customer.example")
        nobody = await find_by_address(db, "carol@customer.example")

    assert as_upper is not None
    assert as_upper.id == upper.id
    assert as_upper.addresses == ("Ann@customer.example",)
    assert as_lower is not None
    assert as_lower.id == lower.id
    assert neither is None
    assert nobody is None


async def test_a_contact_found_by_address_is_the_same_as_by_id(
    store: Store,
) -> None:
    """One query by address gives what get_contact gives: addresses in
    order, roles, organisation and standing."""
    async with store.transaction() as db:
        await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        await add_organisation(
            db,
            "Support",
            parent="Example",
            addresses=["support@example.com"],
        )
        maria = await add_person(
            db,
            "maria@example.com",
            name="Maria",
            organisation="Support",
            roles=["manager"],
            extra_addresses=["m@example.com"],
        )

        as_person = await find_by_address(db, "m@example.com")
        as_department = await find_by_address(db, "support@example.com")
        assert as_department is not None
        department = await get_contact(db, as_department.id)

    assert as_person == maria
    assert as_department == department
    assert as_department.kind == "organisation"
    assert as_department.internal
    assert maria.addresses == ("maria@example.com", "m@example.com")
    assert maria.roles == {"manager", "staff"}
    assert maria.organisation == "Support"


async def test_find_mailbox_gives_the_contact_and_our_department(
    store: Store,
) -> None:
    """find_mailbox answers as our_mailbox does, with the contact beside."""
    async with store.transaction() as db:
        example = await add_organisation(
            db, "Example", domains=["example.com"], internal=True
        )
        support = await add_organisation(
            db,
            "Support",
            parent="Example",
            addresses=["support@example.com"],
        )
        maria = await add_person(
            db, "maria@example.com", name="Maria", organisation="Support"
        )
        client = await add_person(db, "client@example.org", name="Client")

        answers = {
            address: await find_mailbox(db, address)
            for address in (
                "support@example.com",
                "maria@example.com",
                "anyone@example.com",
                "client@example.org",
                "stranger@example.org",
                "not an address",
            )
        }
        ours = {address: await our_mailbox(db, address) for address in answers}

    assert {a: department for a, (_, department) in answers.items()} == ours
    assert answers["support@example.com"] == (support, support.id)
    assert answers["maria@example.com"] == (maria, support.id)
    assert answers["anyone@example.com"] == (None, example.id)
    assert answers["client@example.org"] == (client, None)
    assert answers["stranger@example.org"] == (None, None)
    assert answers["not an address"] == (None, None)
