"""One monitor cycle for one model, from the store: data drift, concept drift and live performance of the champion.

* Data drift compares the champion's **training window** (rebuilt from the store through the label-sequence range in
  its lineage record, so the reference switches by itself when a new champion is promoted) with the newest logged
  predictions.
* Concept drift feeds the champion's per-row loss on matured labels, in arrival order, to a River detector whose
  state lives in the store: it survives restarts and is reset when the champion changes.
* Performance scores the newest matured labels of the champion's predictions against the metric recorded on the
  champion's holdout.

A cycle that is asked for its report (``driftpilot report drift``), or that finds a drifted feature, is recorded in
MLflow as a decision run (``<experiment>/decisions``): per-feature drift scores, the three verdicts, the judged
champion version (linked as the run's model input), the HTML report. An on-demand run is opened before the monitors
run, so a cycle that fails leaves a FAILED run with the error, never a FINISHED one.
"""

from __future__ import annotations

import logging
import pickle
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from controller.actions.model_job import ModelJob
from controller.actions.training import FIRST_SEQ, LAST_SEQ
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.store import EventStore, LabeledWindow
from lineage import ModelRegistry, VersionInfo
from lineage.runs import ui_link
from monitors import LastDuration, Monitors, build_monitors
from monitors.data_drift import NoReportYet

log = logging.getLogger("driftpilot.monitoring")

