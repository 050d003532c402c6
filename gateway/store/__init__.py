"""The event store: a SQLite file in WAL mode and content-addressed files."""

from gateway.store.database import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
