"""The rows and the write loop of benchmarks/store.py, without importing the store at import time: the "before"
store (an older commit, on its own sys.path) runs them too."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "bench"
NUMERIC = [f"f{i}" for i in range(9)]
TYPES = {**{name: "numeric" for name in NUMERIC}, "day": "categorical"}
LOAD_BATCH = 5_000


@dataclass
class Rows:
    """``n`` labeled pairs, seeded: ids, feature dicts, predictions, scores, labels."""

    ids: list[str]
    features: list[dict[str, Any]]
    predictions: list[str]
    scores: list[dict[str, float]]
    labels: list[str]

    @classmethod
    def make(cls, n: int, seed: int, tag: str = "") -> Rows:
        rng = np.random.default_rng(seed)
        values = rng.random((n, len(NUMERIC))).round(6)
        days = rng.integers(1, 8, n)
        up = rng.random(n).round(4)
        truth = rng.random(n) < 0.5
        ids = [f"{tag}{seed:x}-{i:07d}-{h:08x}" for i, h in enumerate(rng.integers(0, 2**32, n))]
        features = [{**dict(zip(NUMERIC, map(float, row), strict=True)), "day": str(d)}
                    for row, d in zip(values, days, strict=True)]
        return cls(ids, features, ["UP" if u > 0.5 else "DOWN" for u in up],
                   [{"UP": float(u), "DOWN": float(round(1 - u, 4))} for u in up],
                   ["UP" if t else "DOWN" for t in truth])

    def __len__(self) -> int:
        return len(self.ids)

    def prediction_records(self, start: int, stop: int) -> list[Any]:
        from controller.store import PredictionRecord  # whichever store is on the path (the "before" one too)

        return [PredictionRecord(self.features[i], T0 + timedelta(seconds=i), prediction=self.predictions[i],
                                 scores=self.scores[i], prediction_id=self.ids[i], model_version="1")
                for i in range(start, stop)]

    def label_records(self, start: int, stop: int) -> list[Any]:
        from controller.store import LabelRecord

        return [LabelRecord(self.ids[i], self.labels[i]) for i in range(start, stop)]


def write_run(store: Any, rows: Rows, model: str, batch: int) -> dict[str, float]:
    """add_predictions then add_labels of every row in batches (records built beforehand), timed; the clock moves
    one second per batch. ``cpu_us_per_event`` is this process's CPU time in the calls (a background sealer thread
    of the store counts too); ``wall_s`` is the whole loop, to be extended by whoever waits for sealing."""
    clock = store.clock
    batches = [(rows.prediction_records(start, min(start + batch, len(rows))),
                rows.label_records(start, min(start + batch, len(rows)))) for start in range(0, len(rows), batch)]
    pred_s = label_s = 0.0
    cpu = time.process_time()
    wall = time.perf_counter()
    for records, labels in batches:
        began = time.perf_counter()
        store.add_predictions(model, records)
        pred_s += time.perf_counter() - began
        clock.advance(seconds=1)
        began = time.perf_counter()
        store.add_labels(model, labels)
        label_s += time.perf_counter() - began
    return {"events_per_s": 2 * len(rows) / (pred_s + label_s), "predictions_per_s": len(rows) / pred_s,
            "labels_per_s": len(rows) / label_s, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "cpu_us_per_event": (time.process_time() - cpu) * 1e6 / (2 * len(rows))}
