"""Benchmark messages: realistic mail of a given size, half of them replies."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

_WORDS = [
    "order",
    "invoice",
    "delivery",
    "pump",
    "spare",
    "parts",
    "quote",
    "warranty",
    "address",
    "customer",
    "portal",
    "login",
    "request",
    "thanks",
    "please",
    "regards",
    "meeting",
    "week",
    "monday",
    "price",
    "list",
    "contract",
    "renewal",
    "shipment",
    "status",
    "update",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One benchmark message and the envelope to send it with."""

    mail_from: str
    rcpt_to: str
    raw: bytes
    message_id: str


def make_samples(
    count: int,
    size: int,
    *,
    seed: int = 42,
    domain: str = "example.com",
    mailbox: str = "support",
) -> list[Sample]:
    """Return count messages of about size octets each.

    Every second message is a reply (In-Reply-To and References) to an
    earlier one; every fourth carries an attachment taking most of its size.
    """
    generator = random.Random(seed)
    samples: list[Sample] = []
    for index in range(count):
        sender = f"customer{index % 97}@example.org"
        message = EmailMessage(policy=SMTP)
        message["From"] = f"Customer {index % 97} <{sender}>"
        message["To"] = f"{mailbox}@{domain}"
        message["Subject"] = f"Question {index}: {generator.choice(_WORDS)}"
        message["Date"] = format_datetime(datetime.now(UTC))
        message_id = make_msgid(f"bench{index}", "example.org")
        message["Message-ID"] = message_id
        if index % 2 == 1 and samples:
            parent = samples[generator.randrange(len(samples))]
            message["In-Reply-To"] = parent.message_id
            message["References"] = parent.message_id
        with_attachment = index % 4 == 3
        text_size = size // 10 if with_attachment else size
        message.set_content(_text(generator, max(text_size - 400, 50)))
        if with_attachment:
            message.add_attachment(
                generator.randbytes(max(size * 3 // 4 - 600, 100)),
                maintype="application",
                subtype="octet-stream",
                filename=f"data-{index}.bin",
            )
        samples.append(
            Sample(
                sender, f"{mailbox}@{domain}", message.as_bytes(), message_id
            )
        )

    return samples


def _text(generator: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = generator.choice(_WORDS)
        words.append(word)
        length += len(word) + 1

    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]

    return "\n".join(lines) + "\n"
