"""Plain rendering: the same octets as the email package, without it."""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.crm.events import Event, Party
from gateway.outbox import plain, render
from gateway.outbox.render import OutgoingMail, Threading, compose

# Mostly what plain rendering takes; now and then characters that
# make the email package quote, encode or fold.
_TRICKY = ' "()<>[]:;@\\,.=?\t\r\né€\x00'


def _text(alphabet: str, **sizes: int) -> st.SearchStrategy[str]:
    """Return text of the alphabet, with tricky characters one time in 16."""
    return st.integers(0, 15).flatmap(
        lambda draw: st.text(
            alphabet=alphabet + (_TRICKY if draw == 0 else ""), **sizes
        )
    )


def _rarely(
    odd: st.SearchStrategy[str], usual: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    """Return the odd strategy's text one time in 8, else the usual's."""
    return st.integers(0, 7).flatmap(lambda draw: odd if draw == 0 else usual)


_WORDS = _text(
    string.ascii_letters + string.digits + "-'_!#+", min_size=1, max_size=12
)
_PHRASES = st.lists(_rarely(st.just(""), _WORDS), max_size=4).map(" ".join)
_TITLES = st.lists(_WORDS, min_size=1, max_size=6).map(" ".join)
_ATOMS = _text(string.ascii_letters + string.digits + "+-", min_size=1)
_DOT_ATOMS = st.lists(_ATOMS, min_size=1, max_size=3).map(".".join)
_ADDRESSES = st.builds(
    "{}@{}.{}".format,
    _DOT_ATOMS,
    st.sampled_from(["example", "exa-mple", "xn--mnchen-3ya"] * 3 + ["e_x"]),
    st.sampled_from(["com", "org", "de"]),
)
_LINES = _text(string.ascii_letters + string.punctuation + " ", max_size=90)
_LONG_LINES = st.text(alphabet="abc ", min_size=890, max_size=1010)
_DATES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)
).flatmap(
    lambda moment: st.sampled_from(
        [
            moment,
            moment.replace(tzinfo=UTC),
            moment.replace(tzinfo=timezone(timedelta(hours=5, minutes=30))),
            moment.replace(tzinfo=timezone(timedelta(hours=-8))),
        ]
    )
)
_MESSAGE_IDS = _rarely(
    _WORDS, st.builds("<{}@{}>".format, _DOT_ATOMS, _DOT_ATOMS)
)


def _party(kind: str) -> st.SearchStrategy[Party]:
    return st.builds(
        lambda address, name, same: Party(
            1, address, address if same else name, kind
        ),
        _ADDRESSES,
        _PHRASES,
        st.booleans(),
    )


@st.composite
def _events(draw: st.DrawFn) -> Event:
    recipients = draw(
        st.lists(
            st.one_of(_party("to"), _party("cc"), _party("bcc")),
            min_size=1,
            max_size=4,
        )
    )
    if draw(st.integers(0, 7)) == 0:
        recipients += draw(st.lists(_party("to"), min_size=30, max_size=40))

    return Event(
        id=draw(st.integers(1, 10**6)),
        type="mail-message",
        nature=None,
        title=draw(_rarely(_LONG_LINES | _PHRASES, _TITLES)),
        content=draw(
            st.lists(_rarely(_LONG_LINES, _LINES), max_size=8).map("\n".join)
        ),
        content_html=None,
        sender=draw(_party("from")),
        recipients=tuple(recipients),
        direction="outgoing",
        causality_id=None,
        ticket_id=None,
        department_id=None,
        start_date=draw(_DATES).isoformat(),
        author_id=draw(st.none() | st.just(7)),
        assignee_ids=(),
        state="confirmed",
        message_id=draw(st.none() | _MESSAGE_IDS),
        in_reply_to=(),
        references=(),
        raw_sha256=None,
        thread_reason=None,
        automatic=draw(st.booleans()),
        details={},
        created_at="2026-12-03T10:00:00+00:00",
    )


@contextmanager
def _email_package_only() -> Iterator[None]:
    """Within the block, render every message with the email package."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plain, "header_block", lambda fields: None)
        patch.setattr(plain, "text_entity", lambda content: None)
        yield


def _by_email_package(event: Event, threading: Threading) -> OutgoingMail:
    with _email_package_only():
        return compose(event, threading, bounce_domain="example.com")


@settings(max_examples=400, deadline=None)
@given(
    event=_events(),
    threading=st.builds(
        Threading,
        st.lists(_MESSAGE_IDS, max_size=2).map(tuple),
        st.lists(_MESSAGE_IDS, max_size=3).map(tuple),
    ),
)
@example(
    event=Event(
        id=1,
        type="mail-message",
        nature=None,
        title="Your order",
        content="Dear customer,\nyour order is on its way.\n",
        content_html=None,
        sender=Party(1, "maria.staff@example.com", "Maria Staff", "from"),
        recipients=(Party(2, "jonas@example.org", "", "bcc"),),
        direction="outgoing",
        causality_id=None,
        ticket_id=None,
        department_id=None,
        start_date="2026-12-03T10:00:00+00:00",
        author_id=None,
        assignee_ids=(),
        state="confirmed",
        message_id="<1f2e@example.com>",
        in_reply_to=(),
        references=(),
        raw_sha256=None,
        thread_reason=None,
        automatic=False,
        details={},
        created_at="2026-12-03T10:00:00+00:00",
    ),
    threading=Threading(("<a.b@example.com>",), ("<x@y>", "<a.b@c>")),
)
def test_plain_rendering_gives_the_email_packages_octets(
    event: Event, threading: Threading
) -> None:
    """Whatever the event, the message is what the email package writes."""
    try:
        expected: OutgoingMail | Exception = _by_email_package(
            event, threading
        )
    except Exception as error:  # the package refuses some input
        expected = error

    try:
        rendered = compose(event, threading, bounce_domain="example.com")
    except Exception as error:
        assert type(error) is type(expected), (error, expected)
        return

    assert rendered == expected


def test_plain_mail_is_written_without_the_email_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ASCII names and text in short lines take the direct path."""

    def refuse(*arguments: Any, **options: Any) -> None:
        raise AssertionError("the email package was used")

    event = Event(
        id=42,
        type="mail-message",
        nature=None,
        title="Re: [#TKT-7] Your order 3",
        content="Dear customer,\nyour order is on its way.\n" * 20,
        content_html=None,
        sender=Party(1, "maria.staff@example.com", "Maria Staff", "from"),
        recipients=(
            Party(2, "customer3@example.org", "", "to"),
            Party(3, "o'brien@example.net", "Sean O'Brien", "cc"),
        ),
        direction="outgoing",
        causality_id=None,
        ticket_id=None,
        department_id=None,
        start_date="2026-12-03T21:37:26+00:00",
        author_id=7,
        assignee_ids=(),
        state="confirmed",
        message_id="<d13af746aafa4cdf98428046a2f1e503@example.com>",
        in_reply_to=(),
        references=(),
        raw_sha256=None,
        thread_reason=None,
        automatic=False,
        details={},
        created_at="2026-12-03T21:37:26+00:00",
    )
    threading = Threading(("<a@example.org>",), ("<b@example.org>",))
    expected = _by_email_package(event, threading)
    monkeypatch.setattr(render, "EmailMessage", refuse)

    rendered = compose(event, threading, bounce_domain="example.com")

    assert rendered == expected
    assert rendered.message.startswith(
        b"From: Maria Staff <maria.staff@example.com>\r\n"
        b"To: customer3@example.org\r\n"
        b"Cc: Sean O'Brien <o'brien@example.net>\r\n"
    )
