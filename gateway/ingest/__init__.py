"""Inbound mail: reading messages as they arrive, whatever their shape."""