DETECTOR_KEY = "monitor.concept_drift"
#: Rows the concept-drift detector learns in memory between two saves of its state (see MonitorCycle.concept_drift).
DETECTOR_SAVE_ROWS = 500


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
    notes: tuple[str, ...] = field(default=())  # what a person should know (e.g. too little traffic for a report)
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "as_of": self.as_of.isoformat(), "champion_version": self.champion_version,
            "reference_rows": self.reference_rows, "current_rows": self.current_rows,
            "html_report": self.html_report, "notes": list(self.notes), "mlflow_run_id": self.mlflow_run_id,
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
        # The detector as this process last left it: (champion, cursor, rows fed since the last save). A tick that
        # finds it here neither reads nor writes the store's copy; see concept_drift.
        self._detector_at: tuple[str, int | None, int] | None = None

    def run(self, *, html: bool = False) -> MonitorReport:
        """One cycle as of the clock's now. The data-drift HTML report is saved and logged to MLflow when a feature
        drifts, and with ``html=True`` (on demand) even when none does; too little current traffic for a report is
        a note of the result, not an error."""
        as_of = self.clock.now()
        champion = self._champion()
        name = self.policy.registered_model
        # On demand, the run exists before the monitors run, so a failure marks it FAILED; otherwise a run is logged
        # only when there is evidence (a drifted feature).
        opened = (self.registry.decision_run(
            name, decision_id=f"drift_check-{as_of:%Y%m%dT%H%M%S}-v{champion.version}",
            run_name=f"drift check of v{champion.version}",
            tags={"driftpilot.signal": "data_drift_report", "driftpilot.champion": champion.version})
            if html else nullcontext())
        with opened as run:
            report = self._cycle(as_of, champion)
            drifted = bool(getattr(report.data_drift, "drifted_features", ()))
            html_path = self._save_html(champion.version, as_of) if html or drifted else None
            if run is None and drifted:
                with self.registry.decision_run(
                        name, decision_id=f"data_drift-{as_of:%Y%m%dT%H%M%S}-v{champion.version}",
                        run_name=f"data drift on v{champion.version}",
                        tags={"driftpilot.champion": champion.version}) as evidence:
                    self._log(evidence, report, champion, html_path)
                return replace(report, html_report=_str(html_path), mlflow_run_id=evidence.run_id)
            if run is not None:
                self._log(run, report, champion, html_path)
                return replace(report, html_report=_str(html_path), mlflow_run_id=run.run_id)
            return replace(report, html_report=_str(html_path))

    def _cycle(self, as_of: datetime, champion: VersionInfo) -> MonitorReport:
        reference = self.reference_features(champion)
        current = self.current_features(as_of)
        data_drift = self.monitors.data_drift.run(reference, current, self.policy.feature_types)
        notes = []
        if getattr(data_drift, "verdict", None) == "insufficient_rows":
            minimum = self.policy.monitors.data_drift.min_rows
            notes.append(
                f"too little current traffic for a data-drift report: {len(current)} logged prediction(s) as of "
                f"{as_of.isoformat(timespec='seconds')} (and {len(reference)} reference rows); each side needs "
                f"monitors.data_drift.min_rows={minimum}. Log or serve more predictions, then run it again.")
        concept_drift = self.concept_drift(champion.version, as_of)
        stats = self.store.label_stats(self.policy.model, as_of)
        recent = self.store.labeled_window(self.policy.model, as_of,
                                           max_rows=self.policy.monitors.performance.window_rows * 2,
                                           feature_types=self.policy.feature_types)
        metric = self.policy.monitors.performance.metric_for(self.policy.task)
        reference_metric = champion.record.holdout_metrics.get(metric) if champion.record else None
        performance = self.monitors.performance.evaluate(
            recent, reference_metric, model_version=champion.version, label_coverage=stats.coverage,
            label_delay=stats.delay_seconds)
        if getattr(performance, "reason", None):
            notes.append(f"performance: {performance.reason}")
        return MonitorReport(model=self.policy.model, as_of=as_of, champion_version=champion.version,
                             data_drift=data_drift, concept_drift=concept_drift, performance=performance,
                             reference_rows=len(reference), current_rows=len(current), notes=tuple(notes))

    def _log(self, run: Any, report: MonitorReport, champion: VersionInfo, html_path: Path | None) -> None:
        """The evidence of one cycle on its decision run: what a person compares across drift checks."""
        data, concept, perf = report.data_drift, report.concept_drift, report.performance
        features = getattr(data, "features", ())
        metrics: dict[str, float | None] = {
            "drift_share": getattr(data, "drift_share", None),
            "drifted_features": float(sum(f.drifted for f in features)),
            "reference_rows": float(report.reference_rows), "current_rows": float(report.current_rows),
            **{f"drift.{f.feature}": f.score for f in features},
        }
        if getattr(concept, "enabled", False):
            metrics.update({"concept_drift.detected": float(concept.drift), "concept_drift.warning":
                            float(concept.warning), "concept_drift.batch_loss_mean": concept.batch_loss_mean,
                            "concept_drift.rows_seen": float(concept.rows_seen)})
        if getattr(perf, "enabled", False):
            metrics.update({f"performance.{k}": v for k, v in perf.metrics.items()})
            metrics.update({"performance.reference": perf.reference, "performance.drop": perf.drop,
                            "performance.rows": float(perf.rows)})
        params = {f"method.{f.feature}": f"{f.method} (drift if {'<' if f.score_kind == 'p_value' else '>='} "
                                         f"{f.threshold})" for f in features}
        params.update({"champion_version": champion.version, "as_of": report.as_of.isoformat()})
        if getattr(perf, "enabled", False):
            params.update({"performance.metric": perf.metric, "performance.max_drop": f"{perf.max_drop} "
                                                                                      f"({perf.drop_kind})"})
        drifted = [f.feature for f in features if f.drifted]
        verdicts = {
            "driftpilot.data_drift": getattr(data, "verdict", "disabled"),
            "driftpilot.concept_drift": (("drift" if concept.drift else "warning" if concept.warning else "none")
                                         if getattr(concept, "enabled", False) else "disabled"),
            "driftpilot.performance": getattr(perf, "verdict", "disabled"),
        }
        signal = "data_drift" if drifted else "data_drift_report"
        run.log(metrics=metrics, params=params, versions=[champion.version],
                artifacts=[html_path] if html_path is not None else [],
                tags={**verdicts, "driftpilot.signal": signal, "driftpilot.drifted_features": ",".join(drifted),
                      "mlflow.note.content": _note(self.policy.registered_model, champion.version, verdicts,
                                                   drifted, report)})

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

    def start_detector(self, champion: str, after_seq: int | None) -> None:
        """Start a new champion's detector at the end of its training window (``after_seq``): it can have predicted no
        row before (its rows are filtered by version anyway), so reading from the start of history — what a detector
        without a stored cursor does — would cost the whole history for nothing. A detector already started for this
        champion (e.g. by ``driftpilot report drift``) keeps its state and cursor."""
        saved = self.store.get_state(self.policy.model, DETECTOR_KEY)
        if after_seq is None or (saved and pickle.loads(saved).get("champion") == champion):
            self._detector_at = None  # read the stored state on the next update
            return
        detector = self.monitors.concept_drift
        detector.reset()
        self.store.put_state(self.policy.model, DETECTOR_KEY, pickle.dumps(
            {"champion": champion, "cursor": after_seq, "detector": detector.dumps()}))
        self._detector_at = (champion, after_seq, 0)

    def concept_drift(self, champion: str, as_of: datetime, new_rows: LabeledWindow | None = None,
                      read_through: int | None = None) -> Any:
        """Feed the champion's losses to its River detector and return the signal; the detector state and its cursor
        are kept per champion in the store (a new champion's errors start a new stream).

        Without ``new_rows`` every labeled row after the detector's cursor is read. The decision loop, which has
        already read the rows after its own cursor ``read_through``, passes them: they are fed as they are when the
        detector is caught up, and the detector reads from its own cursor when it lags behind.
        """
        detector = self.monitors.concept_drift
        unsaved = 0
        if self._detector_at is not None and self._detector_at[0] == champion:
            cursor, unsaved = self._detector_at[1], self._detector_at[2]  # the in-memory detector is current
        else:
            saved = self.store.get_state(self.policy.model, DETECTOR_KEY)
            blob = pickle.loads(saved) if saved is not None else None
            if blob is not None and blob["champion"] == champion:
                detector.loads(blob["detector"])
                cursor = blob["cursor"]
            else:
                detector.reset()
                cursor = None
        caught_up = new_rows is not None and cursor is not None and read_through is not None and cursor >= read_through
        rows = new_rows if caught_up else self.store.labeled_window(
            self.policy.model, as_of, after_seq=cursor, feature_types=self.policy.feature_types)
        signal = detector.update_rows(rows, model_version=champion)
        newest = rows.last_seq if rows.rows else cursor
        unsaved += rows.rows
        # Saved every DETECTOR_SAVE_ROWS rows and whenever it alarms: after a crash the detector resumes from its
        # saved cursor and reads the rows after it again (it lags, it does not skip), so a save per tick bought
        # nothing but a write per tick.
        if unsaved >= DETECTOR_SAVE_ROWS or signal.drift or signal.warning or self._detector_at is None:
            self.store.put_state(self.policy.model, DETECTOR_KEY, pickle.dumps(
                {"champion": champion, "cursor": newest, "detector": detector.dumps()}))
            unsaved = 0
        self._detector_at = (champion, newest, unsaved)
        return signal

    def _save_html(self, version: str, as_of: datetime) -> Path | None:
        """The Evidently report, or None when the monitor made none (too few rows, nothing testable, disabled)."""
        folder = self.report_dir or Path(".driftpilot") / "reports"
        path = folder / f"{self.policy.model}-v{version}-data-drift-{as_of:%Y%m%dT%H%M%S}.html"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.monitors.data_drift.save_html(path)
        except NoReportYet:
            return None
        return path if path.is_file() else None  # a disabled monitor writes nothing


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _note(name: str, version: str, verdicts: dict[str, str], drifted: list[str], report: MonitorReport) -> str:
    from urllib.parse import quote

    model = quote(name, safe="")
    link = f"[version {version}]({ui_link(f'models/{model}/versions/{version}')})"
    lines = [(f"Drift check of champion {link} as of {report.as_of.isoformat(timespec='seconds')}: "
              f"{report.current_rows} current rows vs {report.reference_rows} rows of its training window."),
             "", "| monitor | verdict |", "|---|---|"]
    lines += [f"| {key.removeprefix('driftpilot.')} | {value} |" for key, value in verdicts.items()]
    lines += ["", f"Drifted features: {', '.join(drifted) or 'none'} (per-feature scores: metrics `drift.<feature>`)."]
    lines += [f"Note: {note}" for note in report.notes]
    return "\n".join(lines)
