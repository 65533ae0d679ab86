"""Concept drift: a River detector over the champion's per-row loss, fed in label-arrival order.

The change point of a detection is an estimate, named in ``ChangeEvent.estimate``:

- ``adwin_width``: ADWIN drops the older part of its window when it detects and keeps the rows it cannot
  tell apart from the new level, so ``change = detection - width + 1``. When it detects quickly the kept
  part still holds pre-change rows, so the estimate errs early (test stream: true change 3000, detection
  3103, estimate 2560).
- ``warning_start``: detectors with a warning zone (DDM, EDDM, HDDM_A, HDDM_W) usually warn before they
  detect; the first row of the uninterrupted warning run that ended in the detection is taken as the change
  (the detection row when there was no warning).
- ``detection_row``: Page-Hinkley, KSWIN and FHDDM give no location; the detection row is an upper bound.

>>> from monitors.config import ConceptDriftConfig
>>> import numpy as np
>>> rng = np.random.default_rng(42)
>>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.5]).astype(float)
>>> monitor = ConceptDriftMonitor(ConceptDriftConfig(detector="adwin"))
>>> signal = monitor.update(errors)
>>> [(e.detected_at.position, e.change_point.position) for e in signal.detections]
[(2047, 1856)]
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from monitors.config import ConceptDriftConfig
from monitors.detectors import build_detector, detector_spec, river_version, window_rows
from monitors.losses import loss_stream
from monitors.protocols import LabeledRows
from monitors.signals import ChangeEvent, ConceptDriftSignal, RowRef

_STATE_FORMAT = 1
_NAT = np.iinfo(np.int64).min
# page_hinkley: losses away from the median needed before the warm-up spread is trusted, checked every
# _SPREAD_CHECK_EVERY rows past scale_warmup_rows (not every row, which would be quadratic).
_MIN_SPREAD_ROWS = 30
_SPREAD_CHECK_EVERY = 50
# loss_after averages at least this many rows, so one row is never "the level after".
_MIN_LOSS_SPAN = 50


#: Rows between two measurements of the state's size (see ConceptDriftMonitor._sizes).
_SIZE_EVERY = 1000


class StateMismatch(ValueError):
    """A saved detector state was made by another configuration or River version; call ``reset()`` instead."""


class ConceptDriftMonitor:
    """Feeds per-row losses to one River detector and reports detections with estimated change points.

    Rows are identified by their label seq (``row_ids``); a row whose id is not above the last one fed is
    skipped, so handing the same overlapping window twice never double-counts. State survives a restart
    through :meth:`dumps` / :meth:`loads`; :meth:`reset` starts over for a new champion.
    """

    kind = "concept_drift"

    def __init__(self, config: ConceptDriftConfig, task: str = "classification") -> None:
        self.config = config
        self.task = task
        self.loss = config.loss_for(task)
        self._spec = detector_spec(config.detector)
        self._reset()

    # ---------------------------------------------------------------------------------------------------- state

    def _reset(self) -> None:
        self._detector: Any = build_detector(self.config.detector, self.config.params)
        self._rows_seen = 0
        self._last_row_id: int | None = None
        self._warning_since: int | None = None
        self._scale: float | None = None  # page_hinkley: std of the warm-up losses
        self._warmup: list[tuple[float, int]] = []  # (loss, position) held until the scale is known
        size = self.config.history_rows
        self._hist_ids = np.full(size, _NAT, dtype=np.int64)
        self._hist_times = np.full(size, _NAT, dtype=np.int64)
        self._hist_loss = np.full(size, np.nan)
        self._detections_total = 0
        # First row after the last detection: where "before the change" begins.
        self._segment_start = 0

    def reset(self) -> None:
        """Forget everything (a new champion's errors start a new stream)."""
        self._reset()

    def _state(self) -> dict[str, Any]:
        return {
            "detector": self._detector,
            "rows_seen": self._rows_seen,
            "last_row_id": self._last_row_id,
            "warning_since": self._warning_since,
            "scale": self._scale,
            "warmup": self._warmup,
            "hist_ids": self._hist_ids,
            "hist_times": self._hist_times,
            "hist_loss": self._hist_loss,
            "detections_total": self._detections_total,
            "segment_start": self._segment_start,
        }

    def dumps(self) -> bytes:
        """The full state as bytes; ``loads`` on a monitor with the same config continues identically."""
        return pickle.dumps(
            {
                "format": _STATE_FORMAT,
                "river": river_version(),
                "config": self.config.model_dump(mode="json"),
                "loss": self.loss,
                "state": self._state(),
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def loads(self, state: bytes) -> None:
        """Restore a state from :meth:`dumps` (only ever bytes this project wrote: it is a pickle)."""
        try:
            payload = pickle.loads(state)
            fmt = payload["format"]
        except Exception as exc:  # noqa: BLE001 - any unreadable blob gets the same teaching error
            raise StateMismatch(
                f"not a concept-drift state ({type(exc).__name__}); call reset() to start over"
            ) from None
        if fmt != _STATE_FORMAT:
            raise StateMismatch(
                f"state format {fmt} is not {_STATE_FORMAT}; call reset() to start over"
            )
        if payload["river"] != river_version():
            raise StateMismatch(
                f"state was saved with river {payload['river']}, this is river {river_version()}; "
                "detector internals may differ, so call reset() to start over"
            )
        mine = self.config.model_dump(mode="json")
        if payload["config"] != mine or payload["loss"] != self.loss:
            raise StateMismatch(
                f"state was saved for {payload['config']} (loss {payload['loss']}), this monitor is {mine} "
                f"(loss {self.loss}); restore into a monitor built from the same config, or reset()"
            )
        for key, value in payload["state"].items():
            setattr(self, f"_{key}", value)

    # --------------------------------------------------------------------------------------------------- update

    def update_rows(
        self, rows: LabeledRows, *, model_version: str | None = None
    ) -> ConceptDriftSignal:
        """Compute this monitor's loss over ``rows`` (see :func:`monitors.losses.loss_stream`) and update."""
        stream = loss_stream(rows, self.loss, model_version=model_version)
        return self.update(stream.losses, stream.row_ids, stream.times)

    def update(
        self,
        losses: Sequence[float] | np.ndarray,
        row_ids: Sequence[int] | np.ndarray | None = None,
        times: Sequence[datetime] | pd.Series | None = None,
    ) -> ConceptDriftSignal:
        """Feed one batch of losses in label-arrival order; return what the detector saw in it."""
        values = np.asarray(losses, dtype=np.float64)
        n = len(values)
        ids = None if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        stamps = (
            None
            if times is None
            else pd.DatetimeIndex(pd.to_datetime(pd.Series(times), utc=True)).asi8
        )
        for name, arr in (("row_ids", ids), ("times", stamps)):
            if arr is not None and len(arr) != n:
                raise ValueError(
                    f"{name} has {len(arr)} entries but losses has {n}; pass one per loss"
                )
        skipped = 0
        if ids is not None:
            if n > 1 and np.any(np.diff(ids) <= 0):
                at = int(np.argmax(np.diff(ids) <= 0)) + 1
                raise ValueError(
                    f"row_ids must be strictly increasing label seqs (label-arrival order); row {at} has "
                    f"{ids[at]} after {ids[at - 1]}. Pass rows sorted by label seq."
                )
            if self._last_row_id is not None:
                fresh = ids > self._last_row_id
                skipped = int(n - fresh.sum())
                values, ids = values[fresh], ids[fresh]
                stamps = None if stamps is None else stamps[fresh]
        self._check_values(values)

        events: list[ChangeEvent] = []
        # The loop runs once per row (100k rows per tick is normal), so it binds what it touches to
        # locals and writes the history inline; the history must be written row by row so that a change
        # point is resolved the same whatever the batching (save/restore equivalence depends on it).
        detector, spec = self._detector, self._spec
        hist_loss, hist_ids, hist_times = self._hist_loss, self._hist_ids, self._hist_times
        size = len(hist_loss)
        id_list = None if ids is None else ids.tolist()
        stamp_list = None if stamps is None else stamps.tolist()
        start = self._rows_seen
        for k, value in enumerate(values.tolist()):
            position = start + k
            if size:
                slot = position % size
                hist_loss[slot] = value
                hist_ids[slot] = _NAT if id_list is None else id_list[k]
                hist_times[slot] = _NAT if stamp_list is None else stamp_list[k]
            self._rows_seen = position + 1
            if spec.scaled:
                if self._scale is None:
                    self._warm_up(value, position, events)
                    continue
                value /= self._scale
            detector.update(1.0 - value if spec.inverted else value)
            if detector.drift_detected or spec.has_warning:
                self._after_update(position, events)
        if ids is not None and len(ids):
            self._last_row_id = int(ids[-1])

        warning = self._spec.has_warning and self._warning_since is not None
        return ConceptDriftSignal(
            detector=self.config.detector,
            loss=self.loss,
            drift=bool(events),
            warning=warning,
            supports_warning=self._spec.has_warning,
            warning_since=self._ref(self._warning_since) if warning else None,
            detections=tuple(events),
            rows_seen=self._rows_seen,
            batch_rows=len(values),
            rows_skipped=skipped,
            batch_loss_mean=float(values.mean()) if len(values) else None,
            state_rows=window_rows(self._detector),
            **self._sizes(bool(events)),
        )

    def _sizes(self, changed: bool) -> dict[str, int]:
        """state_bytes / detector_bytes of the signal: pickled again every _SIZE_EVERY rows or on a detection (two
        pickles per update were most of a one-row tick's detector cost; the sizes move slowly)."""
        due = getattr(self, "_sized_at", None)
        if changed or due is None or self._rows_seen - due >= _SIZE_EVERY or self._rows_seen < due:
            self._size_cache = {"state_bytes": len(self.dumps()),
                                "detector_bytes": len(pickle.dumps(self._detector,
                                                                   protocol=pickle.HIGHEST_PROTOCOL))}
            self._sized_at = self._rows_seen
        return dict(self._size_cache)

    def _check_values(self, values: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(
                f"losses must be finite; positions {bad[:5].tolist()} are not. Drop rows without a prediction "
                "first (monitors.losses.loss_stream does)"
            )
        if self._spec.binary:
            odd = np.flatnonzero((values != 0.0) & (values != 1.0))
            if len(odd):
                raise ValueError(
                    f"detector {self.config.detector!r} takes 0/1 errors (1 = wrong), got {values[odd[0]]!r} at "
                    f"position {int(odd[0])}; use loss zero_one, or a real-valued detector (adwin, page_hinkley, kswin)"
                )

    def _warm_up(self, value: float, position: int, events: list[ChangeEvent]) -> None:
        # Page-Hinkley's delta/threshold are in input units; dividing by the warm-up spread makes them
        # standard deviations. The spread is trusted only once at least _MIN_SPREAD_ROWS losses differ from
        # the median: a low-error model's first few errors would give a tiny spread and blow every later
        # error up into an alarm. Until then the losses wait (in order) and are fed once the scale is known.
        self._warmup.append((float(value), position))
        held = len(self._warmup)
        if (
            held < self.config.scale_warmup_rows
            or (held - self.config.scale_warmup_rows) % _SPREAD_CHECK_EVERY
        ):
            return
        values = np.array([v for v, _ in self._warmup])
        spread = float(values.std())
        if spread <= 0.0 or np.count_nonzero(values != np.median(values)) < _MIN_SPREAD_ROWS:
            return
        self._scale = spread
        pending, self._warmup = self._warmup, []
        for loss, held_position in pending:
            self._feed(loss / spread, held_position, events)

    def _feed(self, value: float, position: int, events: list[ChangeEvent]) -> None:
        self._detector.update(1.0 - value if self._spec.inverted else value)
        self._after_update(position, events)

    def _after_update(self, position: int, events: list[ChangeEvent]) -> None:
        detector = self._detector
        if detector.drift_detected:
            change, estimate = self._change_point(position)
            events.append(self._event(position, change, estimate))
            self._detections_total += 1
            self._warning_since = None
            self._segment_start = position + 1
        elif self._spec.has_warning:
            if detector.warning_detected:
                if self._warning_since is None:
                    self._warning_since = position
            else:
                self._warning_since = None

    def _change_point(self, position: int) -> tuple[int, str]:
        estimate = self._spec.change_estimate
        if estimate == "adwin_width":
            return max(0, position - int(self._detector.width) + 1), estimate
        if estimate == "warning_start" and self._warning_since is not None:
            return self._warning_since, estimate
        return position, "detection_row"

    # ------------------------------------------------------------------------------------------------- history

    def _in_history(self, position: int) -> bool:
        return 0 <= position < self._rows_seen and self._rows_seen - position <= len(
            self._hist_loss
        )

    def _ref(self, position: int) -> RowRef:
        if not self._in_history(position):
            return RowRef(position)
        slot = position % len(self._hist_loss)
        row_id = None if self._hist_ids[slot] == _NAT else int(self._hist_ids[slot])
        stamp = (
            None
            if self._hist_times[slot] == _NAT
            else pd.Timestamp(int(self._hist_times[slot]), tz="UTC").to_pydatetime()
        )
        return RowRef(position, row_id, stamp)

    def _mean_loss(self, first: int, last: int) -> float | None:
        first = max(first, 0, self._rows_seen - len(self._hist_loss))
        if last < first:
            return None
        slots = np.arange(first, last + 1) % len(self._hist_loss)
        return float(self._hist_loss[slots].mean())

    def _event(self, position: int, change: int, estimate: str) -> ChangeEvent:
        start = min(change, position - _MIN_LOSS_SPAN + 1)
        return ChangeEvent(
            detected_at=self._ref(position),
            change_point=self._ref(change),
            estimate=estimate,  # type: ignore[arg-type]
            loss_before=self._mean_loss(self._segment_start, start - 1),
            loss_after=self._mean_loss(start, position),
        )
