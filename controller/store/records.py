"""The store's value types: what callers hand to the writes (:class:`PredictionRecord`, :class:`LabelRecord`) and
what the writes and reads hand back (:class:`LabelReceipt`, :class:`LabelChange`, :class:`LabelStats`,
:class:`LabeledWindow`); :class:`LabelTally` is what the label-stats read adds up over the store's tiers. Plain
dataclasses; no database in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.store.fingerprint import window_fingerprint


@dataclass(frozen=True)
class PredictionRecord:
    """One validated prediction to store. ``prediction_id=None`` means: generate one. ``event_time=None`` means: the
    client did not say; the store stamps its clock's time, and a re-sent copy that also omits it is a repeat."""

    features: Mapping[str, Any]
    event_time: datetime | None = None
    prediction: Any = None
    scores: Mapping[str, float] | None = None
    prediction_id: str | None = None
    model_version: str | None = None
    source: str = "logged"


@dataclass(frozen=True)
class LabelRecord:
    """One natural label for a prediction id. ``overwrite=True`` replaces a different stored value."""

    prediction_id: str
    value: Any
    overwrite: bool = False


@dataclass(frozen=True)
class LabelReceipt:
    """What a label batch did: new labels, exact repeats ignored, overwrites recorded, labels still waiting for
    their prediction."""

    inserted: int
    duplicates: int
    overwritten: int
    unmatched: int

    def to_dict(self) -> dict[str, int]:
        return {"inserted": self.inserted, "duplicates": self.duplicates, "overwritten": self.overwritten,
                "unmatched": self.unmatched}


@dataclass(frozen=True)
class LabelChange:
    """One entry of a prediction's label history: the value, when it arrived and, if replaced, when."""

    value: Any
    arrived_at: datetime
    superseded_at: datetime | None


@dataclass(frozen=True)
class LabelStats:
    """Label coverage of a model's traffic. ``predictions`` counts logged, served and batch predictions; the rows
    bootstrap stored as the reference window are counted apart (``reference_rows``) and left out of every other
    number, so coverage and delays describe live traffic only."""

    model: str
    as_of: datetime
    predictions: int
    labeled: int
    pending: int
    unmatched_labels: int
    delay_seconds: dict[str, float | None]
    by_source: dict[str, int] = field(default_factory=dict)
    reference_rows: int = 0

    @property
    def coverage(self) -> float | None:
        return self.labeled / self.predictions if self.predictions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "as_of": self.as_of.isoformat(),
            "predictions": self.predictions,
            "by_source": self.by_source,
            "reference_rows": self.reference_rows,
            "labeled": self.labeled,
            "pending": self.pending,
            "unmatched_labels": self.unmatched_labels,
            "coverage": self.coverage,
            "label_delay_seconds": self.delay_seconds,
        }


@dataclass
class LabelTally:
    """The numbers of :class:`LabelStats` while a read adds them up, tier by tier (row tables, segments)."""

    by_source: dict[str, int] = field(default_factory=dict)  # predictions received by as_of, per source
    labeled_by_source: dict[str, int] = field(default_factory=dict)  # labels in force whose prediction is known
    all_labels: int = 0  # labels in force, with or without a prediction
    delay_seqs: list[np.ndarray] = field(default_factory=list)  # traffic labels' seqs and delays (seconds), for the
    delays: list[np.ndarray] = field(default_factory=list)  # newest-labels sample

    @staticmethod
    def count(into: dict[str, int], sources: np.ndarray) -> None:
        """Add the rows of ``sources`` to ``into``'s per-source counts."""
        for name, n in zip(*np.unique(sources, return_counts=True), strict=True):
            into[name] = into.get(name, 0) + int(n)

    def add_labeled(self, seqs: np.ndarray, sources: np.ndarray, delays: np.ndarray, known: np.ndarray,
                    traffic: np.ndarray) -> None:
        """Labels in force (with their prediction's source, delay in seconds, whether the prediction was received by
        as_of and whether it is traffic, i.e. also not a reference row)."""
        self.count(self.labeled_by_source, sources[known])
        self.delay_seqs.append(seqs[traffic])
        self.delays.append(delays[traffic])

    def stats(self, model: str, as_of: datetime, delay_sample: int) -> LabelStats:
        """The totals; delay percentiles over the ``delay_sample`` newest labels (by seq)."""
        seqs = np.concatenate(self.delay_seqs) if self.delay_seqs else np.empty(0, np.int64)
        delays = np.concatenate(self.delays) if self.delays else np.empty(0, float)
        seconds = delays[np.argsort(seqs, kind="stable")[::-1][:delay_sample]].astype(float)
        percentiles = {
            name: (float(np.percentile(seconds, q)) if seconds.size else None)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99))
        }
        by_source = dict(self.by_source)
        reference_rows = by_source.pop("reference", 0)
        n_predictions = sum(by_source.values())
        labeled = sum(n for source, n in self.labeled_by_source.items() if source != "reference")
        return LabelStats(model=model, as_of=as_of, predictions=n_predictions, labeled=labeled,
                          pending=n_predictions - labeled,
                          unmatched_labels=self.all_labels - sum(self.labeled_by_source.values()),
                          delay_seconds=percentiles, by_source=dict(sorted(by_source.items())),
                          reference_rows=reference_rows)


@dataclass(frozen=True)
class LabeledWindow:
    """Labeled rows matured by ``as_of``, in label-arrival order (see :meth:`controller.store.EventStore.labeled_window`
    and the module docstring of :mod:`controller.store.events`)."""

    model: str
    as_of: datetime
    features: pd.DataFrame
    labels: pd.Series
    predictions: pd.Series
    scores: pd.DataFrame | None
    prediction_ids: pd.Series
    event_times: pd.Series
    label_times: pd.Series
    model_versions: pd.Series
    label_seqs: pd.Series
    fingerprint: str = field(repr=False)

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def start(self) -> datetime | None:
        return self.label_times.iloc[0].to_pydatetime() if self.rows else None

    @property
    def end(self) -> datetime | None:
        return self.label_times.iloc[-1].to_pydatetime() if self.rows else None

    @property
    def last_seq(self) -> int | None:
        return int(self.label_seqs.iloc[-1]) if self.rows else None

    def slice(self, start: int, stop: int | None = None) -> LabeledWindow:
        """Rows ``start:stop`` (arrival order) as a window of their own, with its own fingerprint.

        Used for time-ordered splits: the older part trains, the newer part is the holdout.
        """
        def cut(series: pd.Series) -> pd.Series:
            return series.iloc[start:stop].reset_index(drop=True)

        prediction_ids, labels, label_times = cut(self.prediction_ids), cut(self.labels), cut(self.label_times)
        return LabeledWindow(
            model=self.model, as_of=self.as_of,
            features=self.features.iloc[start:stop].reset_index(drop=True),
            labels=labels, predictions=cut(self.predictions),
            scores=self.scores.iloc[start:stop].reset_index(drop=True) if self.scores is not None else None,
            prediction_ids=prediction_ids, event_times=cut(self.event_times), label_times=label_times,
            model_versions=cut(self.model_versions), label_seqs=cut(self.label_seqs),
            fingerprint=window_fingerprint(prediction_ids, labels, label_times),
        )
