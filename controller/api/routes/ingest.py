"""The ingest views: predictions made elsewhere and the natural labels that arrive later, per model."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from controller.api.ingest import LabelBatch, PredictionBatch
from controller.api.refusals import admit_batch
from controller.api.routing import LABEL, PREDICTION
from controller.api.runtime import context


def add_predictions(model: str, batch: PredictionBatch, request: Request) -> Any:
    """Store a batch of predictions made elsewhere (atomic: all stored, or none). Re-sending a stored
    prediction (same id, same content) is a no-op."""
    api = context(request)
    rt = api.runtime(model)
    admit_batch(request, len(batch.items), rt.batch_limit)
    ids = rt.ingestor.add_predictions(batch.items)
    api.metrics.accepted.labels(model, PREDICTION).inc(len(ids))
    return {"accepted": len(ids), "prediction_ids": ids}


def add_labels(model: str, batch: LabelBatch, request: Request) -> Any:
    """Store a batch of natural labels, joined to predictions by id (atomic: all stored, or none). Items apply
    in order: the same id twice with different labels needs ``overwrite: true`` on the later one."""
    api = context(request)
    rt = api.runtime(model)
    admit_batch(request, len(batch.items), rt.batch_limit)
    receipt = rt.ingestor.add_labels(batch.items)
    api.metrics.accepted.labels(model, LABEL).inc(len(batch.items))
    return {"accepted": len(batch.items), **receipt.to_dict()}
