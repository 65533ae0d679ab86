"""The archive form of pruned events (``driftpilot db prune --archive``): flat Arrow tables, JSON text for values,
written by :mod:`controller.store.retention` as zstd Parquet files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from controller.store.segments import SUPERSEDED_NEVER, RowBlock


def label_table(block: RowBlock) -> pa.Table:
    """Pruned label rows with their predictions, flat (JSON text for values), for the archive."""
    never = block.superseded_at == SUPERSEDED_NEVER
    return pa.table({
        "seq": pa.array(block.seq, pa.int64()),
        "prediction_id": pa.array(block.prediction_id, pa.string()),
        "label": pa.array([json.dumps(v) for v in block.value], pa.string()),
        "arrived_at": pa.array(block.arrived_at.astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
        "superseded_at": pa.array(np.where(never, 0, block.superseded_at).astype("datetime64[us]"),
                                  pa.timestamp("us", tz="UTC"), mask=never),
        "event_time": pa.array(block.event_time.astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
        "received_at": pa.array(block.received_at.astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
        "model_version": pa.array(block.model_version, pa.string()),
        "source": pa.array(block.source, pa.string()),
        "prediction": pa.array([json.dumps(v) for v in block.prediction], pa.string()),
        "scores": pa.array([json.dumps(v) for v in block.scores], pa.string()),
        "features": pa.array([json.dumps(v) for v in block.features], pa.string()),
    })


def prediction_table(records: list[Mapping[str, Any]]) -> pa.Table:
    return pa.table({
        "prediction_id": pa.array([r["prediction_id"] for r in records], pa.string()),
        "event_time": pa.array([r["event_time"] for r in records], pa.timestamp("us", tz="UTC")),
        "received_at": pa.array([r["received_at"] for r in records], pa.timestamp("us", tz="UTC")),
        "model_version": pa.array([r["model_version"] for r in records], pa.string()),
        "source": pa.array([r["source"] for r in records], pa.string()),
        "prediction": pa.array([json.dumps(r["prediction"]) for r in records], pa.string()),
        "scores": pa.array([json.dumps(r["scores"]) for r in records], pa.string()),
        "features": pa.array([json.dumps(r["features"]) for r in records], pa.string()),
    })
