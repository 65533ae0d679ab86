"""What the monitors need from the controller's data, and what the controller gets from them.

Structural types only: the controller's ``LabeledWindow`` satisfies :class:`LabeledRows` without importing
anything from here, and monitors never import the controller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from monitors.signals import ConceptDriftSignal, DataDriftSignal, DisabledSignal, PerformanceSignal


class LabeledRows(Protocol):
    """Labeled rows in label-arrival order (read-only), e.g. the store's ``LabeledWindow``."""

    @property
    def labels(self) -> pd.Series: ...
    @property
    def predictions(self) -> pd.Series: ...  # None where no prediction was logged
    @property
    def scores(self) -> pd.DataFrame | None: ...  # one column per class label
    @property
    def label_seqs(self) -> pd.Series: ...  # strictly increasing int64
    @property
    def label_times(self) -> pd.Series: ...  # datetime64[ns, UTC]
    @property
    def model_versions(self) -> pd.Series: ...  # str | None


class DataDriftMonitorLike(Protocol):
    kind: str

    def run(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        feature_types: Mapping[str, str],
        *,
        html_path: str | Path | None = None,
    ) -> DataDriftSignal | DisabledSignal: ...

    def save_html(self, path: str | Path) -> Path | None: ...

    def select_current(
        self, frame: pd.DataFrame, times: pd.Series, as_of: datetime
    ) -> pd.DataFrame: ...


class ConceptDriftMonitorLike(Protocol):
    kind: str

    def update(
        self,
        losses: Sequence[float] | np.ndarray,
        row_ids: Sequence[int] | np.ndarray | None = None,
        times: Sequence[datetime] | pd.Series | None = None,
    ) -> ConceptDriftSignal | DisabledSignal: ...

    def update_rows(
        self, rows: LabeledRows, *, model_version: str | None = None
    ) -> ConceptDriftSignal | DisabledSignal: ...

    def dumps(self) -> bytes: ...
    def loads(self, state: bytes) -> None: ...
    def reset(self) -> None: ...


class PerformanceMonitorLike(Protocol):
    kind: str

    def evaluate(
        self,
        rows: LabeledRows,
        reference_metric: float | None,
        *,
        model_version: str | None = None,
        label_coverage: float | None = None,
        label_delay: Mapping[str, float] | None = None,
    ) -> PerformanceSignal | DisabledSignal: ...
