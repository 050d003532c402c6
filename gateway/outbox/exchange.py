"""The SMTP exchange: one mail transaction with the smart host.

The message goes over a connection the caller opened; what the smart host
answers becomes each recipient's result (sent, deferred on 4xx or a lost
connection, bounced on 5xx, failed when the message cannot go as it is)
and the reply kept with the attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import aiosmtplib

from gateway.outbox.queue import (
    BOUNCED,
    DEFERRED,
    FAILED,
    SENT,
    RecipientResult,
)
from gateway.outbox.render import OutgoingMail


async def send_mail(
    client: aiosmtplib.SMTP, mail: OutgoingMail, pending: Sequence[str]
) -> tuple[list[RecipientResult], str]:
    """Run one mail transaction; return each recipient's result and reply.

    ``pending`` holds the recipients as stored, in the order of the
    envelope's (wire) addresses.
    """
    stored = dict(zip(mail.rcpt_tos, pending, strict=True))
    try:
        if not client.esmtp_extensions:
            # Learn the extensions; sendmail falls back to HELO by itself.
            with contextlib.suppress(aiosmtplib.SMTPHeloError):
                await client.ehlo()
        # RFC 6152: BODY=8BITMIME only to a server that offers it; one that
        # does not would refuse the parameter for good.
        options = [
            option
            for option in mail.mail_options
            if option != "BODY=8BITMIME"
            or client.supports_extension("8bitmime")
        ]
        refused, message = await client.sendmail(
            mail.mail_from,
            list(mail.rcpt_tos),
            mail.message,
            mail_options=options,
        )
    except aiosmtplib.SMTPRecipientsRefused as error:
        results = [
            RecipientResult(
                stored.get(each.recipient, each.recipient),
                _status(each.code),
                f"{each.code} {each.message}",
            )
            for each in error.recipients
        ]
        return results, "every recipient refused"
    except aiosmtplib.SMTPResponseException as error:
        reply = f"{error.code} {error.message}"
        status = _status(error.code)
        return [RecipientResult(a, status, reply) for a in pending], reply
    except (aiosmtplib.SMTPNotSupported, ValueError) as error:
        # No smart host will take it as it is (SMTPUTF8, a bad address):
        # given up on, though no one refused it.
        reply = f"not sendable: {describe(error)}"
        return [RecipientResult(a, FAILED, reply) for a in pending], reply
    except (aiosmtplib.SMTPException, OSError) as error:
        reply = f"connection failed: {describe(error)}"
        client.close()
        return [RecipientResult(a, DEFERRED, reply) for a in pending], reply

    reply = f"250 {message}"
    results = []
    for wire, address in stored.items():
        if wire in refused:
            answer = refused[wire]
            results.append(
                RecipientResult(
                    address,
                    _status(answer.code),
                    f"{answer.code} {answer.message}",
                )
            )
        else:
            results.append(RecipientResult(address, SENT, reply))

    return results, reply


def _status(code: int) -> str:
    """Return a recipient's status after a refusal (RFC 5321 4.2.1)."""
    return BOUNCED if code >= 500 else DEFERRED


def describe(error: BaseException) -> str:
    """Return an error's type and text, for logs and stored replies."""
    text = str(error).strip()

    return f"{type(error).__name__}: {text}" if text else type(error).__name__
