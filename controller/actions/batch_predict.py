"""Offline batch prediction: score a file with the champion, in chunks, optionally logging every prediction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from controller.actions.datafiles import features_from_table, read_table, write_table
from controller.api.serving import NoChampion, predict_frame
from controller.clock import Clock
from controller.config import PolicyConfig
from controller.store import EventStore, PredictionRecord
from lineage import ModelRegistry


@dataclass(frozen=True)
class BatchSummary:
    rows: int
    version: str


def predict_file(policy: PolicyConfig, registry: ModelRegistry, input_path: Path, output_path: Path, *,
                 store: EventStore | None, clock: Clock, batch_size: int = 10_000,
                 progress: Callable[[int], None] = lambda _n: None,
                 total: Callable[[int], None] = lambda _n: None) -> BatchSummary:
    """Write ``input_path`` plus prediction columns to ``output_path``; one champion version scores every row."""
    name = policy.registered_model
    version = registry.champion_version(name)
    if version is None:
        raise NoChampion(f"model {name!r} has no champion yet; run `driftpilot bootstrap` first")
    model = registry.load(name, version=version).model
    table = read_table(input_path)
    features = features_from_table(table, policy, str(input_path))
    total(len(features))
    now = clock.now()
    parts = []
    for start in range(0, len(features), batch_size):
        chunk = features.iloc[start:start + batch_size]
        result = predict_frame(model, chunk)
        ids = [f"batch-{now:%Y%m%dT%H%M%S}-{version}-{i}" for i in range(start, start + len(chunk))]
        if store is not None:
            rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in chunk.to_dict("records")]
            ids = store.add_predictions(policy.model, [
                PredictionRecord(features=row, event_time=now, prediction=value, model_version=version,
                                 scores=result.scores[i] if result.scores is not None else None,
                                 prediction_id=ids[i], source="batch")
                for i, (row, value) in enumerate(zip(rows, result.values, strict=True))
            ])
        part = pd.DataFrame({"prediction_id": ids, "prediction": result.values, "model_version": version})
        if result.scores is not None:
            scores = pd.DataFrame(result.scores).add_prefix("score_")
            part = pd.concat([part, scores], axis=1)
        parts.append(part)
        progress(len(chunk))
    predictions = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    write_table(pd.concat([table.reset_index(drop=True), predictions], axis=1), output_path)
    return BatchSummary(rows=len(features), version=version)
