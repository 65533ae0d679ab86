"""The event store: predictions, natural labels, decisions and controller state on SQL (SQLite or PostgreSQL).

``events.py`` holds :class:`EventStore` and its records; ``tables.py`` the schema; ``db.py`` engines and
migrations (``migrations/``, applied on start).
"""

from controller.store.events import (
    EventStore,
    LabelChange,
    LabeledWindow,
    LabelReceipt,
    LabelRecord,
    LabelStats,
    PredictionRecord,
    features_frame,
)

__all__ = [
    "EventStore",
    "LabelChange",
    "LabelReceipt",
    "LabelRecord",
    "LabelStats",
    "LabeledWindow",
    "PredictionRecord",
    "features_frame",
]
