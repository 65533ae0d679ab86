"""The event store: predictions, natural labels, decisions and controller state on SQL (SQLite or PostgreSQL).

``events.py`` holds :class:`EventStore`, a thin front over ``writes.py`` (batch writes), ``row_reads.py`` and
``sealed_reads.py`` (each read's row-table and segment halves, limited by ``limits.py``) and ``sealing.py`` (with
``seal_prepare.py``, ``seal_commit.py``, ``seal_process.py``: a segment prepared from a snapshot, committed briefly);
``records.py`` its value types; ``tables.py`` the schema; ``db.py`` engines and migrations (``migrations/``, applied on
start).
"""

from controller.store.events import EventStore
from controller.store.frames import features_frame
from controller.store.records import (
    LabelChange,
    LabeledWindow,
    LabelReceipt,
    LabelRecord,
    LabelStats,
    PredictionRecord,
)
from controller.store.sealing import Sealing

__all__ = [
    "EventStore",
    "LabelChange",
    "LabelReceipt",
    "LabelRecord",
    "LabelStats",
    "LabeledWindow",
    "PredictionRecord",
    "Sealing",
    "features_frame",
]
