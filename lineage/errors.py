"""Errors the lineage package raises. Each message says what was wrong, what exists or is accepted, and what to do."""

from __future__ import annotations


class LineageError(Exception):
    """A lineage operation was refused; nothing half-done is left behind unless the message says so."""


class LineageNotFound(LineageError):
    """A registered model, version or alias does not exist. The message lists what does."""


class LineageUnavailable(LineageError):
    """The MLflow tracking/registry store could not be reached. ``uri`` is the address that was tried."""

    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        super().__init__(message)
