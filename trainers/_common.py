"""Helpers shared by the strategies (not public API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from trainers.base import NoParent, ParentModel, TrainingContext, TrainingReport, TrainingWindow
from trainers.schema import align_columns


@dataclass(frozen=True)
class Rows:
    """The rows of a window a strategy actually learns from."""

    features: pd.DataFrame
    labels: pd.Series
    prediction_ids: pd.Series
    label_seqs: pd.Series

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def last_seq(self) -> int | None:
        return int(self.label_seqs.iloc[-1]) if len(self.label_seqs) else None


def window_rows(window: TrainingWindow, context: TrainingContext, who: str) -> Rows:
    features = align_columns(window.features, context.feature_types, who)
    return Rows(
        features.reset_index(drop=True),
        window.labels.reset_index(drop=True),
        window.prediction_ids.reset_index(drop=True),
        window.label_seqs.reset_index(drop=True),
    )


def known_classes(context: TrainingContext, labels: pd.Series) -> tuple[Any, ...]:
    """The policy's classes, else the window's (sorted); a River learner starts knowing them."""
    if context.task != "classification":
        return ()
    if context.classes:
        return tuple(context.classes)
    return tuple(labels.drop_duplicates().tolist())


def unseen_rows(rows: Rows, last_seen_seq: int | None) -> Rows:
    """Drop rows the parent already learned from (label seq at or below its last one)."""
    if last_seen_seq is None:
        return rows
    keep = (rows.label_seqs > last_seen_seq).to_numpy()
    if keep.all():
        return rows
    return Rows(
        rows.features[keep].reset_index(drop=True),
        rows.labels[keep].reset_index(drop=True),
        rows.prediction_ids[keep].reset_index(drop=True),
        rows.label_seqs[keep].reset_index(drop=True),
    )


def report(
    *,
    strategy: str,
    estimator: str,
    window: TrainingWindow,
    rows: Rows,
    context: TrainingContext,
    parent: ParentModel | NoParent,
    chain_depth: int,
    duration_s: float,
    fit_metrics: Mapping[str, float],
    last_label_seq: int | None,
    details: Mapping[str, Any],
) -> TrainingReport:
    return TrainingReport(
        strategy=strategy,
        estimator=estimator,
        task=context.task,
        rows=len(rows),
        window_rows=window.rows,
        window_start=window.start,
        window_end=window.end,
        window_fingerprint=window.fingerprint,
        label_cut=window.as_of,
        last_label_seq=last_label_seq,
        duration_s=duration_s,
        fit_metrics=dict(fit_metrics),
        chain_depth=chain_depth,
        parent_version=parent.version,
        seed=context.seed,
        details=dict(details),
    )
