"""Monitor signals built by hand (the monitors' real dataclasses), for tests of the rules and of strategy auto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitors import ChangeEvent, ConceptDriftSignal, DataDriftSignal, PerformanceSignal, RowRef

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def concept(drift: bool, warning: bool = False, at: datetime = T0, estimate: str = "adwin_width"
            ) -> ConceptDriftSignal:
    events = (ChangeEvent(detected_at=RowRef(500, 500, at), change_point=RowRef(420, 420, at - timedelta(hours=2)),
                          estimate=estimate, loss_before=0.1, loss_after=0.45),) if drift else ()
    return ConceptDriftSignal(detector="adwin", loss="zero_one", drift=drift, warning=warning, supports_warning=True,
                              warning_since=None, detections=events, rows_seen=500, batch_rows=100, rows_skipped=0,
                              batch_loss_mean=0.3, state_rows=400, state_bytes=1000, detector_bytes=800)


def data(share: float, verdict: str = "drift") -> DataDriftSignal:
    return DataDriftSignal(verdict=verdict, features=(), drift_share=share, drift_share_threshold=0.5,
                           dataset_drifted=share >= 0.5, reference_rows=1000, current_rows=500,
                           reference_rows_available=1000, current_rows_available=500, sample_cap=5000, seed=0)


def performance(value: float, reference: float = 0.9, verdict: str | None = None) -> PerformanceSignal:
    drop = reference - value
    return PerformanceSignal(
        verdict=verdict or ("degraded" if drop / reference > 0.05 else "ok"), metric="accuracy", value=value,
        reference=reference, drop=drop / reference, drop_kind="relative", max_drop=0.05, drop_absolute=drop,
        drop_relative=drop / reference, metrics={"accuracy": value}, rows=500, rows_available=500,
        scored_rows=None, min_labels=200, window_rows=1000)
