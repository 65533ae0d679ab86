"""One monitor cycle for one model, from the store: data drift, concept drift and live performance of the champion.

* Data drift compares the champion's **training window** (rebuilt from the store through the label-sequence range in
  its lineage record, so the reference switches by itself when a new champion is promoted) with the newest logged
  predictions.
* Concept drift feeds the champion's per-row loss on matured labels, in arrival order, to a River detector whose
  state lives in the store: it survives restarts and is reset when the champion changes.
* Performance scores the newest matured labels of the champion's predictions against the metric recorded on the
  champion's holdout.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from controller.actions.model_job import ModelJob
from controller.actions.training import FIRST_SEQ, LAST_SEQ
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.store import EventStore
from lineage import ModelRegistry, VersionInfo
from monitors import LastDuration, Monitors, build_monitors

log = logging.getLogger("driftpilot.monitoring")

DETECTOR_KEY = "monitor.concept_drift"


class MonitoringError(DriftpilotError):
    """A monitor cycle cannot run; the message says why."""


@dataclass(frozen=True)
class MonitorReport:
    """The signals of one cycle, as of one instant, about one champion version."""

    model: str
    as_of: datetime
    champion_version: str
    data_drift: Any
    concept_drift: Any
    performance: Any
    reference_rows: int
    current_rows: int
    html_report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "as_of": self.as_of.isoformat(), "champion_version": self.champion_version,
            "reference_rows": self.reference_rows, "current_rows": self.current_rows,
            "html_report": self.html_report,
            "signals": {s.to_dict()["kind"]: s.to_dict()
                        for s in (self.data_drift, self.concept_drift, self.performance)},
        }


class MonitorCycle(ModelJob):
    """Runs the policy's monitors for one model. Build once per model; call :meth:`run` on every tick."""

    def __init__(self, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry, clock: Clock, *,
                 report_dir: Path | None = None, monitors: Monitors | None = None) -> None:
        super().__init__(loaded, store, registry, clock)
        self.report_dir = report_dir
        self.monitors = monitors or build_monitors(self.policy.monitors, task=self.policy.task,
                                                   feature_types=self.policy.feature_types,
                                                   classes=self.policy.target.classes)

    def run(self, *, html: bool = False) -> MonitorReport:
        """One cycle as of the clock's now. The data-drift HTML report is saved and logged to MLflow when a feature
        drifts, and with ``html=True`` (on demand) even when none does."""
        as_of = self.clock.now()
        champion = self._champion()
        reference = self.reference_features(champion)
        current = self.current_features(as_of)
        data_drift = self.monitors.data_drift.run(reference, current, self.policy.feature_types)
        # Any drifted feature is worth its evidence, even below the dataset-level drift share.
        html_path, drifted = None, bool(getattr(data_drift, "drifted_features", ()))
        if html or drifted:
            html_path = self._save_html(champion.version, as_of)
        if html_path is not None:
            # The evidence goes next to the versions in MLflow, where people look: on drift, and on demand.
            kind = "data_drift" if drifted else "data_drift_report"
            self.registry.log_decision(
                self.policy.registered_model, decision_id=f"{kind}-{as_of:%Y%m%dT%H%M%S}-v{champion.version}",
                metrics={"drift_share": data_drift.drift_share},
                tags={"driftpilot.signal": kind, "driftpilot.champion": champion.version,
                      "driftpilot.drifted_features": ",".join(data_drift.drifted_features)},
                artifacts=[html_path])

        concept_drift = self._concept_drift(champion.version, as_of)
        stats = self.store.label_stats(self.policy.model, as_of)
        recent = self.store.labeled_window(self.policy.model, as_of,
                                           max_rows=self.policy.monitors.performance.window_rows * 2,
                                           feature_types=self.policy.feature_types)
        metric = self.policy.monitors.performance.metric_for(self.policy.task)
        reference_metric = champion.record.holdout_metrics.get(metric) if champion.record else None
        performance = self.monitors.performance.evaluate(
            recent, reference_metric, model_version=champion.version, label_coverage=stats.coverage,
            label_delay=stats.delay_seconds)
        return MonitorReport(model=self.policy.model, as_of=as_of, champion_version=champion.version,
                             data_drift=data_drift, concept_drift=concept_drift, performance=performance,
                             reference_rows=len(reference), current_rows=len(current),
                             html_report=str(html_path) if html_path else None)

    # ------------------------------------------------------------------------------------------------ windows

    def reference_features(self, champion: VersionInfo) -> pd.DataFrame:
        """The champion's training rows, rebuilt from the store through its lineage record."""
        record = champion.record
        if record is None or record.extra.get(LAST_SEQ) is None:
            raise MonitoringError(f"champion version {champion.version} has no driftpilot lineage record with a "
                                  "label-sequence range, so its training window cannot be rebuilt")
        window = self.store.labeled_window(
            self.policy.model, record.maturity_cut, after_seq=int(record.extra[FIRST_SEQ]) - 1,
            through_seq=int(record.extra[LAST_SEQ]), feature_types=self.policy.feature_types)
        if window.fingerprint != record.window_fingerprint:
            log.warning("reference window of %s v%s does not match its recorded fingerprint (rows %d vs %d); "
                        "using the rows the store has", self.policy.model, champion.version, window.rows,
                        record.window_rows)
        return window.features

    def current_features(self, as_of: datetime) -> pd.DataFrame:
        current = self.policy.monitors.data_drift.current
        if isinstance(current, LastDuration):
            return self.store.predictions_frame(self.policy.model, as_of, since=as_of - current.last_duration,
                                                feature_types=self.policy.feature_types)
        return self.store.predictions_frame(self.policy.model, as_of, max_rows=current.last_rows,
                                            feature_types=self.policy.feature_types)

    # ------------------------------------------------------------------------------------------------ helpers

    def _champion(self) -> VersionInfo:
        name = self.policy.registered_model
        version = self.registry.champion_version(name)
        if version is None:
            raise MonitoringError(f"model {name!r} has no champion yet; run `driftpilot bootstrap` first")
        return self.registry.get(name, version)

    def _concept_drift(self, champion: str, as_of: datetime) -> Any:
        """Feed the losses matured since the last cycle; the detector state is per champion and stored."""
        detector = self.monitors.concept_drift
        saved = self.store.get_state(self.policy.model, DETECTOR_KEY)
        cursor = None
        if saved is not None:
            state = pickle.loads(saved)
            if state["champion"] == champion:
                detector.loads(state["detector"])
                cursor = state["cursor"]
            else:
                detector.reset()  # a new champion: its errors start a new stream
        else:
            detector.reset()
        rows = self.store.labeled_window(self.policy.model, as_of, after_seq=cursor,
                                         feature_types=self.policy.feature_types)
        signal = detector.update_rows(rows, model_version=champion)
        new_cursor = rows.last_seq if rows.rows else cursor
        self.store.put_state(self.policy.model, DETECTOR_KEY, pickle.dumps(
            {"champion": champion, "cursor": new_cursor, "detector": detector.dumps()}))
        return signal

    def _save_html(self, version: str, as_of: datetime) -> Path | None:
        folder = self.report_dir or Path(".driftpilot") / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.policy.model}-v{version}-data-drift-{as_of:%Y%m%dT%H%M%S}.html"
        self.monitors.data_drift.save_html(path)
        return path if path.is_file() else None  # a disabled monitor writes nothing
