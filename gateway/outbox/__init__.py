"""Outbound mail: staff submission, rendering, and the outbox worker."""
