"""The store's schema, created and migrated by the program itself.

``PRAGMA user_version`` holds the number of migrations applied; each
migration runs once, in order, inside one transaction.
"""

from __future__ import annotations

import sqlite3

import aiosqlite
import structlog

logger = structlog.get_logger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: contacts, tickets, events, attachments, history.
    """
    CREATE TABLE contact (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('person', 'organisation')),
        name TEXT NOT NULL,
        -- A person's organisation; an organisation's parent.
        parent_id INTEGER REFERENCES contact(id),
        -- Organisations only: part of our own organisation.
        internal INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX contact_organisation_name
        ON contact(name COLLATE NOCASE) WHERE kind = 'organisation';
    CREATE INDEX contact_parent ON contact(parent_id);

    CREATE TABLE contact_address (
        -- Local part as written, domain lower-cased.
        key TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        contact_id INTEGER NOT NULL REFERENCES contact(id),
        position INTEGER NOT NULL
    );
    CREATE INDEX contact_address_contact ON contact_address(contact_id);
    CREATE INDEX contact_address_folded
        ON contact_address(key COLLATE NOCASE);

    CREATE TABLE contact_role (
        contact_id INTEGER NOT NULL REFERENCES contact(id),
        role TEXT NOT NULL,
        PRIMARY KEY (contact_id, role)
    );

    CREATE TABLE organisation_domain (
        domain TEXT PRIMARY KEY,
        organisation_id INTEGER NOT NULL REFERENCES contact(id)
    );

    CREATE TABLE ticket (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        title TEXT NOT NULL,
        state TEXT NOT NULL,
        author_id INTEGER REFERENCES contact(id),
        created_at TEXT NOT NULL
    );
    CREATE INDEX ticket_state ON ticket(state, id);

    CREATE TABLE event (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        nature TEXT,
        title TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '',
        content_html TEXT,
        sender_id INTEGER NOT NULL REFERENCES contact(id),
        direction TEXT NOT NULL
            CHECK (direction IN ('incoming', 'outgoing')),
        causality_id INTEGER REFERENCES event(id),
        ticket_id INTEGER REFERENCES ticket(id),
        -- The department of ours the event belongs to, when known.
        department_id INTEGER REFERENCES contact(id),
        start_date TEXT NOT NULL,
        author_id INTEGER REFERENCES contact(id),
        state TEXT NOT NULL,
        message_id TEXT,
        in_reply_to TEXT NOT NULL DEFAULT '[]',
        "references" TEXT NOT NULL DEFAULT '[]',
        raw_sha256 TEXT,
        -- Why the causality was chosen: header and value, as JSON.
        thread_reason TEXT,
        automatic INTEGER NOT NULL DEFAULT 0,
        -- Facts kept from the message (Reply-To, List-Id, defects...).
        details TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX event_state ON event(state, id);
    CREATE INDEX event_ticket ON event(ticket_id, id);
    CREATE INDEX event_causality ON event(causality_id);
    CREATE INDEX event_sender ON event(sender_id, id);
    CREATE INDEX event_message_id ON event(message_id);
    CREATE INDEX event_type ON event(type, id);

    CREATE TABLE event_recipient (
        event_id INTEGER NOT NULL REFERENCES event(id),
        position INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
        contact_id INTEGER NOT NULL REFERENCES contact(id),
        address TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        -- Outbound delivery: queued, deferred, sent, bounced.
        delivery_status TEXT,
        delivery_detail TEXT,
        PRIMARY KEY (event_id, position)
    );
    CREATE INDEX event_recipient_contact
        ON event_recipient(contact_id, event_id);

    CREATE TABLE event_assignee (
        event_id INTEGER NOT NULL REFERENCES event(id),
        contact_id INTEGER NOT NULL REFERENCES contact(id),
        PRIMARY KEY (event_id, contact_id)
    );
    CREATE INDEX event_assignee_contact
        ON event_assignee(contact_id, event_id);

    CREATE TABLE attachment (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL REFERENCES event(id),
        position INTEGER NOT NULL,
        filename TEXT,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content_id TEXT,
        inline INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attachment_event ON attachment(event_id, position);

    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        object_type TEXT NOT NULL CHECK (object_type IN ('event', 'ticket')),
        object_id INTEGER NOT NULL,
        transition TEXT NOT NULL,
        state_before TEXT,
        state_after TEXT NOT NULL,
        -- NULL: the gateway itself.
        actor_id INTEGER REFERENCES contact(id),
        at TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX history_object ON history(object_type, object_id, id);
    """,
    # 2: inbound mail: dedup keys, threading indexes, receipts, bounces,
    # quarantine and triage.
    """
    -- One row per message per sender: what makes a redelivery a duplicate.
    CREATE TABLE message_key (
        key TEXT PRIMARY KEY,
        event_id INTEGER NOT NULL REFERENCES event(id)
    );

    -- Every Message-ID an event names in References or In-Reply-To, so
    -- that a later reply naming only an ancestor still finds the thread.
    CREATE TABLE message_reference (
        message_id TEXT NOT NULL,
        event_id INTEGER NOT NULL REFERENCES event(id),
        PRIMARY KEY (message_id, event_id)
    );

    -- Outlook's Thread-Index, hex: the whole value and its 22-byte root.
    CREATE TABLE thread_index (
        event_id INTEGER PRIMARY KEY REFERENCES event(id),
        value TEXT NOT NULL,
        root TEXT NOT NULL
    );
    CREATE INDEX thread_index_value ON thread_index(value);
    CREATE INDEX thread_index_root ON thread_index(root, event_id);

    -- Each time a message reached one of our mailboxes.
    CREATE TABLE receipt (
        id INTEGER PRIMARY KEY,
        event_id INTEGER REFERENCES event(id),
        mailbox TEXT NOT NULL,
        source TEXT NOT NULL,
        raw_sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX receipt_event ON receipt(event_id);

    -- Delivery status notifications about our outgoing events.
    CREATE TABLE delivery_report (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL REFERENCES event(id),
        recipient TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        diagnostic TEXT NOT NULL,
        raw_sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX delivery_report_event ON delivery_report(event_id);

    -- Messages that could not be understood, kept raw for an operator.
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        raw_sha256 TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        mailboxes TEXT NOT NULL DEFAULT '[]',
        mail_from TEXT,
        state TEXT NOT NULL DEFAULT 'held'
            CHECK (state IN ('held', 'released')),
        event_id INTEGER REFERENCES event(id),
        received_at TEXT NOT NULL
    );
    CREATE INDEX quarantine_state ON quarantine(state, id);

    -- A threading match that was not trusted: why, and the candidates.
    ALTER TABLE event ADD COLUMN triage TEXT;
    CREATE INDEX event_triage ON event(id) WHERE triage IS NOT NULL;
    """,
    # 3: the IMAP poller's place in each configured mailbox.
    """
    -- Every UID up to last_uid is stored, while the folder keeps
    -- uid_validity; server names the account and folder the state is for.
    CREATE TABLE imap_mailbox_state (
        mailbox TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        uid_validity INTEGER NOT NULL,
        last_uid INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    """,
    # 4: outbound mail: the outbox's leases, attempts and final failures.
    """
    -- One row per outgoing Mail Message the outbox has claimed once. A
    -- lease (owner, expiry) is held while sending; a lease found expired
    -- means the worker holding it stopped before recording an outcome.
    CREATE TABLE outbox (
        event_id INTEGER PRIMARY KEY REFERENCES event(id),
        lease_owner TEXT,
        lease_expires_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        -- The smart host's last answer, or why it could not be reached.
        last_reply TEXT,
        -- Set when delivery ended without reaching every recipient.
        failure TEXT,
        failed_at TEXT
    );
    CREATE INDEX outbox_failed
        ON outbox(failed_at) WHERE failed_at IS NOT NULL;
    CREATE INDEX event_recipient_status
        ON event_recipient(delivery_status, event_id)
        WHERE delivery_status IS NOT NULL;
    """,
    # 5: worklists: a person's own events by state (drafts they wrote).
    """
    CREATE INDEX event_author ON event(author_id, state, id);
    """,
    # 6: worklists: received events nobody is assigned to, per recipient.
    """
    -- One row per recipient contact of each event that is received and
    -- has no assignee: what "to-deliver" reads instead of every received
    -- event. The triggers below keep it exact whatever writes the rows:
    -- each one recomputes the rows of the events a change touched.
    CREATE TABLE open_delivery (
        contact_id INTEGER NOT NULL,
        event_id INTEGER NOT NULL,
        PRIMARY KEY (contact_id, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX open_delivery_event ON open_delivery(event_id);

    INSERT INTO open_delivery (contact_id, event_id)
        SELECT DISTINCT r.contact_id, r.event_id
        FROM event e JOIN event_recipient r ON r.event_id = e.id
        WHERE e.state = 'received'
        AND NOT EXISTS (
            SELECT 1 FROM event_assignee a WHERE a.event_id = e.id);

    -- Not guarded by the new state: INSERT OR REPLACE may overwrite an
    -- open event without firing the delete trigger.
    CREATE TRIGGER open_delivery_event_added AFTER INSERT ON event
    BEGIN
        DELETE FROM open_delivery WHERE event_id = NEW.id;
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r
            WHERE r.event_id = NEW.id AND NEW.state = 'received'
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a WHERE a.event_id = NEW.id);
    END;

    CREATE TRIGGER open_delivery_event_changed
    AFTER UPDATE OF id, state ON event
    WHEN OLD.id != NEW.id OR OLD.state IS NOT NEW.state
    BEGIN
        DELETE FROM open_delivery WHERE event_id IN (OLD.id, NEW.id);
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r
            WHERE r.event_id = NEW.id AND NEW.state = 'received'
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a WHERE a.event_id = NEW.id);
    END;

    CREATE TRIGGER open_delivery_event_removed AFTER DELETE ON event
    BEGIN
        DELETE FROM open_delivery WHERE event_id = OLD.id;
    END;

    -- Only a received event has rows, so a change to another event's
    -- recipients has nothing to recompute.
    CREATE TRIGGER open_delivery_recipient_added
    AFTER INSERT ON event_recipient
    WHEN (SELECT state FROM event WHERE id = NEW.event_id) = 'received'
    BEGIN
        DELETE FROM open_delivery WHERE event_id = NEW.event_id;
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r
            WHERE r.event_id = NEW.event_id
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a
                WHERE a.event_id = NEW.event_id);
    END;

    CREATE TRIGGER open_delivery_recipient_changed
    AFTER UPDATE OF event_id, contact_id ON event_recipient
    WHEN OLD.event_id != NEW.event_id OR OLD.contact_id != NEW.contact_id
    BEGIN
        DELETE FROM open_delivery
            WHERE event_id IN (OLD.event_id, NEW.event_id);
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r JOIN event e ON e.id = r.event_id
            WHERE r.event_id IN (OLD.event_id, NEW.event_id)
            AND e.state = 'received'
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a
                WHERE a.event_id = r.event_id);
    END;

    CREATE TRIGGER open_delivery_recipient_removed
    AFTER DELETE ON event_recipient
    WHEN (SELECT state FROM event WHERE id = OLD.event_id) = 'received'
    BEGIN
        DELETE FROM open_delivery WHERE event_id = OLD.event_id;
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r
            WHERE r.event_id = OLD.event_id
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a
                WHERE a.event_id = OLD.event_id);
    END;

    -- The first assignee closes an event; removing the last reopens it.
    CREATE TRIGGER open_delivery_assignee_added
    AFTER INSERT ON event_assignee
    BEGIN
        DELETE FROM open_delivery WHERE event_id = NEW.event_id;
    END;

    CREATE TRIGGER open_delivery_assignee_changed
    AFTER UPDATE OF event_id ON event_assignee
    WHEN OLD.event_id != NEW.event_id
    BEGIN
        DELETE FROM open_delivery WHERE event_id = NEW.event_id;
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r JOIN event e ON e.id = r.event_id
            WHERE r.event_id = OLD.event_id AND e.state = 'received'
            AND NOT EXISTS (
                SELECT 1 FROM event_assignee a
                WHERE a.event_id = OLD.event_id);
    END;

    CREATE TRIGGER open_delivery_assignee_removed
    AFTER DELETE ON event_assignee
    WHEN (SELECT state FROM event WHERE id = OLD.event_id) = 'received'
    AND NOT EXISTS (
        SELECT 1 FROM event_assignee a WHERE a.event_id = OLD.event_id)
    BEGIN
        DELETE FROM open_delivery WHERE event_id = OLD.event_id;
        INSERT INTO open_delivery (contact_id, event_id)
            SELECT DISTINCT r.contact_id, r.event_id
            FROM event_recipient r
            WHERE r.event_id = OLD.event_id;
    END;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchema(Exception):
    """The database was written by a newer mailgate than this one."""


async def migrate(connection: aiosqlite.Connection) -> int:
    """Apply every migration the database lacks; return the version.

    Another process may be migrating the same file at the same moment (the
    daemon and the CLI on first use): each migration re-reads the version
    under the write lock and is skipped if the other process applied it.
    Raises NewerSchema when the database is newer than this program.
    """
    version = await _version(connection)

    for number in range(version + 1, SCHEMA_VERSION + 1):
        await connection.execute("BEGIN IMMEDIATE")
        try:
            applied = await _version(connection) < number
            if applied:
                for statement in _statements(MIGRATIONS[number - 1]):
                    await connection.execute(statement)
                await connection.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")
        if applied:
            logger.info("store.migrated", schema_version=number)

    return SCHEMA_VERSION


async def _version(connection: aiosqlite.Connection) -> int:
    """Return the database's schema version; NewerSchema if above ours."""
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise NewerSchema(
            f"the store has schema version {version}, newer than this "
            f"mailgate ({SCHEMA_VERSION}); upgrade mailgate"
        )

    return version


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(
            f"incomplete SQL at the end of a migration: {pending}"
        )

    return statements
