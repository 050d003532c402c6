"""SMTP and LMTP reply codes, with enhanced status codes (RFC 3463).

Our own faults answer 4xx so the sender retries; 5xx is a lasting judgement
on a message or recipient. No reply ever carries exception text.
"""

from __future__ import annotations

OK = "250 2.0.0 OK"
ACCEPTED = "250 2.0.0 Message accepted for delivery"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
RELAY_DENIED = "550 5.7.1 Relaying denied: not a mailbox of ours"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
TOO_BIG = "552 5.3.4 Message too big for this system"
LINE_TOO_LONG = "500 5.5.2 Line too long"
STORE_UNAVAILABLE = (
    "451 4.3.0 Message not stored: temporary local problem, try again later"
)
LOCAL_ERROR = "451 4.3.0 Temporary local problem, try again later"

# Submission (RFC 6409, RFC 4954): our staff sending through the gateway.
SENDER_OK = "250 2.1.0 Sender OK"
SUBMITTED = "250 2.0.0 Message accepted, recorded as event"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure"
ENCRYPTION_REQUIRED = (
    "538 5.7.11 Encryption required for requested authentication mechanism"
)
SENDER_NOT_YOURS = "553 5.7.1 Sender address is not one of yours"
FROM_NOT_YOURS = "553 5.7.1 From header does not name one of your addresses"
UNREADABLE = "554 5.6.0 Message could not be read"

# aiosmtpd's own replies that lack an enhanced status code, by prefix.
_LIBRARY_REPLIES = {
    "552 Error: Too much mail data": TOO_BIG,
    "552 Error: message size exceeds": TOO_BIG,
    "500 Line too long": LINE_TOO_LONG,
}


def enhanced(reply: str) -> str:
    """Return our spelling of a reply the SMTP library wrote itself."""
    for prefix, ours in _LIBRARY_REPLIES.items():
        if reply.startswith(prefix):
            return ours

    return reply
